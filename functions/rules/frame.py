"""The metrics of the symbols evaluated at one minute, as numpy columns the compiled rules read."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np
import numpy.typing as npt

from functions.rules.vocabulary import METRICS, MetricSpec
from screener.events.models import MetricsSnapshot, TimeframeMetrics

FloatArray = npt.NDArray[np.float64]
NAN = math.nan


def metric_value(snapshot: MetricsSnapshot | None, name: str, min_coverage: float = 0.0) -> float:
    """Return metric ``name`` of ``snapshot`` as a float, NaN when null or below ``min_coverage``."""
    if snapshot is None:
        return NAN
    spec = METRICS[name]
    raw = _raw(snapshot, spec)
    if raw is None:
        return NAN
    window = spec.gated_window
    if window is not None:
        tf = snapshot.timeframes.get(window)
        if tf is None or tf.coverage < min_coverage:
            return NAN
    return float(raw)


def _raw(snapshot: MetricsSnapshot, spec: MetricSpec) -> float | None:
    match spec.kind:
        case "price":
            return snapshot.last_price
        case "change_14d":
            return snapshot.change_14d
        case "indicator_1m":
            value: float | None = getattr(snapshot.indicators_1m, spec.field)
            return value
        case "fibonacci":
            tf = snapshot.timeframes.get("1d")
            fib = tf.fibonacci if tf is not None else None
            return None if fib is None else getattr(fib, spec.field)
        case _:
            tf = snapshot.timeframes.get(spec.timeframe or "")
            return None if tf is None else getattr(tf, spec.field)


class Frame:
    """One minute of ``snapshots`` (one row per symbol) plus the other symbols rules refer to.

    ``others`` maps a referenced symbol (``BTCUSDT`` for ``BTC.c1h``) to its snapshot of the same
    minute, or None when it has none (its metrics then read as null). A referenced symbol that is
    also a row of this frame is read from the row.
    """

    def __init__(
        self, minute: int, snapshots: Sequence[MetricsSnapshot], others: Mapping[str, MetricsSnapshot | None]
    ) -> None:
        self.minute = minute
        self.snapshots = list(snapshots)
        self.size = len(self.snapshots)
        self.symbols = np.array([s.symbol for s in self.snapshots], dtype=object)
        self._rows = {s.symbol: s for s in self.snapshots}
        self._others = others
        self._columns: dict[tuple[str, str | None, float], FloatArray | np.float64] = {}
        self._raw: dict[MetricSpec, FloatArray] = {}
        self._frames: dict[str, list[TimeframeMetrics | None]] = {}

    def select(self, rows: npt.NDArray[np.int64]) -> Frame:
        """Return the frame of some rows only (indices, in order); other symbols still read from every row."""
        return Frame(self.minute, [self.snapshots[i] for i in rows.tolist()], {**self._others, **self._rows})

    def other(self, symbol: str) -> MetricsSnapshot | None:
        """Return the snapshot of ``symbol`` at this minute, from the rows or ``others``."""
        row = self._rows.get(symbol)
        return row if row is not None else self._others.get(symbol)

    def column(self, name: str, symbol: str | None, min_coverage: float) -> FloatArray | np.float64:
        """Return metric ``name`` of every row (or of ``symbol``, as a scalar), NaN where null or gated."""
        key = (name, symbol, min_coverage)
        cached = self._columns.get(key)
        if cached is not None:
            return cached
        value: FloatArray | np.float64
        if symbol is not None:
            value = np.float64(metric_value(self.other(symbol), name, min_coverage))
        else:
            spec = METRICS[name]
            value = self._raw_column(spec)
            window = spec.gated_window
            if window is not None:
                coverage = self._raw_column(MetricSpec("coverage", "coverage", window))
                value = np.where(coverage >= min_coverage, value, np.nan)
        self._columns[key] = value
        return value

    def _raw_column(self, spec: MetricSpec) -> FloatArray:
        # One list comprehension per (kind, field, timeframe) and minute; None becomes NaN.
        cached = self._raw.get(spec)
        if cached is not None:
            return cached
        field = spec.field
        values: list[float | None]
        match spec.kind:
            case "price":
                values = [s.last_price for s in self.snapshots]
            case "change_14d":
                values = [s.change_14d for s in self.snapshots]
            case "indicator_1m":
                values = [getattr(s.indicators_1m, field) for s in self.snapshots]
            case "fibonacci":
                fibs = [t.fibonacci if t is not None else None for t in self._timeframes("1d")]
                values = [getattr(f, field) if f is not None else None for f in fibs]
            case _:
                values = [getattr(t, field) if t is not None else None for t in self._timeframes(spec.timeframe or "")]
        column = np.array(values, dtype=np.float64)
        self._raw[spec] = column
        return column

    def _timeframes(self, timeframe: str) -> list[TimeframeMetrics | None]:
        cached = self._frames.get(timeframe)
        if cached is None:
            cached = self._frames[timeframe] = [s.timeframes.get(timeframe) for s in self.snapshots]
        return cached
