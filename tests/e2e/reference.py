"""A plain reference evaluation of the 20 product rules, straight from the CSV rows.

Written from metrics.md and rules.md alone, without any of the pipeline's code: windows by time
(minutes t-N+1..t, null when a minute is missing, since every rule requires coverage 1.0),
``change_N = (close_t / open_{t-N+1} - 1) * 100``, ``volume_N`` = sum of quote volumes (derived as
``volume * (high + low + close) / 3`` where the file has none), ``rsi15m`` = Wilder's RSI 14 over the
clock-aligned 15m bars of the last 250 bar periods (the forming bar last, closing at t),
``c14d`` against the open of the 1h bar 335 bars before the one containing t. Predicates use
three-valued logic (None = unknown; a rule fires only on True), the cooldown is 5 minutes, and
``recent(futures_bottom_hunter, 12h)`` is a Bottom Raid firing at a minute in [t - 12h, t).
"""

from __future__ import annotations

import csv
import functools
import gzip
import io
import itertools
import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

MINUTE = 60_000
WINDOWS = {"5m": 5, "15m": 15, "1h": 60, "8h": 480, "1d": 1440}
RSI_BARS = 250  # metrics.md: "at least 250 bars"; the pipeline keeps exactly this many
COOLDOWN = 5 * MINUTE
RECENT = 12 * 60 * MINUTE
Value = float | None
Truth = bool | None


@dataclass
class Series:
    """One symbol's candles on a dense minute grid from its first row (NaN where a minute is missing)."""

    symbol: str
    first: int
    open: np.ndarray
    high: np.ndarray
    low: np.ndarray
    close: np.ndarray
    quote: np.ndarray
    present: np.ndarray
    _rsi: dict[int, Value] = field(default_factory=dict)

    def index(self, t: int) -> int | None:
        i = (t - self.first) // MINUTE
        return i if 0 <= i < len(self.present) and self.present[i] else None


@functools.lru_cache(maxsize=64)
def read_series(path: Path) -> Series:
    """Read one CSV (12-column Binance or 6-column OHLCV, plain or gzip) into a ``Series``."""
    raw = path.read_bytes()
    text = gzip.decompress(raw).decode() if path.name.endswith(".gz") else raw.decode()
    rows = [r for r in csv.reader(io.StringIO(text)) if r and r[0][:1].isdigit()]
    times = np.array([int(r[0]) for r in rows], dtype=np.int64)
    first = int(times.min())
    size = (int(times.max()) - first) // MINUTE + 1
    at = (times - first) // MINUTE
    cols = {name: np.full(size, np.nan) for name in ("open", "high", "low", "close", "quote")}
    present = np.zeros(size, dtype=bool)
    present[at] = True
    values = np.array([[float(x) for x in r[1:6]] for r in rows])
    o, h, lo, c, v = values.T
    # The 2025-05 files have no quote volume: derive it as base volume times the typical price.
    q = np.array([float(r[7]) for r in rows]) if len(rows[0]) >= 8 else v * (h + lo + c) / 3.0
    for name, column in zip(("open", "high", "low", "close", "quote"), (o, h, lo, c, q), strict=True):
        cols[name][at] = column
    return Series(path.name.split("-")[0], first, present=present, **cols)


def window_change(s: Series, i: int, n: int) -> Value:
    start = i - n + 1
    if start < 0 or not s.present[start : i + 1].all():
        return None
    return float((s.close[i] / s.open[start] - 1.0) * 100.0)


def window_volume(s: Series, i: int, n: int) -> Value:
    start = i - n + 1
    if start < 0 or not s.present[start : i + 1].all():
        return None
    return float(s.quote[start : i + 1].sum())


def change_14d(s: Series, t: int) -> Value:
    i = s.index(t)
    assert i is not None
    bar = t - t % (60 * MINUTE) - 335 * 60 * MINUTE
    for minute in range(bar, min(bar + 60 * MINUTE, t + MINUTE), MINUTE):
        j = s.index(minute)
        if j is not None:
            return float((s.close[i] / s.open[j] - 1.0) * 100.0)
    return None


def rsi_15m(s: Series, t: int) -> Value:
    if t in s._rsi:
        return s._rsi[t]
    span = 15 * MINUTE
    forming = t - t % span
    closes = []
    for bar in range(forming - (RSI_BARS - 1) * span, forming + span, span):
        # a bar's close is the close of its latest minute present, up to t
        for minute in range(min(bar + span - MINUTE, t), bar - MINUTE, -MINUTE):
            j = s.index(minute)
            if j is not None:
                closes.append(float(s.close[j]))
                break
    value = wilder_rsi(closes)
    s._rsi[t] = value
    return value


def wilder_rsi(closes: list[float], period: int = 14) -> Value:
    """Return TA-Lib's RSI at the last close: seeded by the mean of the first 14 changes, then Wilder."""
    if len(closes) <= period:
        return None
    changes = [b - a for a, b in itertools.pairwise(closes)]
    gain = sum(max(d, 0.0) for d in changes[:period]) / period
    loss = sum(max(-d, 0.0) for d in changes[:period]) / period
    for d in changes[period:]:
        gain = (gain * (period - 1) + max(d, 0.0)) / period
        loss = (loss * (period - 1) + max(-d, 0.0)) / period
    if gain + loss == 0:
        return None
    return 100.0 * gain / (gain + loss)


# --- three-valued logic ------------------------------------------------------------------------
def lt(a: Value, b: Value) -> Truth:
    return None if a is None or b is None else a < b


def gt(a: Value, b: Value) -> Truth:
    return None if a is None or b is None else a > b


def ge(a: Value, b: Value) -> Truth:
    return None if a is None or b is None else a >= b


def le(a: Value, b: Value) -> Truth:
    return None if a is None or b is None else a <= b


def all_of(*parts: Truth) -> Truth:
    return False if False in parts else (None if None in parts else True)


def any_of(*parts: Truth) -> Truth:
    return True if True in parts else (None if None in parts else False)


def then(first: Truth, rest: Callable[[], Truth]) -> Truth:
    """Return ``first and rest()`` in three-valued logic, computing ``rest`` only when it can matter."""
    return False if first is False else all_of(first, rest())


def negate(x: Truth) -> Truth:
    return None if x is None else not x


def mul(k: float, a: Value) -> Value:
    return None if a is None else k * a


def div(a: Value, k: float) -> Value:
    return None if a is None else a / k


def sub(a: Value, b: Value) -> Value:
    return None if a is None or b is None else a - b


class Point:
    """The metrics of one symbol at one minute, computed on first use."""

    def __init__(self, series: Series, t: int, btc: Series | None) -> None:
        self.s, self.t, self.btc = series, t, btc
        self.i = series.index(t)
        self._cache: dict[str, Value] = {}

    def __getattr__(self, name: str) -> Value:
        if name.startswith("_"):
            raise AttributeError(name)
        cache = self.__dict__["_cache"]
        if name not in cache:
            cache[name] = self._compute(name)
        return cache[name]

    def _compute(self, name: str) -> Value:
        assert self.i is not None
        if name == "rsi15m":
            return rsi_15m(self.s, self.t)
        if name == "c14d":
            return change_14d(self.s, self.t)
        if name == "btc_c1h":
            if self.btc is None:
                return None
            j = self.btc.index(self.t)
            return None if j is None else window_change(self.btc, j, 60)
        kind, window = name[0], name[1:]
        n = WINDOWS[window]
        return window_change(self.s, self.i, n) if kind == "c" else window_volume(self.s, self.i, n)


def _big_bull_60(p: Point) -> Truth:
    return all_of(
        gt(p.c1h, 1.6),
        lt(p.c1d, 15),
        gt(p.c8h, p.c1h),
        gt(p.c1d, p.c8h),
        gt(p.v1h, 500000),
        gt(p.v8h, 5000000),
        gt(mul(6, p.v1h), p.v8h),
        gt(mul(16, p.v1h), p.v1d),
    )


def _big_bear_60(p: Point) -> Truth:
    return all_of(
        lt(p.c1h, -1.6),
        gt(p.c1d, -15),
        lt(p.c8h, p.c1h),
        lt(p.c1d, p.c8h),
        gt(p.v1h, 500000),
        gt(p.v8h, 5000000),
        gt(mul(6, p.v1h), p.v8h),
        gt(mul(16, p.v1h), p.v1d),
    )


def _pioneer_bear(p: Point) -> Truth:
    return all_of(lt(p.c5m, -1), lt(p.c15m, -1), lt(mul(3, p.c5m), p.c15m), gt(mul(2, p.v5m), p.v15m))


def _bottom_hunter(p: Point) -> Truth:
    return all_of(
        lt(p.c1h, -0.7), lt(p.c15m, -0.6), gt(p.c5m, 0.5), gt(p.v5m, div(p.v15m, 2)), gt(p.v5m, div(p.v1h, 8))
    )


def _whale(p: Point) -> Truth:
    abs_c5m = None if p.c5m is None else abs(p.c5m)
    return all_of(ge(p.v5m, div(mul(5, p.v1d), 288)), lt(abs_c5m, 0.3), gt(p.v5m, 100000))


RecentFn = Callable[[str], Truth]

RULES: dict[str, Callable[[Point, RecentFn], Truth]] = {
    "futures_big_bull_60": lambda p, r: _big_bull_60(p),
    "futures_big_bear_60": lambda p, r: _big_bear_60(p),
    "futures_pioneer_bull": lambda p, r: all_of(
        gt(p.c5m, 1), gt(p.c15m, 1), gt(mul(3, p.c5m), p.c15m), gt(mul(2, p.v5m), p.v15m)
    ),
    "futures_pioneer_bear": lambda p, r: _pioneer_bear(p),
    "futures_5_big_bull": lambda p, r: all_of(
        gt(p.c5m, 0.6),
        lt(p.c1d, 15),
        gt(p.c15m, p.c5m),
        gt(p.c1h, p.c15m),
        gt(p.v5m, 100000),
        gt(p.v1h, 1000000),
        gt(p.v5m, div(p.v15m, 3)),
        gt(p.v5m, div(p.v1h, 6)),
        gt(p.v5m, div(p.v8h, 66)),
    ),
    "futures_5_big_bear": lambda p, r: all_of(
        lt(p.c5m, -0.6),
        gt(p.c1d, -15),
        lt(p.c15m, p.c5m),
        lt(p.c1h, p.c15m),
        gt(p.v5m, 100000),
        gt(p.v1h, 1000000),
        gt(p.v5m, div(p.v15m, 3)),
        gt(p.v5m, div(p.v1h, 6)),
        gt(p.v5m, div(p.v8h, 66)),
    ),
    "futures_15_big_bull": lambda p, r: all_of(
        gt(p.c15m, 1),
        lt(p.c1d, 15),
        gt(p.c1h, p.c15m),
        gt(p.c8h, p.c1h),
        gt(p.v15m, 400000),
        gt(p.v1h, 1000000),
        gt(p.v15m, div(p.v1h, 3)),
        gt(p.v15m, div(p.v8h, 26)),
    ),
    "futures_15_big_bear": lambda p, r: all_of(
        lt(p.c15m, -1),
        gt(p.c1d, -15),
        lt(p.c1h, p.c15m),
        lt(p.c8h, p.c1h),
        gt(p.v15m, 400000),
        gt(p.v1h, 1000000),
        gt(p.v15m, div(p.v1h, 3)),
        gt(p.v15m, div(p.v8h, 26)),
    ),
    "futures_bottom_hunter": lambda p, r: _bottom_hunter(p),
    "futures_top_hunter": lambda p, r: all_of(
        gt(p.c1h, 0.7), gt(p.c15m, 0.6), lt(p.c5m, -0.5), gt(p.v5m, div(p.v15m, 2)), gt(p.v5m, div(p.v1h, 8))
    ),
    "futures_bottom_hunter_v2": lambda p, r: then(
        all_of(lt(p.c1h, -1.5), lt(p.c15m, -1.0), gt(p.c5m, 0.7), gt(p.v5m, div(p.v15m, 2)), gt(p.v5m, div(p.v1h, 8))),
        lambda: lt(p.rsi15m, 35),
    ),
    "futures_top_hunter_v2": lambda p, r: then(
        all_of(gt(p.c1h, 1.5), gt(p.c15m, 1.0), lt(p.c5m, -0.7), gt(p.v5m, div(p.v15m, 2)), gt(p.v5m, div(p.v1h, 8))),
        lambda: gt(p.rsi15m, 65),
    ),
    "futures_big_bull_60_v2": lambda p, r: all_of(_big_bull_60(p), gt(p.c1d, 0), ge(sub(p.c1h, p.btc_c1h), 0.5)),
    "futures_big_bear_60_v2": lambda p, r: all_of(_big_bear_60(p), lt(p.c1d, 0), ge(sub(p.btc_c1h, p.c1h), 0.5)),
    "futures_whale_detector": lambda p, r: _whale(p),
    "futures_whale_accumulation": lambda p, r: then(_whale(p), lambda: any_of(gt(p.c15m, 0), gt(p.rsi15m, 50))),
    "futures_whale_distribution": lambda p, r: then(_whale(p), lambda: any_of(lt(p.c15m, 0), lt(p.rsi15m, 50))),
    "futures_surge_42": lambda p, r: all_of(
        _pioneer_bear(p),
        r("futures_bottom_hunter"),
        negate(all_of(le(-10, p.c14d), le(p.c14d, -5))),
        p.s.symbol != "XMRUSDT",
    ),
    "futures_knife_catcher": lambda p, r: all_of(
        _pioneer_bear(p), r("futures_bottom_hunter"), any_of(lt(p.c1h, -5), lt(p.c1d, -3))
    ),
    "futures_capitulation_catcher": lambda p, r: all_of(
        _pioneer_bear(p), lt(p.c14d, -20), negate(r("futures_bottom_hunter"))
    ),
}


@dataclass(frozen=True)
class RefAlert:
    """An alert of the reference: rule, symbol, minute (open time) and price."""

    rule_type: str
    symbol: str
    minute: int
    price: float


def reference_alerts(
    folder: Path, start: int, end: int, rules: Iterable[str] | None = None, symbols: Iterable[str] | None = None
) -> list[RefAlert]:
    """Return the alerts of minutes ``start <= t < end`` for every symbol in ``folder``, firing state empty at start."""
    series = {s.symbol: s for s in (read_series(p) for p in sorted(folder.glob("*.csv*")))}
    for s in series.values():
        s._rsi.clear()
    if symbols is not None:
        wanted = set(symbols)
        series = {k: v for k, v in series.items() if k in wanted}
    names = list(rules or RULES)
    btc = series.get("BTCUSDT")
    last_fired: dict[tuple[str, str], list[int]] = {}
    alerts: list[RefAlert] = []
    for t in range(start, end, MINUTE):
        for symbol, s in series.items():
            if s.index(t) is None:
                continue
            point = Point(s, t, btc)

            def recent(rule: str, symbol: str = symbol, t: int = t) -> Truth:
                return any(t - RECENT <= m < t for m in last_fired.get((rule, symbol), []))

            for rule in names:
                if RULES[rule](point, recent) is not True:
                    continue
                fired = last_fired.setdefault((rule, symbol), [])
                if fired and fired[-1] > t - COOLDOWN:
                    continue
                fired.append(t)
                alerts.append(RefAlert(rule, symbol, t, float(s.close[point.i])))  # type: ignore[index]
    return alerts


def rule_names() -> list[str]:
    """Return the rule ids of rules.md, in its order."""
    return list(RULES)


def _nan_to_none(x: float) -> Value:
    return None if math.isnan(x) else x
