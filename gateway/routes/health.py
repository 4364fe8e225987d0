"""Health: ``/api/health`` (api.md), ``/health/live`` and ``/health/ready`` (Kubernetes), ``/metrics``."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime

from aiohttp import web

from gateway.context import GATEWAY, Gateway
from gateway.errors import json_ok
from gateway.prom import CONTENT_TYPE
from gateway.views import iso

CHECK_TIMEOUT_SECONDS = 2.0
# Probes and pollers may call /health/ready as often as they like: the PostgreSQL and Redis round
# trips run at most once per this many seconds, and concurrent callers share the one in flight.
READY_CACHE_SECONDS = 1.0


class CachedFlags:
    """The dependency flags of the last check, reused for ``max_age`` seconds."""

    def __init__(self, max_age: float) -> None:
        self._max_age = max_age
        self._flags: dict[str, bool] | None = None
        self._checked_at = 0.0
        self._running: asyncio.Task[dict[str, bool]] | None = None

    async def get(self, gw: Gateway) -> dict[str, bool]:
        """Return fresh-enough flags, checking the dependencies once when they are stale."""
        if self._flags is not None and time.monotonic() - self._checked_at < self._max_age:
            return self._flags
        if self._running is None or self._running.done():
            self._running = asyncio.create_task(dependency_flags(gw))
        # Shielded: one caller going away must not cancel the check the others wait for.
        flags = await asyncio.shield(self._running)
        self._flags, self._checked_at = flags, time.monotonic()
        return flags


_READY_FLAGS = web.AppKey("ready_flags", CachedFlags)


def setup(app: web.Application) -> None:
    """Give the app the readiness cache."""
    app[_READY_FLAGS] = CachedFlags(READY_CACHE_SECONDS)


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
    flags = await request.app[_READY_FLAGS].get(gw)
    down = [name for name, ok in flags.items() if not ok]
    if gw.hub.draining:
        down.append("draining")
    return json_ok({"status": "not_ready" if down else "ready", "down": down}, status=503 if down else 200)


async def prometheus(request: web.Request) -> web.Response:
    """Return the Prometheus text exposition."""
    text = request.app[GATEWAY].registry.render()
    return web.Response(body=text.encode(), headers={"Content-Type": CONTENT_TYPE})
