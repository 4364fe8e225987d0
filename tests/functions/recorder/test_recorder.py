"""The recorder stores closed candles in candles_1m exactly once, equal to the source."""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import pytest
from nats.js import JetStreamContext

from collector.bars import Bar, upsert_bars
from collector.emitter import CandleEmitter, closed_candle_event
from functions.recorder.function import Recorder
from marketdata.klines import read_klines
from screener.config import load_settings
from screener.db.bars import INTERVAL_MINUTES
from screener.events.envelope import InvalidEvent, make_event
from screener.events.models import MINUTE_MS, Candle
from screener.names import EVENT_SOURCE_COLLECTOR, TYPE_CANDLE_FORMING
from screener.runtime.function import Delivery
from screener.runtime.publisher import Publisher
from screener.runtime.worker import Worker
from screener.streams import ensure_streams

COLUMNS = (
    "symbol, (extract(epoch from open_time) * 1000)::bigint AS open_time, open, high, low, close, volume, "
    "quote_volume, trades, taker_buy_volume, taker_buy_quote_volume, quote_volume_derived"
)


def source_candles(klines_dir: Path, count: int) -> list[Candle]:
    series = read_klines(klines_dir / "binance-um-2026-02" / "ALGOUSDT-1m-2026-02.csv.gz")
    return list(series.candles())[:count]


async def stored(pg: asyncpg.Connection) -> list[Candle]:
    rows = await pg.fetch(f"SELECT {COLUMNS} FROM candles_1m ORDER BY symbol, open_time")
    return [Candle(**dict(row), closed=True) for row in rows]


@pytest.fixture
async def recorder(postgres_dsn: str) -> AsyncIterator[Recorder]:
    function = Recorder(load_settings({}, postgres_dsn=postgres_dsn))
    await function.start()
    yield function
    await function.close()


def deliveries(recorder: Recorder, candles: list[Candle]) -> list[Delivery[Candle]]:
    out = []
    for candle in candles:
        event = closed_candle_event(candle)
        out.append(Delivery(event, recorder.parse(event)))
    return out


async def test_handle_stores_every_candle_equal_to_the_source(
    recorder: Recorder, pg: asyncpg.Connection, klines_dir: Path
) -> None:
    candles = source_candles(klines_dir, 500)
    emitted = await recorder.handle(deliveries(recorder, candles))
    assert emitted == ()
    assert await stored(pg) == candles


async def test_handle_is_idempotent_across_redeliveries_and_duplicates_in_a_batch(
    recorder: Recorder, pg: asyncpg.Connection, klines_dir: Path
) -> None:
    candles = source_candles(klines_dir, 100)
    await recorder.handle(deliveries(recorder, candles[:60]))
    await recorder.handle(deliveries(recorder, candles[40:] + candles[40:50]))
    assert await stored(pg) == candles
    assert recorder.recorded == 100


async def test_derived_quote_volume_is_stored_with_its_label(
    recorder: Recorder, pg: asyncpg.Connection, klines_dir: Path
) -> None:
    series = read_klines(klines_dir / "binance-um-2025-05" / "BTCUSDT-1m-futures.csv.gz")
    candles = list(series.candles())[:10]
    await recorder.handle(deliveries(recorder, candles))
    rows = await stored(pg)
    assert rows == candles
    assert all(row.quote_volume_derived for row in rows)


def test_parse_rejects_an_invalid_candle_with_the_reason(klines_dir: Path) -> None:
    recorder = Recorder(load_settings({}))
    good = source_candles(klines_dir, 1)[0]
    bad = good.model_copy(update={"low": good.high * 2})
    with pytest.raises(InvalidEvent, match=r"low .* > min\(open, close\)"):
        recorder.parse(closed_candle_event(bad))


def test_parse_rejects_other_event_types_and_forming_candles(klines_dir: Path) -> None:
    recorder = Recorder(load_settings({}))
    candle = source_candles(klines_dir, 1)[0]
    forming = make_event(
        event_type=TYPE_CANDLE_FORMING, source=EVENT_SOURCE_COLLECTOR, event_id="x", subject=candle.symbol, data=candle
    )
    with pytest.raises(InvalidEvent, match="unexpected event type"):
        recorder.parse(forming)
    with pytest.raises(InvalidEvent, match="not closed"):
        recorder.parse(closed_candle_event(candle.model_copy(update={"closed": False})))
    broken = make_event(
        event_type=closed_candle_event(candle).get_type(),
        source=EVENT_SOURCE_COLLECTOR,
        event_id="y",
        subject=candle.symbol,
        data={"symbol": candle.symbol},
    )
    with pytest.raises(InvalidEvent, match="open_time"):
        recorder.parse(broken)


async def test_worker_records_candles_published_to_jetstream(
    jetstream: JetStreamContext, postgres_dsn: str, pg: asyncpg.Connection, nats_url: str, klines_dir: Path
) -> None:
    settings = load_settings({}, postgres_dsn=postgres_dsn, nats_url=nats_url)
    candles = source_candles(klines_dir, 300)
    emitter = CandleEmitter(Publisher(jetstream))
    await ensure_streams(jetstream, settings)
    worker = Worker(Recorder(settings), jetstream, settings, fetch_timeout=0.2)
    task = asyncio.create_task(worker.run())
    try:
        await emitter.emit_closed(candles[:200])
        await emitter.emit_closed(candles[100:])  # re-publishes inside the duplicate window are dropped
        async with asyncio.timeout(30):
            while True:
                if await pg.fetchval("SELECT count(*) FROM candles_1m") == len(candles):
                    break
                await asyncio.sleep(0.05)
    finally:
        worker.stop()
        await task
    assert await stored(pg) == candles
    info = await jetstream.stream_info("CANDLES")
    assert info.state.messages == len(candles)


async def test_concurrent_writers_creating_the_same_day_partition_both_succeed(
    postgres_dsn: str, pg: asyncpg.Connection, klines_dir: Path
) -> None:
    series = read_klines(klines_dir / "binance-um-2026-02" / "ALGOUSDT-1m-2026-02.csv.gz")
    recorders = [Recorder(load_settings({}, postgres_dsn=postgres_dsn)) for _ in range(4)]
    for recorder in recorders:
        await recorder.start()
    try:
        for day in range(5):  # each day is a new partition that four writers race to create
            candles = list(series.candles(series.first_open_time + day * 1440 * 60_000))[:8]
            await asyncio.gather(*(r.handle(deliveries(r, candles[i::4])) for i, r in enumerate(recorders)))
    finally:
        for recorder in recorders:
            await recorder.close()
    assert await pg.fetchval("SELECT count(*) FROM candles_1m") == 5 * 8


BAR_COLUMNS = "interval, (extract(epoch from open_time) * 1000)::bigint AS open_time, open, high, low, close, volume"


def stored_bars(minutes: list[Candle]) -> dict[tuple[str, int], tuple[float, float, float, float, float]]:
    """Return every closed bar of ``minutes`` (gap-free, in order) as (open, high, low, close, volume)."""
    bars = {}
    for interval, span in ((i, m * MINUTE_MS) for i, m in INTERVAL_MINUTES.items()):
        buckets: dict[int, list[Candle]] = {}
        for c in minutes:
            buckets.setdefault(c.open_time - c.open_time % span, []).append(c)
        for start, rows in buckets.items():
            if start + span <= minutes[-1].open_time + MINUTE_MS:  # its last minute is stored
                high, low = max(r.high for r in rows), min(r.low for r in rows)
                bars[interval, start] = (rows[0].open, high, low, rows[-1].close, sum(r.volume for r in rows))
    return bars


async def test_bars_are_rolled_up_as_their_minutes_are_stored_in_any_order(
    recorder: Recorder, pg: asyncpg.Connection, klines_dir: Path
) -> None:
    """Two days of minutes, from mid-bar, stored in shuffled batches with redeliveries: every bar whose
    last minute is stored is in ``bars``, equal to the bar made of its stored minutes (the first ones,
    from mid-bar, too: the calculator's rings hold them so; a Redis flush days into a run rebuilds its
    rings from these), and no other."""
    series = read_klines(klines_dir / "binance-um-2026-02" / "ALGOUSDT-1m-2026-02.csv.gz")
    start = series.first_open_time + 1440 * MINUTE_MS + 37 * MINUTE_MS  # inside every kind of bar
    minutes = list(series.candles(start, start + 2 * 1440 * MINUTE_MS))
    batches = [minutes[i : i + 97] for i in range(0, len(minutes), 97)]
    random.Random(7).shuffle(batches)
    for batch in batches + batches[:5]:  # the last five again: redeliveries
        await recorder.handle(deliveries(recorder, batch))

    expected = stored_bars(minutes)
    rows = await pg.fetch(f"SELECT {BAR_COLUMNS} FROM bars WHERE symbol = 'ALGOUSDT'")
    got = {(r["interval"], r["open_time"]): (r["open"], r["high"], r["low"], r["close"], r["volume"]) for r in rows}
    assert got.keys() == expected.keys()
    assert {k: v[:4] for k, v in got.items()} == {k: v[:4] for k, v in expected.items()}  # open, high, low, close
    assert all(got[k][4] == pytest.approx(v[4], rel=1e-12) for k, v in expected.items())  # sums in another order
    assert {interval for interval, _ in got} == set(INTERVAL_MINUTES)


async def test_a_minute_stored_after_its_bars_are_whole_changes_every_bar_that_holds_it(
    recorder: Recorder, pg: asyncpg.Connection, klines_dir: Path
) -> None:
    """A day stored minute by minute in order but for one middle minute, which comes last with the
    day's highest high: every bar holding it, 5m to 1d, is rewritten with that high (a coarser bar is
    rolled up again when a finer one it is made of changes, not only when a minute completes it)."""
    series = read_klines(klines_dir / "binance-um-2026-02" / "ALGOUSDT-1m-2026-02.csv.gz")
    day = series.first_open_time + 1440 * MINUTE_MS
    minutes = list(series.candles(day, day + 1440 * MINUTE_MS))
    late_index = 7 * 60 + 32  # 07:32: the middle of its 5m, 15m, 1h, 4h and 8h bars and of the day
    peak = max(c.high for c in minutes) * 2
    late = minutes[late_index].model_copy(update={"high": peak})
    for candle in minutes[:late_index] + minutes[late_index + 1 :]:
        await recorder.handle(deliveries(recorder, [candle]))
    before = await pg.fetchval("SELECT count(*) FROM bars WHERE symbol = 'ALGOUSDT' AND high = $1", peak)

    await recorder.handle(deliveries(recorder, [late]))

    rows = await pg.fetch(
        f"SELECT {BAR_COLUMNS} FROM bars WHERE symbol = 'ALGOUSDT' AND open_time <= to_timestamp($1 / 1000.0) "
        "AND open_time + (CASE interval WHEN '5m' THEN 5 WHEN '15m' THEN 15 WHEN '1h' THEN 60 WHEN '4h' THEN 240 "
        "WHEN '8h' THEN 480 ELSE 1440 END) * interval '1 minute' > to_timestamp($1 / 1000.0)",
        late.open_time,
    )
    assert before == 0
    assert {r["interval"]: r["high"] for r in rows} == dict.fromkeys(INTERVAL_MINUTES, peak)


async def test_a_seeded_bar_is_not_replaced_by_the_part_of_it_the_minutes_hold(
    recorder: Recorder, pg: asyncpg.Connection, klines_dir: Path
) -> None:
    """The live collector seeds Binance's whole bars, then backfills minutes from mid-bar: the bars
    those minutes start in keep Binance's values (the charts read them), the later ones are rolled up."""
    series = read_klines(klines_dir / "binance-um-2026-02" / "ALGOUSDT-1m-2026-02.csv.gz")
    day = series.first_open_time + 1440 * MINUTE_MS
    whole_day = list(series.candles(day, day + 1440 * MINUTE_MS))
    seeds = [
        Bar("ALGOUSDT", interval, bar_open, *values[:4], values[4], values[4] * values[3])
        for (interval, bar_open), values in stored_bars(whole_day).items()
    ]
    await upsert_bars(pg, seeds)
    backfilled = list(series.candles(day + (14 * 60 + 37) * MINUTE_MS, day + 1441 * MINUTE_MS))  # 14:37 to 00:00

    await recorder.handle(deliveries(recorder, backfilled))

    rows = await pg.fetch(f"SELECT {BAR_COLUMNS} FROM bars WHERE symbol = 'ALGOUSDT'")
    got = {(r["interval"], r["open_time"]): (r["open"], r["high"], r["low"], r["close"]) for r in rows}
    seeded = {(s.interval, s.open_time): (s.open, s.high, s.low, s.close) for s in seeds}
    assert got.keys() == seeded.keys()
    assert got[("1d", day)] == seeded[("1d", day)]
    assert got[("8h", day + 480 * MINUTE_MS)] == seeded[("8h", day + 480 * MINUTE_MS)]  # 14:37 is in it
    assert got[("5m", day + (14 * 60 + 35) * MINUTE_MS)] == seeded[("5m", day + (14 * 60 + 35) * MINUTE_MS)]
