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
    out[:, period:] = rsi_value(gains[period:], losses[period:]).T
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
    return rsi_value(gain, loss)


def rsi_value(gain: FloatArray, loss: FloatArray) -> FloatArray:
    """Return the RSI of Wilder's average gain and loss; NaN where both are 0."""
    # metrics.md: a flat series has no RSI (TA-Lib prints 0 there). Both are >= 0, so a zero total
    # is 0 / 0: NaN by itself.
    with np.errstate(invalid="ignore", divide="ignore"):
        value: FloatArray = np.divide(gain, gain + loss)
        value *= 100.0
    return value


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

    The same operations, in the same order, as ``rsi_with_state`` and ``macd_with_state`` (identical
    numbers), with fewer numpy calls per bar and no history kept: the average gain and loss advance
    as one (2, rows) array, the slow, fast and signal EMAs as one (3, rows) array (the signal one bar
    behind, as it needs the MACD of the bar), and each row's values are read out as the loop passes
    its last closed and last bar. Rows run longest first, and each step works on the rows that
    still have bars, so short series cost only their own length.
    """
    rows = closes.shape[0]
    bars = max(int(lengths.max(initial=0)), 1)
    if np.all(lengths[:-1] >= lengths[1:]):
        order = np.arange(rows)  # sorted already (every row full, usually): no reordering copy
        by_bar = np.ascontiguousarray(closes[:, :bars].T)
    else:
        order = np.argsort(-lengths, kind="stable")
        by_bar = np.ascontiguousarray(closes[order, :bars].T)
    sorted_lengths = lengths[order]
    out = _Readout(rows)
    # Only rows long enough for a value run (the others stay NaN): the first ones, as sorted.
    if (count := int(np.count_nonzero(sorted_lengths > RSI_PERIOD))) > 0:
        _rsi_fused(by_bar[:, :count], sorted_lengths[:count], out)
    if (count := int(np.count_nonzero(sorted_lengths >= MACD_SLOW))) > 0:
        _macd_fused(by_bar[:, :count], sorted_lengths[:count], out)
    closed = np.maximum(sorted_lengths - 2, 0)
    empty = sorted_lengths <= 0
    rsi = np.where(empty, np.nan, rsi_value(out.gain, out.loss))
    macd_line = np.where(empty, np.nan, out.line)
    signal_line = np.where(empty, np.nan, out.signal)
    state = np.stack(
        [
            out.closed_gain,
            out.closed_loss,
            by_bar[closed, np.arange(rows)],
            out.closed_slow,
            out.closed_fast,
            out.closed_signal,
        ],
        axis=1,
    )
    back = np.empty_like(order)
    back[order] = np.arange(rows)
    return RecursionsAt(rsi[back], macd_line[back], signal_line[back], (macd_line - signal_line)[back], state[back])


class _Readout:
    """The values ``recursions_at`` reads out per row; NaN until the loop reaches them (as in the full series)."""

    def __init__(self, rows: int) -> None:
        self.gain, self.loss, self.line, self.signal = (np.full(rows, np.nan) for _ in range(4))
        self.closed_gain, self.closed_loss = np.full(rows, np.nan), np.full(rows, np.nan)
        self.closed_slow, self.closed_fast, self.closed_signal = (np.full(rows, np.nan) for _ in range(3))


class _Schedule:
    """For rows sorted by length, longest first: how many rows each step needs, and which it reads out."""

    def __init__(self, lengths: IntArray, steps: int) -> None:
        # The rows with at least i bars are the first ``active[i]``.
        self.active: list[int] = np.searchsorted(-lengths, -np.arange(steps + 2), side="right").tolist()
        self.last = self._rows_at(np.maximum(lengths - 1, 0), steps)
        self.closed = self._rows_at(np.maximum(lengths - 2, 0), steps)

    @staticmethod
    def _rows_at(index: IntArray, steps: int) -> dict[int, slice]:
        # ``index`` falls with the row (lengths are sorted), so each bar's rows are one slice; bars
        # that are no row's are left out.
        bars = np.arange(steps + 1)
        starts = np.searchsorted(-index, -bars, side="left").tolist()
        ends = np.searchsorted(-index, -bars, side="right").tolist()
        return {i: slice(starts[i], ends[i]) for i in range(steps + 1) if ends[i] > starts[i]}


def _rsi_fused(by_bar: FloatArray, lengths: IntArray, out: _Readout) -> None:
    length, rows = by_bar.shape
    # moves[i - 1] = the gain and the loss of the change close[i] - close[i - 1], computed in place.
    moves = np.empty((length - 1, 2, rows))
    gains, losses = moves[:, 0], moves[:, 1]
    np.subtract(by_bar[1:], by_bar[:-1], out=gains)
    np.minimum(gains, 0.0, out=losses)
    np.negative(losses, out=losses)
    np.maximum(gains, 0.0, out=gains)
    average = _running_sum(moves.reshape(length - 1, 2 * rows), 0, RSI_PERIOD).reshape(2, rows) / RSI_PERIOD
    plan = _Schedule(lengths, length)
    live = average
    for i in range(RSI_PERIOD, length):
        if i > RSI_PERIOD:
            n = plan.active[i + 1]  # the rows that have bar i
            if live.shape[1] != n:
                live = average[:, :n]
            # TA-Lib's order: scale by period - 1, add the change, divide by period (in place).
            np.multiply(live, RSI_PERIOD - 1, out=live)
            np.add(live, moves[i - 1, :, :n] if n < rows else moves[i - 1], out=live)
            np.divide(live, RSI_PERIOD, out=live)
        if (at := plan.last.get(i)) is not None:
            out.gain[at], out.loss[at] = average[0, at], average[1, at]
        if (at := plan.closed.get(i)) is not None:
            out.closed_gain[at], out.closed_loss[at] = average[0, at], average[1, at]


def _macd_fused(by_bar: FloatArray, lengths: IntArray, out: _Readout) -> None:
    length, rows = by_bar.shape
    seed_at = MACD_SLOW - 1
    signal_at = seed_at + MACD_SIGNAL - 1
    # The smoothing factors, one per EMA and row: numpy multiplies two arrays of the same shape
    # about twice as fast as it broadcasts a column.
    k = np.repeat([[2.0 / (MACD_SLOW + 1)], [2.0 / (MACD_FAST + 1)], [2.0 / (MACD_SIGNAL + 1)]], rows, axis=1)
    ema = np.zeros((3, rows))  # slow, fast, and the signal of the bar before
    ema[0] = _running_sum(by_bar, 0, MACD_SLOW) / MACD_SLOW
    ema[1] = _running_sum(by_bar, MACD_SLOW - MACD_FAST, MACD_SLOW) / MACD_FAST
    step = np.zeros((3, rows))  # the inputs of a step: close, close, MACD of the bar before
    scratch = np.empty((3, rows))
    line_sum = np.zeros(rows)
    plan = _Schedule(lengths, length)
    views = (step, ema, scratch, k)
    # Step i moves the slow and fast EMAs to bar i and the signal EMA to bar i - 1, on the rows that
    # have bar i - 1; one extra step (i == length) finishes the signal of the last bar.
    for i in range(seed_at, length + 1):
        n = plan.active[i]
        if views[0].shape[1] != n:
            views = (step[:, :n], ema[:, :n], scratch[:, :n], k[:, :n])
        inputs, live, work, factors = views
        if i > seed_at:
            inputs[:2] = by_bar[min(i, length - 1), :n]
            # TA-Lib's EMA update ((input - ema) * k) + ema, on all three at once.
            np.subtract(inputs, live, out=work)
            np.multiply(work, factors, out=work)
            np.add(work, live, out=live)
        if i == signal_at + 1:
            ema[2] = line_sum / MACD_SIGNAL  # the signal's seed, the mean of the first MACD values
        if i > signal_at:
            if (at := plan.last.get(i - 1)) is not None:
                out.signal[at] = ema[2, at]
            if (at := plan.closed.get(i - 1)) is not None:
                out.closed_signal[at] = ema[2, at]
        if i == length:
            break
        np.subtract(live[1], live[0], out=inputs[2])  # the MACD of bar i
        if i <= signal_at:
            line_sum += step[2]
        if i >= signal_at and (at := plan.last.get(i)) is not None:
            out.line[at] = step[2, at]
        if (at := plan.closed.get(i)) is not None:
            out.closed_slow[at], out.closed_fast[at] = ema[0, at], ema[1, at]


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
