"""Read alert history from PostgreSQL (indexes on (symbol, minute), (rule_type, minute), (minute), (id))."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg

from gateway.views import iso
from screener.events.models import Alert, AlertAudience

COLUMNS = "id, symbol, rule_type, description, ts, price, metadata, minute, audience, created_at"

# Who may read a row: a user's own-rule alerts only that user; others when public or addressed to them.
VISIBLE_TO = """(
    (audience->>'owner' IS NULL
        AND (coalesce((audience->>'public')::boolean, true) OR coalesce(audience->'users' ? {p}, false)))
    OR audience->>'owner' = {p})"""


async def recent_alerts(
    pool: asyncpg.Pool,
    *,
    user_id: str | None,
    symbol: str | None,
    rule_type: str | None,
    since: datetime | None,
    limit: int,
) -> list[asyncpg.Record]:
    """Return visible alerts, newest first."""
    clauses = [VISIBLE_TO.format(p="$1")]
    args: list[Any] = [user_id]
    for column, value in (("symbol", symbol), ("rule_type", rule_type)):
        if value is not None:
            args.append(value)
            clauses.append(f"{column} = ${len(args)}")
    if since is not None:
        args.append(since)
        # ``since`` bounds the alert's timestamp; the minute bound lets PostgreSQL prune partitions.
        clauses.append(f"minute >= ${len(args)}::timestamptz - interval '1 minute' AND ts >= ${len(args)}")
    args.append(limit)
    sql = (
        f"SELECT {COLUMNS} FROM alert_history WHERE {' AND '.join(clauses)} "
        f"ORDER BY minute DESC, created_at DESC, id LIMIT ${len(args)}"
    )
    async with pool.acquire() as conn:
        return list(await conn.fetch(sql, *args))


@dataclass(frozen=True)
class Replay:
    """Alerts after a client's last seen alert, oldest first."""

    alerts: list[Alert]
    found: bool
    truncated: bool


async def alerts_after(pool: asyncpg.Pool, last_alert_id: str, *, user_id: str | None, limit: int) -> Replay:
    """Return the visible alerts recorded after ``last_alert_id`` (at least once: dedupe by id)."""
    async with pool.acquire() as conn:
        # The anchor must be visible to the caller too: otherwise "found" would tell whether an alert
        # id of someone else's rule exists.
        anchor = await conn.fetchrow(
            f"SELECT minute, created_at FROM alert_history WHERE id = $1::uuid AND {VISIBLE_TO.format(p='$2')} LIMIT 1",
            last_alert_id,
            user_id,
        )
        if anchor is None:
            return Replay([], found=False, truncated=False)
        rows = await conn.fetch(
            f"SELECT {COLUMNS} FROM alert_history WHERE minute >= $2 AND id <> $3::uuid "
            f"AND (minute > $2 OR created_at >= $4) AND {VISIBLE_TO.format(p='$1')} "
            "ORDER BY minute, created_at, id LIMIT $5",
            user_id,
            anchor["minute"],
            last_alert_id,
            anchor["created_at"],
            limit + 1,
        )
    alerts = [row_to_alert(r) for r in rows[:limit]]
    return Replay(alerts, found=True, truncated=len(rows) > limit)


def row_to_alert(row: asyncpg.Record) -> Alert:
    """Return the ``Alert`` of an ``alert_history`` row."""
    metadata = row["metadata"]
    audience = row["audience"]
    audience_data = json.loads(audience) if isinstance(audience, str) else (audience or {})
    return Alert(
        id=str(row["id"]),
        symbol=row["symbol"],
        rule_type=row["rule_type"],
        description=row["description"],
        timestamp=iso(row["ts"]),
        price=row["price"],
        metadata=(json.loads(metadata) if isinstance(metadata, str) else metadata) or {},
        minute=int(row["minute"].timestamp() * 1000),
        audience=AlertAudience.model_validate(audience_data) if audience_data else AlertAudience(),
    )
