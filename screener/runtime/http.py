"""The Knative adapter: a CloudEvent over HTTP in, the next event (200) or nothing (202) out.

Per the CloudEvents HTTP binding both content modes are accepted. Like functions-framework: 400 for
a malformed or invalid event (the caller, e.g. a Knative Subscription, then routes it to its
dead-letter sink), 500 and a log line for a crash (Knative retries per its delivery spec).
"""

from __future__ import annotations

import logging
from typing import Any

from aiohttp import web

from screener.events import http_binding
from screener.events.envelope import InvalidEvent
from screener.runtime.function import Delivery, Function, TransientError
from screener.tracing import start_event_span

log = logging.getLogger(__name__)

FUNCTION_KEY: web.AppKey[Function[Any]] = web.AppKey("function")


def _error(status: int, code: str, message: str) -> web.Response:
    return web.json_response({"error": {"code": code, "message": message}}, status=status)


async def receive(request: web.Request) -> web.Response:
    """Handle one CloudEvent POSTed by Knative eventing (or anyone)."""
    function = request.app[FUNCTION_KEY]
    try:
        body = await request.read()
    except web.RequestPayloadError as exc:  # e.g. a Content-Encoding the body is not in
        log.warning("%s: unreadable request body: %s", function.consumer.function, exc.__cause__ or exc)
        return _error(400, "invalid_event", "the request body cannot be read as its headers describe it")
    try:
        event = http_binding.from_http(dict(request.headers), body)
        payload = function.parse(event)
    except InvalidEvent as exc:
        log.warning("%s: rejected event: %s", function.consumer.function, exc)
        return _error(400, "invalid_event", str(exc))
    span, traceparent = start_event_span(event, f"{function.consumer.function}.handle")
    delivery = Delivery(event, payload, traceparent)
    try:
        outputs = list(await function.handle([delivery]))
        # The reply is handed to the broker with this response: as durable as this adapter gets.
        published = getattr(function, "published", None)
        if published is not None:
            await published([delivery])
    except TransientError as exc:
        log.warning("%s: transient failure on %s: %s", function.consumer.function, event.get_id(), exc)
        return _error(503, "unavailable", str(exc))
    except Exception:
        log.exception("%s: crashed on event %s", function.consumer.function, event.get_id())
        return _error(500, "internal", "the function crashed; see its log")
    finally:
        span.end()
    if not outputs:
        return web.Response(status=202)
    # Knative's reply carries one event; a function that emits several replies with the first and
    # logs the count (our functions emit one per input event).
    if len(outputs) > 1:
        log.info("%s: %d events for one input; replying with the first", function.consumer.function, len(outputs))
    headers, reply = http_binding.to_http(outputs[0])
    return web.Response(status=200, body=reply, headers=headers)


def create_app(function: Function[Any]) -> web.Application:
    """Return the aiohttp application serving ``function`` at ``/`` (plus ``/healthz``)."""

    async def healthz(_: web.Request) -> web.Response:
        return web.json_response({"status": "ok", "function": function.consumer.function})

    async def lifecycle(app: web.Application) -> Any:
        await function.start()
        yield
        await function.close()

    app = web.Application(client_max_size=1024 * 1024)
    app[FUNCTION_KEY] = function
    app.router.add_post("/", receive)
    app.router.add_get("/healthz", healthz)
    app.cleanup_ctx.append(lifecycle)
    return app
