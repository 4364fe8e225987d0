"""Real servers for the tests, through a fixture chain.

Each server comes from an environment URL when one is set (``SCREENER_TEST_NATS_URL``,
``SCREENER_TEST_NATS_MONITOR_URL``, ``SCREENER_TEST_REDIS_URL``, ``SCREENER_TEST_POSTGRES_DSN``),
otherwise the session starts its own on free ports from the project's PyPI packages. Tests get a
clean slate: JetStream streams deleted, a flushed Redis database, a fresh PostgreSQL database
cloned from a migrated template.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import asyncpg
import nats
import pytest
import redis.asyncio as aioredis
from nats.js import JetStreamContext
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from screener.db.migrate import migrate
from screener.embedded.servers import EmbeddedServer, start_nats, start_postgres, start_redis
from screener.names import STREAMS

REPO = Path(__file__).resolve().parents[1]
DATA_DIR = REPO / "data" / "klines"


@pytest.fixture(scope="session")
def server_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Return a folder for the session's own servers."""
    return tmp_path_factory.mktemp("servers")


@pytest.fixture(scope="session")
def nats_server(server_dir: Path) -> Iterator[tuple[str, str]]:
    """Yield (client URL, monitoring URL) of a NATS server with JetStream."""
    url = os.environ.get("SCREENER_TEST_NATS_URL")
    if url:
        yield url, os.environ.get("SCREENER_TEST_NATS_MONITOR_URL", "http://127.0.0.1:8222")
        return
    server = start_nats(server_dir / "nats")
    yield server.url, server.extra_urls["monitor"]
    server.stop()


@pytest.fixture(scope="session")
def nats_url(nats_server: tuple[str, str]) -> str:
    """Return the NATS client URL."""
    return nats_server[0]


@pytest.fixture(scope="session")
def nats_monitor_url(nats_server: tuple[str, str]) -> str:
    """Return the NATS monitoring URL (the one KEDA reads)."""
    return nats_server[1]


@pytest.fixture(scope="session")
def redis_url(server_dir: Path) -> Iterator[str]:
    """Return a Redis URL."""
    url = os.environ.get("SCREENER_TEST_REDIS_URL")
    if url:
        yield url
        return
    server = start_redis(server_dir / "redis")
    yield server.url
    server.stop()


@pytest.fixture(scope="session")
def postgres_server(server_dir: Path) -> Iterator[str]:
    """Return the DSN of a PostgreSQL server (its ``screener`` database is the admin connection)."""
    dsn = os.environ.get("SCREENER_TEST_POSTGRES_DSN")
    if dsn:
        yield dsn
        return
    server: EmbeddedServer = start_postgres(server_dir / "postgres", durable=False)
    yield server.url
    server.stop()


_db_counter = itertools.count()


@pytest.fixture(scope="session")
async def postgres_template(postgres_server: str) -> str:
    """Create a migrated template database once; return its name."""
    name = f"screener_tpl_{uuid.uuid4().hex[:8]}"
    admin = await asyncpg.connect(postgres_server)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    conn = await asyncpg.connect(_with_database(postgres_server, name))
    try:
        await migrate(conn)
    finally:
        await conn.close()
    return name


def _with_database(dsn: str, database: str) -> str:
    base, _, _ = dsn.rpartition("/")
    return f"{base}/{database}"


@pytest.fixture
async def postgres_dsn(postgres_server: str, postgres_template: str) -> AsyncIterator[str]:
    """Yield the DSN of a fresh, migrated database for one test."""
    name = f"screener_t{next(_db_counter)}_{uuid.uuid4().hex[:6]}"
    admin = await asyncpg.connect(postgres_server)
    try:
        await admin.execute(f'CREATE DATABASE "{name}" TEMPLATE "{postgres_template}"')
    finally:
        await admin.close()
    yield _with_database(postgres_server, name)
    admin = await asyncpg.connect(postgres_server)
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await admin.close()


@pytest.fixture
async def pg(postgres_dsn: str) -> AsyncIterator[asyncpg.Connection]:
    """Yield a connection to the test's fresh database."""
    conn = await asyncpg.connect(postgres_dsn)
    yield conn
    await conn.close()


@pytest.fixture
async def redis_client(redis_url: str) -> AsyncIterator[aioredis.Redis]:
    """Yield a client of a flushed Redis database."""
    client = aioredis.from_url(redis_url)
    await client.flushdb()
    yield client
    await client.aclose()


@pytest.fixture
async def nats_client(nats_url: str) -> AsyncIterator[nats.NATS]:
    """Yield a NATS connection; the project's streams are deleted first so each test starts empty."""
    client = await nats.connect(nats_url)
    js = client.jetstream()
    for stream in STREAMS:
        with contextlib.suppress(nats.js.errors.NotFoundError):
            await js.delete_stream(stream.name)
    yield client
    await client.drain()


@pytest.fixture
def jetstream(nats_client: nats.NATS) -> JetStreamContext:
    """Return a JetStream context on the test's connection."""
    return nats_client.jetstream()


@pytest.fixture(scope="session")
def span_exporter() -> InMemorySpanExporter:
    """Install, once per session, a tracer provider whose finished spans the tests can read."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    trace.set_tracer_provider(provider)
    return exporter


@pytest.fixture(scope="session")
def klines_dir() -> Path:
    """Return the folder of the real recorded klines the project ships."""
    return DATA_DIR
