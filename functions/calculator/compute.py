"""The metrics of metrics.md for many symbols at one minute, vectorised across the symbols.

Everything is a 2-D numpy array, one row per symbol. The 1-minute ring is read in time order for the
minutes ``t - CAPACITY + 1 .. t``: a slot counts only when it holds exactly the minute asked for, so
gaps stay gaps (windows are defined by time, not by count) and minutes after ``t`` are invisible.
That is the determinism rule: the metrics of (symbol, t) depend only on stored minutes up to t.

NaN means "not computable" here; ``to_snapshots`` turns it into null.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from functions.calculator import indicators
from screener.events.models import (
    BAR_TIMEFRAMES,
    MINUTE_MS,
    WINDOWS,
    Candle,
    MetricsSnapshot,
    minute_close_iso,
)
from state import layout
from state.candles import SymbolState

FloatArray = npt.NDArray[np.float64]
BoolArray = npt.NDArray[np.bool_]
IntArray = npt.NDArray[np.int64]

HOUR_MINUTES = 60
FIBONACCI_RATIOS: dict[str, float] = {
    "r1": 1.0,
    "r618": 0.618,
    "r382": 0.382,
    "s382": -0.382,
    "s618": -0.618,
    "s1": -1.0,
}
FIBONACCI_LEVELS = ("r1", "r618", "r382", "pivot", "s382", "s618", "s1")
INDICATOR_NAMES = ("rsi_14", "macd", "macd_signal", "macd_hist", "bb_upper", "bb_middle", "bb_lower")
WINDOW_NAMES = ("open", "high", "low", "close", "volume", "base_volume", "price_change", "volume_ratio", "vwap", "vcp")


@dataclass(frozen=True)
class Minutes:
    """The 1-minute candles of S symbols for the minutes ``t - D + 1 .. t``, oldest first.

    ``values`` is (S, D, 8) with columns ``layout.CANDLE_FIELDS``; ``present`` (S, D) says which
    minutes are stored. ``quote_volume_long``/``present_long`` (S, 2 x 1440) hold the quote volume of
    the minutes t - 2879 .. t, partly from the previous-lap ring, for the 1d volume ratio.
    """

    minute: int
    values: FloatArray
    present: BoolArray
    quote_volume_long: FloatArray
    present_long: BoolArray

    def column(self, field: int) -> FloatArray:
        """Return one column of ``values`` (S, D)."""
        return self.values[:, :, field]


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


def gather_minutes(minute: int, states: Sequence[SymbolState], forming: Mapping[str, Candle] | None = None) -> Minutes:
    """Read each symbol's ring in time order for the minutes up to ``minute``.

    ``forming`` maps a symbol to a candle of ``minute`` that is not stored (the forming minute): it
    takes that minute's place, for provisional metrics.
    """
    depth = layout.CAPACITY
    count = len(states)
    first = minute - (depth - 1) * MINUTE_MS
    wanted = first + MINUTE_MS * np.arange(depth, dtype=np.int64)
    slots = (wanted // MINUTE_MS) % depth
    values = np.empty((count, depth, len(layout.CANDLE_FIELDS)))
    previous = np.empty((count, depth))
    # The minutes t - depth + 1 .. t are the whole ring read from the slot after t's: a rotation, so
    # two contiguous copies per symbol (memcpy) instead of a gather through an index array.
    split = depth - int(slots[0])
    for row, state in enumerate(states):
        values[row, :split] = state.candles[slots[0] :]
        values[row, split:] = state.candles[: slots[0]]
        previous[row, :split] = state.previous_quote_volume[slots[0] :]
        previous[row, split:] = state.previous_quote_volume[: slots[0]]
    held = values[:, :, layout.OPEN_TIME]
    present = held == wanted
    ring_quote = values[:, :, layout.QUOTE_VOLUME]
    lap = depth * MINUTE_MS
    # A slot's previous-lap value is the quote volume of the minute one lap before the one it holds.
    # So minute w - lap is in the ring when the slot never moved past it, or in the previous lap when
    # the slot holds w; minute w itself is in the previous lap when the ring is already a lap ahead
    # (possible only for the oldest MARGIN_MINUTES). Only the 1d volume ratio looks that far back:
    # minutes t - 2879 .. t - 1500 of the lap before, so from column ``skip`` on.
    skip = 2 * depth - 2 * layout.LONGEST_WINDOW_MINUTES
    held_lap, wanted_lap = held[:, skip:], wanted[skip:]
    lap_present = (held_lap == wanted_lap - lap) | (present[:, skip:] & ~np.isnan(previous[:, skip:]))
    lap_quote = np.where(
        held_lap == wanted_lap - lap, ring_quote[:, skip:], np.where(lap_present, previous[:, skip:], 0.0)
    )
    recent_present = present.copy()
    recent_quote = np.where(present, ring_quote, 0.0)
    ahead = slice(0, layout.MARGIN_MINUTES)
    from_previous = (held[:, ahead] == wanted[ahead] + lap) & ~np.isnan(previous[:, ahead])
    recent_present[:, ahead] |= from_previous
    recent_quote[:, ahead] = np.where(from_previous, previous[:, ahead], recent_quote[:, ahead])
    if forming:
        for row, state in enumerate(states):
            candle = forming.get(state.symbol)
            if candle is not None and candle.open_time == minute:
                values[row, -1] = (
                    candle.open_time, candle.open, candle.high, candle.low, candle.close,
                    candle.volume, candle.quote_volume, candle.trades,
                )  # fmt: skip
                present[row, -1] = True
                recent_present[row, -1] = True
                recent_quote[row, -1] = candle.quote_volume
    return Minutes(
        minute=minute,
        values=values,
        present=present,
        quote_volume_long=np.concatenate((lap_quote, recent_quote), axis=1),
        present_long=np.concatenate((lap_present, recent_present), axis=1),
    )


def rolling_windows(m: Minutes) -> dict[str, dict[str, FloatArray]]:
    """Return each window's values (metrics.md, "Rolling windows") by window name."""
    depth = m.present.shape[1]
    present = m.present
    close = m.column(layout.CLOSE)[:, -1]
    highs = np.where(present, m.column(layout.HIGH), -np.inf)
    lows = np.where(present, m.column(layout.LOW), np.inf)
    quote = np.where(present, m.column(layout.QUOTE_VOLUME), 0.0)
    base = np.where(present, m.column(layout.VOLUME), 0.0)
    opens = m.column(layout.OPEN)
    long_quote = np.where(m.present_long, m.quote_volume_long, 0.0)
    long_depth = m.present_long.shape[1]
    out: dict[str, dict[str, FloatArray]] = {}
    with np.errstate(invalid="ignore", divide="ignore"):
        for name, n in WINDOWS.items():
            window = slice(depth - n, depth)
            count = present[:, window].sum(axis=1)
            oldest = depth - n + np.argmax(present[:, window], axis=1)
            open_n = np.where(count > 0, np.take_along_axis(opens, oldest[:, None], axis=1)[:, 0], np.nan)
            high = np.where(count > 0, highs[:, window].max(axis=1), np.nan)
            low = np.where(count > 0, lows[:, window].min(axis=1), np.nan)
            volume = quote[:, window].sum(axis=1)
            base_volume = base[:, window].sum(axis=1)
            before = slice(long_depth - 2 * n, long_depth - n)
            before_full = m.present_long[:, before].all(axis=1)
            before_volume = long_quote[:, before].sum(axis=1)
            vwap = np.where(base_volume > 0, volume / base_volume, np.nan)
            out[name] = {
                "open": open_n,
                "high": high,
                "low": low,
                "close": close,
                "volume": volume,
                "base_volume": base_volume,
                "price_change": (close / open_n - 1.0) * 100.0,
                "volume_ratio": np.where(before_full & (before_volume > 0), volume / before_volume, np.nan),
                "vwap": vwap,
                "vcp": np.where(high != low, (close / vwap) * ((close - low) - (high - close)) / (high - low), np.nan),
                "coverage": count / n,
            }
    return out


def fibonacci(day: Mapping[str, FloatArray]) -> dict[str, FloatArray]:
    """Return the Fibonacci pivot levels of the 1d window (metrics.md)."""
    pivot = (day["high"] + day["low"] + day["close"]) / 3.0
    spread = day["high"] - day["low"]
    levels = {name: pivot + ratio * spread for name, ratio in FIBONACCI_RATIOS.items()}
    levels["pivot"] = pivot
    return levels


def change_14d(minute: int, states: Sequence[SymbolState], close: FloatArray) -> FloatArray:
    """Return (close_t / open of the 1h bar 335 bars before the one containing t - 1) * 100."""
    ring = layout.BAR_RING_BY_TIMEFRAME["1h"]
    t = minute // MINUTE_MS
    bar = t - t % HOUR_MINUTES - layout.CHANGE_14D_BARS_BACK * HOUR_MINUTES
    slot = (bar // HOUR_MINUTES) % ring.capacity
    rows = np.array([state.bars["1h"][slot] for state in states]).reshape(len(states), len(layout.BAR_FIELDS))
    held = np.floor(rows[:, layout.BAR_TAG] / layout.TAG_MINUTE)
    opens = np.where(held == bar, rows[:, layout.BAR_OPEN], np.nan)
    return (close / opens - 1.0) * 100.0


def bar_series(m: Minutes, states: Sequence[SymbolState]) -> dict[str, BarSeries]:
    """Return the last ``INDICATOR_BARS`` clock-aligned bars of each timeframe, the forming one last.

    1m and 5m bars come from the 1-minute ring; the others from their bar rings for the closed bars,
    and the forming bar's close is the close at t (only minutes up to t count).
    """
    count = layout.INDICATOR_BARS
    t = m.minute // MINUTE_MS
    closes = m.column(layout.CLOSE)
    out = {"1m": BarSeries(closes[:, -count:], m.present[:, -count:])}
    out["5m"] = _bars_from_minutes(m, 5)
    last_close = closes[:, -1]
    for ring in layout.BAR_RINGS:
        forming = t - t % ring.minutes
        opens = forming - ring.minutes * np.arange(count - 1, 0, -1, dtype=np.int64)
        slots = (opens // ring.minutes) % ring.capacity
        rows = np.stack([state.bars[ring.timeframe][slots] for state in states])
        held = np.floor(rows[:, :, layout.BAR_TAG] / layout.TAG_MINUTE)
        out[ring.timeframe] = BarSeries(
            np.concatenate((rows[:, :, layout.BAR_CLOSE], last_close[:, None]), axis=1),
            np.concatenate((held == opens[None, :], np.ones((len(states), 1), dtype=bool)), axis=1),
        )
    return out


def _bars_from_minutes(m: Minutes, minutes: int) -> BarSeries:
    count = layout.INDICATOR_BARS
    depth = m.present.shape[1]
    t = m.minute // MINUTE_MS
    first_open = t - t % minutes - (count - 1) * minutes
    start = depth - 1 - (t - first_open)
    pad = count * minutes - (depth - start)  # the forming bar's minutes after t
    rows = m.present.shape[0]
    present = np.concatenate((m.present[:, start:], np.zeros((rows, pad), dtype=bool)), axis=1)
    closes = np.concatenate((m.column(layout.CLOSE)[:, start:], np.zeros((rows, pad))), axis=1)
    present = present.reshape(rows, count, minutes)
    last = minutes - 1 - np.argmax(present[:, :, ::-1], axis=2)
    bar_close = np.take_along_axis(closes.reshape(rows, count, minutes), last[:, :, None], axis=2)[:, :, 0]
    return BarSeries(bar_close, np.asarray(present.any(axis=2), dtype=bool))


class IndicatorCache:
    """The RSI and MACD recursions of each (symbol, timeframe) up to its last closed bar.

    Between two minutes of the same 15m..1d bar only the forming close changes, so the recursions
    over the 249 closed bars need not run again: one step from the cached state gives the same
    numbers bit for bit (``indicators.rsi_step``/``macd_step`` repeat the loop's operations). An
    entry is used only when the closed bars are byte for byte those it was computed from, so a late
    minute that changes a closed bar, or a new bar, recomputes. 1m and 5m series slide every bar
    (their oldest bar changes), so they are always recomputed.
    """

    CACHED_TIMEFRAMES = frozenset(layout.BAR_RING_BY_TIMEFRAME)

    def __init__(self) -> None:
        self._entries: dict[tuple[str, str], tuple[bytes, FloatArray]] = {}
        self.hits = 0

    def lookup(self, key: tuple[str, str], closed: bytes) -> FloatArray | None:
        """Return the state (gain, loss, last closed close, slow, fast, signal) for these closed bars."""
        entry = self._entries.get(key)
        if entry is None or entry[0] != closed:
            return None
        self.hits += 1
        return entry[1]

    def store(self, key: tuple[str, str], closed: bytes, state: FloatArray) -> None:
        """Remember the state after the closed bars ``closed``."""
        self._entries[key] = (closed, state)


# A series can resume from cached state when its last bar is past every seed (MACD's signal seeds
# at column 33), so the step is the plain recursion.
_STEADY_LENGTH = indicators.MACD_LOOKBACK + 2


def bar_indicators(
    series: Mapping[str, BarSeries], symbols: Sequence[str] = (), cache: IndicatorCache | None = None
) -> dict[str, dict[str, FloatArray]]:
    """Return RSI, MACD and Bollinger Bands at the forming bar of every timeframe.

    Missing bars are left out (the series is the bars that exist, in time order). All timeframes of
    all symbols run as the rows of one array, so the recursions loop over the bar index once. With a
    ``cache`` (and the ``symbols`` of the rows), series whose closed bars are unchanged resume from it.
    """
    timeframes = list(series)
    size = len(series[timeframes[0]].closes)
    closes = np.concatenate([series[tf].closes for tf in timeframes])
    present = np.concatenate([series[tf].present for tf in timeframes])
    packed, lengths = left_align(closes, present)
    rows = len(packed)
    names = ("rsi_14", "macd", "macd_signal", "macd_hist")
    values = {name: np.full(rows, np.nan) for name in names}
    resumed: list[int] = []
    states: list[FloatArray] = []
    keys: dict[int, tuple[tuple[str, str], bytes]] = {}
    if cache is not None:
        for i, tf in enumerate(timeframes):
            if tf not in cache.CACHED_TIMEFRAMES:
                continue
            for j, symbol in enumerate(symbols):
                row = i * size + j
                n = int(lengths[row])
                if n < _STEADY_LENGTH:
                    continue
                key = ((symbol, tf), packed[row, : n - 1].tobytes())
                keys[row] = key
                state = cache.lookup(*key)
                if state is not None:
                    resumed.append(row)
                    states.append(state)
    if resumed:
        at = np.asarray(resumed)
        held = np.array(states).T.copy()  # gain, loss, previous close, slow, fast, signal: each (k,)
        last = packed[at, lengths[at] - 1]
        values["rsi_14"][at] = indicators.rsi_step(held[0], held[1], last - held[2])
        line, signal, hist = indicators.macd_step(held[3], held[4], held[5], last)
        values["macd"][at], values["macd_signal"][at], values["macd_hist"][at] = line, signal, hist
    todo = np.setdiff1d(np.arange(rows), np.asarray(resumed, dtype=np.int64))
    if len(todo):
        sub, sub_lengths = packed[todo], lengths[todo]
        found = indicators.recursions_at(sub, sub_lengths)
        for name, last in zip(names, (found.rsi, found.macd, found.macd_signal, found.macd_hist), strict=True):
            values[name][todo] = last
        if cache is not None:
            for k, row in enumerate(todo.tolist()):
                if row in keys:
                    cache.store(keys[row][0], keys[row][1], found.closed_state[k])
    upper, middle, lower = indicators.bbands_last(packed, lengths)
    values.update(bb_upper=upper, bb_middle=middle, bb_lower=lower)
    return {tf: {name: v[i * size : (i + 1) * size] for name, v in values.items()} for i, tf in enumerate(timeframes)}


def left_align(values: FloatArray, present: BoolArray) -> tuple[FloatArray, IntArray]:
    """Drop the missing entries of each row and move the rest to the left; return them and the counts.

    The padding after each row's values repeats its last value (finite, so the recursions stay quiet).
    """
    lengths = present.sum(axis=1).astype(np.int64)
    if bool(present.all()):
        packed = values
    else:
        packed = np.zeros_like(values)
        rows, columns = np.nonzero(present)
        packed[rows, (np.cumsum(present, axis=1) - 1)[rows, columns]] = values[rows, columns]
    last = np.take_along_axis(packed, np.maximum(lengths - 1, 0)[:, None], axis=1)
    packed = np.where(np.arange(values.shape[1])[None, :] < lengths[:, None], packed, last)
    return np.where(np.isfinite(packed), packed, 0.0), lengths


def compute_arrays(
    minute: int,
    states: Sequence[SymbolState],
    forming: Mapping[str, Candle] | None = None,
    cache: IndicatorCache | None = None,
) -> MetricsArrays:
    """Return every metric of ``states``' symbols at ``minute`` (each symbol must have that minute)."""
    m = gather_minutes(minute, states, forming)
    windows = rolling_windows(m)
    last_price = m.column(layout.CLOSE)[:, -1]
    return MetricsArrays(
        symbols=[s.symbol for s in states],
        minute=minute,
        last_price=last_price,
        change_14d=change_14d(minute, states, last_price),
        windows=windows,
        fibonacci=fibonacci(windows["1d"]),
        indicators=bar_indicators(bar_series(m, states), [st.symbol for st in states], cache),
    )


def compute_payloads(
    minute: int,
    states: Sequence[SymbolState],
    forming: Mapping[str, Candle] | None = None,
    cache: IndicatorCache | None = None,
) -> list[dict[str, Any]]:
    """Return the metrics of each symbol that has ``minute`` stored (or forming), as event payloads.

    A payload is exactly ``MetricsSnapshot.model_dump(mode="json")``, built without the model: at
    a minute boundary this runs for every symbol, and the model would cost more than the maths.
    """
    present = [
        s
        for s in states
        if (forming and s.symbol in forming)
        or s.candles[(minute // MINUTE_MS) % layout.CAPACITY, layout.OPEN_TIME] == minute
    ]
    if not present:
        return []
    return to_payloads(compute_arrays(minute, present, forming, cache), provisional=bool(forming))


def compute_snapshots(
    minute: int,
    states: Sequence[SymbolState],
    forming: Mapping[str, Candle] | None = None,
) -> list[MetricsSnapshot]:
    """Return the metrics snapshot of each symbol that has ``minute`` stored (or forming)."""
    return [MetricsSnapshot.model_validate(p) for p in compute_payloads(minute, states, forming)]


def to_payloads(arrays: MetricsArrays, provisional: bool = False) -> list[dict[str, Any]]:
    """Turn arrays into one ``MetricsSnapshot``-shaped dict per symbol; NaN becomes null."""
    windows = {name: {k: _nullable(v) for k, v in metrics.items()} for name, metrics in arrays.windows.items()}
    bars = {tf: {k: _nullable(v) for k, v in metrics.items()} for tf, metrics in arrays.indicators.items()}
    fib = {k: _nullable(arrays.fibonacci[k]) for k in FIBONACCI_LEVELS}
    change = _nullable(arrays.change_14d)
    last_price = arrays.last_price.tolist()
    timestamp = minute_close_iso(arrays.minute)
    payloads = []
    for i, symbol in enumerate(arrays.symbols):
        timeframes = {}
        for name in WINDOWS:
            fields: dict[str, Any] = {k: windows[name][k][i] for k in WINDOW_NAMES}
            fields.update({k: bars[name][k][i] for k in INDICATOR_NAMES})
            fields["coverage"] = windows[name]["coverage"][i]
            fields["fibonacci"] = {k: v[i] for k, v in fib.items()} if name == "1d" else None
            timeframes[name] = fields
        payloads.append(
            {
                "symbol": symbol,
                "minute": arrays.minute,
                "timestamp": timestamp,
                "last_price": last_price[i],
                "provisional": provisional,
                "change_14d": change[i],
                "timeframes": timeframes,
                "indicators_1m": {k: bars["1m"][k][i] for k in INDICATOR_NAMES},
            }
        )
    return payloads


def _nullable(values: FloatArray) -> list[float | None]:
    return [v if math.isfinite(v) else None for v in values.tolist()]


assert set(BAR_TIMEFRAMES) == {"1m", "5m", *layout.BAR_RING_BY_TIMEFRAME}, "a bar timeframe has no source"
