"""The metrics of metrics.md for many symbols at one minute, vectorised across the symbols.

Everything is a 2-D numpy array, one row per symbol. The 1-minute ring is read in time order for the
minutes ``t - CAPACITY + 1 .. t``: a slot counts only when it holds exactly the minute asked for, so
gaps stay gaps (windows are defined by time, not by count) and minutes after ``t`` are invisible.
That is the determinism rule: the metrics of (symbol, t) depend only on stored minutes up to t.

NaN means "not computable" here; ``to_snapshots`` turns it into null.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from functions.calculator import carried, formulas, indicators
from screener.events.models import (
    BAR_TIMEFRAMES,
    MINUTE_MS,
    WINDOWS,
    Candle,
    MetricsSnapshot,
    minute_close_iso,
)
from state import layout, snapshot_codec
from state.candles import SymbolState

FloatArray = npt.NDArray[np.float64]
BoolArray = npt.NDArray[np.bool_]
IntArray = npt.NDArray[np.int64]

HOUR_MINUTES = 60
FIBONACCI_RATIOS = formulas.FIBONACCI_RATIOS
# The snapshot's field names (one place for them: the stored form lists them too).
FIBONACCI_LEVELS = snapshot_codec.FIBONACCI_LEVELS
INDICATOR_NAMES = snapshot_codec.INDICATOR_NAMES
WINDOW_NAMES = snapshot_codec.WINDOW_NAMES


# The fields of a 1-minute slot that the metrics read: all but ``trades``, the last one.
GATHERED_FIELDS = len(layout.CANDLE_FIELDS) - 1
assert layout.TRADES == GATHERED_FIELDS, "trades must stay the last field of a slot"
# What a missing minute holds in each reduced field: the neutral value of its reduction.
_NEUTRAL = {layout.HIGH: -np.inf, layout.LOW: np.inf, layout.VOLUME: 0.0, layout.QUOTE_VOLUME: 0.0}


@dataclass(frozen=True)
class Minutes:
    """The 1-minute candles of S symbols for the minutes ``t - D + 1 .. t``, oldest first.

    ``columns`` is (GATHERED_FIELDS, S, D), one (S, D) array per field of ``layout.CANDLE_FIELDS`` but
    trades, so every reduction along time runs on contiguous memory. ``present`` (S, D) says which
    minutes are stored. Where a minute is missing, high holds -inf, low +inf and both volumes 0 (each
    reduction's neutral value); open and close hold whatever the slot held. ``day_before_volume`` and
    ``day_before_count`` (S,) are the quote volume and the number of known minutes of t - 2879 ..
    t - 1440, partly from the previous-lap ring, for the 1d volume ratio.
    """

    minute: int
    columns: FloatArray
    present: BoolArray
    day_before_volume: FloatArray
    day_before_count: IntArray

    def column(self, field: int) -> FloatArray:
        """Return one column (S, D) of ``layout.CANDLE_FIELDS`` (not trades)."""
        column: FloatArray = self.columns[field]
        return column


@dataclass(frozen=True)
class BarSeries:
    """The clock-aligned bars of one timeframe: closes (S, INDICATOR_BARS), the forming bar last."""

    closes: FloatArray
    present: BoolArray


@dataclass(frozen=True)
class MetricsArrays:
    """Every metric of S symbols at one minute, as arrays of shape (S,); NaN where not computable."""

    symbols: list[str]
    minute: int
    last_price: FloatArray
    change_14d: FloatArray
    windows: dict[str, dict[str, FloatArray]]  # window name -> metric -> (S,), "coverage" included
    fibonacci: dict[str, FloatArray]
    indicators: dict[str, dict[str, FloatArray]]  # bar timeframe -> indicator -> (S,)
    seeded_on_last_bars: int = 0  # series whose RSI and MACD could not step from the carried state


def gather_minutes(minute: int, states: Sequence[SymbolState], forming: Mapping[str, Candle] | None = None) -> Minutes:
    """Read each symbol's ring in time order for the minutes up to ``minute``.

    ``forming`` maps a symbol to a candle of ``minute`` that is not stored (the forming minute): it
    takes that minute's place, for provisional metrics.
    """
    depth = layout.CAPACITY
    t = minute // MINUTE_MS
    wanted = float(minute) - MINUTE_MS * np.arange(depth - 1, -1, -1, dtype=np.float64)
    columns, previous = _read_rings(states, (t + 1) % depth)
    present = columns[layout.OPEN_TIME] == wanted
    day_before_volume, day_before_count = _day_before(columns, present, previous, wanted)
    missing = ~present
    for field, neutral in _NEUTRAL.items():
        np.copyto(columns[field], neutral, where=missing)
    if forming:
        for row, state in enumerate(states):
            candle = forming.get(state.symbol)
            if candle is not None and candle.open_time == minute:
                columns[:, row, -1] = (
                    candle.open_time, candle.open, candle.high, candle.low, candle.close,
                    candle.volume, candle.quote_volume,
                )  # fmt: skip
                present[row, -1] = True
    return Minutes(minute, columns, present, day_before_volume, day_before_count)


def _read_rings(states: Sequence[SymbolState], oldest: int) -> tuple[FloatArray, FloatArray]:
    """Return the gathered fields (GATHERED_FIELDS, S, D) and previous-lap volumes (S, D) in time order.

    The minutes t - D + 1 .. t are the whole ring read from slot ``oldest`` (the one after t's): a
    rotation, so two block copies per symbol and ring instead of a gather through an index array.
    """
    depth = layout.CAPACITY
    split = depth - oldest
    columns = np.empty((GATHERED_FIELDS, len(states), depth))
    previous = np.empty((len(states), depth))
    for row, state in enumerate(states):
        ring = state.candles.T[:GATHERED_FIELDS]  # contiguous rows when the state is column-major
        columns[:, row, :split] = ring[:, oldest:]
        columns[:, row, split:] = ring[:, :oldest]
        previous[row, :split] = state.previous_quote_volume[oldest:]
        previous[row, split:] = state.previous_quote_volume[:oldest]
    return columns, previous


def _day_before(
    columns: FloatArray, present: BoolArray, previous: FloatArray, wanted: FloatArray
) -> tuple[FloatArray, IntArray]:
    """Return the quote volume and known minutes of t - 2879 .. t - 1440 (the 1d window's predecessor).

    A slot's previous-lap value is the quote volume of the minute one lap before the one it holds.
    So minute w - lap is in the previous lap when the slot holds w, or still in the ring when the
    slot never moved past it; minute w itself is in the previous lap when the ring is already a lap
    ahead (possible only for the oldest MARGIN_MINUTES). Reads the ring's quote volume unmasked.
    """
    depth = layout.CAPACITY
    lap = depth * MINUTE_MS
    held = columns[layout.OPEN_TIME]
    ring_quote = columns[layout.QUOTE_VOLUME]
    # Minutes t - 2879 .. t - 1500: one lap before the ring's columns ``skip`` .. D - 1.
    skip = 2 * depth - 2 * layout.LONGEST_WINDOW_MINUTES
    volume = np.add.reduce(previous[:, skip:], axis=1, where=present[:, skip:])
    count = np.count_nonzero(present[:, skip:], axis=1)
    unknown = np.flatnonzero(np.isnan(volume))  # rows with a present minute whose lap before is unknown
    if len(unknown):
        from_lap = present[unknown, skip:] & ~np.isnan(previous[unknown, skip:])
        volume[unknown] = np.add.reduce(previous[unknown, skip:], axis=1, where=from_lap)
        count[unknown] = np.count_nonzero(from_lap, axis=1)
    in_ring = held[:, skip:] == wanted[skip:] - lap
    if in_ring.any():  # rare: a slot not written for a lap
        volume += np.add.reduce(ring_quote[:, skip:], axis=1, where=in_ring)
        count += np.count_nonzero(in_ring, axis=1)
    # Minutes t - 1499 .. t - 1440: the ring's oldest MARGIN_MINUTES columns, or a lap ahead of them.
    ahead = slice(0, layout.MARGIN_MINUTES)
    lapped = (held[:, ahead] == wanted[ahead] + lap) & ~np.isnan(previous[:, ahead])
    margin = np.where(lapped, previous[:, ahead], np.where(present[:, ahead], ring_quote[:, ahead], 0.0))
    volume += margin.sum(axis=1)
    count += np.count_nonzero(present[:, ahead] | lapped, axis=1)
    return volume, count


# Minutes back from t where a window or the window before one starts (5m: 5 and 10, ... 1d: 1440
# and 2880). Every window, and every window before one, is a run of the segments between two of
# them: each array is reduced once per segment, and the windows combine the segments' results (max,
# min, counts and sums of nested windows) instead of reducing 2,240 columns from scratch. Volumes
# are >= 0, so partial sums change a sum only by rounding (never cancellation).
_BOUNDS = tuple(sorted(set(WINDOWS.values()) | {2 * n for n in WINDOWS.values()}))
assert _BOUNDS[-2] == layout.LONGEST_WINDOW_MINUTES, "the ring's segments end at its last day"
assert _BOUNDS[-1] == 2 * layout.LONGEST_WINDOW_MINUTES, "only the day before the 1d window is outside the ring"


@dataclass(frozen=True)
class _Segment:
    """Every symbol's count of known minutes and their quote volume over ``t - far + 1 .. t - near``."""

    count: IntArray
    quote: FloatArray


@dataclass(frozen=True)
class _RingSegment(_Segment):
    """A segment of the ring's last day, with every reduction a window needs."""

    base: FloatArray
    high: FloatArray
    low: FloatArray
    oldest: IntArray  # column of the oldest present minute (meaningful where count > 0)


@dataclass(frozen=True)
class _Window:
    """The reductions over the minutes ``t - n + 1 .. t``: the newest segments combined."""

    count: IntArray
    oldest: IntArray
    high: FloatArray
    low: FloatArray
    volume: FloatArray
    base_volume: FloatArray

    @staticmethod
    def empty(rows: int) -> _Window:
        """Return the window of no minutes."""
        zero = np.zeros(rows, dtype=np.int64)
        return _Window(zero, zero, np.full(rows, -np.inf), np.full(rows, np.inf), np.zeros(rows), np.zeros(rows))

    def extended(self, older: _RingSegment) -> _Window:
        """Return this window grown by the segment just before it."""
        return _Window(
            self.count + older.count,
            np.where(older.count > 0, older.oldest, self.oldest),
            np.maximum(self.high, older.high),
            np.minimum(self.low, older.low),
            self.volume + older.quote,
            self.base_volume + older.base,
        )


def _ring_segments(m: Minutes) -> list[_RingSegment]:
    """Return the segments of the last day, newest first."""
    depth = m.present.shape[1]
    quote, base = m.column(layout.QUOTE_VOLUME), m.column(layout.VOLUME)
    highs, lows = m.column(layout.HIGH), m.column(layout.LOW)
    out = []
    near = 0
    for far in _BOUNDS[:-1]:
        columns = slice(depth - far, depth - near)
        present = m.present[:, columns]
        out.append(
            _RingSegment(
                count=np.count_nonzero(present, axis=1),
                quote=quote[:, columns].sum(axis=1),
                base=base[:, columns].sum(axis=1),
                high=highs[:, columns].max(axis=1),
                low=lows[:, columns].min(axis=1),
                oldest=depth - far + np.argmax(present, axis=1),
            )
        )
        near = far
    return out


def rolling_windows(m: Minutes) -> dict[str, dict[str, FloatArray]]:
    """Return each window's values (metrics.md, "Rolling windows") by window name."""
    ring = _ring_segments(m)
    segments: list[_Segment] = [*ring, _Segment(m.day_before_count, m.day_before_volume)]
    names = {n: name for name, n in WINDOWS.items()}
    window = _Window.empty(len(m.present))
    out: dict[str, dict[str, FloatArray]] = {}
    for far, segment in zip(_BOUNDS, ring, strict=False):
        window = window.extended(segment)
        if far in names:
            before = segments[_BOUNDS.index(far) + 1 : _BOUNDS.index(2 * far) + 1]
            out[names[far]] = _window_values(m, far, window, before)
    return out


def _window_values(m: Minutes, n: int, window: _Window, before: Sequence[_Segment]) -> dict[str, FloatArray]:
    oldest_open = np.take_along_axis(m.column(layout.OPEN), window.oldest[:, None], axis=1)[:, 0]
    before_volume, before_count = before[0].quote, before[0].count
    for segment in before[1:]:
        before_volume, before_count = before_volume + segment.quote, before_count + segment.count
    return formulas.window_values(
        n,
        count=window.count,
        open_n=oldest_open,
        high=window.high,
        low=window.low,
        close=m.column(layout.CLOSE)[:, -1],
        volume=window.volume,
        base_volume=window.base_volume,
        before_volume=before_volume,
        before_count=before_count,
    )


def fibonacci(day: Mapping[str, FloatArray]) -> dict[str, FloatArray]:
    """Return the Fibonacci pivot levels of the 1d window (metrics.md)."""
    return formulas.fibonacci(day["high"], day["low"], day["close"])


def change_14d(minute: int, states: Sequence[SymbolState], close: FloatArray) -> FloatArray:
    """Return (close_t / open of the 1h bar 335 bars before the one containing t - 1) * 100."""
    ring = layout.BAR_RING_BY_TIMEFRAME["1h"]
    t = minute // MINUTE_MS
    bar = t - t % HOUR_MINUTES - layout.CHANGE_14D_BARS_BACK * HOUR_MINUTES
    slot = (bar // HOUR_MINUTES) % ring.capacity
    rows = np.array([state.bars[ring.timeframe][slot] for state in states]).reshape(len(states), ring.width)
    held = np.floor(rows[:, layout.BAR_TAG] / layout.TAG_MINUTE)
    opens = np.where(held == bar, rows[:, ring.open_column], np.nan)
    return formulas.change_percent(close, opens)


def bar_series(m: Minutes, states: Sequence[SymbolState]) -> dict[str, BarSeries]:
    """Return the last ``INDICATOR_BARS`` clock-aligned bars of each timeframe, the forming one last.

    1m and 5m bars come from the 1-minute ring; the others from their bar rings for the closed bars,
    and the forming bar's close is the close at t (only minutes up to t count).
    """
    count = layout.INDICATOR_BARS
    closes = m.column(layout.CLOSE)
    out = {"1m": BarSeries(closes[:, -count:], m.present[:, -count:])}
    out["5m"] = _bars_from_minutes(m, 5)
    for ring in layout.BAR_RINGS:
        out[ring.timeframe] = _bars_from_ring(m, states, ring)
    return out


def _bars_from_ring(m: Minutes, states: Sequence[SymbolState], ring: layout.BarRing) -> BarSeries:
    count = layout.INDICATOR_BARS
    t = m.minute // MINUTE_MS
    forming = t - t % ring.minutes
    opens = forming - ring.minutes * np.arange(count - 1, 0, -1, dtype=np.int64)
    # One copy of every symbol's ring (concatenate: np.stack costs twice as much in Python), then
    # slices: the closed bars are consecutive slots.
    rings = np.concatenate([state.bars[ring.timeframe] for state in states]).reshape(len(states), ring.capacity, -1)
    first = int(opens[0] // ring.minutes) % ring.capacity
    closes = np.empty((len(states), count))
    present = np.empty((len(states), count), dtype=bool)
    closes[:, :-1] = _slot_run(rings[:, :, ring.close_column], first, count - 1)
    closes[:, -1] = m.column(layout.CLOSE)[:, -1]
    held = np.floor(_slot_run(rings[:, :, layout.BAR_TAG], first, count - 1) / layout.TAG_MINUTE)
    np.equal(held, opens, out=present[:, :-1])
    present[:, -1] = True
    return BarSeries(closes, present)


def _slot_run(values: FloatArray, first: int, count: int) -> FloatArray:
    """Return the columns ``first .. first + count - 1`` of ``values`` modulo its width: two slices at most."""
    head = values[:, first : first + count]
    if head.shape[1] == count:
        return head
    return np.concatenate((head, values[:, : count - head.shape[1]]), axis=1)


def _bars_from_minutes(m: Minutes, minutes: int) -> BarSeries:
    count = layout.INDICATOR_BARS
    depth = m.present.shape[1]
    t = m.minute // MINUTE_MS
    start = depth - 1 - t % minutes - (count - 1) * minutes  # column of the oldest bar's first minute
    minute_closes = m.column(layout.CLOSE)
    # Where every minute is stored (the usual case) a closed bar's close is its last minute's, and
    # the forming bar's is the close at t.
    closes = np.empty((len(m.present), count))
    closes[:, :-1] = minute_closes[:, start + minutes - 1 : depth - 1 : minutes]
    closes[:, -1] = minute_closes[:, -1]
    present = np.ones((len(m.present), count), dtype=bool)
    gaps = np.flatnonzero(~m.present[:, start:].all(axis=1))
    if len(gaps):
        closes[gaps], present[gaps] = _bars_with_gaps(minute_closes[gaps, start:], m.present[gaps, start:], minutes)
    return BarSeries(closes, present)


def _bars_with_gaps(minute_closes: FloatArray, minute_present: BoolArray, minutes: int) -> tuple[FloatArray, BoolArray]:
    """Return the closes and presence of bars of ``minutes`` minutes, from rows of minutes starting on a bar.

    The last bar may have fewer minutes (the forming bar ends at t).
    """
    count = layout.INDICATOR_BARS
    closes = np.zeros((len(minute_closes), count))
    present = np.zeros((len(minute_closes), count), dtype=bool)
    # Minute k of every bar at once (a strided view); later minutes overwrite earlier ones, so each
    # bar ends with the close of its latest present minute.
    for k in range(minutes):
        stored = minute_present[:, k::minutes]
        bars = stored.shape[1]
        np.copyto(closes[:, :bars], minute_closes[:, k::minutes], where=stored)
        present[:, :bars] |= stored
    return closes, present


# The fewest bars with an RSI or MACD value (RSI's first value comes first).
_FIRST_VALUE_LENGTH = min(indicators.RSI_LOOKBACK, indicators.MACD_LOOKBACK) + 1
_RECURSION_NAMES = ("rsi_14", "macd", "macd_signal", "macd_hist")


def bar_indicators(
    series: Mapping[str, BarSeries], minute: int = 0, carries: FloatArray | None = None
) -> tuple[dict[str, dict[str, FloatArray]], int]:
    """Return RSI, MACD and Bollinger Bands at the forming bar of every timeframe, and how many series fell back.

    RSI and MACD step from each symbol's carried state (``carries``, (S, ``layout.CARRY_WIDTH``), the
    rings' ``carry`` records; docs/state.md, "Carried indicators") through the closed bars after it
    to the forming bar: TA-Lib over the symbol's whole history. A series whose carried state does not
    fit this minute (no state, or one past or far before the minute: never in the pipeline, whose
    minutes stay within the margin) runs over its last ``INDICATOR_BARS`` bars instead; the second
    value counts those. Bollinger Bands read the last 20 bars. Missing bars are left out (the series
    is the bars that exist, in time order).
    """
    timeframes = list(series)
    size = len(series[timeframes[0]].closes)
    parts = {tf: slice(i * size, (i + 1) * size) for i, tf in enumerate(timeframes)}
    rows = len(timeframes) * size
    values = {name: np.full(rows, np.nan) for name in (*_RECURSION_NAMES, "bb_upper", "bb_middle", "bb_lower")}
    exact = np.zeros(rows, dtype=bool)
    if carries is not None and size:
        exact = _carried_values(series, minute, carries, values)
    period = indicators.BB_PERIOD
    seeded = 0
    for tf, part in parts.items():
        bars = series[tf]
        # The usual row has its last 20 bars: the bands read them where they are.
        whole: BoolArray = np.all(bars.present[:, -period:], axis=1)
        carried_here: BoolArray = exact[part]
        _put(values, part, np.flatnonzero(whole), _bands(bars.closes[whole, -period:], period))
        # Rows with holes, and rows the carried state cannot serve: the bars that exist, left-aligned.
        odd = np.flatnonzero(~whole | ~carried_here)
        if not len(odd):
            continue
        packed, lengths = left_align(bars.closes[odd], bars.present[odd])
        holes = np.flatnonzero(~whole[odd])
        _put(values, part, odd[holes], indicators.bbands_last(packed[holes], lengths[holes]))
        at = np.flatnonzero(~carried_here[odd] & (lengths >= _FIRST_VALUE_LENGTH))
        if len(at):
            found = indicators.recursions_at(packed[at], lengths[at])
            recursions = (found.rsi, found.macd, found.macd_signal, found.macd_hist)
            for name, last in zip(_RECURSION_NAMES, recursions, strict=True):
                values[name][part][odd[at]] = last
            seeded += len(at)
    return {tf: {name: v[part] for name, v in values.items()} for tf, part in parts.items()}, seeded


def _bands(closes: FloatArray, period: int) -> tuple[FloatArray, FloatArray, FloatArray]:
    """Return the bands of rows of exactly ``period`` closes (``indicators.bbands_last``'s numbers)."""
    return indicators.bbands_last(closes, np.full(len(closes), period, dtype=np.int64))


def _put(
    values: dict[str, FloatArray], part: slice, rows: IntArray, bands: tuple[FloatArray, FloatArray, FloatArray]
) -> None:
    """Set the bands of the timeframe rows ``part`` at ``rows``."""
    for name, band in zip(("bb_upper", "bb_middle", "bb_lower"), bands, strict=True):
        values[name][part][rows] = band


def _carried_values(
    series: Mapping[str, BarSeries], minute: int, carries: FloatArray, values: dict[str, FloatArray]
) -> BoolArray:
    """Fill ``values`` (rows: timeframes x symbols) from the carried states; return which rows they fill.

    Per timeframe, the carried state includes every bar up to its bar minute; the closed bars after it
    (at most the margin's worth and one bar) are in the series, before the forming bar. They advance
    the state by the backtest's recursion, bit for bit (``carried.advance``), and the forming bar is
    one step from there (``carried.forming_values``).
    """
    # The rows of ``values`` are the timeframes in the carry record's order (bar_series builds them so).
    assert list(series) == [tf for tf, _ in layout.CARRY_TIMEFRAMES], "timeframes out of the carry record's order"
    t = minute // MINUTE_MS
    known = carries[:, layout.CARRY_NEWEST] > 0
    states, forming_closes, usable = [], [], []
    for i, (tf, span) in enumerate(layout.CARRY_TIMEFRAMES):
        bars = series[tf]
        count = bars.closes.shape[1]
        forming = t - t % span
        o = layout.carry_offset(i)
        bar = carries[:, o]
        fits = known & (bar < forming) & (bar >= forming - count * span)
        state = carries[:, o + 1 : o + 1 + layout.CARRY_STATE_FIELDS].T.copy()  # (FIELDS, S)
        # The closed bars after the oldest fitting state's: the last ``need`` before the forming one.
        need = int((forming - bar[fits].min()) // span) - 1 if fits.any() else 0
        if need > 0:
            opens = forming - span * np.arange(need, 0, -1, dtype=np.int64)
            after = bars.present[:, count - 1 - need : count - 1] & (opens[None, :] > bar[:, None])
            _step_closed_bars(state, bars.closes[:, count - 1 - need : count - 1], after, fits)
        states.append(state)
        forming_closes.append(bars.closes[:, -1])
        usable.append(fits)
    fits = np.concatenate(usable)
    rows = np.flatnonzero(fits)
    state = np.concatenate(states, axis=1)[:, rows]
    close = np.concatenate(forming_closes)[rows]
    found = carried.forming_values(state[:, :, None], close[:, None, None])
    for name, value in zip(_RECURSION_NAMES, (found.rsi, found.macd, found.signal, found.hist), strict=True):
        values[name][rows] = value[:, 0, 0]
    return fits


def _step_closed_bars(state: FloatArray, closes: FloatArray, after: BoolArray, fits: BoolArray) -> None:
    """Advance ``state`` (FIELDS, S) in place by each row's closes where ``after`` (S, bars) holds.

    The usual row holds its last few bars, all present, and is past its seeds: rows alike run as one
    ``carried.advance_steady`` over their columns. Others (holes, a young series) are left-aligned
    and go through ``carried.advance``. Both give the same bits (carried.py).
    """
    counts = np.count_nonzero(after, axis=1)
    moving = fits & (counts > 0)
    if not moving.any():
        return
    width = after.shape[1]
    reversed_after = after[:, ::-1]
    trailing = np.where(reversed_after.all(axis=1), width, np.argmin(reversed_after, axis=1))
    plain = moving & (trailing == counts) & (state[carried.BARS] >= carried.STEADY_BARS)
    for count in np.unique(counts[plain]).tolist():
        rows = np.flatnonzero(plain & (counts == count))
        stepped = carried.advance_steady(state[:, rows], closes[rows, width - count :])
        state[:, rows] = stepped[:, :, -1]
    other = np.flatnonzero(moving & ~plain)
    if len(other):
        packed, lengths = left_align(closes[other], after[other])
        stepped = carried.advance(carried.CarriedState(state[:, other]), packed, lengths)
        state[:, other] = stepped[:, np.arange(len(other)), lengths]


def left_align(values: FloatArray, present: BoolArray) -> tuple[FloatArray, IntArray]:
    """Drop the missing entries of each row and move the rest to the left; return them and the counts.

    The padding after each row's values repeats its last value (a row without values is zeros), and
    non-finite values become 0, so the recursions stay quiet.
    """
    packed = np.empty_like(values)
    lengths = _left_align_into(values, present, packed)
    _zero_non_finite(packed)
    return packed, lengths


def _left_align_into(values: FloatArray, present: BoolArray, out: FloatArray) -> IntArray:
    lengths: IntArray = np.count_nonzero(present, axis=1).astype(np.int64)
    out[:] = values
    # Rows with every bar present are aligned already (the usual case): only the others move.
    partial = np.flatnonzero(lengths < values.shape[1])
    if len(partial):
        out[partial] = _packed_rows(values[partial], present[partial], lengths[partial])
    return lengths


def _packed_rows(values: FloatArray, present: BoolArray, lengths: IntArray) -> FloatArray:
    width = values.shape[1]
    first = np.argmax(present, axis=1)
    packed = np.zeros_like(values)
    # Bars from the first present one on, the usual shape of a row with missing bars (a symbol
    # younger than the series): a shift, the same for many rows. Holes elsewhere: a scatter.
    shifted = (first + lengths == width) & (lengths > 0)
    for start in np.unique(first[shifted]).tolist():
        rows = np.flatnonzero(shifted & (first == start))
        packed[rows, : width - start] = values[rows, start:]
        packed[rows, width - start :] = values[rows, -1:]
    holes = np.flatnonzero(~shifted & (lengths > 0))
    if len(holes):
        packed[holes] = _scattered_rows(values[holes], present[holes], lengths[holes])
    return packed


def _scattered_rows(values: FloatArray, present: BoolArray, lengths: IntArray) -> FloatArray:
    rows, columns = np.nonzero(present)  # row by row, columns in order
    starts = np.cumsum(lengths) - lengths  # where each row's entries begin in ``rows``/``columns``
    last = columns[starts + lengths - 1]  # every row has a bar
    packed = np.repeat(values[np.arange(len(values)), last][:, None], values.shape[1], axis=1)
    packed[rows, np.arange(len(rows)) - starts[rows]] = values[rows, columns]
    return packed


def _zero_non_finite(values: FloatArray) -> None:
    # A sum is finite only if every term is: one pass in the usual case.
    if not np.isfinite(values.sum()):
        np.copyto(values, 0.0, where=~np.isfinite(values))


def compute_arrays(
    minute: int,
    states: Sequence[SymbolState],
    forming: Mapping[str, Candle] | None = None,
) -> MetricsArrays:
    """Return every metric of ``states``' symbols at ``minute`` (each symbol must have that minute)."""
    m = gather_minutes(minute, states, forming)
    windows = rolling_windows(m)
    last_price = m.column(layout.CLOSE)[:, -1]
    carries = np.stack([s.carry for s in states]) if states else np.zeros((0, layout.CARRY_WIDTH))
    bar_values, seeded = bar_indicators(bar_series(m, states), minute, carries)
    return MetricsArrays(
        symbols=[s.symbol for s in states],
        minute=minute,
        last_price=last_price,
        change_14d=change_14d(minute, states, last_price),
        windows=windows,
        fibonacci=fibonacci(windows["1d"]),
        indicators=bar_values,
        seeded_on_last_bars=seeded,
    )


def compute_minute(
    minute: int,
    states: Sequence[SymbolState],
    forming: Mapping[str, Candle] | None = None,
) -> MetricsArrays | None:
    """Return the metrics of the symbols that have ``minute`` stored (or forming); None if none has."""
    present = [
        s
        for s in states
        if (forming and s.symbol in forming)
        or s.candles[(minute // MINUTE_MS) % layout.CAPACITY, layout.OPEN_TIME] == minute
    ]
    if not present:
        return None
    return compute_arrays(minute, present, forming)


def compute_payloads(
    minute: int,
    states: Sequence[SymbolState],
    forming: Mapping[str, Candle] | None = None,
) -> list[dict[str, Any]]:
    """Return the metrics of each symbol that has ``minute`` stored (or forming), as event payloads.

    A payload is exactly ``MetricsSnapshot.model_dump(mode="json")``, built without the model: at
    a minute boundary this runs for every symbol, and the model would cost more than the maths.
    """
    arrays = compute_minute(minute, states, forming)
    return to_payloads(arrays, provisional=bool(forming)) if arrays is not None else []


def compute_snapshots(
    minute: int,
    states: Sequence[SymbolState],
    forming: Mapping[str, Candle] | None = None,
) -> list[MetricsSnapshot]:
    """Return the metrics snapshot of each symbol that has ``minute`` stored (or forming)."""
    return [MetricsSnapshot.model_validate(p) for p in compute_payloads(minute, states, forming)]


# The keys of a payload's timeframe entry, in the order ``to_payloads`` stacks their values.
_TIMEFRAME_KEYS = (*WINDOW_NAMES, *INDICATOR_NAMES, "coverage", "fibonacci")


def to_payloads(arrays: MetricsArrays, provisional: bool = False) -> list[dict[str, Any]]:
    """Turn arrays into one ``MetricsSnapshot``-shaped dict per symbol; NaN becomes null.

    At a minute boundary this builds about 90,000 entries: the numbers of each kind of dict are
    stacked and turned into Python objects by numpy in one go, and the dicts are built from those
    rows (no Python per value).
    """
    count = len(arrays.symbols)
    by_window = {}
    for name in WINDOWS:
        values = [
            *(arrays.windows[name][k] for k in WINDOW_NAMES),
            *(arrays.indicators[name][k] for k in INDICATOR_NAMES),
            arrays.windows[name]["coverage"],
            np.full(count, np.nan),  # fibonacci: set below for 1d, null for the others
        ]
        by_window[name] = _dicts(_TIMEFRAME_KEYS, values)
    for entry, levels in zip(
        by_window["1d"], _dicts(FIBONACCI_LEVELS, [arrays.fibonacci[k] for k in FIBONACCI_LEVELS]), strict=True
    ):
        entry["fibonacci"] = levels
    indicators_1m = _dicts(INDICATOR_NAMES, [arrays.indicators["1m"][k] for k in INDICATOR_NAMES])
    timeframes = [dict(zip(WINDOWS, entries, strict=True)) for entries in zip(*by_window.values(), strict=True)]
    minute, timestamp = arrays.minute, minute_close_iso(arrays.minute)
    return [
        {
            "symbol": symbol,
            "minute": minute,
            "timestamp": timestamp,
            "last_price": last_price,
            "provisional": provisional,
            "change_14d": change,
            "timeframes": entries,
            "indicators_1m": indicators,
        }
        for symbol, last_price, change, entries, indicators in zip(
            arrays.symbols,
            arrays.last_price.tolist(),
            _nullable(arrays.change_14d),
            timeframes,
            indicators_1m,
            strict=True,
        )
    ]


def snapshot_values(arrays: MetricsArrays) -> FloatArray:
    """Return the (S, fields) table of ``state.snapshot_codec.FIELDS`` for ``pack_rows``."""
    columns = []
    for path in snapshot_codec.FIELDS:
        if path[0] == "timeframes" and len(path) == 4:
            columns.append(arrays.fibonacci[path[3]])
        elif path[0] == "timeframes":
            name, field = path[1], path[2]
            source = arrays.indicators if field in INDICATOR_NAMES else arrays.windows
            columns.append(source[name][field])
        elif path[0] == "indicators_1m":
            columns.append(arrays.indicators["1m"][path[1]])
        elif path == ("last_price",):
            columns.append(arrays.last_price)
        else:
            columns.append(arrays.change_14d)
    return np.stack(columns, axis=1)


def _dicts(keys: Sequence[str], values: Sequence[FloatArray]) -> list[dict[str, Any]]:
    """Return one dict per row: ``keys`` to the row's entry of each of ``values``, NaN as None."""
    rows: list[list[float | None]] = _nullable(np.stack(values, axis=1))
    # Each row has one entry per key by construction; zip's strict check costs a fifth of the time.
    return [dict(zip(keys, row, strict=False)) for row in rows]


def _nullable(values: FloatArray) -> Any:
    """Return ``values.tolist()`` with None for every NaN or infinity (nested lists for 2-D)."""
    objects = values.astype(object)
    objects[~np.isfinite(values)] = None
    return objects.tolist()


assert set(BAR_TIMEFRAMES) == {"1m", "5m", *layout.BAR_RING_BY_TIMEFRAME}, "a bar timeframe has no source"
