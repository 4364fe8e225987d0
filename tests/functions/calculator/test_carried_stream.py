"""The stream's RSI and MACD equal TA-Lib over the whole history at every minute, restarts included.

A real series of 42 days (ETHUSDT, 2025-05) and the same series priced a million times lower with
gaps are written through the real write script in the calculator's runs (at most the margin's
minutes, then each minute of the run computed from the rings, as ``Calculator.handle`` does). On
the way: a worker killed after writing a run and before publishing it, whose run is delivered again
to a fresh worker; and Redis flushed and rebuilt by the warm start from PostgreSQL. At every minute,
every timeframe's RSI and MACD must be the backtest's (whole columns, carried from the first bar:
the same bits), and at the minute closing each bar they must equal ``talib.RSI``/``talib.MACD``
over every bar since the first to 1e-9 relative (docs/state.md, "Carried indicators").
"""

from __future__ import annotations

import math
from pathlib import Path

import asyncpg
import numpy as np
import numpy.typing as npt
import pytest
import redis.asyncio as aioredis
import talib

from functions.calculator.compute import compute_minute
from functions.calculator.function import _segments
from screener.events.models import BAR_TIMEFRAMES, MINUTE_MS, Candle
from state.candles import CandleStore
from state.warm_start import warm_start
from tests.functions.calculator.klines import SET_2025, csv_path, read_candles, store_minutes, with_gaps
from tests.functions.calculator.test_columns import at, computed

FloatArray = npt.NDArray[np.float64]
RECURSIONS = ("rsi_14", "macd", "macd_signal", "macd_hist")
REL = 1e-9  # metrics.md
# MACD crosses zero, where a relative error measures nothing: the error is taken relative to
# |MACD| + 0.1% of the price, so <= 1e-9 means |ours - TA-Lib| <= 1e-9 |TA-Lib| + 1e-12 price (the
# tolerance of test_reference.check_indicators).
MACD_FLOOR = 1e-3


def series(klines_dir: Path) -> dict[str, list[Candle]]:
    """Return 42 days of ETHUSDT as is, and priced 1e-6 with 2% of the minutes and an hour missing."""
    path = csv_path(klines_dir, SET_2025, "ETHUSDT")
    tiny = with_gaps(read_candles(path, symbol="ETHTINYUSDT", scale=1e-6), seed=4, rate=0.02, holes=[(30_000, 30_060)])
    return {"ETHUSDT": read_candles(path), "ETHTINYUSDT": tiny}


def relative_error(ours: float, expected: float, price: float, name: str) -> float:
    """Return |ours - expected| over the tolerance's scale (|expected|, floored for MACD); 0 for two nulls."""
    if math.isnan(expected) or math.isnan(ours):
        assert math.isnan(expected) and math.isnan(ours), f"{name}: {ours} vs {expected}"
        return 0.0
    scale = abs(expected) + (MACD_FLOOR * price if name.startswith("macd") else 0.0)
    return abs(ours - expected) / scale if scale else abs(ours - expected)


# 2 x 60,000 minutes through the calculator's per-minute compute (about 3.5 ms a minute): 250 s alone
# on a quiet 2-core machine, near the suite's 300 s default. 42 days are what the 1d MACD needs.
@pytest.mark.timeout(900)
async def test_stream_rsi_and_macd_equal_talib_over_the_whole_history_at_every_minute(
    redis_client: aioredis.Redis, pg: asyncpg.Connection, klines_dir: Path
) -> None:
    by_symbol = series(klines_dir)
    symbols = list(by_symbol)
    first = min(c[0].open_time for c in by_symbol.values())
    last = max(c[-1].open_time for c in by_symbol.values())
    width = (last - first) // MINUTE_MS + 1
    blocks = computed(by_symbol, days=7)  # the backtest: whole columns, carried from the first bar

    # The stream's values at every minute: (symbol, timeframe, name) -> one value per minute.
    stream = {(s, tf, n): np.full(width, np.nan) for s in symbols for tf in BAR_TIMEFRAMES for n in RECURSIONS}
    candles = sorted((c for cs in by_symbol.values() for c in cs), key=lambda c: (c.open_time, c.symbol))
    runs = _segments(candles)
    killed, restart = len(runs) // 3, 2 * len(runs) // 3
    store = CandleStore(redis_client, mirror=True)
    against_backtest = {"rsi_14": 0.0, "macd": 0.0}
    for index, run in enumerate(runs):
        if index == restart:
            # Redis flushed: the warm start rebuilds the rings and the carried state from PostgreSQL.
            await store_minutes(pg, [c for r in runs[:index] for c in r])
            await redis_client.flushdb()
            until = {s: max(c.open_time for r in runs[:index] for c in r if c.symbol == s) for s in symbols}
            assert await warm_start(redis_client, pg, symbols, until=until)
            store = CandleStore(redis_client, mirror=True)
        states = await store.write(run)
        if index == killed:
            # A worker killed after writing the run, before publishing its metrics: the run comes back
            # to a fresh worker, whose write changes nothing (the carried state moves once per bar).
            carry = states[run[0].symbol].carry.tobytes()
            compute_minute(run[0].open_time, list(states.values()))
            store = CandleStore(redis_client, mirror=True)
            states = await store.write(run)
            assert states[run[0].symbol].carry.tobytes() == carry
        for minute in sorted({c.open_time for c in run}):
            arrays = compute_minute(minute, [states[s] for s in symbols if s in states])
            assert arrays is not None
            assert arrays.seeded_on_last_bars == 0, f"@{minute}: a series did not step from its carried state"
            column = (minute - first) // MINUTE_MS
            for row, symbol in enumerate(arrays.symbols):
                block, where = at(blocks, 0, minute)
                backtest_row = symbols.index(symbol)
                for tf in BAR_TIMEFRAMES:
                    for name in RECURSIONS:
                        ours = float(arrays.indicators[tf][name][row])
                        stream[(symbol, tf, name)][column] = ours
                        expected = float(block.indicators[tf][name][backtest_row, where])
                        error = relative_error(ours, expected, float(arrays.last_price[row]), f"{symbol}@{minute}")
                        key = "rsi_14" if name == "rsi_14" else "macd"
                        against_backtest[key] = max(against_backtest[key], error)
    assert against_backtest["rsi_14"] <= REL and against_backtest["macd"] <= REL, against_backtest

    # TA-Lib over every bar since the first, at the minute that closes each bar.
    against_talib = {"rsi_14": 0.0, "macd": 0.0, "macd_of_price": 0.0}
    compared = 0
    for symbol, rows in by_symbol.items():
        minutes = np.array([c.open_time for c in rows])
        closes = np.array([c.close for c in rows])
        for tf, span in BAR_TIMEFRAMES.items():
            bar = minutes // (span * MINUTE_MS)
            closing = np.ones(len(bar), dtype=bool)
            closing[:-1] = bar[1:] != bar[:-1]  # the latest minute of each bar closes it
            bar_closes = closes[closing]
            columns = (minutes[closing] - first) // MINUTE_MS
            expected = {"rsi_14": talib.RSI(bar_closes, 14)}
            expected["macd"], expected["macd_signal"], expected["macd_hist"] = talib.MACD(bar_closes, 12, 26, 9)
            for name, values in expected.items():
                ours = stream[(symbol, tf, name)][columns]
                valid = ~np.isnan(values)
                if name == "rsi_14":
                    valid &= values != 0.0  # a flat stretch: TA-Lib prints 0, metrics.md says null
                assert not np.isnan(ours[valid]).any(), f"{symbol} {tf} {name}: null where TA-Lib has a value"
                floor = MACD_FLOOR * bar_closes[valid] if name.startswith("macd") else 0.0
                error = np.abs(ours[valid] - values[valid]) / (np.abs(values[valid]) + floor)
                key = "rsi_14" if name == "rsi_14" else "macd"
                against_talib[key] = max(against_talib[key], float(error.max(initial=0.0)))
                if key == "macd":  # the absolute error in units of the price
                    of_price = np.abs(ours[valid] - values[valid]) / bar_closes[valid]
                    against_talib["macd_of_price"] = max(
                        against_talib["macd_of_price"], float(of_price.max(initial=0.0))
                    )
                compared += int(valid.sum())
    print(f"stream vs backtest: {against_backtest}; stream vs TA-Lib ({compared} values): {against_talib}")
    assert against_talib["rsi_14"] <= REL and against_talib["macd"] <= REL, against_talib
    # Every timeframe had values to compare, 1d MACD included (34 days of bars).
    assert all(not np.isnan(stream[(s, "1d", "macd_signal")]).all() for s in symbols)
    assert compared > 400_000
