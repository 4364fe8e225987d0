"""The metric names a rule can read, and where each one lives in a ``MetricsSnapshot``.

Names are ``<prefix><timeframe>``:

- window metrics (metrics.md, "Rolling windows"), timeframes 5m 15m 1h 4h 8h 1d:
  ``c`` change in percent, ``v`` quote volume (USDT), ``bv`` base volume, ``vr`` volume ratio,
  ``vwap``, ``vcp``, ``open``, ``high``, ``low``, ``close``, ``cov`` (coverage, 0..1);
- indicators of the clock-aligned bars, timeframes 1m 5m 15m 1h 4h 8h 1d:
  ``rsi`` (RSI 14), ``macd``, ``macds`` (signal), ``macdh`` (histogram), ``bbu`` ``bbm`` ``bbl``
  (Bollinger upper, middle, lower);
- Fibonacci pivots of the 1d window: ``fib_r1 fib_r618 fib_r382 fib_pivot fib_s382 fib_s618 fib_s1``;
- ``c14d`` (change over 336 one-hour bars) and ``price`` (the minute's close).

Window metrics are gated by coverage: a value read from a window whose coverage is below the
rule's ``min_coverage`` reads as null, so a comparison on it is never true (metrics.md: rules "by
default do not fire on windows below 1.0"). ``cov`` itself is never gated.
"""

from __future__ import annotations

from dataclasses import dataclass

from screener.events.models import BAR_TIMEFRAMES, WINDOWS


@dataclass(frozen=True)
class MetricSpec:
    """Where a metric is read: ``kind`` says which part of the snapshot, ``field`` which attribute."""

    kind: str  # "window", "indicator", "indicator_1m", "fibonacci", "change_14d", "price", "coverage"
    field: str
    timeframe: str | None = None

    @property
    def gated_window(self) -> str | None:
        """Return the window whose coverage gates this metric, or None."""
        return self.timeframe if self.kind in ("window", "fibonacci") else None


_WINDOW_FIELDS = {
    "c": "price_change",
    "v": "volume",
    "bv": "base_volume",
    "vr": "volume_ratio",
    "vwap": "vwap",
    "vcp": "vcp",
    "open": "open",
    "high": "high",
    "low": "low",
    "close": "close",
}
_INDICATOR_FIELDS = {
    "rsi": "rsi_14",
    "macd": "macd",
    "macds": "macd_signal",
    "macdh": "macd_hist",
    "bbu": "bb_upper",
    "bbm": "bb_middle",
    "bbl": "bb_lower",
}
_FIB_LEVELS = ("r1", "r618", "r382", "pivot", "s382", "s618", "s1")


def _build() -> dict[str, MetricSpec]:
    names: dict[str, MetricSpec] = {
        "c14d": MetricSpec("change_14d", "change_14d"),
        "price": MetricSpec("price", "last_price"),
    }
    for tf in WINDOWS:
        for prefix, field in _WINDOW_FIELDS.items():
            names[f"{prefix}{tf}"] = MetricSpec("window", field, tf)
        names[f"cov{tf}"] = MetricSpec("coverage", "coverage", tf)
    for tf in BAR_TIMEFRAMES:
        for prefix, field in _INDICATOR_FIELDS.items():
            kind = "indicator_1m" if tf == "1m" else "indicator"
            names[f"{prefix}{tf}"] = MetricSpec(kind, field, tf)
    for level in _FIB_LEVELS:
        names[f"fib_{level}"] = MetricSpec("fibonacci", level, "1d")
    return names


METRICS: dict[str, MetricSpec] = _build()


def is_metric(name: str) -> bool:
    """Return whether ``name`` is a metric name."""
    return name in METRICS


def full_symbol(prefix: str) -> str:
    """Return the symbol a ``BTC.`` style prefix names: a base asset gets ``USDT`` appended."""
    upper = prefix.upper()
    return upper if upper.endswith("USDT") else f"{upper}USDT"
