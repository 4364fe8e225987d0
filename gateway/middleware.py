"""Request pipeline: metrics, CORS, JSON errors, body cap, identity and rate limit, outermost first."""

from __future__ import annotations

import asyncio
import logging
import time

import asyncpg
import redis.exceptions
from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError
from aiohttp.typedefs import Handler

from gateway import validation
from gateway.accounts.service import ACCOUNTS
from gateway.auth import Identity, InvalidToken, bearer_token
from gateway.context import CLIENT_IP_KEY, GATEWAY, IDENTITY_KEY, TOKEN_ERROR_KEY, TOKEN_REFUSAL_KEY, identity
from gateway.errors import ApiError, error_response
from gateway.ratelimit import client_bucket, client_ip

log = logging.getLogger(__name__)

# Probes, scrapes, the web client's health poll and the dashboard's files are not counted (decision 10):
# kubelet and Prometheus hit them constantly, and a limited health check would turn the client's badge red.
UNLIMITED_PATHS = {"/", "/api/health", "/health/live", "/health/ready", "/metrics", "/favicon.ico"}
UNLIMITED_PREFIXES = ("/static/", "/health/")
WEBSOCKET_PATHS = {"/ws/alerts"}
_HTTP_CODES = {
    400: "bad_request",
    404: "not_found",
    405: "method_not_allowed",
    413: "payload_too_large",
    415: "unsupported_media_type",
}
# A restarted PostgreSQL refuses sessions with SQLSTATE 57P03 until its recovery is done
# (CannotConnectNowError): unavailable for a moment, like a refused connection, not a bug.
_DEPENDENCY_ERRORS = (
    OSError,
    asyncpg.PostgresConnectionError,
    asyncpg.CannotConnectNowError,
    redis.exceptions.ConnectionError,
)


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


ALLOWED_METHODS = "GET, POST, PUT, PATCH, DELETE, OPTIONS"
ALLOWED_HEADERS = "Authorization, Content-Type"


def _cors_origin(origins: list[str], origin: str | None) -> str | None:
    """Return the ``Access-Control-Allow-Origin`` value for ``origin``, or None when it is not allowed."""
    if "*" in origins:
        return "*"  # no credentials are ever allowed, so the wildcard is safe and cacheable
    return origin if origin is not None and origin in origins else None


@web.middleware
async def cors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Answer preflights and put CORS headers on every response, errors and unrouted paths included.

    client.md, decision 9: any origin by default (``SCREENER_CORS_ORIGINS`` narrows it), no
    credentials. A browser hides the status of a response without them, so a 401 would not log the
    web client out and a 429 would look like a network failure.
    """
    origins = request.app[GATEWAY].settings.cors_origins
    origin = request.headers.get("Origin")
    allow = _cors_origin(origins, origin)
    if request.method == "OPTIONS" and "Access-Control-Request-Method" in request.headers:
        if allow is None:
            return error_response(
                403,
                "origin_not_allowed",
                f"origin {origin!r} is not in SCREENER_CORS_ORIGINS",
                error="Origin not allowed.",
            )
        response: web.StreamResponse = web.Response(status=204)
        response.headers["Access-Control-Allow-Methods"] = ALLOWED_METHODS
        response.headers["Access-Control-Allow-Headers"] = ALLOWED_HEADERS
        response.headers["Access-Control-Max-Age"] = "600"
    else:
        response = await handler(request)
    if allow is not None and not response.prepared:
        response.headers["Access-Control-Allow-Origin"] = allow
        response.headers["Access-Control-Expose-Headers"] = "Retry-After, X-RateLimit-Limit, X-RateLimit-Remaining"
        if allow != "*":
            response.headers.add("Vary", "Origin")
    return response


@web.middleware
async def json_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Render every failure, aiohttp's own included, as decision 1's JSON error; never a stack trace."""
    try:
        response = await handler(request)
    except ApiError as exc:
        return error_response(exc.status, exc.code, exc.message, exc.headers, error=exc.error)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        code = _HTTP_CODES.get(exc.status, "http_error")
        message, error = exc.reason, exc.reason
        if exc.status == 404:
            message, error = f"no endpoint at {request.path[:200]}", "Not found."
        elif exc.status == 405:
            allowed = exc.headers.get("Allow", "")
            message = f"method {request.method} is not allowed on {request.path[:200]} (allowed: {allowed})"
            error = "Method not allowed."
        elif exc.status == 413:
            message = f"request body exceeds {request.app[GATEWAY].settings.max_body_bytes} bytes"
            error = "The request body is too large."
        headers = {"Allow": exc.headers["Allow"]} if "Allow" in exc.headers else None
        return error_response(exc.status, code, message, headers, error=error)
    except web.RequestPayloadError as exc:
        # The body cannot be decoded as its headers say (a Content-Encoding it is not in, a broken
        # chunk): the sender's error, found only when a handler reads the body.
        return error_response(
            400,
            "invalid_body",
            f"parameter 'body': cannot be read ({_payload_reason(exc)})",
            error="The request body could not be read.",
        )
    except asyncio.CancelledError:
        raise
    except _DEPENDENCY_ERRORS as exc:
        log.warning("dependency unavailable on %s %s: %s", request.method, request.path, exc)
        return error_response(
            503,
            "dependency_unavailable",
            "a backing service is unavailable; retry shortly",
            error="The service is temporarily unavailable, please retry shortly.",
        )
    except Exception:
        log.exception("unhandled error on %s %s", request.method, request.path)
        return error_response(
            500, "internal_error", "internal error (logged on the server)", error="Something went wrong on the server."
        )
    if not response.prepared:
        response.headers.setdefault("X-Content-Type-Options", "nosniff")
    return response


def _payload_reason(exc: web.RequestPayloadError) -> str:
    """Return the parser's one-line reason for an unreadable body (aiohttp chains it as the cause)."""
    cause = exc.__cause__ if exc.__cause__ is not None else exc
    text = cause.message if isinstance(cause, HttpProcessingError) else str(cause)
    lines = [line.strip() for line in str(text).splitlines() if line.strip()]
    return lines[-1][:200] if lines else "malformed body"


@web.middleware
async def body_cap(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Refuse a declared oversized body before reading it (aiohttp's ``client_max_size`` caps the rest)."""
    limit = request.app[GATEWAY].settings.max_body_bytes
    if request.content_length is not None and request.content_length > limit:
        raise ApiError(
            413, "payload_too_large", f"request body exceeds {limit} bytes", error="The request body is too large."
        )
    return await handler(request)


@web.middleware
async def clean_input(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Refuse NUL and lone surrogates in every query value and path segment, naming the parameter."""
    validation.check_query(request)
    for name, value in request.match_info.items():
        validation.query_value(name, value)
    return await handler(request)


@web.middleware
async def authenticate(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Attach the caller's identity when a valid token came; never refuse here.

    client.md, decision 3: public endpoints serve a missing, invalid or expired token as anonymous
    (a 401 there would log the web client out). Why a presented token was refused is kept, so an
    endpoint that needs a user (``context.require_user``) answers 401 with that reason. A valid token
    of an account that may no longer act (disabled, deleted, password reset since) is refused the same
    way, with the account's own answer (403 ``account_disabled``, 401 ``token_revoked``).
    """
    if request.method == "OPTIONS":
        return await handler(request)
    try:
        token = bearer_token(request, allow_query=request.path in WEBSOCKET_PATHS)
        if token is not None:
            caller = await request.app[GATEWAY].verifier.verify(token)
            refusal = await _account_refusal(request, caller)
            if refusal is None:
                request[IDENTITY_KEY] = caller
            else:
                request[TOKEN_REFUSAL_KEY] = refusal
                request[TOKEN_ERROR_KEY] = refusal.message
    except (InvalidToken, ApiError) as exc:
        request[TOKEN_ERROR_KEY] = exc.message if isinstance(exc, ApiError) else str(exc)
    return await handler(request)


async def _account_refusal(request: web.Request, caller: Identity) -> ApiError | None:
    """Return why the account behind a valid token may not act (disabled, deleted, reset since), or None.

    Without this a disabled account, or a session a password reset ended, kept its watchlist,
    webhooks, rules and private alerts until the token expired: only the accounts endpoints looked.
    """
    try:
        return await request.app[ACCOUNTS].standing.refusal(caller)
    except _DEPENDENCY_ERRORS as exc:
        # Fail open like the rate limit: endpoints that need the database answer 503 on their own.
        log.warning("account standing not checked, database unavailable: %s", exc)
        return None


def _exempt(request: web.Request) -> bool:
    path = request.path
    return request.method == "OPTIONS" or path in UNLIMITED_PATHS or path.startswith(UNLIMITED_PREFIXES)


@web.middleware
async def rate_limit(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Allow ``rate_limit_per_minute`` requests per user (valid token) or per client IP, across replicas."""
    gw = request.app[GATEWAY]
    ip = client_ip(request.remote, request.headers.get("X-Forwarded-For"), gw.trusted_proxies)
    request[CLIENT_IP_KEY] = ip
    if _exempt(request):
        return await handler(request)
    user_id = identity(request).user_id
    bucket = client_bucket(ip)
    key, who = (f"user:{user_id}", "this user") if user_id is not None else (f"ip:{bucket}", bucket)
    try:
        decision = await gw.limiter.hit(key)
    except (redis.exceptions.RedisError, OSError) as exc:
        # Fail open: serving reads beats refusing everyone while Redis restarts; the log says so.
        log.warning("rate limit skipped, Redis unavailable: %s", exc)
        return await handler(request)
    if not decision.allowed:
        gw.registry.rate_limited.inc()
        raise ApiError(
            429,
            "rate_limited",
            f"more than {decision.limit} requests per minute from {who}; retry after {decision.retry_after_seconds} s",
            headers={
                "Retry-After": str(decision.retry_after_seconds),
                "X-RateLimit-Limit": str(decision.limit),
                "X-RateLimit-Remaining": "0",
            },
            error=f"Too many requests, please retry in {decision.retry_after_seconds} seconds.",
        )
    response = await handler(request)
    if not response.prepared:
        response.headers["X-RateLimit-Limit"] = str(decision.limit)
        response.headers["X-RateLimit-Remaining"] = str(decision.remaining)
    return response


# The identity comes before the rate limit, which counts per user when a valid token came; hostile
# input is refused after it, so refusals count too.
MIDDLEWARES = (observe, cors, json_errors, body_cap, authenticate, rate_limit, clean_input)
