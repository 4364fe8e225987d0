"""Open the connections a process needs, from the settings.

Every URL must be set here: `screener up` fills in the embedded servers' URLs for its children, and a
deployment sets them in the environment.
"""

from __future__ import annotations

from typing import Any

import asyncpg
import hiredis
import nats
import redis.asyncio as aioredis
from nats.aio.client import Client as NATS
from nats.js import JetStreamContext
from redis.asyncio.connection import Connection as RedisConnection

from screener.config import Settings


class NotConfigured(RuntimeError):
    """A server URL is missing from the settings; the message names the variable."""


def _require(value: str | None, variable: str) -> str:
    if not value:
        raise NotConfigured(f"{variable} is not set (run `screener up` to start embedded servers)")
    return value


async def connect_nats(settings: Settings, name: str = "screener") -> NATS:
    """Connect to NATS, reconnecting for ever on loss."""
    url = _require(settings.nats_url, "SCREENER_NATS_URL")
    return await nats.connect(url, name=name, max_reconnect_attempts=-1, reconnect_time_wait=0.5)


class HiredisPackingConnection(RedisConnection):
    """A Redis TCP connection that packs commands with hiredis (C) instead of redis-py's Python.

    redis-py's asyncio client packs every command in Python, about 7 us each; a minute's burst
    pipelines two scripts per symbol, so that is most of the cost of sending them.
    """

    def pack_command(self, *args: Any) -> list[bytes]:
        """Pack one command; commands whose name holds a space (``CLIENT SETINFO``) go the Python way."""
        name = args[0]
        if (isinstance(name, str) and " " in name) or (isinstance(name, bytes) and b" " in name):
            return super().pack_command(*args)
        try:
            return [hiredis.pack_command(args)]
        except TypeError:  # an argument type hiredis does not pack (a memoryview): the Python way
            return super().pack_command(*args)


def connect_redis(settings: Settings) -> aioredis.Redis:
    """Return a Redis client (connections are opened lazily)."""
    url = _require(settings.redis_url, "SCREENER_REDIS_URL")
    options: dict[str, Any] = {"health_check_interval": 30}
    if url.startswith("redis://"):  # TLS and Unix sockets keep redis-py's own connection classes
        options["connection_class"] = HiredisPackingConnection
    return aioredis.from_url(url, **options)


async def create_pg_pool(settings: Settings, min_size: int = 1, max_size: int = 5) -> asyncpg.Pool:
    """Return an asyncpg pool."""
    dsn = _require(settings.postgres_dsn, "SCREENER_POSTGRES_DSN")
    pool = await asyncpg.create_pool(dsn, min_size=min_size, max_size=max_size)
    assert pool is not None
    return pool


def nats_client_of(js: JetStreamContext) -> NATS:
    """Return the connection a JetStream context uses (nats-py keeps it private, with no accessor)."""
    client: NATS = js._nc
    return client
