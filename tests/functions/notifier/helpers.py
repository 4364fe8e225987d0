"""Builders shared by the notifier tests."""

from __future__ import annotations

import asyncio
import json
import uuid
from datetime import UTC, datetime
from typing import Any

import asyncpg

from screener.events.models import Alert, AlertAudience, alert_id, minute_close_iso

MINUTE = 1_700_000_040_000 - 1_700_000_040_000 % 60_000


def make_alert(
    rule_type: str = "futures_big_bull_60",
    symbol: str = "ETHUSDT",
    minute: int = MINUTE,
    *,
    audience: AlertAudience | None = None,
    metadata: dict[str, Any] | None = None,
) -> Alert:
    """Return an alert as the rule engine emits it."""
    return Alert(
        id=alert_id(rule_type, symbol, minute),
        symbol=symbol,
        rule_type=rule_type,
        description=f"{symbol} surged",
        timestamp=minute_close_iso(minute),
        price=3120.5,
        metadata={"c1h": 1.9, "c8h": 3.2, "v1h": 812_345.0} if metadata is None else metadata,
        minute=minute,
        audience=audience or AlertAudience(),
    )


class RecordingSleep:
    """An injectable ``sleep`` that records the delays asked for and returns at once."""

    def __init__(self) -> None:
        self.delays: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.delays.append(seconds)
        await asyncio.sleep(0)


class FakeClock:
    """A wall clock the test moves by hand."""

    def __init__(self, start: datetime | None = None) -> None:
        self.now = start or datetime(2026, 11, 21, 12, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now


async def add_webhook(
    conn: asyncpg.Connection,
    url: str,
    *,
    user_id: str = "alice",
    kind: str = "http",
    secret: str | None = None,
    chat_id: str | None = None,
    enabled: bool = True,
    rule_types: list[str] | None = None,
    symbols: list[str] | None = None,
    scope: str = "all",
) -> uuid.UUID:
    """Insert a webhook row; return its id."""
    webhook_id = uuid.uuid4()
    await conn.execute(
        """INSERT INTO webhooks (id, user_id, kind, url, secret, chat_id, enabled, rule_types, symbols, scope)
           VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)""",
        webhook_id,
        user_id,
        kind,
        url,
        secret,
        chat_id,
        enabled,
        rule_types,
        symbols,
        scope,
    )
    return webhook_id


async def add_rule(
    conn: asyncpg.Connection, rule_type: str, *, default_on: bool = True, owner: str | None = None
) -> None:
    """Insert a rule row with a display name."""
    await conn.execute(
        """INSERT INTO alert_rules (rule_type, name, expression, default_on, owner)
           VALUES ($1, $2, 'c5m > 1', $3, $4)""",
        rule_type,
        rule_type.replace("_", " ").title(),
        default_on,
        owner,
    )


async def set_user_rules(conn: asyncpg.Connection, user_id: str, rules: dict[str, object]) -> None:
    """Store a user's personal rule switches."""
    await conn.execute("INSERT INTO user_settings (user_id, rules) VALUES ($1, $2::jsonb)", user_id, json.dumps(rules))


async def deliveries(conn: asyncpg.Connection) -> dict[tuple[uuid.UUID, str], asyncpg.Record]:
    """Return the delivery log keyed by (webhook id, alert id)."""
    rows = await conn.fetch("SELECT * FROM webhook_deliveries")
    return {(row["webhook_id"], str(row["alert_id"])): row for row in rows}
