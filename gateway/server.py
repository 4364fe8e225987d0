"""The gateway's HTTP server: aiohttp's, with the JSON error body for the HTTP parser's own rejections.

aiohttp answers a request it cannot parse (oversized headers, a bad Content-Length, a malformed
request line) before any middleware runs, in plain text. ``GatewayRunner`` serves the app with a
request handler that answers those in client.md's flat JSON error body too, logs them at most once
per ``LOG_EVERY_SECONDS`` with a count, and charges each to the client's rate limit, so a flood of
malformed requests costs its sender like any other.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from aiohttp import web
from aiohttp.web_protocol import RequestHandler
from aiohttp.web_request import BaseRequest

from gateway.context import GATEWAY, Gateway
from gateway.errors import error_response

log = logging.getLogger(__name__)

# A bearer token of up to 8 KB (auth.MAX_TOKEN_LENGTH) must reach the verifier and get its 401;
# aiohttp's default of 8190 bytes per header line or request line would refuse it in the parser.
MAX_LINE_BYTES = 16 * 1024
LOG_EVERY_SECONDS = 10.0
_CODES = {400: "bad_request", 413: "payload_too_large", 414: "uri_too_long", 431: "headers_too_large"}


class JsonErrorHandler(RequestHandler):
    """aiohttp's request handler, answering parser errors with the JSON error body."""

    reporter: ParserErrors | None = None

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
            await self._gateway.limiter.hit(f"ip:{remote}")
        except Exception as exc:  # the limiter's Redis may be away; the rejection stands regardless
            log.debug("could not charge a parser error to %s: %s", remote, exc)


class JsonErrorServer(web.Server):
    """A ``web.Server`` whose connections use ``JsonErrorHandler``."""

    def __init__(self, *args: Any, reporter: ParserErrors | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._reporter = reporter

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
        super().__init__(app, **kwargs)

    async def _make_server(self) -> web.Server:
        plain = await super()._make_server()  # runs the app's startup, as AppRunner does
        return JsonErrorServer(
            plain.request_handler,
            request_factory=plain.request_factory,
            loop=asyncio.get_running_loop(),
            reporter=ParserErrors(self.app[GATEWAY]),
            **self._kwargs,
        )
