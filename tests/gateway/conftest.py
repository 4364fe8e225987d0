"""A real gateway on the test's own PostgreSQL, Redis and NATS, served on a free port."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import asyncpg
import pytest
import redis.asyncio as aioredis
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from nats.aio.client import Client as NATS

from gateway.app import create_app
from gateway.server import GatewayRunner
from screener.config import Settings, load_settings
from state.metrics_store import MetricsStore
from tests.fakes.webhook_receivers import RECEIVER_ALLOW
from tests.gateway.helpers import AUDIENCE, SECRET, seed_rules


class GatewayTestServer(TestServer):
    """A test server that serves like ``gateway.app.serve`` (its runner and parser limits)."""

    async def _make_runner(self, **kwargs: Any) -> web.AppRunner:
        return GatewayRunner(self.app, **kwargs)


GatewayFactory = Callable[..., Awaitable[TestClient[web.Request, web.Application]]]


def gateway_settings(**overrides: Any) -> Settings:
    """Return settings for a test gateway (no environment read)."""
    values: dict[str, Any] = {
        "jwt_secret": SECRET,
        "jwt_audience": AUDIENCE,
        "rate_limit_per_minute": 100_000,
        "ws_heartbeat_seconds": 5.0,
        # Webhook tests deliver to local receivers on loopback; tests of the policy itself pass [].
        "outbound_allow": RECEIVER_ALLOW,
    }
    values.update(overrides)
    return load_settings({}, **values)


@pytest.fixture
async def pool(postgres_dsn: str) -> AsyncIterator[asyncpg.Pool]:
    """Yield a pool on the test's database with the product's rules seeded."""
    created = await asyncpg.create_pool(postgres_dsn, min_size=2, max_size=6)
    assert created is not None
    async with created.acquire() as conn:
        await seed_rules(conn)
    yield created
    await created.close()


@pytest.fixture
async def make_gateway(
    pool: asyncpg.Pool, redis_client: aioredis.Redis, nats_client: NATS
) -> AsyncIterator[GatewayFactory]:
    """Yield a factory: ``await make_gateway(**settings)`` returns a client of a running gateway."""
    clients: list[TestClient[web.Request, web.Application]] = []

    async def factory(**overrides: Any) -> TestClient[web.Request, web.Application]:
        app = create_app(
            gateway_settings(**overrides), pool, redis_client, nats_client, metrics_store=MetricsStore(redis_client)
        )
        client: TestClient[web.Request, web.Application] = TestClient(GatewayTestServer(app))
        await client.start_server()
        clients.append(client)
        return client

    yield factory
    for client in clients:
        await client.close()


@pytest.fixture
async def gw(make_gateway: GatewayFactory) -> TestClient[web.Request, web.Application]:
    """Return a client of a gateway with the default test settings."""
    return await make_gateway()
