"""Request pipeline: metrics, CORS, JSON errors, body cap, rate limit and authentication, outermost first."""

from __future__ import annotations

import asyncio
import logging
import time

import asyncpg
import redis.exceptions
from aiohttp import web
from aiohttp.typedefs import Handler

from gateway.auth import InvalidToken, bearer_token
from gateway.context import CLIENT_IP_KEY, GATEWAY, IDENTITY_KEY
from gateway.errors import ApiError, error_response, unauthorized
from gateway.ratelimit import client_ip

log = logging.getLogger(__name__)

# Probes, scrapes and the dashboard's files are not counted: kubelet and Prometheus hit them constantly.
UNLIMITED_PATHS = {"/", "/health/live", "/health/ready", "/metrics", "/favicon.ico"}
UNLIMITED_PREFIXES = ("/static/",)
WEBSOCKET_PATHS = {"/ws/alerts"}
_HTTP_CODES = {
    400: "bad_request",
    404: "not_found",
    405: "method_not_allowed",
    413: "payload_too_large",
    415: "unsupported_media_type",
}
_DEPENDENCY_ERRORS = (OSError, asyncpg.PostgresConnectionError, redis.exceptions.ConnectionError)


def _route_label(request: web.Request) -> str:
    route = request.match_info.route
    resource = route.resource if route is not None else None
    return resource.canonical if resource is not None else "unmatched"


@web.middleware
async def observe(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Count requests and time them per route (label cardinality bounded by the route table)."""
    started = time.monotonic()
    status = 500
    try:
        response = await handler(request)
        status = response.status
        return response
    finally:
        registry = request.app[GATEWAY].registry
        route = _route_label(request)
        registry.requests.inc(method=request.method, route=route, status=str(status))
        registry.latency.observe(time.monotonic() - started, route=route)


@web.middleware
async def cors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Answer preflights and add CORS headers for configured origins only."""
    origins = request.app[GATEWAY].settings.cors_origins
    origin = request.headers.get("Origin")
    allowed = origin is not None and (origin in origins or "*" in origins)
    if request.method == "OPTIONS" and "Access-Control-Request-Method" in request.headers:
        if not allowed:
            return error_response(403, "origin_not_allowed", f"origin {origin!r} is not allowed")
        response: web.StreamResponse = web.Response(status=204)
        response.headers["Access-Control-Allow-Methods"] = "GET, POST, PUT, DELETE, OPTIONS"
        response.headers["Access-Control-Allow-Headers"] = "Authorization, Content-Type"
        response.headers["Access-Control-Max-Age"] = "600"
    else:
        response = await handler(request)
    if allowed and origin is not None and not response.prepared:
        response.headers["Access-Control-Allow-Origin"] = origin
        response.headers["Access-Control-Expose-Headers"] = "Retry-After, X-RateLimit-Limit, X-RateLimit-Remaining"
        response.headers.add("Vary", "Origin")
    return response


@web.middleware
async def json_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Render every failure as api.md's JSON error; never a stack trace."""
    try:
        response = await handler(request)
    except ApiError as exc:
        return error_response(exc.status, exc.code, exc.message, exc.headers)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        code = _HTTP_CODES.get(exc.status, "http_error")
        message = exc.reason if exc.status != 404 else f"no endpoint at {request.path[:200]}"
        if exc.status == 413:
            message = f"request body exceeds {request.app[GATEWAY].settings.max_body_bytes} bytes"
        headers = {"Allow": exc.headers["Allow"]} if "Allow" in exc.headers else None
        return error_response(exc.status, code, message, headers)
    except asyncio.CancelledError:
        raise
    except _DEPENDENCY_ERRORS as exc:
        log.warning("dependency unavailable on %s %s: %s", request.method, request.path, exc)
        return error_response(503, "dependency_unavailable", "a backing service is unavailable; retry shortly")
    except Exception:
        log.exception("unhandled error on %s %s", request.method, request.path)
        return error_response(500, "internal_error", "internal error (logged on the server)")
    if not response.prepared:
        response.headers.setdefault("X-Content-Type-Options", "nosniff")
    return response


@web.middleware
async def body_cap(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Refuse a declared oversized body before reading it (aiohttp's ``client_max_size`` caps the rest)."""
    limit = request.app[GATEWAY].settings.max_body_bytes
    if request.content_length is not None and request.content_length > limit:
        raise ApiError(413, "payload_too_large", f"request body exceeds {limit} bytes")
    return await handler(request)


@web.middleware
async def rate_limit(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Allow ``rate_limit_per_minute`` requests per client IP across all replicas (Redis)."""
    gw = request.app[GATEWAY]
    ip = client_ip(request.remote, request.headers.get("X-Forwarded-For"), gw.trusted_proxies)
    request[CLIENT_IP_KEY] = ip
    if request.path in UNLIMITED_PATHS or request.path.startswith(UNLIMITED_PREFIXES) or request.method == "OPTIONS":
        return await handler(request)
    try:
        decision = await gw.limiter.hit(ip)
    except (redis.exceptions.RedisError, OSError) as exc:
        # Fail open: serving reads beats refusing everyone while Redis restarts; the log says so.
        log.warning("rate limit skipped, Redis unavailable: %s", exc)
        return await handler(request)
    if not decision.allowed:
        gw.registry.rate_limited.inc()
        raise ApiError(
            429,
            "rate_limited",
            f"more than {decision.limit} requests per minute from {ip}; retry after {decision.retry_after_seconds} s",
            headers={
                "Retry-After": str(decision.retry_after_seconds),
                "X-RateLimit-Limit": str(decision.limit),
                "X-RateLimit-Remaining": "0",
            },
        )
    response = await handler(request)
    if not response.prepared:
        response.headers["X-RateLimit-Limit"] = str(decision.limit)
        response.headers["X-RateLimit-Remaining"] = str(decision.remaining)
    return response


@web.middleware
async def authenticate(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Attach the caller's identity; a presented but invalid token is a 401 (the WebSocket closes 4401)."""
    if request.path in WEBSOCKET_PATHS or request.method == "OPTIONS":
        return await handler(request)
    token = bearer_token(request)
    if token is not None:
        try:
            request[IDENTITY_KEY] = await request.app[GATEWAY].verifier.verify(token)
        except InvalidToken as exc:
            raise unauthorized(str(exc)) from None
    return await handler(request)


MIDDLEWARES = (observe, cors, json_errors, body_cap, rate_limit, authenticate)
