"""Warm start on data with holes: a symbol listed mid-day and hours missing across a midnight."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import asyncpg
import numpy as np
import pytest
import redis.asyncio as aioredis

from collector.bars import aggregate_bars, upsert_bars
from functions.calculator.compute import compute_snapshots
from functions.recorder.store import candle_record, insert_records
from screener.db.bars import INTERVAL_MINUTES
from screener.db.partitions import PartitionCache
from screener.events.models import MINUTE_MS, Candle
from state.candles import CandleStore
from state.warm_start import warm_start
from tests.functions.calculator.klines import SET_2026, csv_path, read_candles

DAY = 1440 * MINUTE_MS


@pytest.fixture(scope="module")
def listed_with_holes(klines_dir: Path) -> list[Candle]:
    """DOTUSDT from 08:17 of its second day ("listed" then), with 2.5 hours missing around a midnight."""
    candles = read_candles(csv_path(klines_dir, SET_2026, "DOTUSDT"), limit=21_000)
    first = candles[0].open_time + DAY + (8 * 60 + 17) * MINUTE_MS
    hole_from = first - first % DAY + 5 * DAY - 90 * MINUTE_MS  # 22:30 four days later
    hole_to = hole_from + 150 * MINUTE_MS  # to 01:00
    return [c for c in candles if c.open_time >= first and not hole_from <= c.open_time < hole_to]


async def record(pg: asyncpg.Connection, candles: list[Candle], partitions: PartitionCache) -> None:
    """Store ``candles`` as the recorder does, batch by batch, rolling up the bars they close."""
    for start in range(0, len(candles), 720):
        records = [candle_record(c) for c in candles[start : start + 720]]
        await insert_records(pg, records, partitions, roll_up_bars=True)


async def test_a_symbol_listed_mid_day_with_holes_is_rebuilt_to_the_same_metrics(
    redis_client: aioredis.Redis, pg: asyncpg.Connection, listed_with_holes: list[Candle]
) -> None:
    """The recorder's bars hold the bars missing their start or end as the rings did, so a Redis flush
    after the retention dropped those minutes rebuilds the same RSI and MACD (they differed in the
    1h, 4h and 8h timeframes when only bars with both ends stored were rolled up)."""
    series = listed_with_holes
    store = CandleStore(redis_client)
    t = series[-1].open_time
    live = await store.write(series)
    expected = compute_snapshots(t, [live["DOTUSDT"]])[0]
    await record(pg, series, PartitionCache())

    # Retention keeps the last 3,200 minutes (more than the ring's two laps); bars stay.
    await pg.execute("DELETE FROM candles_1m WHERE open_time < to_timestamp($1 / 1000.0)", t - 3_200 * MINUTE_MS)
    await redis_client.flushdb()
    await warm_start(redis_client, pg)
    rebuilt = compute_snapshots(t, [(await store.read(["DOTUSDT"]))["DOTUSDT"]])[0]

    assert list(differences(expected.model_dump(), rebuilt.model_dump())) == []


def differences(expected: object, got: object, path: str = "") -> Iterator[str]:
    """Yield ``path: expected != got`` for every leaf of two snapshots (dumped) that differs."""
    if isinstance(expected, dict) and isinstance(got, dict):
        for key in expected:
            yield from differences(expected[key], got.get(key), f"{path}.{key}")
    elif expected != got:
        yield f"{path}: {expected} != {got}"


async def test_a_symbol_listed_in_a_replays_warm_up_is_rebuilt_to_the_same_metrics(
    redis_client: aioredis.Redis, pg: asyncpg.Connection, listed_with_holes: list[Candle]
) -> None:
    """A symbol that starts a day before a replay's first streamed minute: the warm-up stores its
    minutes and bars, the calculator starts from them, the stream goes on for a week, Redis is
    flushed: the rebuilt rings give the same metrics."""
    series = listed_with_holes
    end = series[0].open_time + 1440 * MINUTE_MS  # the replay's first streamed minute
    warm, streamed = [c for c in series if c.open_time < end], [c for c in series if c.open_time >= end]
    partitions = PartitionCache()
    await insert_records(pg, [candle_record(c) for c in warm], partitions)
    times = np.array([c.open_time for c in warm], dtype=np.int64)
    values = np.array([[c.open, c.high, c.low, c.close, c.volume, c.quote_volume] for c in warm])
    await upsert_bars(pg, [b for i in INTERVAL_MINUTES for b in aggregate_bars("DOTUSDT", i, times, values, end)])
    store = CandleStore(redis_client)
    await warm_start(redis_client, pg, until={"DOTUSDT": warm[-1].open_time})
    live = await store.write(streamed)
    await record(pg, streamed, partitions)
    t = series[-1].open_time
    expected = compute_snapshots(t, [live["DOTUSDT"]])[0]

    await redis_client.flushdb()
    await warm_start(redis_client, pg)
    rebuilt = compute_snapshots(t, [(await store.read(["DOTUSDT"]))["DOTUSDT"]])[0]

    assert list(differences(expected.model_dump(), rebuilt.model_dump())) == []
