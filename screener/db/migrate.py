"""Apply the versioned SQL migrations once, idempotently, under an advisory lock."""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from importlib import resources

import asyncpg

log = logging.getLogger(__name__)

# Any constant works; it only has to be the same in every process that migrates.
_MIGRATION_LOCK = 0x5C8EE2E4
_FILE = re.compile(r"^(\d{3})_(\w+?)(?:_(native|timescale))?\.sql$")
PARTITIONED_TABLES = ("candles_1m", "metrics_snapshots", "alert_history")


@dataclass(frozen=True)
class Migration:
    """One SQL file: its version, name and, for time-series tables, the storage variant."""

    version: int
    name: str
    variant: str | None
    sql: str


def _migrations() -> list[Migration]:
    found = []
    for entry in resources.files("screener.db").joinpath("migrations").iterdir():
        match = _FILE.match(entry.name)
        if match:
            version, name, variant = match.groups()
            found.append(Migration(int(version), name, variant, entry.read_text(encoding="utf-8")))
    return sorted(found, key=lambda m: (m.version, m.variant or ""))


async def timescale_available(conn: asyncpg.Connection) -> bool:
    """Return whether the ``timescaledb`` extension can be created on this server."""
    return bool(await conn.fetchval("SELECT count(*) FROM pg_available_extensions WHERE name = 'timescaledb'"))


async def migrate(conn: asyncpg.Connection, retention_hours: int = 48) -> list[int]:
    """Apply the migrations this database lacks; return the versions applied now."""
    await conn.execute("SELECT pg_advisory_lock($1)", _MIGRATION_LOCK)
    try:
        await conn.execute(
            """CREATE TABLE IF NOT EXISTS schema_migrations (
                   version integer PRIMARY KEY, name text NOT NULL, variant text,
                   applied_at timestamptz NOT NULL DEFAULT now())"""
        )
        done = {r["version"] for r in await conn.fetch("SELECT version FROM schema_migrations")}
        variant = "timescale" if await timescale_available(conn) else "native"
        applied = []
        for migration in _migrations():
            if migration.version in done or migration.variant not in (None, variant):
                continue
            async with conn.transaction():
                await conn.execute(migration.sql)
                await conn.execute(
                    "INSERT INTO schema_migrations (version, name, variant) VALUES ($1, $2, $3)",
                    migration.version,
                    migration.name,
                    migration.variant,
                )
            applied.append(migration.version)
            log.info("applied migration %03d_%s (%s)", migration.version, migration.name, migration.variant or "all")
        if variant == "timescale":
            for table in PARTITIONED_TABLES:
                await conn.execute(
                    "SELECT add_retention_policy($1::regclass, $2::interval, if_not_exists => true)",
                    table,
                    f"{retention_hours} hours",
                )
        return applied
    finally:
        await conn.execute("SELECT pg_advisory_unlock($1)", _MIGRATION_LOCK)
