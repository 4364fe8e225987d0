"""``screener migrate``: apply the migrations, and optionally the retention policy, then exit."""

from __future__ import annotations

import argparse
import asyncio
import logging

import asyncpg

from screener.config import Settings
from screener.connections import NotConfigured
from screener.db.migrate import migrate
from screener.db.partitions import apply_retention

log = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Register the options of ``screener migrate``."""
    parser.add_argument("--retention", action="store_true", help="also drop partitions past the retention horizon")


async def _migrate(dsn: str, settings: Settings, retention: bool) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        applied = await migrate(conn, settings.retention_hours)
        print(f"migrations applied: {applied or 'none (up to date)'}")
        if retention:
            dropped = await apply_retention(conn, settings.retention_hours)
            print(f"retention ({settings.retention_hours} h): dropped {dropped}")
    finally:
        await conn.close()


def run(args: argparse.Namespace, settings: Settings) -> int:
    """Migrate the configured database."""
    if not settings.postgres_dsn:
        raise NotConfigured("SCREENER_POSTGRES_DSN is not set")
    asyncio.run(_migrate(settings.postgres_dsn, settings, args.retention))
    return 0
