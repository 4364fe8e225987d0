"""The calculator as a Function: parse, handle, the events it emits and what it keeps in Redis."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import asyncpg
import numpy as np
import pytest
import redis.asyncio as aioredis
from cloudevents.core.base import BaseCloudEvent

from collector.bars import aggregate_bars, upsert_bars
from functions.calculator.compute import compute_snapshots
from functions.calculator.function import Calculator, late_for_carried_state
from screener.db.bars import INTERVAL_MINUTES
from screener.events.envelope import InvalidEvent, make_event
from screener.events.models import MINUTE_MS, Candle, MetricsSnapshot, candle_event_id, metrics_event_id
from screener.names import (
    EVENT_SOURCE_COLLECTOR,
    TYPE_CANDLE_CLOSED,
    TYPE_CANDLE_FORMING,
    TYPE_METRICS_COMPUTED,
    TYPE_METRICS_PROVISIONAL,
)
from screener.runtime.function import Delivery, PartialBatch
from screener.runtime.sequence import Position
from state import layout
from state.candles import CandleStore
from tests.functions.calculator.klines import SET_2026, csv_path, read_candles
from tests.state.test_warm_start import record

TRACEPARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


def candle_event(candle: Candle, forming: bool = False) -> BaseCloudEvent:
    """Return the collector's event for ``candle``."""
    return make_event(
        event_type=TYPE_CANDLE_FORMING if forming else TYPE_CANDLE_CLOSED,
        source=EVENT_SOURCE_COLLECTOR,
        event_id=candle_event_id(candle.symbol, candle.open_time) + (":forming" if forming else ""),
        subject=candle.symbol,
        data=candle,
        traceparent=TRACEPARENT,
    )


def deliveries(calculator: Calculator, candles: list[Candle], forming: bool = False) -> list[Delivery[Candle]]:
    """Return parsed deliveries of ``candles``' events."""
    return [Delivery(e, calculator.parse(e)) for e in (candle_event(c, forming) for c in candles)]


async def handled(calculator: Calculator, candles: list[Candle], forming: bool = False) -> Sequence[BaseCloudEvent]:
    """Handle ``candles`` as the worker does: the batch, then the note that its outputs are published."""
    batch = deliveries(calculator, candles, forming)
    events: list[BaseCloudEvent] = []
    while batch:
        try:
            events += await calculator.handle(batch)
            waiting: frozenset[int] = frozenset()
        except PartialBatch as partial:  # more than the rings' margin ahead: the rest comes next
            events += partial.outputs
            waiting = partial.waiting
        await calculator.published([d for i, d in enumerate(batch) if i not in waiting])
        batch = [d for i, d in enumerate(batch) if i in waiting]
    return events


@pytest.fixture(scope="module")
def near(klines_dir: Path) -> list[Candle]:
    """Return 2,000 real minutes of NEARUSDT."""
    return read_candles(csv_path(klines_dir, SET_2026, "NEARUSDT"), limit=2000)


@pytest.fixture(scope="module")
def link(klines_dir: Path) -> list[Candle]:
    """Return 2,000 real minutes of LINKUSDT."""
    return read_candles(csv_path(klines_dir, SET_2026, "LINKUSDT"), limit=2000)


def test_parse_returns_the_candle_of_a_closed_event(redis_client: aioredis.Redis, near: list[Candle]) -> None:
    calculator = Calculator(redis_client)
    assert calculator.parse(candle_event(near[0])) == near[0]
    forming = calculator.parse(candle_event(near[0], forming=True))
    assert forming.closed is False


def test_parse_rejects_an_invalid_candle_with_its_reason(redis_client: aioredis.Redis, near: list[Candle]) -> None:
    calculator = Calculator(redis_client)
    broken = near[0].model_copy(update={"low": near[0].open * 2})
    with pytest.raises(InvalidEvent, match=r"low .* > min\(open, close\)"):
        calculator.parse(candle_event(broken))
    assert calculator.rejected == 1
    wrong = make_event(
        event_type=TYPE_METRICS_COMPUTED, source="/x", event_id="x", subject="NEARUSDT", data={"symbol": "NEARUSDT"}
    )
    with pytest.raises(InvalidEvent, match="unexpected event type"):
        calculator.parse(wrong)
    with pytest.raises(InvalidEvent, match="invalid Candle"):
        calculator.parse(make_event(event_type=TYPE_CANDLE_CLOSED, source="/x", event_id="y", subject="X", data={}))


async def test_handle_emits_one_metrics_event_per_symbol_and_minute(
    redis_client: aioredis.Redis, near: list[Candle], link: list[Candle]
) -> None:
    calculator = Calculator(redis_client)
    await calculator.start()
    await CandleStore(redis_client).write(near[:1990] + link[:1990], read_back=False)
    batch = near[1990:1993] + link[1990:1993]  # three minutes of two symbols in one batch
    events = await handled(calculator, batch)
    assert sorted((e.get_subject(), e.get_id()) for e in events) == sorted(
        (c.symbol, metrics_event_id(c.symbol, c.open_time)) for c in batch
    )
    for event in events:
        assert event.get_type() == TYPE_METRICS_COMPUTED
        assert event.get_attributes().get("traceparent") == TRACEPARENT
    # Each minute's metrics see only the minutes up to it, even though later ones were written.
    fresh = CandleStore(redis_client)
    state = (await fresh.read(["NEARUSDT"]))["NEARUSDT"]
    data = {e.get_id(): MetricsSnapshot.model_validate(e.get_data()) for e in events}
    for candle in near[1990:1993]:
        expected = compute_snapshots(candle.open_time, [state])[0]
        assert data[metrics_event_id("NEARUSDT", candle.open_time)] == expected
    latest = await calculator.metrics.latest()
    assert [(s.symbol, s.minute) for s in latest] == [
        ("LINKUSDT", link[1992].open_time),
        ("NEARUSDT", near[1992].open_time),
    ]
    assert (
        await calculator.metrics.at("NEARUSDT", near[1991].open_time)
        == data[metrics_event_id("NEARUSDT", near[1991].open_time)]
    )


async def test_a_forming_minute_gives_provisional_metrics_and_never_enters_the_ring(
    redis_client: aioredis.Redis, near: list[Candle]
) -> None:
    calculator = Calculator(redis_client)
    await CandleStore(redis_client).write(near[:1499], read_back=False)
    await handled(calculator, near[1499:1500])
    before = (await calculator.candles.read(["NEARUSDT"]))["NEARUSDT"]
    forming = near[1500].model_copy(update={"closed": False})
    (event,) = await handled(calculator, [forming], forming=True)
    assert event.get_type() == TYPE_METRICS_PROVISIONAL
    assert event.get_id() == metrics_event_id("NEARUSDT", forming.open_time, provisional=True)
    snapshot = MetricsSnapshot.model_validate(event.get_data())
    assert snapshot.provisional
    assert snapshot.minute == forming.open_time
    assert snapshot.last_price == forming.close
    after = (await calculator.candles.read(["NEARUSDT"]))["NEARUSDT"]
    assert (before.candles == after.candles).all()
    (closed,) = await calculator.metrics.latest(["NEARUSDT"])
    assert (closed.minute, closed.provisional) == (near[1499].open_time, False)
    # The same numbers as if that minute had closed with these values.
    (closed_event,) = await handled(calculator, [near[1500]])
    as_closed = MetricsSnapshot.model_validate(closed_event.get_data())
    assert as_closed.model_copy(update={"provisional": True}) == snapshot
    # A forming candle of a minute already closed is stale: nothing is emitted.
    assert await handled(calculator, [forming], forming=True) == []


async def test_state_lost_in_redis_is_rebuilt_from_postgres_on_the_next_batch(
    redis_client: aioredis.Redis, pg: asyncpg.Connection, postgres_dsn: str, near: list[Candle]
) -> None:
    reference = Calculator(redis_client)
    await CandleStore(redis_client).write(near[:1999], read_back=False)
    (expected,) = await handled(reference, near[1999:])
    await record(pg, near[:1999])
    await redis_client.flushdb()
    pool = await asyncpg.create_pool(postgres_dsn, min_size=1, max_size=2)
    try:
        calculator = Calculator(redis_client, postgres=pool)
        (event,) = await handled(calculator, near[1999:])
    finally:
        await pool.close()
    ours = MetricsSnapshot.model_validate(event.get_data())
    assert ours == MetricsSnapshot.model_validate(expected.get_data())
    assert ours.timeframes["1d"].coverage == 1.0
    assert (await calculator.candles.window(["NEARUSDT"], 1440))["NEARUSDT"][:, layout.OPEN_TIME].min() == (
        near[1999].open_time - 1439 * MINUTE_MS
    )


async def test_a_worker_that_dies_before_rebuilding_lost_rings_leaves_none_that_look_whole(
    redis_client: aioredis.Redis,
    pg: asyncpg.Connection,
    postgres_dsn: str,
    near: list[Candle],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Redis lost the rings; the first worker to take the batch dies before it has rebuilt them from
    # PostgreSQL (SIGKILL in a drill; here the rebuild fails). The next delivery must still rebuild them:
    # rings holding only the batch's minutes would give 1d coverage near 0 and wrong alerts.
    reference = Calculator(redis_client)
    await CandleStore(redis_client).write(near[:1999], read_back=False)
    (expected,) = await handled(reference, near[1999:])
    await record(pg, near[:1999])
    await redis_client.flushdb()
    pool = await asyncpg.create_pool(postgres_dsn, min_size=1, max_size=2)

    async def killed(*args: object, **kwargs: object) -> dict[str, int]:
        raise ConnectionResetError("worker killed before the rebuild")

    try:
        with monkeypatch.context() as patch:
            patch.setattr("functions.calculator.function.warm_start", killed)
            with pytest.raises(ConnectionResetError):
                await handled(Calculator(redis_client, postgres=pool), near[1999:])
        calculator = Calculator(redis_client, postgres=pool)
        (event,) = await handled(calculator, near[1999:])
    finally:
        await pool.close()
    assert MetricsSnapshot.model_validate(event.get_data()) == MetricsSnapshot.model_validate(expected.get_data())


async def test_a_restart_rebuilds_lost_rings_only_up_to_the_last_durable_minute(
    redis_client: aioredis.Redis, pg: asyncpg.Connection, postgres_dsn: str, near: list[Candle]
) -> None:
    # The recorder runs ahead: PostgreSQL holds 500 minutes the calculator has not computed. Rings
    # rebuilt past its position would have lapped the minutes the next one's 1d window reads.
    reference = Calculator(redis_client)
    await CandleStore(redis_client).write(near[:1500], read_back=False)
    (expected,) = await handled(reference, [near[1500]])
    await record(pg, near)
    await redis_client.flushdb()
    pool = await asyncpg.create_pool(postgres_dsn, min_size=1, max_size=2)
    try:
        restarted = Calculator(redis_client, postgres=pool)
        await restarted.sequencer.advance({"NEARUSDT": Position(near[1499].open_time)})
        await restarted.start()
        (event,) = await handled(restarted, [near[1500]])
    finally:
        await pool.close()
    assert MetricsSnapshot.model_validate(event.get_data()) == MetricsSnapshot.model_validate(expected.get_data())


async def test_a_new_symbols_first_metrics_do_not_depend_on_how_far_the_recorder_has_got(
    redis_client: aioredis.Redis, pg: asyncpg.Connection, postgres_dsn: str, near: list[Candle]
) -> None:
    # A live start: ``bars`` holds the seeded bars before the first minute; the calculator's first
    # batch rebuilds the rings while the recorder stores the same minutes. Whether it has stored none
    # of them yet or all, the rings get the same seeds (two identical pipelines computed different
    # metrics: with no stored minute, no seed was loaded at all).
    history, stream = near[:1000], near[1000:1060]
    times = np.array([c.open_time for c in history], dtype=np.int64)
    values = np.array([[c.open, c.high, c.low, c.close, c.volume, c.quote_volume] for c in history])
    end = stream[0].open_time
    await upsert_bars(pg, [b for i in INTERVAL_MINUTES for b in aggregate_bars("NEARUSDT", i, times, values, end)])
    pool = await asyncpg.create_pool(postgres_dsn, min_size=1, max_size=2)
    try:
        before_recorder = await handled(Calculator(redis_client, postgres=pool), stream)
        await redis_client.flushdb()
        await record(pg, stream)
        after_recorder = await handled(Calculator(redis_client, postgres=pool), stream)
    finally:
        await pool.close()
    assert len(before_recorder) == len(stream)
    assert [e.get_data() for e in before_recorder] == [e.get_data() for e in after_recorder]
    assert MetricsSnapshot.model_validate(before_recorder[-1].get_data()).timeframes["1h"].rsi_14 is not None


async def test_a_batch_spanning_hours_gives_the_metrics_of_minute_by_minute_batches(
    redis_client: aioredis.Redis, near: list[Candle]
) -> None:
    store = CandleStore(redis_client)
    await store.write(near[:1500], read_back=False)
    one_by_one = Calculator(redis_client)
    expected = {}
    for candle in near[1500:1700]:
        (event,) = await handled(one_by_one, [candle])
        expected[event.get_id()] = event.get_data()
    await redis_client.flushdb()
    await store.write(near[:1500], read_back=False)
    batched = Calculator(redis_client)
    events = await handled(batched, near[1500:1700][::-1])  # 200 minutes, newest first
    assert {e.get_id(): e.get_data() for e in events} == expected


async def test_a_symbol_back_after_a_gap_longer_than_the_margin_is_computed_not_held(
    redis_client: aioredis.Redis, near: list[Candle]
) -> None:
    """An exchange maintenance window of hours: the next candle is far past the last one done.

    The rings' margin bounds how far past the minute being computed they may hold, and after a gap
    that minute is the first candle after it, not the last one done: held against the last one done,
    the symbol's candles waited forever (and, filling the consumer's pending window, every symbol's).
    """
    calculator = Calculator(redis_client)
    await CandleStore(redis_client).write(near[:999], read_back=False)
    await handled(calculator, [near[999]])
    after = near[1000 + 240 : 1000 + 240 + 50]  # four hours later
    events = await calculator.handle(deliveries(calculator, after))
    assert [e.get_id() for e in events] == [metrics_event_id("NEARUSDT", c.open_time) for c in after]
    state = (await CandleStore(redis_client).read(["NEARUSDT"]))["NEARUSDT"]
    for candle, event in zip(after, events, strict=True):
        expected = compute_snapshots(candle.open_time, [state])[0]
        assert MetricsSnapshot.model_validate(event.get_data()) == expected
    assert expected.timeframes["5m"].coverage == 1.0 and expected.timeframes["1h"].coverage == 50 / 60


async def test_start_loads_the_rings_of_tracked_symbols_so_the_first_minute_ships_only_candles(
    redis_client: aioredis.Redis, near: list[Candle]
) -> None:
    first = Calculator(redis_client)
    await CandleStore(redis_client).write(near[:100], read_back=False)
    await handled(first, [near[100]])  # NEARUSDT now has metrics: tracked
    restarted = Calculator(redis_client)
    await restarted.start()
    (event,) = await handled(restarted, [near[101]])
    assert restarted.candles.mirror_hits == 1  # Redis replied with a version, not 140 KB of rings
    state = (await CandleStore(redis_client).read(["NEARUSDT"]))["NEARUSDT"]
    assert MetricsSnapshot.model_validate(event.get_data()) == compute_snapshots(near[101].open_time, [state])[0]


async def test_a_minute_older_than_the_carried_state_is_reported(
    redis_client: aioredis.Redis, near: list[Candle]
) -> None:
    store = CandleStore(redis_client)
    await store.write(near[:1000], read_back=False)
    run = near[1000:1060]  # a run of the margin's minutes, and a redelivery of it: nothing late
    states = await store.write(run)
    assert late_for_carried_state(run, states) == []
    assert late_for_carried_state(run, await store.write(run)) == []
    # A minute more than the margin late (here: its close corrected) is not in the carried state.
    old = near[1060 - layout.MARGIN_MINUTES - 5].model_copy(update={"close": near[990].close})
    states = await store.write([old])
    assert late_for_carried_state([old], states) == [(old.symbol, old.open_time)]
