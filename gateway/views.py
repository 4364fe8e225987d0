"""Map our models and rows to the JSON objects of api.md."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

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
FIB_FIELDS = ("r1", "r618", "r382", "pivot", "s382", "s618", "s1")
_EMPTY = TimeframeMetrics()


def iso(instant: datetime) -> str:
    """Return ``instant`` as ISO-8601 UTC with a ``Z``, the way alerts spell timestamps."""
    return instant.astimezone(UTC).isoformat().replace("+00:00", "Z")


def timeframe_view(name: str, metrics: TimeframeMetrics) -> dict[str, Any]:
    """Return the per-timeframe object of api.md (with ``fibonacci`` on 1d)."""
    out: dict[str, Any] = {field: getattr(metrics, field) for field in TIMEFRAME_FIELDS}
    if name == "1d":
        fib = metrics.fibonacci
        out["fibonacci"] = {k: getattr(fib, k) if fib else None for k in FIB_FIELDS}
    return out


def metrics_view(snapshot: MetricsSnapshot) -> dict[str, Any]:
    """Return the metrics object of one symbol (api.md, "all metrics")."""
    return {
        "symbol": snapshot.symbol,
        "timestamp": snapshot.timestamp,
        "last_price": snapshot.last_price,
        "timeframes": {name: timeframe_view(name, snapshot.timeframes.get(name, _EMPTY)) for name in WINDOWS},
    }


def _json_column(value: Any) -> Any:
    return json.loads(value) if isinstance(value, str | bytes) else value


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
