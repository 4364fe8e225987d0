"""One combined-stream WebSocket connection to Binance's routed market path.

Klines are served on ``/market/stream`` (events.md: a connection without the right path silently
receives nothing). The first streams ride in the URL; the rest, and later changes, are JSON
``SUBSCRIBE``/``UNSUBSCRIBE`` messages, each acknowledged by ``{"result": null, "id": N}``. Every
message the client sends, pongs included, goes through one pacer per connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import logging
from collections.abc import Callable, Sequence
from typing import Any

import aiohttp

from collector.binance.models import BinanceKlineEvent, MalformedFrame, SubscribeAck, parse_stream_frame
from collector.binance.pacer import MessagePacer
from collector.clock import Clock

log = logging.getLogger(__name__)

MAX_STREAMS_PER_CONNECTION = 200
STREAMS_IN_URL = 50
STREAMS_PER_MESSAGE = 50
MARKET_STREAM_PATH = "/market/stream"


class ConnectionLost(Exception):
    """The connection closed, went stale or failed; the message says which."""


class KlineConnection:
    """Receive kline events for a set of streams until the connection dies or is closed."""

    _ids = itertools.count(1)

    def __init__(
        self,
        session: aiohttp.ClientSession,
        ws_url: str,
        clock: Clock,
        *,
        on_kline: Callable[[BinanceKlineEvent], None],
        on_malformed: Callable[[str], None],
        stale_seconds: float,
        messages_per_second: float | None = None,
        ack_timeout: float = 10.0,
        name: str = "ws",
    ) -> None:
        self.name = name
        self.streams: set[str] = set()
        self.opened_at: float | None = None
        self._session = session
        self._base = ws_url.rstrip("/")
        self._clock = clock
        self._on_kline = on_kline
        self._on_malformed = on_malformed
        self._stale = stale_seconds
        self._pacer = MessagePacer(clock) if messages_per_second is None else MessagePacer(clock, messages_per_second)
        self._ack_timeout = ack_timeout
        self._ws: aiohttp.ClientWebSocketResponse | None = None
        self._reader: asyncio.Task[None] | None = None
        self._acks: dict[int, asyncio.Future[SubscribeAck]] = {}
        self.frames = 0

    async def open(self, streams: Sequence[str]) -> None:
        """Connect and subscribe to ``streams``; raise ``ConnectionLost`` when that fails."""
        if len(streams) > MAX_STREAMS_PER_CONNECTION:
            raise ValueError(f"{len(streams)} streams on one connection; the limit is {MAX_STREAMS_PER_CONNECTION}")
        first, rest = list(streams[:STREAMS_IN_URL]), list(streams[STREAMS_IN_URL:])
        url = f"{self._base}{MARKET_STREAM_PATH}" + (f"?streams={'/'.join(first)}" if first else "")
        try:
            self._ws = await self._session.ws_connect(url, autoping=False, heartbeat=None, max_msg_size=0)
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            raise ConnectionLost(f"{self.name}: cannot connect to {self._base}{MARKET_STREAM_PATH}: {exc}") from exc
        self.opened_at = self._clock.monotonic()
        self.streams.update(first)
        self._reader = asyncio.create_task(self._read(), name=f"{self.name}-reader")
        await self.subscribe(rest)

    @property
    def alive(self) -> bool:
        """Return whether the connection is open and reading."""
        return self._reader is not None and not self._reader.done()

    async def wait_closed(self, at_most: float | None = None) -> None:
        """Return after ``at_most`` seconds while the connection lives; raise ``ConnectionLost`` when it dies."""
        if self._reader is None:
            raise ConnectionLost(f"{self.name}: not opened")
        await asyncio.wait({self._reader}, timeout=at_most)
        if self._reader.done():
            exc = None if self._reader.cancelled() else self._reader.exception()
            raise exc if isinstance(exc, ConnectionLost) else ConnectionLost(f"{self.name}: reader ended: {exc!r}")

    async def subscribe(self, streams: Sequence[str]) -> None:
        """Subscribe to more streams (paced, acknowledged)."""
        new = [s for s in streams if s not in self.streams]
        if len(self.streams) + len(new) > MAX_STREAMS_PER_CONNECTION:
            raise ValueError(f"{self.name}: {len(new)} more streams would pass {MAX_STREAMS_PER_CONNECTION}")
        for i in range(0, len(new), STREAMS_PER_MESSAGE):
            chunk = new[i : i + STREAMS_PER_MESSAGE]
            await self._control("SUBSCRIBE", chunk)
            self.streams.update(chunk)

    async def unsubscribe(self, streams: Sequence[str]) -> None:
        """Stop streams (paced, acknowledged)."""
        old = [s for s in streams if s in self.streams]
        for i in range(0, len(old), STREAMS_PER_MESSAGE):
            chunk = old[i : i + STREAMS_PER_MESSAGE]
            await self._control("UNSUBSCRIBE", chunk)
            self.streams.difference_update(chunk)

    async def _control(self, method: str, params: list[str]) -> None:
        ws = self._ws
        if ws is None or not self.alive:
            raise ConnectionLost(f"{self.name}: {method} on a closed connection")
        request_id = next(self._ids)
        ack: asyncio.Future[SubscribeAck] = asyncio.get_running_loop().create_future()
        self._acks[request_id] = ack
        try:
            await self._pacer.wait()
            await ws.send_str(json.dumps({"method": method, "params": params, "id": request_id}))
            reader = self._reader
            assert reader is not None
            waiting: set[asyncio.Future[Any]] = {ack, reader}
            done, _ = await asyncio.wait(waiting, timeout=self._ack_timeout, return_when=asyncio.FIRST_COMPLETED)
        except (aiohttp.ClientError, ConnectionError) as exc:
            raise ConnectionLost(f"{self.name}: {method} failed: {exc}") from exc
        finally:
            self._acks.pop(request_id, None)
        if ack not in done:
            raise ConnectionLost(f"{self.name}: no answer to {method} id {request_id} within {self._ack_timeout}s")
        answer = ack.result()
        if answer.error:
            raise ConnectionLost(f"{self.name}: {method} {params[:3]}... refused: {answer.error}")

    async def _read(self) -> None:
        try:
            await self._read_frames()
        except (ConnectionLost, asyncio.CancelledError):
            raise
        except (aiohttp.ClientError, ConnectionError) as exc:
            raise ConnectionLost(f"{self.name}: {exc}") from exc
        except Exception as exc:  # a loop boundary: whatever broke, this connection is replaced
            log.exception("%s: reader failed", self.name)
            raise ConnectionLost(f"{self.name}: reader failed: {exc!r}") from exc

    async def _read_frames(self) -> None:
        ws = self._ws
        assert ws is not None
        while True:
            try:
                msg = await ws.receive(timeout=self._stale)
            except TimeoutError:
                raise ConnectionLost(f"{self.name}: no frame for {self._stale}s, treated as dead") from None
            if msg.type == aiohttp.WSMsgType.TEXT:
                self.frames += 1
                self._dispatch(msg.data)
            elif msg.type == aiohttp.WSMsgType.PING:
                # The server pings every 3 minutes and drops a client silent for 10; pongs count
                # against the message limit, so they are paced like everything else.
                await self._pacer.wait()
                await ws.pong(msg.data)
            elif msg.type == aiohttp.WSMsgType.BINARY:
                self._on_malformed("binary frame on a JSON stream")
            elif msg.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSING, aiohttp.WSMsgType.CLOSED):
                raise ConnectionLost(f"{self.name}: closed by the server ({ws.close_code})")
            elif msg.type == aiohttp.WSMsgType.ERROR:
                raise ConnectionLost(f"{self.name}: {ws.exception()}")

    def _dispatch(self, text: str) -> None:
        try:
            frame = parse_stream_frame(text)
        except MalformedFrame as exc:
            self._on_malformed(exc.reason)
            return
        if isinstance(frame, SubscribeAck):
            ack = self._acks.get(frame.id)
            if ack is not None and not ack.done():
                ack.set_result(frame)
            return
        self._on_kline(frame)

    async def close(self) -> None:
        """Close the connection and stop reading."""
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError, ConnectionLost):
                await self._reader
        if self._ws is not None:
            await self._ws.close()
