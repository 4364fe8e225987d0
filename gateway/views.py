"""Map our models and rows to the JSON objects of api.md."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import orjson

from screener.events.models import WINDOWS, MetricsSnapshot, TimeframeMetrics

# api.md, "per timeframe object": exactly these keys, null where not computable.
TIMEFRAME_FIELDS = (
    "open",
    "high",
    "low",
    "close",
    "volume",
    "price_change",
    "volume_ratio",
    "vwap",
    "vcp",
    "rsi_14",
    "macd",
    "macd_signal",
    "macd_hist",
    "bb_upper",
    "bb_middle",
    "bb_lower",
    "coverage",
)
# client.md, decision 12: the levels every timeframe object carries, as multiples of the window's
# range R around its pivot P = (H + L + C) / 3 (the calculator's 1d levels under the client's names).
FIB_RATIOS = (("r3", 1.0), ("r2", 0.618), ("r1", 0.382), ("pivot", 0.0), ("s1", -0.382), ("s2", -0.618), ("s3", -1.0))
FIB_FIELDS = tuple(name for name, _ in FIB_RATIOS)
_EMPTY = TimeframeMetrics()


def iso(instant: datetime) -> str:
    """Return ``instant`` as ISO-8601 UTC with a ``Z``, the way alerts spell timestamps."""
    return instant.astimezone(UTC).isoformat().replace("+00:00", "Z")


def fibonacci_view(high: float | None, low: float | None, close: float | None) -> dict[str, float | None]:
    """Return the Fibonacci pivot levels of a window (all null when the window is empty)."""
    if high is None or low is None or close is None:
        return dict.fromkeys(FIB_FIELDS)
    pivot = (high + low + close) / 3.0
    spread = high - low
    return {name: pivot + ratio * spread for name, ratio in FIB_RATIOS}


def timeframe_view(metrics: TimeframeMetrics) -> dict[str, Any]:
    """Return the per-timeframe object: api.md's fields plus ``fibonacci`` of that timeframe's window."""
    out: dict[str, Any] = {field: getattr(metrics, field) for field in TIMEFRAME_FIELDS}
    out["fibonacci"] = fibonacci_view(metrics.high, metrics.low, metrics.close)
    return out


def metrics_view(snapshot: MetricsSnapshot) -> dict[str, Any]:
    """Return the metrics object of one symbol (api.md, "all metrics")."""
    return {
        "symbol": snapshot.symbol,
        "timestamp": snapshot.timestamp,
        "last_price": snapshot.last_price,
        "timeframes": {name: timeframe_view(snapshot.timeframes.get(name, _EMPTY)) for name in WINDOWS},
    }


def _json_column(value: Any) -> Any:
    # orjson: an integer beyond 64 bits (jsonb keeps any) comes back as a float it can encode again.
    return orjson.loads(value) if isinstance(value, str | bytes) else value


def alert_row_view(row: Any) -> dict[str, Any]:
    """Return the alert object of api.md from an ``alert_history`` row."""
    return {
        "id": str(row["id"]),
        "symbol": row["symbol"],
        "rule_type": row["rule_type"],
        "description": row["description"],
        "timestamp": iso(row["ts"]),
        "price": row["price"],
        "metadata": _json_column(row["metadata"]) or {},
    }


def decimal_text(value: float) -> str:
    """Return ``value`` as a plain decimal string, the way Binance spells prices (no exponent)."""
    text = repr(float(value))
    if "e" in text or "n" in text:  # exponent (1e-05) or inf/nan: the slow exact path
        text = format(Decimal(text), "f")
    return text[:-2] if text.endswith(".0") else text


def delivery_view(row: Any, *keys: str) -> dict[str, Any]:
    """Return one ``webhook_deliveries`` row as the API shows it, with ``keys`` naming its subject.

    ``keys`` are the identifying columns the caller selected (``alert_id``, or ``webhook_id`` and
    ``kind``); ids are rendered as strings.
    """
    view: dict[str, Any] = {key: str(row[key]) if key.endswith("_id") else row[key] for key in keys}
    view.update(
        status=row["status"],
        attempts=row["attempts"],
        last_error=row["last_error"],
        http_status=row["http_status"],
        sent_at=iso(row["sent_at"]) if row["sent_at"] else None,
        updated_at=iso(row["updated_at"]),
    )
    return view
