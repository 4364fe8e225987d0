"""The window formulas of metrics.md, on arrays of any shape: shared by the minute-by-minute calculator
(``compute``) and the backtest's whole-column calculator (``columns``), so both compute each value the same way.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]


def window_values(
    n: int,
    *,
    count: IntArray | int,
    open_n: FloatArray,
    high: FloatArray,
    low: FloatArray,
    close: FloatArray,
    volume: FloatArray,
    base_volume: FloatArray,
    before_volume: FloatArray,
    before_count: IntArray | int,
) -> dict[str, FloatArray]:
    """Return a window's values (metrics.md, "Rolling windows") from its reductions.

    ``count`` is the minutes present among the window's ``n``; ``open_n`` the open of the oldest of
    them and ``high``/``low`` their extremes (any value where ``count`` is 0); ``before_volume`` and
    ``before_count`` the quote volume and minutes present of the ``n`` minutes before the window.
    ``count`` and ``before_count`` may be one number for every cell (``n`` on gap-free data).
    """
    # ``where`` only where a condition fails somewhere: on gap-free data none does, and each costs a pass.
    if np.ndim(count) or count < n:
        has = np.asarray(count > 0)
        open_n, high, low = (_where(has, x) for x in (open_n, high, low))
        coverage = np.asarray(count / n, dtype=np.float64)
        if coverage.shape != close.shape:
            coverage = np.broadcast_to(coverage, close.shape).copy()
    else:
        coverage = np.ones(close.shape)
    with np.errstate(invalid="ignore", divide="ignore"):
        vwap = _where(base_volume > 0, volume / base_volume)
        price_change = close / open_n
        price_change -= 1.0
        price_change *= 100.0
        ratio = volume / before_volume
        if np.ndim(before_count) or before_count != n:
            ratio = _where((before_count == n) & (before_volume > 0), ratio)
        else:
            ratio = _where(before_volume > 0, ratio)
        # (close / vwap) * ((close - low) - (high - close)) / (high - low), in that order, fewer temporaries.
        vcp = close / vwap
        spread = close - low
        upper = high - close
        spread -= upper
        vcp *= spread
        np.subtract(high, low, out=upper)
        vcp /= upper
        return {
            "open": open_n,
            "high": high,
            "low": low,
            "close": close,
            "volume": volume,
            "base_volume": base_volume,
            "price_change": price_change,
            "volume_ratio": ratio,
            "vwap": vwap,
            "vcp": _where(high != low, vcp),
            "coverage": coverage,
        }


def _where(condition: npt.NDArray[np.bool_], values: FloatArray) -> FloatArray:
    """Return ``values`` where ``condition`` holds, NaN elsewhere."""
    if condition.all():
        return values
    result: FloatArray = np.where(condition, values, np.nan)
    return result


FIBONACCI_RATIOS: dict[str, float] = {
    "r1": 1.0,
    "r618": 0.618,
    "r382": 0.382,
    "s382": -0.382,
    "s618": -0.618,
    "s1": -1.0,
}


def fibonacci(high: FloatArray, low: FloatArray, close: FloatArray) -> dict[str, FloatArray]:
    """Return the Fibonacci pivot levels of a window (metrics.md) by level name."""
    pivot = (high + low + close) / 3.0
    spread = high - low
    levels = {name: pivot + ratio * spread for name, ratio in FIBONACCI_RATIOS.items()}
    levels["pivot"] = pivot
    return levels


def change_percent(close: FloatArray, reference: FloatArray) -> FloatArray:
    """Return ``(close / reference - 1) * 100`` (change_N, change_14d)."""
    with np.errstate(invalid="ignore", divide="ignore"):
        result: FloatArray = (close / reference - 1.0) * 100.0
    return result
