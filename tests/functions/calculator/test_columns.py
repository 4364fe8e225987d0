"""The whole-column calculator (the backtest's) against the minute-by-minute one and against TA-Lib.

Windows, pivots, change_14d and bands must equal the streaming calculator's to rounding at every
sampled minute (real klines, with gaps, block boundaries anywhere in the sample). RSI and MACD are
carried from each series' first bar, so they must equal TA-Lib over the whole history, seeds
included, for coins priced from 1e-7 to 1e5.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import pytest

from functions.calculator.columns import CONTEXT_MINUTES, DAY_MINUTES, ColumnCalculator, ColumnMetrics, MinuteGrid
from functions.calculator.compute import compute_arrays
from functions.rules.replay_state import MemoryCandleState
from screener.events.models import BAR_TIMEFRAMES, MINUTE_MS, Candle
from tests.functions.calculator.klines import SET_2025, SET_2026, bar_closes, csv_path, read_candles, with_gaps
from tests.functions.calculator.test_reference import REL, assert_close, check_indicators

DAY_MS = DAY_MINUTES * MINUTE_MS


def grids(candles: dict[str, list[Candle]], days: int) -> Iterator[MinuteGrid]:
    """Yield the blocks of ``days`` days of ``candles`` (all symbols), from the first one's day."""
    first = min(c[0].open_time for c in candles.values())
    last = max(c[-1].open_time for c in candles.values())
    rows = {s: {c.open_time: c for c in cs} for s, cs in candles.items()}
    block = first - first % DAY_MS
    while block <= last:
        start = block - CONTEXT_MINUTES * MINUTE_MS
        width = CONTEXT_MINUTES + days * DAY_MINUTES
        values = np.zeros((6, len(candles), width))
        values[1], values[2] = -np.inf, np.inf
        present = np.zeros((len(candles), width), dtype=bool)
        for r, by_minute in enumerate(rows.values()):
            for k in range(width):
                c = by_minute.get(start + k * MINUTE_MS)
                if c is not None:
                    values[:, r, k] = (c.open, c.high, c.low, c.close, c.volume, c.quote_volume)
                    present[r, k] = True
        yield MinuteGrid.of(start, values, present)
        block += days * DAY_MS


def computed(candles: dict[str, list[Candle]], days: int) -> list[ColumnMetrics]:
    calculator = ColumnCalculator(list(candles))
    return [calculator.compute(grid) for grid in grids(candles, days)]


def at(blocks: Sequence[ColumnMetrics], row: int, minute: int) -> tuple[ColumnMetrics, int]:
    for block in blocks:
        column = (minute - block.first) // MINUTE_MS
        if 0 <= column < block.present.shape[1]:
            return block, column
    raise AssertionError(f"minute {minute} in no block")


@pytest.mark.parametrize(("data_set", "base"), [(SET_2026, "DOTUSDT"), (SET_2025, "BTCUSDT")])
def test_windows_pivots_and_bands_equal_the_streaming_calculator(klines_dir: Path, data_set: str, base: str) -> None:
    candles = with_gaps(read_candles(csv_path(klines_dir, data_set, base), limit=5 * 1440 + 333), seed=7)
    blocks = computed({base: candles}, days=2)
    state = MemoryCandleState()
    rng = np.random.default_rng(11)
    sampled = set(rng.choice(len(candles), size=60, replace=False).tolist()) | {len(candles) - 1}
    compared = 0
    for i, candle in enumerate(candles):
        state.write(candle)
        if i not in sampled:
            continue
        expected = compute_arrays(candle.open_time, [state.state(base)])
        block, column = at(blocks, 0, candle.open_time)
        assert block.present[0, column]
        what = f"{base}@{candle.open_time}"
        for name, window in expected.windows.items():
            for field, value in window.items():
                ours = float(block.windows[name][field][0, column])
                assert_close(ours, None if math.isnan(value[0]) else float(value[0]), REL, f"{what} {name}.{field}")
        for level, value in expected.fibonacci.items():
            ours = float(block.fibonacci[level][0, column])
            assert_close(ours, None if math.isnan(value[0]) else float(value[0]), REL, f"{what} fib {level}")
        change = expected.change_14d[0]
        assert_close(float(block.change_14d[0, column]), None if math.isnan(change) else float(change), REL, what)
        assert float(block.last_price[0, column]) == candle.close
        for tf in BAR_TIMEFRAMES:
            for band in ("bb_upper", "bb_middle", "bb_lower"):
                value = expected.indicators[tf][band][0]
                ours = float(block.indicators[tf][band][0, column])
                assert_close(ours, None if math.isnan(value) else float(value), 1e-12, f"{what} {tf} {band}")
        compared += 1
    assert compared == len(sampled)


@pytest.mark.parametrize("scale", [1e-7, 1.0, 1e5])
def test_rsi_macd_and_bands_equal_talib_over_the_whole_history(klines_dir: Path, scale: float) -> None:
    # Two days with gaps: every timeframe's seeds (RSI's at bar 14, MACD's at 33) fall inside them.
    candles = with_gaps(read_candles(csv_path(klines_dir, SET_2026, "LINKUSDT"), limit=2 * 1440, scale=scale), seed=3)
    blocks = computed({"LINKUSDT": candles}, days=1)
    # The first hour minute by minute (the 1m and 5m seeds), then a sample of the rest.
    sampled = candles[:80] + candles[80::41]
    compared = 0
    for candle in sampled:
        block, column = at(blocks, 0, candle.open_time)
        for tf, minutes in BAR_TIMEFRAMES.items():
            ours = {name: float(values[0, column]) for name, values in block.indicators[tf].items()}
            compared += check_indicators(
                ours, bar_closes(candles, minutes, candle.open_time), f"{tf}@{candle.open_time}"
            )
    assert compared > 1000


def test_blocks_of_any_length_give_the_same_values(klines_dir: Path) -> None:
    candles = {
        base: with_gaps(read_candles(csv_path(klines_dir, SET_2026, base), limit=4 * 1440), seed=5)
        for base in ("ALGOUSDT", "NEARUSDT")
    }
    one, four = computed(candles, days=1), computed(candles, days=4)
    joined = {
        tf: {name: np.concatenate([b.indicators[tf][name] for b in one], axis=1) for name in one[0].indicators[tf]}
        for tf in BAR_TIMEFRAMES
    }
    for tf in BAR_TIMEFRAMES:
        for name, values in joined[tf].items():
            np.testing.assert_array_equal(values, four[0].indicators[tf][name], err_msg=f"{tf} {name}")
    volume = np.concatenate([b.windows["1d"]["volume"] for b in one], axis=1)
    np.testing.assert_allclose(volume, four[0].windows["1d"]["volume"], rtol=1e-15)
