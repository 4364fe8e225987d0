"""A pipeline's servers emptied for a benchmark run: tables, rings, positions, streams and consumers."""

from __future__ import annotations

import contextlib
from collections.abc import Awaitable, Callable

import asyncpg
import nats
import redis.asyncio as aioredis
from nats.aio.client import Client as NATS
from nats.js import JetStreamContext

from functions.rules.store import seed_rules
from screener.config import Settings
from screener.db.migrate import migrate
from screener.names import CONSUMER_CALCULATOR, CONSUMER_RULES, STREAMS
from screener.streams import ensure_consumer, ensure_streams

AddRules = Callable[[asyncpg.Connection], Awaitable[None]]


async def fresh_pipeline(
    settings: Settings, add_rules: AddRules | None = None
) -> tuple[aioredis.Redis, NATS, JetStreamContext]:
    """Migrate and seed the rules (plus ``add_rules``), empty alerts, positions, Redis and the streams.

    The rules' durable positions (``stream_positions``) are emptied with the alerts: left from an
    earlier run, they would say the bench's minutes are done already and nothing would be evaluated.
    Return a Redis client, a NATS connection and its JetStream context (the caller closes them).
    """
    conn = await asyncpg.connect(settings.postgres_dsn)
    try:
        await migrate(conn)
        await seed_rules(conn)
        if add_rules is not None:
            await add_rules(conn)
        await conn.execute("TRUNCATE alert_history, stream_positions")
    finally:
        await conn.close()
    redis = aioredis.from_url(settings.redis_url)
    await redis.flushdb()
    nc = await nats.connect(settings.nats_url)
    js = nc.jetstream()
    for stream in STREAMS:
        with contextlib.suppress(nats.js.errors.NotFoundError):
            await js.delete_stream(stream.name)
    await ensure_streams(js, settings)
    for consumer in (CONSUMER_CALCULATOR, CONSUMER_RULES):
        await ensure_consumer(js, consumer, settings)
    return redis, nc, js
