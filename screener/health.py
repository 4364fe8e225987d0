"""A process's health endpoint for Kubernetes probes: ``/healthz``, ``/readyz`` and ``/stats``.

Each long-running process (a function's worker, the collector) says what alive and ready mean for it
through a ``HealthSource``; this module only serves the answers.
"""

from __future__ import annotations

from typing import Any, Protocol

from aiohttp import web


class HealthSource(Protocol):
    """What a process reports on its health endpoint."""

    @property
    def name(self) -> str:
        """Return the process's name, for the answers."""
        ...

    def alive(self) -> tuple[bool, str]:
        """Return whether the process should be left running, and why (a liveness probe)."""
        ...

    @property
    def ready(self) -> bool:
        """Return whether the process does its work now (a readiness probe)."""
        ...

    def counters(self) -> dict[str, Any]:
        """Return counters worth a look (JSON-serialisable)."""
        ...


async def serve_health(source: HealthSource, port: int, host: str = "0.0.0.0") -> web.AppRunner:
    """Serve ``source``'s health on ``port``; 200 when alive/ready, 503 otherwise. Return the runner."""

    async def healthz(_: web.Request) -> web.Response:
        alive, reason = source.alive()
        body = {"status": "ok" if alive else "stalled", "reason": reason, "process": source.name}
        return web.json_response(body, status=200 if alive else 503)

    async def readyz(_: web.Request) -> web.Response:
        ready = source.ready
        return web.json_response({"ready": ready, "process": source.name}, status=200 if ready else 503)

    async def stats(_: web.Request) -> web.Response:
        return web.json_response(source.counters())

    app = web.Application()
    app.add_routes([web.get("/healthz", healthz), web.get("/readyz", readyz), web.get("/stats", stats)])
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, host, port).start()
    return runner
