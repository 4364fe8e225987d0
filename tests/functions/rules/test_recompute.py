"""A past minute's metrics computed again from the rings equal those computed at the time."""

from __future__ import annotations

from pathlib import Path

import redis.asyncio as aioredis

from functions.calculator.compute import compute_snapshots
from functions.rules.recompute import RingRecompute
from marketdata.klines import read_folder
from state import layout
from state.candles import CandleStore


async def test_recompute_of_a_past_minute_equals_the_original(klines_dir: Path, redis_client: aioredis.Redis) -> None:
    series = read_folder(klines_dir / "binance-um-2026-02", ["DOTUSDT"])["DOTUSDT"]
    candles = [series.candle(i) for i in range(1800)]
    store = CandleStore(redis_client)
    states = await store.write(candles[:1700])
    minute = candles[1699].open_time
    [original] = compute_snapshots(minute, [states["DOTUSDT"]])
    await store.write(candles[1700:1760])  # an hour of newer minutes since
    again = await RingRecompute(redis_client).snapshot("DOTUSDT", minute)
    assert again == original
    await store.write(candles[1760:])
    assert layout.MARGIN_MINUTES < 100
    assert await RingRecompute(redis_client).snapshot("DOTUSDT", minute) is None  # too far behind: not exact
