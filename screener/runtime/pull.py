"""Batches from a durable JetStream pull consumer, handed over as soon as messages are there.

nats-py's ``PullSubscription.fetch`` falls back to a lingering pull request that returns only when
the batch is full or the request expires, and its requests share one inbox, so concurrent fetches
read each other's status replies. A worker waiting for a minute's burst of 650 candles with a batch
of 1,000 could then hold the burst for the whole fetch timeout (a second) before handling any of it.

``PullFetcher`` sends one request per fetch, ``no_wait`` with ``expires``: the server waits up to
``expires`` for the first message, then delivers what is available and ends the request with a
status (404 or 408) instead of waiting for the batch to fill. Messages arrive on their own subjects,
statuses on the request's reply subject: each request has a reply subject of its own, so a late
status of an earlier request is told apart. A message that arrives after its fetch returned is kept
for the next one (it is delivered, so it counts against ``max_ack_pending`` until it is acked).
Give each concurrent fetch loop its own fetcher.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Final

import orjson
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription

log = logging.getLogger(__name__)

STATUS_HEADER: Final = "Status"
DESCRIPTION_HEADER: Final = "Description"
# 404 no messages, 408 request expired or done: the request is over, nothing is wrong.
_REQUEST_OVER: Final = frozenset({"404", "408"})
# 409 consumer deleted, too many waiting requests, ...; 503 no responders (JetStream unavailable).
_REFUSED: Final = frozenset({"409", "503"})
# How much longer than its ``expires`` a request is waited for, for the server's closing status.
_GRACE_SECONDS: Final = 0.5


class ConsumerError(RuntimeError):
    """The server refused a pull request (409: too many waiting requests, ...; 503: no JetStream)."""


class PullFetcher:
    """Fetch batches from one durable pull consumer; one fetch at a time per fetcher."""

    def __init__(self, nc: Client, stream: str, durable: str, api_prefix: str = "$JS.API") -> None:
        """Pull from ``durable`` on ``stream`` through the connection ``nc``."""
        self._nc = nc
        self._next_subject = f"{api_prefix}.CONSUMER.MSG.NEXT.{stream}.{durable}"
        self._inbox = nc.new_inbox()
        self._arrived: asyncio.Queue[Msg] = asyncio.Queue()
        self._subscription: Subscription | None = None
        self._requests = 0
        self.idle = False  # waiting for the first message of a fetch: nothing in hand

    async def start(self) -> None:
        """Subscribe to this fetcher's reply subjects."""

        async def arrived(msg: Msg) -> None:
            self._arrived.put_nowait(msg)

        self._subscription = await self._nc.subscribe(f"{self._inbox}.*", cb=arrived)

    async def close(self) -> None:
        """Stop receiving; messages delivered but not fetched are redelivered after ``ack_wait``."""
        if self._subscription is not None:
            with contextlib.suppress(Exception):
                await self._subscription.unsubscribe()
            self._subscription = None

    async def fetch(self, batch: int, wait_seconds: float) -> list[Msg]:
        """Return up to ``batch`` messages: at once if any are available, else the first to come.

        Waits at most ``wait_seconds`` for the first message; returns an empty list if none came.
        Raise ``ConsumerError`` when the server refuses the request.
        """
        if self._subscription is None:
            raise RuntimeError("PullFetcher.start() was not called")
        messages = self._leftovers()
        if messages:
            return messages  # delivered after an earlier fetch returned: hand them over without waiting
        self._requests += 1
        reply = f"{self._inbox}.{self._requests}"
        request = {"batch": batch, "expires": int(wait_seconds * 1e9), "no_wait": True}
        await self._nc.publish(self._next_subject, orjson.dumps(request), reply=reply)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + wait_seconds + _GRACE_SECONDS
        wanted = batch
        while wanted > 0:
            try:
                msg = self._arrived.get_nowait()  # a burst is mostly here already: no timer per message
            except asyncio.QueueEmpty:
                self.idle = not messages
                try:
                    async with asyncio.timeout_at(deadline):
                        msg = await self._arrived.get()
                except TimeoutError:
                    break  # the server never closed the request (restarting?); the caller fetches again
                finally:
                    self.idle = False
            status = (msg.headers or {}).get(STATUS_HEADER)
            if not status:
                messages.append(msg)
                wanted -= 1
            elif msg.subject != reply:
                continue  # the closing status of an earlier request
            elif status in _REQUEST_OVER:
                break
            elif status in _REFUSED:
                description = (msg.headers or {}).get(DESCRIPTION_HEADER, "")
                if messages:
                    log.warning("pull request on %s ended: %s %s", self._next_subject, status, description)
                    break
                raise ConsumerError(f"{self._next_subject}: {status} {description}")
            # Other statuses (100 idle heartbeat) carry no message and do not end the request.
        return messages

    def _leftovers(self) -> list[Msg]:
        messages = []
        while not self._arrived.empty():
            msg = self._arrived.get_nowait()
            if not (msg.headers or {}).get(STATUS_HEADER):
                messages.append(msg)
        return messages
