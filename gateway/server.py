"""The gateway's HTTP server: aiohttp's, with the JSON error body for the HTTP parser's own rejections.

aiohttp answers a request it cannot parse (oversized headers, a bad Content-Length, a malformed
request line) before any middleware runs, in plain text. ``GatewayRunner`` serves the app with a
request handler that answers those in client.md's flat JSON error body too, logs them at most once
per ``LOG_EVERY_SECONDS`` with a count, and charges each to the client's rate limit, so a flood of
malformed requests costs its sender like any other. Connections themselves are bounded too: a few
hundred per client address (``ConnectionCap``) and ``HEADERS_TIMEOUT_SECONDS`` to send a first request.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import time
from typing import Any, cast

from aiohttp import web
from aiohttp.web_protocol import RequestHandler
from aiohttp.web_request import BaseRequest

from gateway.context import GATEWAY, Gateway
from gateway.errors import error_body, error_response, json_bytes
from gateway.ratelimit import ConnectionCounter, IPNetwork, client_bucket

log = logging.getLogger(__name__)

# A bearer token of up to 8 KB (auth.MAX_TOKEN_LENGTH) must reach the verifier and get its 401;
# aiohttp's default of 8190 bytes per header line or request line would refuse it in the parser.
MAX_LINE_BYTES = 16 * 1024
LOG_EVERY_SECONDS = 10.0
HEADERS_TIMEOUT_SECONDS = 20.0
# aiohttp rounds every timer longer than this many seconds up to a whole second of loop time, so that
# timers coalesce. Rounded, the WebSocket heartbeats (20 s) of every connection fired in the same loop
# iteration: 10,000 pings at once stalled every alert by some 300 ms. Nothing here needs the rounding.
TIMEOUT_CEIL_THRESHOLD_SECONDS = 3600.0
_CODES = {400: "bad_request", 413: "payload_too_large", 414: "uri_too_long", 431: "headers_too_large"}


class JsonErrorHandler(RequestHandler):
    """aiohttp's request handler, answering parser errors with the JSON error body.

    It also gives a new connection ``HEADERS_TIMEOUT_SECONDS`` to complete its first request's head:
    aiohttp's own deadline for that is its keep-alive timeout (an hour by default), so a client
    trickling one header line every few seconds held its connection, and a file descriptor, that long.
    """

    reporter: ParserErrors | None = None
    # Set by ``JsonErrorServer.connection_made`` when this connection's client holds its cap already.
    over_cap: OverCap | None = None
    _headers_deadline: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        """Start the connection, and the clock of its first request's head; refuse it when over the cap."""
        super().connection_made(transport)
        if self.over_cap is not None:
            # Closed like the keep-alive timeout closes an idle connection, so aiohttp's own request
            # loop sees the close flag and ends; the answer is flushed before the socket closes.
            cast(asyncio.Transport, transport).write(_refusal(self.over_cap))
            self.force_close()
            return
        self._headers_deadline = self._loop.call_later(HEADERS_TIMEOUT_SECONDS, self._headers_overdue)

    def data_received(self, data: bytes) -> None:
        """Parse ``data``; once a whole request head has arrived, stop the clock."""
        super().data_received(data)
        # ``_request_count`` is aiohttp's count of request heads parsed on this connection.
        if self._headers_deadline is not None and self._request_count > 0:
            self._headers_deadline.cancel()
            self._headers_deadline = None

    def connection_lost(self, exc: BaseException | None) -> None:
        """Stop the clock with the connection."""
        if self._headers_deadline is not None:
            self._headers_deadline.cancel()
            self._headers_deadline = None
        super().connection_lost(exc)

    def _headers_overdue(self) -> None:
        self._headers_deadline = None
        if self._request_count == 0:
            self.force_close()

    def handle_error(
        self, request: BaseRequest, status: int = 500, exc: BaseException | None = None, message: str | None = None
    ) -> web.StreamResponse:
        """Return the flat JSON error (the connection is closed after it, as aiohttp does)."""
        if status >= 500 or request.writer.output_size > 0:
            return super().handle_error(request, status, exc, message)
        if self.reporter is not None:
            self.reporter.seen(request.remote, status, message or str(exc or ""))
        detail = (message or "the request could not be parsed").splitlines()[0][:200]
        response = error_response(
            status, _CODES.get(status, "bad_request"), f"malformed HTTP request: {detail}", error="Bad request."
        )
        response.force_close()
        return response


class ParserErrors:
    """Log parser rejections sparingly and charge each to its client's rate limit."""

    def __init__(self, gateway: Gateway) -> None:
        self._gateway = gateway
        self._count = 0
        self._logged_at = float("-inf")
        self._charges: set[asyncio.Task[Any]] = set()

    def seen(self, remote: str | None, status: int, message: str) -> None:
        """Record one rejection from ``remote``."""
        self._count += 1
        now = time.monotonic()
        if now - self._logged_at >= LOG_EVERY_SECONDS:
            log.warning(
                "HTTP parser refused %d request(s) in the last %.0fs; latest from %s: %d %s",
                self._count,
                min(now - self._logged_at, 1e9),
                remote,
                status,
                message.splitlines()[0][:200] if message else "",
            )
            self._logged_at, self._count = now, 0
        if remote is not None and len(self._charges) < 1000:
            task = asyncio.get_running_loop().create_task(self._charge(remote))
            self._charges.add(task)
            task.add_done_callback(self._charges.discard)

    async def _charge(self, remote: str) -> None:
        try:
            await self._gateway.limiter.hit(f"ip:{client_bucket(remote)}")
        except Exception as exc:  # the limiter's Redis may be away; the rejection stands regardless
            log.debug("could not charge a parser error to %s: %s", remote, exc)


class OverCap(Exception):
    """A client address holds its cap of connections already."""

    def __init__(self, holder: str, cap: int) -> None:
        super().__init__(f"{holder} has {cap} connections open already; close one first")


class ConnectionCap:
    """Open TCP connections per client address (an IPv6 client by its /64), each held under a cap.

    The rate limit counts requests, which a connection need never complete; without a cap one
    address could hold every file descriptor of the process. Trusted proxies are not counted: every
    client behind them arrives from their address.
    """

    def __init__(self, cap: int, trusted: tuple[IPNetwork, ...]) -> None:
        self.cap = cap
        self._trusted = trusted
        self._held = ConnectionCounter()

    def admit(self, transport: asyncio.BaseTransport) -> str | None:
        """Count a new connection; return its holder, or None when it is not counted (trusted, unknown).

        Raise ``OverCap`` (counting nothing) when the holder has ``cap`` open already.
        """
        peer = transport.get_extra_info("peername")
        host = peer[0] if isinstance(peer, tuple) and peer else None
        try:
            address = ipaddress.ip_address(host) if isinstance(host, str) else None
        except ValueError:
            address = None
        if address is None or any(address in net for net in self._trusted):
            return None
        holder = client_bucket(str(address))
        if not self._held.acquire(holder, self.cap):
            raise OverCap(holder, self.cap)
        return holder

    def release(self, holder: str) -> None:
        """Count one connection of ``holder`` less."""
        self._held.release(holder)


def _refusal(refused: OverCap) -> bytes:
    """Return the raw 429 answer, in the JSON error body, to a connection over the cap."""
    body = json_bytes(error_body("too_many_connections", str(refused), "Too many open connections."))
    head = "HTTP/1.1 429 Too Many Requests\r\nContent-Type: application/json\r\nConnection: close\r\n"
    return f"{head}Content-Length: {len(body)}\r\n\r\n".encode() + body


class JsonErrorServer(web.Server):
    """A ``web.Server`` whose connections use ``JsonErrorHandler``, at most ``cap`` per client address."""

    def __init__(
        self, *args: Any, reporter: ParserErrors | None = None, cap: ConnectionCap | None = None, **kwargs: Any
    ) -> None:
        super().__init__(*args, **kwargs)
        self._reporter = reporter
        self._cap = cap
        self._holders: dict[RequestHandler, str] = {}

    def connection_made(self, handler: RequestHandler, transport: asyncio.Transport) -> None:
        """Track the connection; refuse it when its client holds the cap already."""
        super().connection_made(handler, transport)
        if self._cap is None:
            return
        try:
            holder = self._cap.admit(transport)
        except OverCap as exc:
            if isinstance(handler, JsonErrorHandler):
                handler.over_cap = exc  # answered and closed by the handler, once it is set up
            return
        if holder is not None:
            self._holders[handler] = holder

    def connection_lost(self, handler: RequestHandler, exc: BaseException | None = None) -> None:
        """Forget the connection and free its place under the cap."""
        holder = self._holders.pop(handler, None)
        if holder is not None and self._cap is not None:
            self._cap.release(holder)
        super().connection_lost(handler, exc)

    def __call__(self) -> RequestHandler:
        """Return the handler of one new connection."""
        handler = JsonErrorHandler(self, loop=self._loop, **self._kwargs)
        handler.reporter = self._reporter
        return handler


class GatewayRunner(web.AppRunner):
    """An ``AppRunner`` serving through ``JsonErrorServer`` with the gateway's parser limits."""

    def __init__(self, app: web.Application, **kwargs: Any) -> None:
        kwargs.setdefault("max_line_size", MAX_LINE_BYTES)
        kwargs.setdefault("max_field_size", MAX_LINE_BYTES)
        kwargs.setdefault("timeout_ceil_threshold", TIMEOUT_CEIL_THRESHOLD_SECONDS)
        super().__init__(app, **kwargs)

    async def _make_server(self) -> web.Server:
        plain = await super()._make_server()  # runs the app's startup, as AppRunner does
        gateway = self.app[GATEWAY]
        return JsonErrorServer(
            plain.request_handler,
            request_factory=plain.request_factory,
            loop=asyncio.get_running_loop(),
            reporter=ParserErrors(gateway),
            cap=ConnectionCap(gateway.settings.max_connections_per_client, gateway.trusted_proxies),
            **self._kwargs,
        )
