"""Warm start: an empty Redis rebuilt from PostgreSQL gives the metrics of a Redis that saw every minute."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import asyncpg
import pytest
import redis.asyncio as aioredis

from functions.calculator.compute import compute_snapshots
from screener.events.models import MINUTE_MS, Candle
from state.candles import CandleStore
from state.layout import BAR_RINGS, CAPACITY, CARRY_STATE_FIELDS, CARRY_TIMEFRAMES, carry_offset
from state.warm_start import missing_symbols, warm_start
from tests.functions.calculator.klines import SET_2026, csv_path, read_candles, store_minutes

MINUTES = 21_000  # past change_14d's 336 hours
RECORDED = 3_200  # what candles_1m keeps (more than the ring's two laps)


def _at(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, tz=UTC)


def closed_bars(candles: list[Candle], minutes: int) -> list[tuple[int, float, float, float, float, float, float]]:
    """Aggregate candles into closed clock-aligned bars, the plain way (as Binance's klines)."""
    span = minutes * MINUTE_MS
    groups: dict[int, list[Candle]] = {}
    for c in candles:
        groups.setdefault(c.open_time - c.open_time % span, []).append(c)
    last = candles[-1].open_time
    bars = []
    for start, rows in sorted(groups.items()):
        if start + span <= last:  # closed
            high, low = max(r.high for r in rows), min(r.low for r in rows)
            volume, quote = sum(r.volume for r in rows), sum(r.quote_volume for r in rows)
            bars.append((start, rows[0].open, high, low, rows[-1].close, volume, quote))
    return bars


@pytest.fixture(scope="module")
def dot(klines_dir: Path) -> list[Candle]:
    """Return 21,000 real minutes of DOTUSDT."""
    return read_candles(csv_path(klines_dir, SET_2026, "DOTUSDT"), limit=MINUTES)


async def record(pg: asyncpg.Connection, candles: list[Candle]) -> None:
    """Store candles in ``candles_1m`` and every closed bar in ``bars``, as the collector does."""
    await store_minutes(pg, candles[-RECORDED:])
    rows = [
        (candles[0].symbol, ring.timeframe, _at(start), *values)
        for ring in BAR_RINGS
        for start, *values in closed_bars(candles, ring.minutes)
    ]
    await pg.copy_records_to_table(
        "bars",
        records=rows,
        columns=["symbol", "interval", "open_time", "open", "high", "low", "close", "volume", "quote_volume"],
    )


async def test_an_empty_redis_is_rebuilt_to_the_same_metrics(
    redis_client: aioredis.Redis, pg: asyncpg.Connection, dot: list[Candle]
) -> None:
    store = CandleStore(redis_client)
    t = dot[-1].open_time
    live = await store.write(dot)
    expected = compute_snapshots(t, [live["DOTUSDT"]])[0]
    await record(pg, dot)

    await redis_client.flushdb()
    assert await missing_symbols(redis_client, ["DOTUSDT"]) == ["DOTUSDT"]
    written = await warm_start(redis_client, pg)
    assert written == {"DOTUSDT": 2 * CAPACITY}  # two laps: the ring and its previous lap
    state = (await store.read(["DOTUSDT"]))["DOTUSDT"]
    rebuilt = compute_snapshots(t, [state])[0]
    assert rebuilt == expected
    # The carried RSI and MACD state comes from everything stored: the bars of 15m ... 1d from the
    # seeded bars before candles_1m's minutes, so the very bytes of a Redis that saw every minute.
    # (1m and 5m start at candles_1m's first minute: their seeds have long decayed by t, see above.)
    for i, (timeframe, _) in enumerate(CARRY_TIMEFRAMES):
        fields = slice(carry_offset(i), carry_offset(i) + 1 + CARRY_STATE_FIELDS)
        if timeframe not in ("1m", "5m"):
            assert state.carry[fields].tobytes() == live["DOTUSDT"].carry[fields].tobytes(), timeframe
        else:
            assert state.carry[carry_offset(i)] == live["DOTUSDT"].carry[carry_offset(i)], timeframe
    assert rebuilt.change_14d is not None
    assert rebuilt.timeframes["1d"].volume_ratio is not None
    assert all(rebuilt.timeframes[tf].rsi_14 is not None for tf in ("5m", "15m", "1h", "4h", "8h", "1d"))

    # A symbol that has its rings is left alone.
    assert await warm_start(redis_client, pg) == {}
