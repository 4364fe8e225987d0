"""NATS (JetStream), Redis and PostgreSQL for the drills: from URLs, or embedded on free ports.

Embedded servers can be killed and started again on the same port and data folder (the drills of
server outages need that); servers given by URL can only be reset, so those drills are skipped.
Every run starts clean: streams deleted, the Redis database flushed, a fresh migrated database.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import asyncpg
import nats
import redis.asyncio as aioredis
from nats.js.errors import NotFoundError

from screener.embedded.servers import EmbeddedServer, free_port, start_nats, start_postgres, start_redis

log = logging.getLogger(__name__)


class ServerControlError(RuntimeError):
    """A drill asked to stop or start a server the harness did not start itself."""


@dataclass
class ServerUrls:
    """Where the servers are; None: start an embedded one."""

    nats: str | None = None
    nats_monitor: str | None = None
    redis: str | None = None
    postgres: str | None = None


def _with_database(dsn: str, database: str) -> str:
    base, _, tail = dsn.rpartition("/")
    query = tail.partition("?")[2]
    return f"{base}/{database}" + (f"?{query}" if query else "")


@dataclass
class Servers:
    """The three servers of a drill session and what a drill may do to them."""

    root: Path
    given: ServerUrls = field(default_factory=ServerUrls)
    nats_url: str = ""
    nats_monitor_url: str = ""
    redis_url: str = ""
    admin_dsn: str = ""
    embedded: dict[str, EmbeddedServer] = field(default_factory=dict)
    _ports: dict[str, int] = field(default_factory=dict)
    _database: str | None = None

    # --- life -------------------------------------------------------------------------------------
    def start(self) -> None:
        """Use the given URLs; start an embedded server for each one missing."""
        if self.given.nats:
            self.nats_url, self.nats_monitor_url = self.given.nats, self.given.nats_monitor or ""
        else:
            self._ports["nats"], self._ports["nats_monitor"] = free_port(), free_port()
            self._start_nats()
        if self.given.redis:
            self.redis_url = self.given.redis
        else:
            self._ports["redis"] = free_port()
            self._start_redis()
        if self.given.postgres:
            self.admin_dsn = self.given.postgres
        else:
            self._ports["postgres"] = free_port()
            self._start_postgres()

    def stop(self) -> None:
        """Stop every embedded server."""
        for server in reversed(list(self.embedded.values())):
            server.stop()
        self.embedded.clear()

    def controls(self, name: str) -> bool:
        """Return whether the harness started server ``name`` (so a drill may kill it)."""
        return name in self.embedded

    def _start_nats(self) -> None:
        server = start_nats(self.root / "nats", self._ports["nats"], self._ports["nats_monitor"])
        self.embedded["nats"] = server
        self.nats_url, self.nats_monitor_url = server.url, server.extra_urls["monitor"]

    def _start_redis(self) -> None:
        server = start_redis(self.root / "redis", self._ports["redis"])
        self.embedded["redis"] = server
        self.redis_url = server.url

    def _start_postgres(self) -> None:
        # Crash safety is part of what the drills test: keep PostgreSQL durable, as in production.
        server = start_postgres(self.root / "postgres", self._ports["postgres"])
        self.embedded["postgres"] = server
        self.admin_dsn = server.url

    # --- faults -----------------------------------------------------------------------------------
    def kill(self, name: str, sig: signal.Signals = signal.SIGKILL, timeout: float = 30.0) -> None:
        """Stop embedded server ``name`` with ``sig`` and wait until it is gone."""
        server = self.embedded.get(name)
        if server is None:
            raise ServerControlError(f"{name} was not started by the drills; pass no URL for it to run this drill")
        if server.process.poll() is None:
            server.process.send_signal(sig)
            try:
                server.process.wait(timeout)
            except Exception:
                server.process.kill()
                server.process.wait(timeout)

    def restart(self, name: str) -> None:
        """Start embedded server ``name`` again on its port and data folder."""
        {"nats": self._start_nats, "redis": self._start_redis, "postgres": self._start_postgres}[name]()

    # --- a clean slate per run --------------------------------------------------------------------
    async def reset(self) -> str:
        """Delete every stream, flush Redis and create a fresh database; return its DSN."""
        nc = await nats.connect(self.nats_url)
        try:
            js = nc.jetstream()
            for info in await js.streams_info():
                if info.config.name:
                    with contextlib.suppress(NotFoundError):
                        await js.delete_stream(info.config.name)
        finally:
            await nc.close()
        client = aioredis.from_url(self.redis_url)
        try:
            await client.flushdb()
        finally:
            await client.aclose()
        await self.drop_database()
        self._database = f"drill_{uuid.uuid4().hex[:10]}"
        admin = await asyncpg.connect(self.admin_dsn)
        try:
            await admin.execute(f'CREATE DATABASE "{self._database}"')
        finally:
            await admin.close()
        return _with_database(self.admin_dsn, self._database)

    async def drop_database(self) -> None:
        """Drop the database of the previous run (connections still open are ended)."""
        if self._database is None:
            return
        name, self._database = self._database, None
        for _ in range(20):
            try:
                admin = await asyncpg.connect(self.admin_dsn)
            except (OSError, asyncpg.PostgresError):
                await asyncio.sleep(0.5)
                continue
            try:
                await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            finally:
                await admin.close()
            return
        log.warning("could not drop database %s", name)
