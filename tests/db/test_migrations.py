"""Migrations apply once and idempotently; day partitions are created on demand and dropped by retention."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import asyncpg

from screener.db.migrate import migrate
from screener.db.partitions import PartitionCache, apply_retention

DAY_MS = 86_400_000


async def test_migrating_twice_applies_nothing_new(pg: asyncpg.Connection) -> None:
    assert await migrate(pg) == []
    versions = [r["version"] for r in await pg.fetch("SELECT version FROM schema_migrations ORDER BY version")]
    assert versions == sorted(set(versions))
    assert {1, 2} <= set(versions)


async def test_every_table_the_pipeline_needs_exists(pg: asyncpg.Connection) -> None:
    tables = {r["tablename"] for r in await pg.fetch("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")}
    wanted = {
        "candles_1m",
        "metrics_snapshots",
        "alert_history",
        "alert_rules",
        "user_settings",
        "webhooks",
        "webhook_deliveries",
        "bars",
    }
    assert wanted <= tables


async def _insert_candle(pg: asyncpg.Connection, cache: PartitionCache, open_ms: int) -> None:
    await cache.ensure(pg, "candles_1m", [open_ms])
    await pg.execute(
        "INSERT INTO candles_1m (symbol, open_time, open, high, low, close, volume, quote_volume) "
        "VALUES ('BTCUSDT', $1, 1, 1, 1, 1, 1, 1)",
        datetime.fromtimestamp(open_ms / 1000, tz=UTC),
    )


async def test_partitions_are_created_on_demand_by_day(pg: asyncpg.Connection) -> None:
    cache = PartitionCache()
    start = int(datetime(2026, 2, 1, tzinfo=UTC).timestamp() * 1000)
    for day in range(3):
        await _insert_candle(pg, cache, start + day * DAY_MS + 60_000)
    parts = await pg.fetch(
        "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
        "JOIN pg_class p ON p.oid = i.inhparent WHERE p.relname = 'candles_1m' ORDER BY 1"
    )
    assert [r["relname"] for r in parts] == ["candles_1m_20260201", "candles_1m_20260202", "candles_1m_20260203"]


async def test_retention_drops_whole_days_older_than_the_horizon(pg: asyncpg.Connection) -> None:
    cache = PartitionCache()
    start = int(datetime(2026, 2, 1, tzinfo=UTC).timestamp() * 1000)
    for day in range(5):
        await _insert_candle(pg, cache, start + day * DAY_MS + 3_600_000)
    # The newest candle is 2026-02-05 01:00; 48 h back is 02-03 01:00: days 02-01 and 02-02 end before it.
    dropped = await apply_retention(pg, retention_hours=48)
    assert dropped["candles_1m"] == 2
    remaining = await pg.fetchval("SELECT count(*) FROM candles_1m")
    assert remaining == 3
    oldest = await pg.fetchval("SELECT min(open_time) FROM candles_1m")
    assert oldest == datetime(2026, 2, 3, 1, tzinfo=UTC)
    assert datetime(2026, 2, 5, 1, tzinfo=UTC) - oldest == timedelta(hours=48)
