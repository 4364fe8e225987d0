"""What the notifier works with: a webhook, one delivery job, the outcome of a delivery."""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal
from urllib.parse import parse_qs, urlsplit

from screener.events.models import Alert

DeliveryKey = tuple[uuid.UUID, uuid.UUID]
WebhookKind = Literal["discord", "telegram", "slack", "http"]
DeliveryStatus = Literal["pending", "sent", "failed", "skipped"]
# client.md, decision 15: ``http`` is signed JSON (``formats.json_body``); ``slack`` an incoming webhook.
KINDS: tuple[WebhookKind, ...] = ("discord", "telegram", "slack", "http")

# uuid5 namespace of delivery ids: a delivery id is a pure function of (webhook, alert), so a
# receiver can drop a duplicate that an at-least-once redelivery sends.
DELIVERY_ID_NAMESPACE = uuid.UUID("0b8f4f0e-2d1c-4c55-9f4e-6a4f1b7f3c21")


class NotifierError(Exception):
    """Base error of the notifier package."""


class InvalidWebhook(NotifierError):
    """A webhook row cannot be delivered to (unknown kind, missing chat id); the message says which."""


def telegram_chat_id(url: str) -> str | None:
    """Return the ``chat_id`` query parameter of a Telegram Bot API URL, if it has one.

    The web client stores a Telegram webhook as one full URL,
    ``https://api.telegram.org/bot<token>/sendMessage?chat_id=<id>`` (client.md, section 3).
    """
    values = parse_qs(urlsplit(url).query).get("chat_id")
    return values[0] if values and values[0] else None


@dataclass(frozen=True)
class Webhook:
    """One destination of one user (a row of table ``webhooks``)."""

    id: uuid.UUID
    user_id: str
    kind: WebhookKind
    url: str
    secret: str | None = None
    chat_id: str | None = None
    failure_count: int = 0
    paused_until: datetime | None = None

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> Webhook:
        """Build from a ``webhooks`` row (an asyncpg Record or a dict); raise ``InvalidWebhook``."""
        kind = row["kind"]
        if kind not in KINDS:
            raise InvalidWebhook(f"webhook {row['id']}: unknown kind {kind!r}, expected one of {list(KINDS)}")
        chat_id = row.get("chat_id") or (telegram_chat_id(str(row["url"])) if kind == "telegram" else None)
        if kind == "telegram" and not chat_id:
            raise InvalidWebhook(f"webhook {row['id']}: a telegram webhook needs a chat_id in its URL")
        raw_id = row["id"]
        return cls(
            id=raw_id if isinstance(raw_id, uuid.UUID) else uuid.UUID(str(raw_id)),
            user_id=str(row["user_id"]),
            kind=kind,
            url=str(row["url"]),
            secret=row.get("secret"),
            chat_id=None if chat_id is None else str(chat_id),
            failure_count=int(row.get("failure_count") or 0),
            paused_until=row.get("paused_until"),
        )


def delivery_id(webhook_id: uuid.UUID, alert_id: str) -> str:
    """Return the deterministic id of the delivery of ``alert_id`` to ``webhook_id``."""
    return str(uuid.uuid5(DELIVERY_ID_NAMESPACE, f"{webhook_id}|{alert_id}"))


@dataclass(frozen=True)
class DeliveryJob:
    """One alert to deliver to one webhook; ``rule_name`` is the rule's display name when known."""

    webhook: Webhook
    alert: Alert
    rule_name: str | None = None
    observed_at: float = 0.0  # monotonic instant the webhook row was read (its pause state's age)

    @property
    def key(self) -> DeliveryKey:
        """Return the delivery log key (webhook id, alert id)."""
        return self.webhook.id, uuid.UUID(self.alert.id)


@dataclass(frozen=True)
class DeliveryResult:
    """How one delivery ended: its final status, the attempts made and the last error, if any."""

    status: DeliveryStatus
    attempts: int = 0
    http_status: int | None = None
    error: str | None = None

    @property
    def ok(self) -> bool:
        """Return whether the destination accepted the message."""
        return self.status == "sent"
