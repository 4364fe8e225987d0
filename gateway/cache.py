"""A tiny time-bounded cache of rendered responses for reads that change at most once a minute."""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable

from aiohttp import web

MAX_ENTRIES = 512


class ResponseCache:
    """Keep rendered JSON bodies for ``ttl_seconds``; concurrent misses of one key compute it once."""

    def __init__(self, ttl_seconds: float, clock: Callable[[], float] = time.monotonic) -> None:
        self._ttl = ttl_seconds
        self._clock = clock
        self._entries: OrderedDict[str, tuple[float, bytes]] = OrderedDict()
        self._inflight: dict[str, asyncio.Future[bytes]] = {}

    async def get(self, key: str, render: Callable[[], Awaitable[bytes]]) -> web.Response:
        """Return the cached body of ``key`` or render and keep it."""
        return web.Response(body=await self.body(key, render), content_type="application/json")

    async def body(self, key: str, render: Callable[[], Awaitable[bytes]]) -> bytes:
        """Return the cached bytes of ``key`` or render and keep them."""
        now = self._clock()
        hit = self._entries.get(key)
        if hit is not None and hit[0] > now:
            return hit[1]
        pending = self._inflight.get(key)
        if pending is not None:
            return await asyncio.shield(pending)
        future: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
        self._inflight[key] = future
        try:
            body = await render()
        except asyncio.CancelledError:
            future.cancel()
            raise
        except Exception as exc:
            future.set_exception(exc)
            future.exception()  # mark retrieved: waiters re-raise it, nobody else must
            raise
        finally:
            del self._inflight[key]
        future.set_result(body)
        self._entries[key] = (self._clock() + self._ttl, body)
        self._entries.move_to_end(key)
        while len(self._entries) > MAX_ENTRIES:
            self._entries.popitem(last=False)
        return body
