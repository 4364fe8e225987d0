"""Health: ``/api/health`` (api.md), ``/health/live`` and ``/health/ready`` (Kubernetes), ``/metrics``."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

from aiohttp import web

from gateway.context import GATEWAY, Gateway
from gateway.errors import json_ok
from gateway.prom import CONTENT_TYPE
from gateway.views import iso

CHECK_TIMEOUT_SECONDS = 2.0


async def _check_postgres(gw: Gateway) -> bool:
    async with gw.pool.acquire(timeout=CHECK_TIMEOUT_SECONDS) as conn:
        return bool(await conn.fetchval("SELECT 1", timeout=CHECK_TIMEOUT_SECONDS) == 1)


async def _check_redis(gw: Gateway) -> bool:
    return bool(await gw.redis.ping())


async def _check_nats(gw: Gateway) -> bool:
    return bool(gw.nc.is_connected)


async def dependency_flags(gw: Gateway) -> dict[str, bool]:
    """Return whether PostgreSQL, Redis and NATS answer now."""
    names = ("postgres", "redis", "nats")
    checks = (_check_postgres(gw), _check_redis(gw), _check_nats(gw))
    results = await asyncio.gather(
        *(asyncio.wait_for(c, CHECK_TIMEOUT_SECONDS) for c in checks), return_exceptions=True
    )
    return {name: result is True for name, result in zip(names, results, strict=True)}


def source_view(gw: Gateway) -> dict[str, str]:
    """Return where the data comes from, so a page never calls a replay "live" without saying so."""
    settings = gw.settings
    if settings.source != "replay":
        return {"kind": "binance"}
    return {"kind": "replay", "recording": settings.replay_recording, "time": settings.replay_time}


async def api_health(request: web.Request) -> web.Response:
    """Return 200 ``ok`` with dependency flags, or 503 ``degraded`` naming what is down."""
    gw = request.app[GATEWAY]
    flags = await dependency_flags(gw)
    down = [name for name, ok in flags.items() if not ok]
    body: dict[str, object] = {
        "status": "degraded" if down else "ok",
        "timestamp": iso(datetime.now(tz=UTC)),
        **flags,
        "websocket_clients": len(gw.hub.clients),
        "source": source_view(gw),
    }
    if down:
        body["down"] = down
    return json_ok(body, status=503 if down else 200)


async def live(request: web.Request) -> web.Response:
    """Return 200 while the process serves requests."""
    return json_ok({"status": "ok"})


async def ready(request: web.Request) -> web.Response:
    """Return 200 when every dependency answers and the process is not draining, else 503."""
    gw = request.app[GATEWAY]
    flags = await dependency_flags(gw)
    down = [name for name, ok in flags.items() if not ok]
    if gw.hub.draining:
        down.append("draining")
    return json_ok({"status": "not_ready" if down else "ready", "down": down}, status=503 if down else 200)


async def prometheus(request: web.Request) -> web.Response:
    """Return the Prometheus text exposition."""
    text = request.app[GATEWAY].registry.render()
    return web.Response(body=text.encode(), headers={"Content-Type": CONTENT_TYPE})
