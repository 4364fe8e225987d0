"""Build ``MetricsSnapshot`` objects for rule tests from short metric names (c5m=1.2, rsi15m=30)."""

from __future__ import annotations

from typing import Any

from cloudevents.core.v1.event import CloudEvent

from functions.rules.vocabulary import METRICS
from screener.events.envelope import make_event
from screener.events.models import (
    WINDOWS,
    Indicators,
    MetricsSnapshot,
    TimeframeMetrics,
    metrics_event_id,
    minute_close_iso,
)
from screener.names import EVENT_SOURCE_CALCULATOR, TYPE_METRICS_COMPUTED

T0 = 1_748_736_000_000  # 2025-06-01 00:00 UTC


def snapshot(
    symbol: str = "ETHUSDT", minute: int = T0, *, coverage: float = 1.0, **metrics: float | None
) -> MetricsSnapshot:
    """Return a snapshot whose named metrics have the given values; everything else is null."""
    frames: dict[str, dict[str, Any]] = {tf: {"coverage": coverage} for tf in WINDOWS}
    indicators_1m: dict[str, Any] = {}
    top: dict[str, Any] = {"last_price": 100.0}
    for name, value in metrics.items():
        if name.startswith("cov"):
            frames[name[3:]]["coverage"] = value
            continue
        spec = METRICS[name]
        if spec.kind in ("window", "indicator"):
            frames[spec.timeframe or ""][spec.field] = value
        elif spec.kind == "indicator_1m":
            indicators_1m[spec.field] = value
        elif spec.kind == "change_14d":
            top["change_14d"] = value
        elif spec.kind == "price":
            top["last_price"] = value
        else:
            raise ValueError(f"snapshot() cannot set {name}")
    return MetricsSnapshot(
        symbol=symbol,
        minute=minute,
        timestamp=minute_close_iso(minute),
        timeframes={tf: TimeframeMetrics(**values) for tf, values in frames.items()},
        indicators_1m=Indicators(**indicators_1m),
        **top,
    )


def metrics_event(s: MetricsSnapshot) -> CloudEvent:
    """Return the metrics-computed event the calculator would publish for ``s``."""
    return make_event(
        event_type=TYPE_METRICS_COMPUTED,
        source=EVENT_SOURCE_CALCULATOR,
        event_id=metrics_event_id(s.symbol, s.minute),
        subject=s.symbol,
        data=s,
        traceparent="00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
    )
