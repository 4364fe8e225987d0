"""How the gateway's error middleware answers when a backing server is away."""

from __future__ import annotations

import asyncpg
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from gateway.middleware import json_errors


def _app_failing_with(exc: Exception) -> web.Application:
    async def handler(_: web.Request) -> web.Response:
        raise exc

    app = web.Application(middlewares=[json_errors])
    app.router.add_get("/api/alerts", handler)
    return app


async def test_a_postgres_still_starting_up_is_a_503_to_retry_not_a_500() -> None:
    # What asyncpg raises while a restarted PostgreSQL replays its WAL (SQLSTATE 57P03).
    starting = asyncpg.CannotConnectNowError("the database system is starting up")
    async with TestClient(TestServer(_app_failing_with(starting))) as client:
        response = await client.get("/api/alerts")
        body = await response.json()
    assert response.status == 503
    assert body["code"] == "dependency_unavailable"


async def test_a_refused_connection_is_a_503() -> None:
    async with TestClient(TestServer(_app_failing_with(ConnectionRefusedError(111, "refused")))) as client:
        response = await client.get("/api/alerts")
    assert response.status == 503
