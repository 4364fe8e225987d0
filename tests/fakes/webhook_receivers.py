"""Real local HTTP receivers for webhook tests: aiohttp servers on free ports that answer from a script.

Each path of a ``WebhookReceiver`` plays a script of behaviours, one per request, the last one
repeating: answer 200, answer any status (429 with ``Retry-After``, 500, 404), hang until released
(the client times out), or drop the connection without an answer. Every request is recorded with a
global arrival number, so tests compare orders of events rather than wall-clock durations.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections import defaultdict, deque
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

# The receivers listen on loopback, which the outbound-address policy refuses unless it is allowed:
# a test that delivers to one says so with this value of ``outbound_allow`` (SCREENER_OUTBOUND_ALLOW).
RECEIVER_ALLOW = ["127.0.0.1/32"]


@dataclass(frozen=True)
class Received:
    """One request a receiver got."""

    path: str
    headers: Mapping[str, str]
    body: bytes
    seq: int
    at: float

    def json(self) -> Any:
        """Return the body parsed as JSON."""
        import json

        return json.loads(self.body)


@dataclass(frozen=True)
class Reply:
    """Answer with ``status``, ``headers`` and ``body``."""

    status: int = 200
    headers: Mapping[str, str] = field(default_factory=dict)
    body: bytes = b'{"ok":true}'


@dataclass(frozen=True)
class Hang:
    """Answer nothing until the test releases the path (``WebhookReceiver.release``), then 200."""


@dataclass(frozen=True)
class Drop:
    """Close the connection without answering."""


Behaviour = Reply | Hang | Drop
OK = Reply()


def retry_after(seconds: int | str) -> Reply:
    """Return a 429 answer asking to retry after ``seconds``."""
    return Reply(429, {"Retry-After": str(seconds)}, b'{"error":"rate limited"}')


def status(code: int, body: bytes = b"error") -> Reply:
    """Return an answer with status ``code``."""
    return Reply(code, {}, body)


class WebhookReceiver:
    """An HTTP server on 127.0.0.1 and a free port, recording every POST to any path."""

    def __init__(self) -> None:
        self._scripts: dict[str, deque[Behaviour]] = defaultdict(deque)
        self._released: dict[str, asyncio.Event] = defaultdict(asyncio.Event)
        self._received: list[Received] = []
        self._changed = asyncio.Condition()
        self._seq = itertools.count(1)
        self._runner: web.AppRunner | None = None
        self.port = 0

    async def start(self) -> None:
        """Start serving."""
        app = web.Application()
        app.router.add_post("/{path:.*}", self._handle)
        self._runner = web.AppRunner(app, shutdown_timeout=0.5, handle_signals=False)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", 0).start()
        self.port = self._runner.addresses[0][1]

    async def stop(self) -> None:
        """Release hanging requests and stop serving."""
        for event in self._released.values():
            event.set()
        if self._runner is not None:
            await self._runner.cleanup()

    def url(self, path: str) -> str:
        """Return the URL of ``path`` (e.g. ``/discord``)."""
        return f"http://127.0.0.1:{self.port}{path}"

    def script(self, path: str, *behaviours: Behaviour) -> None:
        """Answer the next requests to ``path`` with ``behaviours`` in order; the last one repeats."""
        self._scripts[path] = deque(behaviours)

    def release(self, path: str) -> None:
        """Let every request hanging on ``path`` (now or later) answer 200."""
        self._released[path].set()

    def received(self, path: str | None = None) -> list[Received]:
        """Return the requests received so far, on ``path`` or on any path."""
        return [r for r in self._received if path is None or r.path == path]

    async def wait_for(self, predicate: Callable[[list[Received]], bool], timeout: float = 10.0) -> None:
        """Wait until ``predicate(all requests so far)`` holds."""
        async with self._changed:
            await asyncio.wait_for(self._changed.wait_for(lambda: predicate(self._received)), timeout)

    async def wait_count(self, path: str, count: int, timeout: float = 10.0) -> None:
        """Wait until ``path`` has received ``count`` requests."""
        await self.wait_for(lambda rs: sum(r.path == path for r in rs) >= count, timeout)

    def _next(self, path: str) -> Behaviour:
        script = self._scripts.get(path)
        if not script:
            return OK
        return script.popleft() if len(script) > 1 else script[0]

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        path = request.path
        body = await request.read()
        behaviour = self._next(path)
        async with self._changed:
            self._received.append(Received(path, dict(request.headers), body, next(self._seq), time.monotonic()))
            self._changed.notify_all()
        if isinstance(behaviour, Drop):
            assert request.transport is not None
            request.transport.close()
            return web.Response(status=500)  # never reaches the client: the socket is gone
        if isinstance(behaviour, Hang):
            await self._released[path].wait()
            return web.json_response({"ok": True})
        return web.Response(status=behaviour.status, headers=dict(behaviour.headers), body=behaviour.body)


@asynccontextmanager
async def running_receiver() -> AsyncIterator[WebhookReceiver]:
    """Run a ``WebhookReceiver`` for the duration of the block."""
    receiver = WebhookReceiver()
    await receiver.start()
    try:
        yield receiver
    finally:
        await receiver.stop()
