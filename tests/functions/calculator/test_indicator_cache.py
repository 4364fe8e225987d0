"""Resuming the closed bars' recursions from the cache gives the very numbers of a full recompute."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import redis.asyncio as aioredis

from functions.calculator.compute import IndicatorCache, compute_arrays
from state.candles import CandleStore
from tests.functions.calculator.klines import SET_2026, csv_path, read_candles, with_gaps


async def test_cached_indicators_equal_a_full_recompute_minute_after_minute(
    redis_client: aioredis.Redis, klines_dir: Path
) -> None:
    candles = with_gaps(read_candles(csv_path(klines_dir, SET_2026, "FILUSDT"), limit=8000), seed=5, rate=0.01)
    store = CandleStore(redis_client)
    await store.write(candles[:7600], read_back=False)
    cache = IndicatorCache()
    for i, candle in enumerate(candles[7600:7800]):
        state = (await store.write([candle]))["FILUSDT"]
        if i == 120:
            # A late correction of a minute inside a closed 15m bar: the cache must not be used.
            late = candles[7600 + 100]
            fixed = late.model_copy(update={"close": late.close * 1.01, "high": max(late.high, late.close * 1.01)})
            state = (await store.write([fixed]))["FILUSDT"]
        cached = compute_arrays(candle.open_time, [state], cache=cache)
        full = compute_arrays(candle.open_time, [state])
        for tf, values in full.indicators.items():
            for name, expected in values.items():
                assert np.array_equal(cached.indicators[tf][name], expected, equal_nan=True), (i, tf, name)
    assert cache.hits > 300  # 5m, 15m and 1h (the longer timeframes have under 35 bars here) x most minutes
