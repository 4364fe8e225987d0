"""Persist alerts into ``alert_history``: batched, idempotent (``ON CONFLICT DO NOTHING``)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import UTC, datetime

import asyncpg

from screener.db.partitions import PartitionCache
from screener.events.models import MINUTE_MS, Alert

_INSERT = """
INSERT INTO alert_history (id, rule_type, symbol, minute, ts, price, description, metadata, audience)
SELECT u.id, u.rule_type, u.symbol, u.minute, u.ts, u.price, u.description, u.metadata::jsonb, u.audience::jsonb
FROM unnest($1::uuid[], $2::text[], $3::text[], $4::timestamptz[], $5::timestamptz[], $6::float8[],
            $7::text[], $8::text[], $9::text[])
     AS u(id, rule_type, symbol, minute, ts, price, description, metadata, audience)
ON CONFLICT DO NOTHING
"""


def _instant(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, tz=UTC)


class AlertHistory:
    """Write alerts to ``alert_history``, creating the day partitions they fall in first."""

    def __init__(self) -> None:
        self._partitions = PartitionCache()

    async def save(self, conn: asyncpg.Connection, alerts: Sequence[Alert]) -> int:
        """Insert ``alerts`` in one statement; return how many were new (a replay inserts none)."""
        if not alerts:
            return 0
        await self._partitions.ensure(conn, "alert_history", [a.minute for a in alerts])
        status = await conn.execute(
            _INSERT,
            [a.id for a in alerts],
            [a.rule_type for a in alerts],
            [a.symbol for a in alerts],
            [_instant(a.minute) for a in alerts],
            [_instant(a.minute + MINUTE_MS) for a in alerts],
            [a.price for a in alerts],
            [a.description for a in alerts],
            [json.dumps(a.metadata) for a in alerts],
            [a.audience.model_dump_json() for a in alerts],
        )
        return int(status.rsplit(" ", 1)[-1])
