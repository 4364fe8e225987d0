"""Typed payloads of the events the functions exchange (the ``data`` of each CloudEvent)."""

from __future__ import annotations

import hashlib
import math
import uuid
from datetime import UTC, datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

MINUTE_MS = 60_000

# uuid5 namespace for alert ids: an alert id is a pure function of (rule_type, symbol, minute).
ALERT_ID_NAMESPACE = uuid.UUID("6f1c3c52-5a0e-4d7e-9a55-0c7d2f0b9a11")
_ALERT_ID_NAMESPACE_BYTES = ALERT_ID_NAMESPACE.bytes


class InvalidCandle(ValueError):
    """A candle breaks the validity rules of metrics.md; ``reason`` says which."""

    def __init__(self, symbol: str, open_time: int, reason: str) -> None:
        super().__init__(f"invalid candle {symbol}@{open_time}: {reason}")
        self.symbol = symbol
        self.open_time = open_time
        self.reason = reason


class Candle(BaseModel):
    """One 1-minute kline of a USD-M perpetual (metrics.md, "Candle")."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    symbol: str = Field(min_length=1, max_length=40, pattern=r"^[A-Z0-9]+$")
    open_time: int = Field(ge=0, description="ms since epoch, UTC, a multiple of 60000")
    open: float
    high: float
    low: float
    close: float
    volume: float = Field(description="base asset volume")
    quote_volume: float = Field(description="USDT volume")
    trades: int = 0
    taker_buy_volume: float = 0.0
    taker_buy_quote_volume: float = 0.0
    closed: bool = True
    quote_volume_derived: bool = Field(
        default=False, description="true when the source had no quote volume and it was derived"
    )

    @property
    def close_time(self) -> int:
        """Return the last millisecond of the minute, as Binance's ``k.T``."""
        return self.open_time + MINUTE_MS - 1

    def validation_error(self) -> str | None:
        """Return why this candle is invalid (metrics.md), or None when it is valid."""
        prices = (self.open, self.high, self.low, self.close)
        if self.open_time % MINUTE_MS:
            return f"open_time {self.open_time} is not a multiple of 60000"
        if not all(math.isfinite(p) and p > 0 for p in prices):
            return "prices must be finite and > 0"
        if self.low > min(self.open, self.close):
            return f"low {self.low} > min(open, close)"
        if self.high < max(self.open, self.close):
            return f"high {self.high} < max(open, close)"
        volumes = (self.volume, self.quote_volume, self.taker_buy_volume, self.taker_buy_quote_volume)
        if not all(math.isfinite(v) and v >= 0 for v in volumes) or self.trades < 0:
            return "volumes and trades must be finite and >= 0"
        return None

    def validate_market_rules(self) -> Candle:
        """Return self, or raise ``InvalidCandle`` with the reason."""
        reason = self.validation_error()
        if reason is not None:
            raise InvalidCandle(self.symbol, self.open_time, reason)
        return self


class Fibonacci(BaseModel):
    """Fibonacci pivot levels of the 1d window (metrics.md)."""

    model_config = ConfigDict(frozen=True)

    r1: float | None = None
    r618: float | None = None
    r382: float | None = None
    pivot: float | None = None
    s382: float | None = None
    s618: float | None = None
    s1: float | None = None


class Indicators(BaseModel):
    """Indicators of one timeframe's aligned bars (alone for the 1m timeframe, which has no window)."""

    model_config = ConfigDict(frozen=True)

    rsi_14: float | None = None
    macd: float | None = None
    macd_signal: float | None = None
    macd_hist: float | None = None
    bb_upper: float | None = None
    bb_middle: float | None = None
    bb_lower: float | None = None


class TimeframeMetrics(Indicators):
    """A rolling window's values plus the indicators of the same timeframe's aligned bars."""

    open: float | None = None
    high: float | None = None
    low: float | None = None
    close: float | None = None
    volume: float | None = Field(default=None, description="quote volume (USDT) over the window")
    base_volume: float | None = None
    price_change: float | None = Field(default=None, description="change_N in percent")
    volume_ratio: float | None = None
    vwap: float | None = None
    vcp: float | None = None
    coverage: float = 0.0
    fibonacci: Fibonacci | None = None


WINDOWS: dict[str, int] = {"5m": 5, "15m": 15, "1h": 60, "4h": 240, "8h": 480, "1d": 1440}
BAR_TIMEFRAMES: dict[str, int] = {"1m": 1, "5m": 5, "15m": 15, "1h": 60, "4h": 240, "8h": 480, "1d": 1440}


class MetricsSnapshot(BaseModel):
    """The metrics of one symbol at one minute: the ``data`` of a metrics event."""

    model_config = ConfigDict(frozen=True)

    symbol: str
    minute: int = Field(description="open time (ms) of the latest closed minute the metrics cover")
    timestamp: str = Field(description="ISO-8601 UTC close instant of that minute")
    last_price: float
    provisional: bool = False
    change_14d: float | None = None
    timeframes: dict[str, TimeframeMetrics]
    indicators_1m: Indicators = Field(default_factory=Indicators)


class AlertAudience(BaseModel):
    """Who an alert is for: anonymous clients when ``public``, plus the listed user ids."""

    model_config = ConfigDict(frozen=True)

    public: bool = True
    users: list[str] = Field(default_factory=list)
    owner: str | None = Field(default=None, description="set for a user's own rule: only that user sees it")


class Alert(BaseModel):
    """An alert as alert history and the web client know it (rules.md, api.md)."""

    model_config = ConfigDict(frozen=True)

    id: str
    symbol: str
    rule_type: str
    description: str
    timestamp: str
    price: float
    metadata: dict[str, Any] = Field(default_factory=dict)
    minute: int = Field(description="open time (ms) of the minute that fired")
    audience: AlertAudience = Field(default_factory=AlertAudience)

    def public_view(self) -> dict[str, Any]:
        """Return the object the web client receives (alert history and raw WebSocket frames)."""
        return self.model_dump(include={"id", "symbol", "rule_type", "description", "timestamp", "price", "metadata"})


class RulesChanged(BaseModel):
    """Rules were added, edited, switched or removed."""

    model_config = ConfigDict(frozen=True)

    rule_types: list[str] = Field(default_factory=list)
    at: str


# A hex digit with its two high bits set to the RFC 4122 variant (10): 8, 9, a or b.
_UUID_VARIANT = {digit: "89ab"[int(digit, 16) & 3] for digit in "0123456789abcdef"}


def alert_id(rule_type: str, symbol: str, minute: int) -> str:
    """Return the deterministic id of the alert of ``rule_type`` for ``symbol`` at ``minute``.

    ``uuid.uuid5(ALERT_ID_NAMESPACE, "rule_type|symbol|minute")``, spelled out (RFC 4122: SHA-1 of the
    namespace and name, version 5, variant bits): a backtest derives thousands, and the ``UUID``
    objects cost four times the hash.
    """
    text = hashlib.sha1(_ALERT_ID_NAMESPACE_BYTES + f"{rule_type}|{symbol}|{minute}".encode()).hexdigest()
    # Byte 6's high nibble is the version (5); byte 8's two high bits are the variant (10).
    return f"{text[:8]}-{text[8:12]}-5{text[13:16]}-{_UUID_VARIANT[text[16]]}{text[17:20]}-{text[20:32]}"


def candle_event_id(symbol: str, open_time: int) -> str:
    """Return the deterministic id of a closed candle event (also its ``Nats-Msg-Id``)."""
    return f"candle.1m:{symbol}:{open_time}"


def metrics_event_id(symbol: str, minute: int, provisional: bool = False) -> str:
    """Return the deterministic id of a metrics event."""
    return f"metrics{'.provisional' if provisional else ''}:{symbol}:{minute}"


# Quote assets the web client strips to show a pair's base asset (client.md, section 2), longest first.
QUOTE_ASSETS = ("FDUSD", "USDT", "USDC", "TRY")


def base_asset(symbol: str) -> str:
    """Return the base asset of a pair as the web client shows it: ``BTC`` for BTCUSDT."""
    for quote in QUOTE_ASSETS:
        if symbol.endswith(quote) and len(symbol) > len(quote):
            return symbol[: -len(quote)]
    return symbol


def minute_close_iso(minute: int) -> str:
    """Return the ISO-8601 UTC instant at which ``minute`` (an open time in ms) closed."""
    instant = datetime.fromtimestamp((minute + MINUTE_MS) / 1000, tz=UTC)
    return instant.isoformat().replace("+00:00", "Z")
