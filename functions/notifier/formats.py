"""Turn an alert into the HTTP request each channel expects: Discord, Telegram, Slack or signed JSON.

Plain JSON webhooks are signed like Stripe's: the ``X-Screener-Signature`` header is
``sha256=<hex HMAC-SHA256 of "<timestamp>.<raw body>" keyed by the webhook's secret>`` and
``X-Screener-Timestamp`` is that Unix timestamp in seconds. Signing the timestamp with the body
lets a receiver reject a replayed request: it recomputes the HMAC over the same bytes, compares in
constant time, and refuses a timestamp more than a few minutes old (``verify_signature``).
"""

from __future__ import annotations

import hashlib
import hmac
import html
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from functions.notifier.models import InvalidWebhook, Webhook, delivery_id
from screener.events.models import Alert

USER_AGENT = "screener-notifier/1"
SIGNATURE_HEADER = "X-Screener-Signature"
TIMESTAMP_HEADER = "X-Screener-Timestamp"
DELIVERY_HEADER = "X-Screener-Delivery"
DEFAULT_TOLERANCE_SECONDS = 300

# Embed side colours: green up, red down, grey when the alert says neither.
COLOR_UP = 0x2ECC71
COLOR_DOWN = 0xE74C3C
COLOR_NEUTRAL = 0x95A5A6
# Discord allows 25 fields per embed; a dozen keeps the message readable.
MAX_FIELDS = 12
_UP_WORDS = ("bull", "bottom", "accumulation", "long")
_DOWN_WORDS = ("bear", "top", "distribution", "short")
# Metadata keys, shortest window first, whose sign tells the direction when the rule id does not.
_CHANGE_KEYS = ("c5m", "c15m", "c1h", "c8h", "c1d", "price_change")


@dataclass(frozen=True)
class OutgoingRequest:
    """One HTTP POST to a destination: the exact body bytes and headers to send."""

    url: str
    body: bytes
    headers: Mapping[str, str] = field(default_factory=dict)


def direction(alert: Alert) -> int:
    """Return +1 for a bullish alert, -1 for a bearish one, 0 when it says neither.

    The rule id decides when it names a side (``futures_big_bull_60``); otherwise the sign of the
    shortest price change in the metadata does.
    """
    words = alert.rule_type.lower().split("_")
    if any(w in _UP_WORDS for w in words):
        return 1
    if any(w in _DOWN_WORDS for w in words):
        return -1
    for key in _CHANGE_KEYS:
        value = alert.metadata.get(key)
        if isinstance(value, int | float) and math.isfinite(value) and value != 0:
            return 1 if value > 0 else -1
    return 0


def format_value(key: str, value: object) -> str:
    """Return a metric value as people read it: changes in %, volumes in compact USDT."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return str(value)[:100]
    if not math.isfinite(value):
        return str(value)
    lowered = key.lower()
    if (lowered.startswith("c") and lowered[1:2].isdigit()) or "change" in lowered:
        return f"{value:+.2f}%"
    if (lowered.startswith("v") and lowered[1:2].isdigit()) or "volume" in lowered:
        return _compact(value) + " USDT"
    return f"{value:.4g}"


def _compact(value: float) -> str:
    for limit, suffix in ((1e9, "B"), (1e6, "M"), (1e3, "K")):
        if abs(value) >= limit:
            return f"{value / limit:.2f}{suffix}"
    return f"{value:.2f}"


def format_price(price: float) -> str:
    """Return a price with enough significant digits for sub-cent coins."""
    return f"{price:.8g}"


def _title(alert: Alert, rule_name: str | None) -> str:
    return f"{alert.symbol} · {rule_name or alert.rule_type}"


def _metric_items(alert: Alert) -> list[tuple[str, str]]:
    return [(key, format_value(key, value)) for key, value in alert.metadata.items()][:MAX_FIELDS]


def discord_body(alert: Alert, rule_name: str | None = None) -> dict[str, Any]:
    """Return a Discord webhook body: one embed with the key metrics as fields."""
    color = {1: COLOR_UP, -1: COLOR_DOWN}.get(direction(alert), COLOR_NEUTRAL)
    fields = [{"name": "Price", "value": format_price(alert.price), "inline": True}]
    fields += [{"name": key, "value": value, "inline": True} for key, value in _metric_items(alert)]
    embed = {
        "title": _title(alert, rule_name)[:256],
        "description": alert.description[:4096],
        "color": color,
        "fields": fields,
        "timestamp": alert.timestamp,
        "footer": {"text": f"{alert.rule_type} · alert {alert.id}"},
    }
    return {"username": "Screener", "embeds": [embed], "allowed_mentions": {"parse": []}}


def telegram_body(alert: Alert, chat_id: str, rule_name: str | None = None) -> dict[str, Any]:
    """Return a Telegram Bot API ``sendMessage`` body (HTML parse mode, user text escaped)."""
    arrow = {1: "🟢", -1: "🔴"}.get(direction(alert), "⚪")
    lines = [
        f"{arrow} <b>{html.escape(_title(alert, rule_name))}</b>",
        html.escape(alert.description),
        f"Price: <code>{format_price(alert.price)}</code>",
    ]
    lines += [f"{html.escape(key)}: <code>{html.escape(value)}</code>" for key, value in _metric_items(alert)]
    lines.append(f"<i>{html.escape(alert.timestamp)}</i>")
    # Telegram caps a message at 4096 characters.
    return {"chat_id": chat_id, "text": "\n".join(lines)[:4096], "parse_mode": "HTML", "disable_web_page_preview": True}


def _slack_escape(text: str) -> str:
    # Slack's mrkdwn reserves exactly these three characters (Slack API, "Formatting text").
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def slack_body(alert: Alert, rule_name: str | None = None) -> dict[str, Any]:
    """Return a Slack incoming-webhook body: ``text`` (the notification's fallback) and Block Kit blocks."""
    arrow = {1: ":large_green_circle:", -1: ":red_circle:"}.get(direction(alert), ":white_circle:")
    title = _slack_escape(_title(alert, rule_name))
    lines = [f"{arrow} *{title}*", _slack_escape(alert.description), f"Price: `{format_price(alert.price)}`"]
    lines += [f"{_slack_escape(key)}: `{_slack_escape(value)}`" for key, value in _metric_items(alert)]
    # A section's text is capped at 3000 characters by Block Kit.
    section = "\n".join(lines)[:3000]
    return {
        "text": f"{title}: {_slack_escape(alert.description)}"[:3000],
        "blocks": [
            {"type": "section", "text": {"type": "mrkdwn", "text": section}},
            {
                "type": "context",
                "elements": [{"type": "mrkdwn", "text": f"{alert.rule_type} · {alert.timestamp} · alert {alert.id}"}],
            },
        ],
        "unfurl_links": False,
    }


def json_body(alert: Alert, delivery: str) -> dict[str, Any]:
    """Return the plain JSON body: the alert as the web client sees it, plus the delivery id."""
    return {**alert.public_view(), "delivery_id": delivery}


def signature(secret: str, timestamp: int, body: bytes) -> str:
    """Return the ``X-Screener-Signature`` value of ``body`` sent at ``timestamp``."""
    message = str(timestamp).encode() + b"." + body
    return "sha256=" + hmac.new(secret.encode(), message, hashlib.sha256).hexdigest()


def verify_signature(
    secret: str,
    body: bytes,
    signature_header: str,
    timestamp_header: str,
    *,
    now: float,
    tolerance_seconds: float = DEFAULT_TOLERANCE_SECONDS,
) -> bool:
    """Return whether a received JSON webhook is authentic and fresh (what a receiver should check)."""
    try:
        timestamp = int(timestamp_header)
    except ValueError:
        return False
    if abs(now - timestamp) > tolerance_seconds:
        return False
    return hmac.compare_digest(signature(secret, timestamp, body), signature_header)


def _finite(value: Any) -> Any:
    # JSON has no NaN or infinity; a metric that is not a number is sent as null.
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    return value


def _encode(body: Mapping[str, Any]) -> bytes:
    return json.dumps(_finite(body), separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode()


def build_request(webhook: Webhook, alert: Alert, now: float, rule_name: str | None = None) -> OutgoingRequest:
    """Return the request that delivers ``alert`` to ``webhook``; ``now`` is Unix time in seconds."""
    headers = {"Content-Type": "application/json", "User-Agent": USER_AGENT}
    if webhook.kind == "discord":
        return OutgoingRequest(webhook.url, _encode(discord_body(alert, rule_name)), headers)
    if webhook.kind == "telegram":
        if not webhook.chat_id:
            raise InvalidWebhook(f"webhook {webhook.id}: a telegram webhook needs a chat_id")
        return OutgoingRequest(webhook.url, _encode(telegram_body(alert, webhook.chat_id, rule_name)), headers)
    if webhook.kind == "slack":
        return OutgoingRequest(webhook.url, _encode(slack_body(alert, rule_name)), headers)
    delivery = delivery_id(webhook.id, alert.id)
    body = _encode(json_body(alert, delivery))
    headers[DELIVERY_HEADER] = delivery
    if webhook.secret:
        timestamp = int(now)
        headers[TIMESTAMP_HEADER] = str(timestamp)
        headers[SIGNATURE_HEADER] = signature(webhook.secret, timestamp, body)
    return OutgoingRequest(webhook.url, body, headers)
