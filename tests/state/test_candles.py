"""The 1-minute and bar rings in a real Redis: idempotent, order-independent, O(1), constant round trips."""

from __future__ import annotations

import random
import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import redis.asyncio as aioredis
from redis.asyncio.connection import Connection

from screener.events.models import MINUTE_MS, Candle
from state import layout
from state.candles import CandleStore, StateError, SymbolState
from tests.functions.calculator.klines import SET_2026, csv_path, read_candles


class CountingConnection(Connection):
    """A Redis connection that counts what it sends: one send is one round trip."""

    sends = 0

    async def send_packed_command(self, command: Any, check_health: bool = True) -> None:
        CountingConnection.sends += 1
        await super().send_packed_command(command, check_health)


@pytest.fixture
async def counting_client(redis_url: str) -> AsyncIterator[aioredis.Redis]:
    """Yield a client of a flushed database that counts its round trips."""
    client = aioredis.from_url(redis_url, connection_class=CountingConnection)
    await client.flushdb()
    yield client
    await client.aclose()


@pytest.fixture(scope="module")
def dot(klines_dir: Path) -> list[Candle]:
    """Return 3,200 real minutes of DOTUSDT (more than two laps of the ring)."""
    return read_candles(csv_path(klines_dir, SET_2026, "DOTUSDT"), limit=3200)


def renamed(candles: list[Candle], symbol: str) -> list[Candle]:
    """Return ``candles`` as another symbol's."""
    return [c.model_copy(update={"symbol": symbol}) for c in candles]


def assert_same_state(a: SymbolState, b: SymbolState, *, carry: bool = True) -> None:
    """Assert two symbols' rings (and, with ``carry``, carried states) hold the same values."""
    assert np.array_equal(a.candles, b.candles)
    assert np.array_equal(a.previous_quote_volume, b.previous_quote_volume, equal_nan=True)
    for timeframe in a.bars:
        assert np.array_equal(a.bars[timeframe], b.bars[timeframe]), timeframe
    if carry:
        assert a.carry.tobytes() == b.carry.tobytes()


async def test_writing_the_same_candles_twice_leaves_the_same_state(
    redis_client: aioredis.Redis, dot: list[Candle]
) -> None:
    store = CandleStore(redis_client)
    first = (await store.write(dot))["DOTUSDT"]
    again = (await store.write(dot[-500:] + dot[:10]))["DOTUSDT"]
    assert_same_state(first, again)
    assert not again.created
    assert first.latest_minute() == dot[-1].open_time


async def test_late_and_out_of_order_minutes_give_the_state_of_in_order_writes(
    redis_client: aioredis.Redis, dot: list[Candle]
) -> None:
    store = CandleStore(redis_client)
    await store.write(renamed(dot, "INORDER"))
    shuffled = renamed(dot, "SHUFFLED")
    random.Random(7).shuffle(shuffled)
    for start in range(0, len(shuffled), 97):  # many small batches in random order
        await store.write(shuffled[start : start + 97], read_back=False)
    # Disorder within the margin (the calculator's batches and redeliveries): the carried state too.
    nearly = renamed(dot, "NEARLY")
    rng = random.Random(8)
    for start in range(0, len(nearly), layout.MARGIN_MINUTES):
        part = nearly[start : start + layout.MARGIN_MINUTES]
        rng.shuffle(part)
        for size in (7, 13, 40):
            await store.write(part[:size], read_back=False)
            part = part[size:]
    states = await store.read(["INORDER", "SHUFFLED", "NEARLY"])
    # Minutes later than the margin are in the rings, but bars the carried state had taken in before them
    # stay as it took them (docs/state.md, "Carried indicators").
    assert_same_state(states["INORDER"], states["SHUFFLED"], carry=False)
    assert_same_state(states["INORDER"], states["NEARLY"])
    assert states["INORDER"].carry[layout.CARRY_NEWEST] == dot[-1].open_time // MINUTE_MS


async def test_a_minute_older_than_the_ring_only_reaches_the_bars_that_still_cover_it(
    redis_client: aioredis.Redis, dot: list[Candle]
) -> None:
    store = CandleStore(redis_client)
    before = (await store.write(dot))["DOTUSDT"]
    old_minute = dot[0].open_time - 3 * layout.CAPACITY * MINUTE_MS
    too_old = dot[0].model_copy(update={"open_time": old_minute, "close": 9.0})
    after = (await store.write([too_old]))["DOTUSDT"]
    assert np.array_equal(before.candles, after.candles)
    assert np.array_equal(before.previous_quote_volume, after.previous_quote_volume, equal_nan=True)
    hour = 60 * MINUTE_MS
    ring = layout.BAR_RING_BY_TIMEFRAME["1h"]
    row = after.bars["1h"][(old_minute // hour) % ring.capacity]
    assert row[ring.close_column] == 9.0  # the 1h ring keeps 341 hours: a late minute of 3 days ago counts


async def test_gaps_stay_gaps_in_the_window_read(redis_client: aioredis.Redis, dot: list[Candle]) -> None:
    store = CandleStore(redis_client)
    kept = dot[:100] + dot[103:200]  # minutes 100..102 never arrive
    await store.write(kept)
    window = await store.window(["DOTUSDT", "NOSUCHSYMBOL"], 120)
    assert set(window) == {"DOTUSDT"}
    rows = window["DOTUSDT"]
    assert rows.shape == (120, len(layout.CANDLE_FIELDS))
    assert rows[-1, layout.OPEN_TIME] == dot[199].open_time
    minutes = dot[199].open_time - MINUTE_MS * np.arange(119, -1, -1)
    missing = {dot[i].open_time for i in (100, 101, 102)}
    for minute, row in zip(minutes, rows, strict=True):
        if minute in missing:
            assert np.isnan(row).all()
        else:
            assert row[layout.OPEN_TIME] == minute
    assert rows[-1, layout.CLOSE] == dot[199].close
    assert rows[-1, layout.TRADES] == dot[199].trades


async def test_a_batch_costs_one_round_trip_whatever_its_size(
    counting_client: aioredis.Redis, dot: list[Candle]
) -> None:
    store = CandleStore(counting_client)
    await store.write(dot[:1])  # loads the script (a flushed server may not know it)
    sends = []
    for symbols, minutes in ((1, 1), (5, 20), (40, 60)):
        batch = [c for i in range(symbols) for c in renamed(dot[100 : 100 + minutes], f"S{i}USDT")]
        CountingConnection.sends = 0
        states = await store.write(batch)
        sends.append(CountingConnection.sends)
        assert len(states) == symbols
    assert sends == [1, 1, 1]
    CountingConnection.sends = 0
    await store.read([f"S{i}USDT" for i in range(40)])
    await store.window([f"S{i}USDT" for i in range(40)], 1440)
    assert CountingConnection.sends == 2


async def test_each_candle_costs_the_same_few_commands(redis_client: aioredis.Redis, dot: list[Candle]) -> None:
    store = CandleStore(redis_client)
    await store.write(dot[:1000], read_back=False)
    per_candle = []
    start = 1000
    for count in (10, 1000):
        await redis_client.config_resetstat()
        await store.write(dot[start : start + count], read_back=False)
        start += count
        stats = await redis_client.info("commandstats")
        ring_ops = sum(int(stats.get(f"cmdstat_{c}", {}).get("calls", 0)) for c in ("getrange", "setrange"))
        per_candle.append(ring_ops / count)
    assert per_candle[0] == pytest.approx(per_candle[1], rel=0.1)
    # A read and a write per ring, and the carried state's reads of the bars it takes in: a minute of
    # the 1-minute ring for 1m, at most five every fifth minute for 5m, a bar slot now and then.
    assert per_candle[1] <= 2 + 2 * (2 * len(layout.BAR_RINGS)) + 3


async def test_rings_are_allocated_once_at_full_size(redis_client: aioredis.Redis, dot: list[Candle]) -> None:
    store = CandleStore(redis_client)
    await store.write(dot[:1], read_back=False)
    rings = [*layout.ring_keys("DOTUSDT"), layout.version_key("DOTUSDT")]
    for key in rings:
        assert await redis_client.strlen(key) > 0
    sizes = {key: await redis_client.memory_usage(key) for key in rings}
    await store.write(dot, read_back=False)
    assert {key: await redis_client.memory_usage(key) for key in sizes} == sizes
    total = sum(v for v in sizes.values() if v)
    assert total <= 150 * 1024, f"{total} bytes per symbol"
    for ring in layout.BAR_RINGS:  # each bar ring fills its jemalloc size class, no more (docs/state.md)
        assert sizes[layout.bars_key("DOTUSDT", ring.timeframe)] - ring.ring_bytes < 128, ring.timeframe


@pytest.mark.parametrize("timeframe", ["1h", "1d"])  # a ring that keeps opens and one that does not
async def test_seeded_bars_fill_the_bar_rings_and_minutes_update_them(
    redis_client: aioredis.Redis, dot: list[Candle], timeframe: str
) -> None:
    from state.candles import SeedBar

    store = CandleStore(redis_client)
    ring = layout.BAR_RING_BY_TIMEFRAME[timeframe]
    span = ring.span_ms
    first_bar = dot[0].open_time - dot[0].open_time % span
    seeds = [("DOTUSDT", SeedBar(timeframe, first_bar - k * span, 1.0 + k, 2.0 + k)) for k in range(1, 30)]
    state = (await store.write(dot, seeds=seeds))["DOTUSDT"]
    assert state.bars[timeframe].shape == (ring.capacity, ring.width)
    for _, bar in seeds:
        row = state.bars[timeframe][(bar.open_time // span) % ring.capacity]
        # Merged as the bar's first and last minute, whether or not the ring keeps the open.
        assert row[layout.BAR_TAG] == (bar.open_time // MINUTE_MS) * layout.TAG_MINUTE + ring.minutes - 1
        assert row[ring.close_column] == bar.close
        if ring.keeps_open:
            assert row[ring.open_column] == bar.open
    # The first recorded bar is built from its minutes: open of its first, close of its last minute.
    in_bar = [c for c in dot if c.open_time - c.open_time % span == first_bar]
    row = state.bars[timeframe][(first_bar // span) % ring.capacity]
    assert row[ring.close_column] == in_bar[-1].close
    if ring.keeps_open:
        assert row[ring.open_column] == in_bar[0].open


async def test_rings_of_another_layout_are_started_anew_and_reported_as_created(
    redis_client: aioredis.Redis, dot: list[Candle]
) -> None:
    store = CandleStore(redis_client)
    await store.write(dot[:100], read_back=False)
    ring = layout.BAR_RING_BY_TIMEFRAME["15m"]
    key = layout.bars_key("DOTUSDT", ring.timeframe)
    await redis_client.set(key, bytes(ring.capacity * 24))  # the former (tag, open, close) slots
    with pytest.raises(StateError, match=re.escape(key)):  # a plain read names the key it cannot use
        await store.read(["DOTUSDT"])
    # A write drops the stale rings and says so (created): the calculator rebuilds them by warm start.
    state = (await store.write(dot[100:110]))["DOTUSDT"]
    assert state.created
    assert state.bars["15m"].shape == (ring.capacity, ring.width)
    assert state.latest_minute() == dot[109].open_time
    assert int(np.count_nonzero(state.candles[:, layout.OPEN_TIME])) == 10  # the history went with the old layout
    assert await redis_client.strlen(key) == ring.ring_bytes


async def test_two_workers_writing_a_minute_each_in_turn_exchange_candles_not_rings(
    redis_client: aioredis.Redis, dot: list[Candle]
) -> None:
    # Two calculators share a symbol: each write follows one by the other worker, so neither mirror is
    # current; the write log gives each the other's candle instead of 132 KB of rings.
    first, second = CandleStore(redis_client, mirror=True), CandleStore(redis_client, mirror=True)
    plain = CandleStore(redis_client)
    await plain.write(dot[:1000], read_back=False)
    for store in (first, second):
        await store.write([], also=["DOTUSDT"])  # each starts with a current copy
    for i, candle in enumerate(dot[1000:1040]):
        store = first if i % 2 == 0 else second
        state = (await store.write([candle]))["DOTUSDT"]
        assert_same_state(state, (await plain.read(["DOTUSDT"]))["DOTUSDT"])
    assert first.log_hits + second.log_hits == 39  # all but the first write, which found its copy current
    # A write too big for the log (a backfill) makes the other worker's next reply carry the rings.
    await first.write(dot[1040:1050])
    hits = (second.log_hits, second.mirror_hits)
    state = (await second.write([dot[1050]]))["DOTUSDT"]
    assert (second.log_hits, second.mirror_hits) == hits  # neither: the rings came back
    assert_same_state(state, (await plain.read(["DOTUSDT"]))["DOTUSDT"])


async def test_a_mirroring_store_holds_exactly_what_redis_holds(
    redis_client: aioredis.Redis, dot: list[Candle]
) -> None:
    from state.candles import SeedBar

    # Two writers share the symbols (like two workers); each keeps a mirror and must notice the other.
    first, second = CandleStore(redis_client, mirror=True), CandleStore(redis_client, mirror=True)
    plain = CandleStore(redis_client)
    rng = random.Random(11)
    candles = renamed(dot, "AUSDT") + renamed(dot, "BUSDT")
    day = 1440 * MINUTE_MS
    seeds = [("AUSDT", SeedBar("1d", dot[0].open_time - dot[0].open_time % day - k * day, 1.0, 2.0)) for k in (1, 2)]
    position = 0
    for step in range(60):
        size = rng.choice((1, 7, 60, 200))
        batch = candles[position : position + size] + rng.sample(candles[: position + 1], k=min(3, position + 1))
        position = min(len(candles), position + size)
        writer = first if rng.random() < 0.7 else second
        states = await writer.write(batch, seeds=seeds if step == 5 else ())
        fresh = await plain.read(sorted(states))
        for symbol, state in states.items():
            assert_same_state(state, fresh[symbol])
    assert first.mirror_hits > 20
    # The next write after a flush notices the rings are new, and the mirror follows.
    await redis_client.flushdb()
    states = await first.write(candles[:3])
    assert states["AUSDT"].created
    assert_same_state(states["AUSDT"], (await plain.read(["AUSDT"]))["AUSDT"])


async def test_a_write_that_may_not_create_rings_leaves_a_missing_symbol_alone(
    redis_client: aioredis.Redis, dot: list[Candle]
) -> None:
    store = CandleStore(redis_client, mirror=True)
    assert await store.write(dot[:10], create=False) == {}
    assert await redis_client.exists(*layout.state_keys(dot[0].symbol)) == 0
    created = await store.write(dot[:10])
    assert created[dot[0].symbol].holds(dot[9].open_time)
    kept = await store.write(dot[10:12], create=False)  # rings exist now: written as usual
    assert kept[dot[0].symbol].holds(dot[11].open_time)


async def test_rings_without_a_carried_state_are_started_anew_and_reported_as_created(
    redis_client: aioredis.Redis, dot: list[Candle]
) -> None:
    # Rings written before the carried RSI and MACD state existed cannot give exact indicators: the
    # write treats them as another layout, so the calculator rebuilds them (state and all) by warm start.
    store = CandleStore(redis_client)
    await store.write(dot[:100], read_back=False)
    await redis_client.delete(layout.carry_key("DOTUSDT"))
    state = (await store.write(dot[100:110]))["DOTUSDT"]
    assert state.created
    assert await redis_client.strlen(layout.carry_key("DOTUSDT")) == layout.CARRY_BYTES
    assert state.carry[layout.CARRY_NEWEST] == dot[109].open_time // MINUTE_MS


async def test_the_carried_state_takes_in_each_bar_once_a_margin_behind_the_newest_minute(
    redis_client: aioredis.Redis, dot: list[Candle]
) -> None:
    store = CandleStore(redis_client, mirror=True)
    state = (await store.write(dot[:500]))["DOTUSDT"]
    newest = dot[499].open_time // MINUTE_MS
    for i, (timeframe, span) in enumerate(layout.CARRY_TIMEFRAMES):
        bar = state.carry[layout.carry_offset(i)]
        assert bar == layout.carry_bar(newest, span), timeframe
        # The bars it holds: every bar from the first minute's to its own (no gaps in this series).
        first_bar = dot[0].open_time // MINUTE_MS // span
        expected = max(0, int(bar // span - first_bar + 1))
        assert state.carry[layout.carry_offset(i) + 1] == expected, timeframe
    before = state.carry.tobytes()
    # Written again, late within the margin, or empty: nothing moves.
    again = (await store.write(dot[450:500] + dot[480:490]))["DOTUSDT"]
    assert again.carry.tobytes() == before
