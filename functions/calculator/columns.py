"""Every metric of metrics.md over whole columns of time: the backtest's calculator.

The streaming calculator (``compute``) computes one minute at a time from the rings. Here a block of
whole UTC days of many symbols is one (symbols, minutes) grid and each metric is computed for every
minute of it at once: window sums as differences of compensated running sums, window highs and lows
with sliding extremes, RSI and MACD as recursions run once along each symbol's bars from its first
bar (``carried``), Bollinger Bands from running moments. What one block needs of the blocks before it
(the ``CONTEXT_MINUTES`` before it in the grid, the recursions' state, the last closed bars, the 1h
opens of the last 14 days) is carried by ``ColumnCalculator``, so memory is bounded by the block.

The values are those of the streaming calculator to rounding (windows, bands) and equal TA-Lib over
the whole history (RSI, MACD): tests/functions/calculator/test_columns.py compares them.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from functions.calculator import carried, formulas, indicators
from functions.calculator.compute import left_align
from screener.events.models import BAR_TIMEFRAMES, MINUTE_MS, WINDOWS

FloatArray = npt.NDArray[np.float64]
BoolArray = npt.NDArray[np.bool_]
IntArray = npt.NDArray[np.int64]

DAY_MINUTES = 1440
HOUR_MINUTES = 60
# The 1d window and the day before it (its volume ratio): the minutes a block needs before its first.
CONTEXT_MINUTES = 2 * max(WINDOWS.values())
# change_14d reads the open of the 1h bar this many bars before the one containing t.
CHANGE_14D_HOURS_BACK = 335
BB_CLOSED = indicators.BB_PERIOD - 1  # closed bars in a band's window (the forming bar is the last)


@dataclass(frozen=True)
class MinuteGrid:
    """Candles of S symbols on a dense minute grid, ``CONTEXT_MINUTES`` of context then whole days.

    Each array is (S, W); column 0 is minute ``first`` (ms). Where ``present`` is False the minute has
    no candle: its high is -inf, low +inf, volumes 0 (each reduction's neutral value), open and close
    anything finite.
    """

    first: int
    open: FloatArray
    high: FloatArray
    low: FloatArray
    close: FloatArray
    volume: FloatArray
    quote_volume: FloatArray
    present: BoolArray

    @staticmethod
    def of(first: int, values: FloatArray, present: BoolArray) -> MinuteGrid:
        """Return the grid of ``values`` (6, S, W): open, high, low, close, volume, quote volume."""
        o, h, lo, c, v, q = values
        return MinuteGrid(first, o, h, lo, c, v, q, present)

    @property
    def block_start(self) -> int:
        """Return the open time of the block's first minute (after the context)."""
        return self.first + CONTEXT_MINUTES * MINUTE_MS

    @property
    def minutes(self) -> int:
        """Return the minutes of the block (without the context)."""
        return int(self.present.shape[1]) - CONTEXT_MINUTES


@dataclass(frozen=True)
class ColumnMetrics:
    """Every metric of S symbols at every minute of a block, each (S, T); NaN where not computable.

    Shaped like ``compute.MetricsArrays`` with a time axis: ``windows[name][field]`` (coverage
    included), ``indicators[timeframe][field]``, ``fibonacci[level]``. ``present`` says which
    minutes have a candle (the others hold junk and are never evaluated).
    """

    first: int
    present: BoolArray
    last_price: FloatArray
    change_14d: FloatArray
    windows: dict[str, dict[str, FloatArray]]
    fibonacci: dict[str, FloatArray]
    indicators: dict[str, dict[str, FloatArray]]
    full_coverage: frozenset[str] = frozenset()  # windows known to hold every minute everywhere (coverage 1)

    def minute(self, column: int) -> int:
        """Return the open time of column ``column``."""
        return self.first + column * MINUTE_MS


@dataclass
class _BarCarry:
    """One timeframe's carry between blocks: the recursion state and the last closed bars' closes."""

    state: carried.CarriedState
    tail: FloatArray  # (S, BB_CLOSED) closes of the last closed bars, oldest first, NaN before the first


@dataclass
class ColumnCalculator:
    """Compute blocks of one fixed list of symbols, in time order, carrying state from block to block."""

    symbols: list[str]
    _bars: dict[str, _BarCarry] = field(init=False)
    _hour_opens: FloatArray = field(init=False)  # (S, hours) opens of the 1h bars before the block
    _hours_first: int = field(init=False, default=0)  # hour number of column 0 of _hour_opens
    _next_block: int | None = field(init=False, default=None)

    def __post_init__(self) -> None:
        rows = len(self.symbols)
        self._bars = {
            tf: _BarCarry(carried.CarriedState.empty(rows), np.full((rows, BB_CLOSED), np.nan)) for tf in BAR_TIMEFRAMES
        }
        self._hour_opens = np.empty((rows, 0))

    def compute(self, grid: MinuteGrid, rows: IntArray | None = None) -> ColumnMetrics:
        """Return the metrics of every minute of ``grid``'s block (the block after the previous one).

        ``rows`` (indices into ``symbols``, ascending) says which symbols the grid holds when not all:
        the others have no candle in the block, so their bars and windows have nothing to compute
        and their state carries over as it is.
        """
        self._advance(grid.block_start, grid.minutes)
        if rows is None:
            return self._compute(grid)
        full_bars, full_opens = self._bars, self._hour_opens
        self._bars = {
            tf: _BarCarry(carried.CarriedState(c.state.values[:, rows]), c.tail[rows]) for tf, c in full_bars.items()
        }
        self._hour_opens = full_opens[rows]
        try:
            metrics = self._compute(grid)
        finally:
            subset_bars, subset_opens = self._bars, self._hour_opens
            self._bars, self._hour_opens = full_bars, full_opens
        for tf, carry in full_bars.items():
            carry.state.values[:, rows] = subset_bars[tf].state.values
            carry.tail[rows] = subset_bars[tf].tail
        # The others' 1h opens move on by the block's hours, all missing (``_hours_first`` has moved already).
        missing = np.full((len(self.symbols), grid.minutes // HOUR_MINUTES), np.nan)
        history = np.concatenate((full_opens, missing), axis=1)[:, -(CHANGE_14D_HOURS_BACK + 1) :]
        history[rows] = subset_opens
        self._hour_opens = history
        return metrics

    def skip(self, block_start: int, minutes: int) -> None:
        """Carry the state over a block in which no symbol has a candle."""
        self._advance(block_start, minutes)
        if self._hour_opens.shape[1] == 0:
            self._hours_first = block_start // (HOUR_MINUTES * MINUTE_MS)
        self._skip_hours(minutes)

    def _advance(self, start: int, minutes: int) -> None:
        if start % (DAY_MINUTES * MINUTE_MS) or minutes % DAY_MINUTES:
            raise ValueError("a block is whole UTC days (every bar lies inside one block)")
        if self._next_block is not None and start != self._next_block:
            raise ValueError(f"blocks must follow each other: expected {self._next_block}, got {start}")
        self._next_block = start + minutes * MINUTE_MS

    def _skip_hours(self, minutes: int) -> None:
        """Append the block's hours to every row's 1h opens as missing (as ``_change_14d`` keeps them)."""
        missing = np.full((len(self.symbols), minutes // HOUR_MINUTES), np.nan)
        history = np.concatenate((self._hour_opens, missing), axis=1)
        self._hour_opens = history[:, -(CHANGE_14D_HOURS_BACK + 1) :]
        self._hours_first += history.shape[1] - self._hour_opens.shape[1]

    def _compute(self, grid: MinuteGrid) -> ColumnMetrics:
        start = grid.block_start
        block = slice(CONTEXT_MINUTES, None)
        # Views of the grid: each row's minutes are contiguous, so every timeframe's (S, bars, minutes) is a view too.
        close = grid.close[:, block]
        present = grid.present[:, block]
        complete = bool(present.all())
        windows = rolling_windows(grid)
        day = windows["1d"]
        return ColumnMetrics(
            first=start,
            present=present,
            last_price=close,
            change_14d=self._change_14d(grid, close, present, complete),
            windows=windows,
            fibonacci=formulas.fibonacci(day["high"], day["low"], day["close"]),
            indicators={
                tf: self._indicators(close, present, complete, tf, minutes) for tf, minutes in BAR_TIMEFRAMES.items()
            },
            full_coverage=frozenset(WINDOWS) if bool(grid.present.all()) else frozenset(),
        )

    def _change_14d(self, grid: MinuteGrid, close: FloatArray, present: BoolArray, complete: bool) -> FloatArray:
        """Return close over the open of the 1h bar 335 bars before each minute's, as a change in percent."""
        rows, minutes = close.shape
        opens = grid.open[:, CONTEXT_MINUTES:].reshape(rows, -1, HOUR_MINUTES)
        if complete:  # every bar opens at its first minute
            block_opens = opens[..., 0]
        else:
            by_hour = present.reshape(rows, -1, HOUR_MINUTES)
            first = np.argmax(by_hour, axis=2)  # the earliest minute merged gives a bar its open
            bar_open = np.take_along_axis(opens, first[..., None], axis=2)[..., 0]
            block_opens = np.where(by_hour.any(axis=2), bar_open, np.nan)
        block_hour = grid.block_start // (HOUR_MINUTES * MINUTE_MS)
        if self._hour_opens.shape[1] == 0:
            self._hours_first = block_hour
        history = np.concatenate((self._hour_opens, block_opens), axis=1)
        # Column of each minute's reference bar in ``history``: before the history began is NaN.
        hour = block_hour + np.arange(minutes) // HOUR_MINUTES - CHANGE_14D_HOURS_BACK - self._hours_first
        known = hour >= 0
        reference = np.full((rows, minutes), np.nan)
        reference[:, known] = history[:, hour[known]]
        self._hour_opens = history[:, -(CHANGE_14D_HOURS_BACK + 1) :]
        self._hours_first = block_hour + block_opens.shape[1] - self._hour_opens.shape[1]
        return formulas.change_percent(close, reference)

    def _indicators(
        self, block_close: FloatArray, present: BoolArray, complete: bool, timeframe: str, minutes: int
    ) -> dict[str, FloatArray]:
        """Return RSI, MACD and Bollinger Bands of the clock-aligned bars of ``minutes`` at every minute.

        ``block_close`` and ``present`` are the block's minutes (S, T); ``complete`` says all are present.
        """
        carry = self._bars[timeframe]
        rows = present.shape[0]
        # (S, bars, minutes of a bar): every bar's minutes in a row, so values broadcast per bar.
        close = block_close.reshape(rows, -1, minutes)
        if minutes == 1:
            exists, bar_close = present, close[..., 0]
        elif complete:  # every bar closes at its last minute
            exists, bar_close = np.ones(close.shape[:2], dtype=bool), close[..., -1]
        else:
            by_bar = present.reshape(rows, -1, minutes)
            exists = np.asarray(by_bar.any(axis=2))
            latest = minutes - 1 - np.argmax(by_bar[..., ::-1], axis=2)  # a bar closes at its latest minute
            bar_close = np.take_along_axis(close, latest[..., None], axis=2)[..., 0]
        closes, lengths = left_align(bar_close, exists)
        states = carried.advance(carry.state, closes, lengths)
        # Each bar numbered among the bars that exist: the state before it is the one its minutes step from.
        if bool(exists.all()):
            rank: IntArray | None = None
            before = states[:, :, :-1]
        else:
            rank = np.maximum(np.cumsum(exists, axis=1) - 1, 0)
            before = np.take_along_axis(states, rank[None], axis=2)
        values = carried.forming_values(before, close)
        upper, middle, lower = _bands(carry.tail, closes, rank, before[carried.BARS], close)
        ends = np.take_along_axis(states, lengths[None, :, None], axis=2)[..., 0]
        carry.state = carried.CarriedState(ends)
        extended = np.concatenate((carry.tail, closes), axis=1)
        carry.tail = np.take_along_axis(extended, lengths[:, None] + np.arange(BB_CLOSED)[None, :], axis=1)
        flat = (rows, -1)
        return {
            "rsi_14": values.rsi.reshape(flat),
            "macd": values.macd.reshape(flat),
            "macd_signal": values.signal.reshape(flat),
            "macd_hist": values.hist.reshape(flat),
            "bb_upper": upper.reshape(flat),
            "bb_middle": middle.reshape(flat),
            "bb_lower": lower.reshape(flat),
        }


def _bands(
    tail: FloatArray, closes: FloatArray, rank: IntArray | None, closed_bars: FloatArray, close: FloatArray
) -> tuple[FloatArray, FloatArray, FloatArray]:
    """Return Bollinger Bands (S, bars, minutes) over the BB_CLOSED bars before each minute's bar and its close.

    The moments of the closed bars are taken about the last closed close ``a`` (small numbers, so
    no cancellation), once per bar; each minute adds its close: mean = a + (D1 + d) / 20, variance =
    (D2 + d^2) / 20 - ((D1 + d) / 20)^2 with d = close - a.
    """
    extended = np.concatenate((tail, closes), axis=1)
    positions = closes.shape[1] + 1
    anchor = extended[:, BB_CLOSED - 1 : BB_CLOSED - 1 + positions]
    first, second = _moments(extended, anchor)
    if rank is None:
        a, first, second = anchor[:, :-1], first[:, :-1], second[:, :-1]
    else:
        a, first, second = (np.take_along_axis(x, rank, axis=1) for x in (anchor, first, second))
    # Three fresh arrays (d, then the middle and the upper band); the others reuse them once read.
    d = close - a[..., None]
    period = float(indicators.BB_PERIOD)
    offset = first[..., None] + d
    offset /= period  # the mean's distance from a
    upper = np.empty_like(offset)
    with np.errstate(invalid="ignore"):
        variance = np.multiply(d, d, out=d)
        variance += second[..., None]
        variance /= period
        variance -= np.multiply(offset, offset, out=upper)
        np.maximum(variance, 0.0, out=variance)
        spread = np.sqrt(variance, out=variance)
        spread *= indicators.BB_DEVIATIONS
    middle = offset
    middle += a[..., None]
    invalid = (closed_bars < BB_CLOSED)[..., None]
    np.add(middle, spread, out=upper)
    lower = np.subtract(middle, spread, out=spread)
    if invalid.any():  # a series' first bars
        for band in (upper, middle, lower):
            np.copyto(band, np.nan, where=np.broadcast_to(invalid, band.shape))
    return upper, middle, lower


def _moments(extended: FloatArray, anchor: FloatArray) -> tuple[FloatArray, FloatArray]:
    """Return the sums of ``x - a`` and ``(x - a)^2`` over the BB_CLOSED closes ending at each anchor ``a``.

    Summed in the closes' order from the oldest. The newest is the anchor itself (a deviation of
    exactly 0, adding nothing), and the sums start from the oldest's terms rather than from 0 + them.
    """
    positions = anchor.shape[1]
    first = np.subtract(extended[:, :positions], anchor)
    second = np.multiply(first, first)
    deviation = np.empty_like(first)
    for k in range(1, BB_CLOSED - 1):
        np.subtract(extended[:, k : k + positions], anchor, out=deviation)
        first += deviation
        np.multiply(deviation, deviation, out=deviation)
        second += deviation
    return first, second


def rolling_windows(grid: MinuteGrid) -> dict[str, dict[str, FloatArray]]:
    """Return each window's values (metrics.md, "Rolling windows") at every minute of the block."""
    width = grid.present.shape[1]
    block = slice(CONTEXT_MINUTES, width)
    # Gap-free grids (the usual case) skip the counts: every window holds all its minutes.
    complete = bool(grid.present.all())
    counts = None if complete else _running_count(grid.present)
    quote, base = RunningSum(grid.quote_volume), RunningSum(grid.volume)
    if complete:
        after = None
    else:
        # The first present minute at or after each column (the last column where none is): a window's open.
        columns = np.arange(width)
        after = np.minimum.accumulate(np.where(grid.present, columns, width - 1)[:, ::-1], axis=1)[:, ::-1]
    # Every window's minutes lie in the columns from ``reach`` on.
    reach = CONTEXT_MINUTES - max(WINDOWS.values()) + 1
    highs = SlidingExtremes(grid.high[:, reach:], np.maximum)
    lows = SlidingExtremes(grid.low[:, reach:], np.minimum)
    out = {}
    for name, n in WINDOWS.items():
        # Windows ending at the block's minutes and, for the volume ratio, the n minutes before them.
        ending = slice(CONTEXT_MINUTES - n, width)
        volume = quote.trailing(n, ending)
        oldest = slice(CONTEXT_MINUTES - n + 1, width - n + 1)  # each block minute's window's first minute
        count: IntArray | int
        before_count: IntArray | int
        if counts is None or after is None:
            count = before_count = n
            open_n = grid.open[:, oldest]
        else:
            both = counts[:, ending.start + 1 : width + 1] - counts[:, ending.start + 1 - n : width + 1 - n]
            count, before_count = both[:, n:], both[:, :-n]
            open_n = np.take_along_axis(grid.open, after[:, oldest], axis=1)
        out[name] = formulas.window_values(
            n,
            count=count,
            open_n=open_n,
            high=highs.ending(n, CONTEXT_MINUTES - reach),
            low=lows.ending(n, CONTEXT_MINUTES - reach),
            close=grid.close[:, block],
            volume=volume[:, n:],
            base_volume=base.trailing(n, block),
            before_volume=volume[:, :-n],
            before_count=before_count,
        )
    return out


class SlidingExtremes:
    """Sliding maxima (or minima) of each row over windows of any length, built by doubling.

    The extreme of the ``a + b`` values ending at a column is that of the ``a`` ending there and the
    ``b`` ending ``a`` columns before: each length is one pass over the row from lengths already
    built (1, 2, 4, 5, 10, 15, 30, 60, ... for the windows of metrics.md). Extremes are exact, so the
    values are those of any other sliding extreme.
    """

    def __init__(self, values: FloatArray, func: np.ufunc) -> None:
        self._func = func
        # Length n -> the extremes of the n values ending at each column from n - 1 on (index j: column j + n - 1).
        self._spans: dict[int, FloatArray] = {1: values}

    def ending(self, n: int, start: int) -> FloatArray:
        """Return the extremes of the ``n`` values ending at each column from ``start`` on."""
        return self._span(n)[:, start - n + 1 :]

    def _span(self, n: int) -> FloatArray:
        found = self._spans.get(n)
        if found is not None:
            return found
        a = max(length for length in self._spans if length <= n)
        if 2 * a <= n:
            self._join(a, a)
        else:
            self._join(a, n - a)
        return self._span(n)

    def _join(self, a: int, b: int) -> None:
        longer, shorter = self._span(a), self._span(b)
        width = longer.shape[1] - b
        self._spans[a + b] = self._func(longer[:, b:], shorter[:, :width])


def _running_count(present: BoolArray) -> IntArray:
    counts = np.zeros((present.shape[0], present.shape[1] + 1), dtype=np.int64)
    np.cumsum(present, axis=1, out=counts[:, 1:])
    return counts


class RunningSum:
    """Running sums of each row kept to about twice float64's precision, for window sums by difference.

        ``high`` is the plain running sum; ``low`` the running sum of each step's rounding error (exact by
        Knuth's TwoSum), so ``high + low`` is the exact running sum to about 2**-100 relative. A window's
        sum is the difference of two of them, itself split into its rounded value and error: the result
        is the window's exact sum correctly rounded, unless the running total is over about 2**40 times the
    window's (running sums restart with every block).
    """

    def __init__(self, values: FloatArray) -> None:
        rows, width = values.shape
        self.high = np.empty((rows, width + 1))
        self.high[:, 0] = 0.0
        np.cumsum(values, axis=1, out=self.high[:, 1:])
        error = _two_sum_error(self.high[:, :-1], values, self.high[:, 1:])
        self.low = np.empty((rows, width + 1))
        self.low[:, 0] = 0.0
        np.cumsum(error, axis=1, out=self.low[:, 1:])

    def trailing(self, n: int, ending: slice) -> FloatArray:
        """Return the sum of the ``n`` values up to each column of ``ending`` (a slice with a start)."""
        stop = self.high.shape[1] if ending.stop is None else ending.stop + 1
        new, old = slice(ending.start + 1, stop), slice(ending.start + 1 - n, stop - n)
        upper, lower = self.high[:, new], self.high[:, old]
        difference = upper - lower
        correction = self.low[:, new] - self.low[:, old]
        # Running sums of volumes never fall: where the older one is at least half the newer, their
        # difference is exact (Sterbenz), so only the running sums' own errors remain. That fails
        # near the start of the sums: the difference's own error (exactly 0 where it is exact) is
        # taken up to the end of the last span of columns where it may fail. A span is safe when its
        # first older sum is at least half its last newer one (both never fall within it).
        starts = np.arange(0, upper.shape[1], _SPAN)
        ends = np.minimum(starts + _SPAN, upper.shape[1]) - 1
        unsafe = np.flatnonzero(~(lower[:, starts] >= 0.5 * upper[:, ends]).all(axis=0))
        if len(unsafe):
            cut = int(ends[unsafe[-1]]) + 1
            correction[:, :cut] += _two_sum_error(upper[:, :cut], -lower[:, :cut], difference[:, :cut])
        difference += correction
        return difference


# Columns of a window sum checked at once for an exact difference (RunningSum.trailing).
_SPAN = 64


def _two_sum_error(a: FloatArray, b: FloatArray, total: FloatArray) -> FloatArray:
    """Return the rounding error of ``total = fl(a + b)`` exactly (Knuth's TwoSum)."""
    b_virtual = total - a
    a_virtual = total - b_virtual
    np.subtract(a, a_virtual, out=a_virtual)  # the parts a and b lost, in the temporaries' place
    np.subtract(b, b_virtual, out=b_virtual)
    error: FloatArray = np.add(a_virtual, b_virtual, out=a_virtual)
    return error
