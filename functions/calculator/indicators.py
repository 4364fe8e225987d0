"""RSI, MACD and Bollinger Bands over many series at once, with TA-Lib's conventions (metrics.md).

Each function takes a 2-D array of closes, one series per row, left-aligned: row r's bars are
``closes[r, :n[r]]``, oldest first, and what follows is padding (any finite value). Left alignment puts
every series' warm-up on the same columns, so the recursions run as one loop over the bar index with
numpy operations across all rows, and no per-series Python. Outputs are NaN where TA-Lib has no value.

The recursions use TA-Lib's own arithmetic (same seeds, same update formulas, same order), so they
agree with ``talib`` to rounding (about 1e-14 relative on real data).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]

RSI_PERIOD = 14
MACD_FAST, MACD_SLOW, MACD_SIGNAL = 12, 26, 9
BB_PERIOD, BB_DEVIATIONS = 20, 2.0

# First column with a value (TA-Lib's lookback) per indicator.
RSI_LOOKBACK = RSI_PERIOD
MACD_LOOKBACK = MACD_SLOW - 1 + MACD_SIGNAL - 1
BB_LOOKBACK = BB_PERIOD - 1


def rsi(closes: FloatArray, period: int = RSI_PERIOD) -> FloatArray:
    """Return Wilder's RSI of every row; NaN before ``period`` and where average gain + loss is 0.

    Seeded by the simple averages of the first ``period`` gains and losses, like TA-Lib's RSI.
    """
    return rsi_with_state(closes, period)[0]


def rsi_with_state(closes: FloatArray, period: int = RSI_PERIOD) -> tuple[FloatArray, FloatArray, FloatArray]:
    """Return (RSI, average gain, average loss) of every row, each (rows, columns); NaN before ``period``."""
    rows, length = closes.shape
    out = np.full((rows, length), np.nan)
    if length <= period:
        return out, out.copy(), out.copy()
    gains, losses = _rsi_averages_by_bar(np.ascontiguousarray(closes.T), period)
    out[:, period:] = _rsi_value(gains[period:], losses[period:]).T
    return out, np.ascontiguousarray(gains.T), np.ascontiguousarray(losses.T)


def _rsi_averages_by_bar(by_bar: FloatArray, period: int) -> tuple[FloatArray, FloatArray]:
    """Return Wilder's average gain and loss, (columns, rows) with one row per bar; NaN before ``period``."""
    length, rows = by_bar.shape
    change = np.diff(by_bar, axis=0)  # change[i - 1] = close[i] - close[i - 1]
    up = np.maximum(change, 0.0)
    down = -np.minimum(change, 0.0)
    gains = np.full((length, rows), np.nan)
    losses = np.full((length, rows), np.nan)
    if length <= period:
        return gains, losses
    gain = _running_sum(up, 0, period) / period
    loss = _running_sum(down, 0, period) / period
    gains[period], losses[period] = gain, loss
    for i in range(period + 1, length):
        # TA-Lib's order: scale by period - 1, add the change, divide by period (in place: no temporaries).
        np.multiply(gain, period - 1, out=gain)
        np.add(gain, up[i - 1], out=gain)
        np.divide(gain, period, out=gain)
        np.multiply(loss, period - 1, out=loss)
        np.add(loss, down[i - 1], out=loss)
        np.divide(loss, period, out=loss)
        gains[i], losses[i] = gain, loss
    return gains, losses


def rsi_step(gain: FloatArray, loss: FloatArray, change: FloatArray, period: int = RSI_PERIOD) -> FloatArray:
    """Advance average gain and loss (in place) by one bar's change; return the RSI after it.

    The same operations, in the same order, as one step of ``rsi``: results are identical.
    """
    np.multiply(gain, period - 1, out=gain)
    np.add(gain, np.maximum(change, 0.0), out=gain)
    np.divide(gain, period, out=gain)
    np.multiply(loss, period - 1, out=loss)
    np.add(loss, -np.minimum(change, 0.0), out=loss)
    np.divide(loss, period, out=loss)
    return _rsi_value(gain, loss)


def _rsi_value(gain: FloatArray, loss: FloatArray) -> FloatArray:
    total = gain + loss
    with np.errstate(invalid="ignore", divide="ignore"):
        # metrics.md: a flat series has no RSI (TA-Lib prints 0 there).
        return np.where(total != 0.0, 100.0 * (gain / total), np.nan)


def macd(
    closes: FloatArray, fast: int = MACD_FAST, slow: int = MACD_SLOW, signal: int = MACD_SIGNAL
) -> tuple[FloatArray, FloatArray, FloatArray]:
    """Return (macd, signal, histogram) of every row, NaN before column ``slow + signal - 2``.

    TA-Lib's seeding: the slow EMA starts from the SMA of the first ``slow`` closes, the fast EMA from
    the SMA of the ``fast`` closes ending on the same bar, the signal from the mean of the first
    ``signal`` MACD values.
    """
    line, signal_line, hist, _, _ = macd_with_state(closes, fast, slow, signal)
    return line, signal_line, hist


def macd_with_state(
    closes: FloatArray, fast: int = MACD_FAST, slow: int = MACD_SLOW, signal: int = MACD_SIGNAL
) -> tuple[FloatArray, FloatArray, FloatArray, FloatArray, FloatArray]:
    """Return (macd, signal, histogram, slow EMA, fast EMA) of every row, each (rows, columns).

    The signal column holds its EMA from its first value on; the EMAs from column ``slow - 1`` on.
    """
    line, sig, slows, fasts = _macd_by_bar(np.ascontiguousarray(closes.T), fast, slow, signal)
    macd_line = np.ascontiguousarray(line.T)
    signal_line = np.ascontiguousarray(sig.T)
    return (
        macd_line,
        signal_line,
        macd_line - signal_line,
        np.ascontiguousarray(slows.T),
        np.ascontiguousarray(fasts.T),
    )


def _macd_by_bar(
    by_bar: FloatArray, fast: int, slow: int, signal: int
) -> tuple[FloatArray, FloatArray, FloatArray, FloatArray]:
    """Return (macd, signal, slow EMA, fast EMA), (columns, rows) with one row per bar."""
    length, rows = by_bar.shape
    line = np.full((length, rows), np.nan)
    sig = np.full((length, rows), np.nan)
    slows = np.full((length, rows), np.nan)
    fasts = np.full((length, rows), np.nan)
    seed_at = slow - 1
    signal_at = seed_at + signal - 1
    if length > seed_at:
        k_slow, k_fast = 2.0 / (slow + 1), 2.0 / (fast + 1)
        slow_ema = _running_sum(by_bar, 0, slow) / slow
        fast_ema = _running_sum(by_bar, slow - fast, slow) / fast
        np.subtract(fast_ema, slow_ema, out=line[seed_at])
        slows[seed_at], fasts[seed_at] = slow_ema, fast_ema
        scratch = np.empty(rows)
        for i in range(seed_at + 1, length):
            _ema_step(slow_ema, by_bar[i], k_slow, scratch)
            _ema_step(fast_ema, by_bar[i], k_fast, scratch)
            np.subtract(fast_ema, slow_ema, out=line[i])
            slows[i], fasts[i] = slow_ema, fast_ema
        if length > signal_at:
            value = _running_sum(line, seed_at, signal_at + 1) / signal
            sig[signal_at] = value
            for i in range(signal_at + 1, length):
                _ema_step(value, line[i], 2.0 / (signal + 1), scratch)
                sig[i] = value
        line[:signal_at] = np.nan
    return line, sig, slows, fasts


@dataclass(frozen=True)
class RecursionsAt:
    """RSI and MACD at each row's last bar, and the recursion state at its last closed bar (the one before)."""

    rsi: FloatArray
    macd: FloatArray
    macd_signal: FloatArray
    macd_hist: FloatArray
    closed_state: FloatArray  # (rows, 6): average gain, average loss, close, slow EMA, fast EMA, signal EMA


def recursions_at(closes: FloatArray, lengths: IntArray) -> RecursionsAt:
    """Return what the calculator needs of RSI and MACD for left-aligned rows of ``lengths`` bars.

    The same recursions as ``rsi_with_state`` and ``macd_with_state`` (identical numbers), but only
    the values at each row's last and last-closed bar are read out, so the full histories are never
    transposed or turned into RSI values.
    """
    by_bar = np.ascontiguousarray(closes.T)
    gains, losses = _rsi_averages_by_bar(by_bar, RSI_PERIOD)
    line, sig, slows, fasts = _macd_by_bar(by_bar, MACD_FAST, MACD_SLOW, MACD_SIGNAL)
    rows = np.arange(closes.shape[0])
    last = np.maximum(lengths - 1, 0)
    closed = np.maximum(lengths - 2, 0)
    empty = lengths <= 0
    rsi = np.where(empty, np.nan, _rsi_value(gains[last, rows], losses[last, rows]))
    macd_line = np.where(empty, np.nan, line[last, rows])
    signal_line = np.where(empty, np.nan, sig[last, rows])
    state = np.stack(
        [a[closed, rows] for a in (gains, losses, by_bar, slows, fasts, sig)],
        axis=1,
    )
    return RecursionsAt(rsi, macd_line, signal_line, macd_line - signal_line, state)


def macd_step(
    slow_ema: FloatArray,
    fast_ema: FloatArray,
    signal_ema: FloatArray,
    close: FloatArray,
    periods: tuple[int, int, int] = (MACD_FAST, MACD_SLOW, MACD_SIGNAL),
) -> tuple[FloatArray, FloatArray, FloatArray]:
    """Advance the three EMAs (in place) by one bar's close; return (macd, signal, histogram) after it.

    The same operations, in the same order, as one step of ``macd``: results are identical.
    """
    fast, slow, signal = periods
    scratch = np.empty_like(close)
    _ema_step(slow_ema, close, 2.0 / (slow + 1), scratch)
    _ema_step(fast_ema, close, 2.0 / (fast + 1), scratch)
    line = fast_ema - slow_ema
    _ema_step(signal_ema, line, 2.0 / (signal + 1), scratch)
    return line, signal_ema.copy(), line - signal_ema


def _ema_step(ema: FloatArray, close: FloatArray, k: float, scratch: FloatArray) -> None:
    # TA-Lib's update ((close - ema) * k) + ema, in place.
    np.subtract(close, ema, out=scratch)
    np.multiply(scratch, k, out=scratch)
    np.add(scratch, ema, out=ema)


def _running_sum(by_bar: FloatArray, start: int, stop: int) -> FloatArray:
    # Left to right, like TA-Lib's seed loops (np.sum would sum pairwise and round differently).
    total = np.zeros(by_bar.shape[1])
    for i in range(start, stop):
        total += by_bar[i]
    return total


def bbands_last(
    closes: FloatArray, lengths: IntArray, period: int = BB_PERIOD, deviations: float = BB_DEVIATIONS
) -> tuple[FloatArray, FloatArray, FloatArray]:
    """Return (upper, middle, lower) at each row's last bar, NaN for rows shorter than ``period``.

    Middle is the SMA of the last ``period`` closes; the bands are ``deviations`` population
    standard deviations (ddof=0) away.
    """
    rows = closes.shape[0]
    ok = lengths >= period
    start = np.where(ok, lengths - period, 0)
    window = np.take_along_axis(closes, start[:, None] + np.arange(period)[None, :], axis=1)
    middle = window.sum(axis=1) / period
    deviation = np.sqrt(((window - middle[:, None]) ** 2).sum(axis=1) / period)
    nan = np.full(rows, np.nan)
    return (
        np.where(ok, middle + deviations * deviation, nan),
        np.where(ok, middle, nan),
        np.where(ok, middle - deviations * deviation, nan),
    )


def bbands(closes: FloatArray, period: int = BB_PERIOD, deviations: float = BB_DEVIATIONS) -> tuple[FloatArray, ...]:
    """Return (upper, middle, lower) at every column (for tests and the benchmark), NaN before ``period - 1``."""
    rows, length = closes.shape
    uppers, middles, lowers = (np.full((rows, length), np.nan) for _ in range(3))
    for end in range(period, length + 1):
        u, m, lo = bbands_last(closes[:, :end], np.full(rows, end, dtype=np.int64), period, deviations)
        uppers[:, end - 1], middles[:, end - 1], lowers[:, end - 1] = u, m, lo
    return uppers, middles, lowers


def last_values(series: FloatArray, lengths: IntArray) -> FloatArray:
    """Return each row's value at its last bar (column ``lengths - 1``); NaN for empty rows."""
    column = np.maximum(lengths - 1, 0)
    values = np.take_along_axis(series, column[:, None], axis=1)[:, 0]
    return np.where(lengths > 0, values, np.nan)
