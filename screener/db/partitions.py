"""Day partitions of the time-series tables: create on demand, drop past the retention horizon."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, date, datetime, timedelta

import asyncpg

from screener.db.migrate import PARTITIONED_TABLES


class PartitionCache:
    """Remember which day partitions exist so a hot write path asks PostgreSQL once per new day."""

    def __init__(self) -> None:
        self._known: set[tuple[str, date]] = set()

    async def ensure(self, conn: asyncpg.Connection, table: str, instants_ms: Iterable[int]) -> None:
        """Create the partitions of ``table`` covering the given epoch-millisecond instants."""
        days = {datetime.fromtimestamp(ms / 1000, tz=UTC).date() for ms in instants_ms}
        missing = sorted(d for d in days if (table, d) not in self._known)
        if not missing:
            return
        await conn.execute("SELECT screener_ensure_partitions($1, $2, $3)", table, missing[0], missing[-1])
        self._known.update((table, d) for d in missing)


async def apply_retention(conn: asyncpg.Connection, retention_hours: int) -> dict[str, int]:
    """Drop partitions older than the horizon; return how many were dropped per table.

    The horizon is measured back from the newest stored candle rather than the wall clock, so a
    replay of recorded months keeps its last ``retention_hours`` instead of losing everything.
    For live data the newest candle is the present minute, and the two agree.
    """
    newest = await conn.fetchval("SELECT max(open_time) FROM candles_1m")
    now = datetime.now(tz=UTC)
    reference = min(newest, now) if newest is not None else now
    horizon = reference - timedelta(hours=retention_hours)
    dropped = {}
    for table in PARTITIONED_TABLES:
        dropped[table] = int(await conn.fetchval("SELECT screener_drop_partitions_before($1, $2)", table, horizon))
    await conn.execute("DELETE FROM webhook_deliveries WHERE updated_at < $1", horizon)
    return dropped
