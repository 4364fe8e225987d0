"""A user's webhooks in the web client's shape (client.md, section 3): CRUD, toggle, a test delivery, the log.

A webhook is ``{"id", "user_id", "name", "webhook_type", "webhook_url", "scope", "is_enabled",
"max_alerts_per_minute", "config", "created_at", "updated_at"}``, plus the product's optional
filters ``rule_types``, ``symbols`` and ``secret`` (the HMAC key of ``http`` webhooks, never echoed:
``has_secret`` says whether one is set). ``webhook_type`` is ``discord``, ``telegram`` (a full Bot API
URL carrying ``chat_id``), ``slack`` (an incoming webhook) or ``http`` (signed JSON).
"""

from __future__ import annotations

import json
import logging
import uuid
from typing import Any

import asyncpg
import orjson
import redis.exceptions
from aiohttp import web

from functions.notifier.delivery import RetryPolicy, send_test
from functions.notifier.models import KINDS, InvalidWebhook, telegram_chat_id
from gateway import validation
from gateway.context import GATEWAY, require_user
from gateway.errors import ApiError, BadParameter, json_ok, not_found
from gateway.ratelimit import RateLimiter
from gateway.user_lock import user_lock
from gateway.views import delivery_view, iso
from screener.outbound import OutboundPolicy, OutboundRefused

log = logging.getLogger(__name__)

MAX_WEBHOOKS = 10
MAX_NAME = 100
MAX_URL = 2000
MAX_CONFIG_BYTES = 4096
# Test deliveries a user may send per minute, across their webhooks: each is a request to a URL the
# user chose, so without a cap of its own the endpoint would relay the whole API rate limit (300 a
# minute) to any public host, around the notifier's per-webhook delivery rate.
TEST_SENDS_PER_MINUTE = 10
_TEST_LIMITER = web.AppKey("webhook_test_limiter", RateLimiter)
SCOPES = ("all", "watchlist")
FIELDS = {"name", "webhook_type", "webhook_url", "scope", "is_enabled", "config", "rule_types", "symbols", "secret"}
# Fields of the Webhook object the client may echo back in a PUT; they are not the caller's to set.
READ_ONLY = {"id", "user_id", "max_alerts_per_minute", "created_at", "updated_at", "has_secret"}
# API field -> column.
COLUMN_OF = {"webhook_type": "kind", "webhook_url": "url", "is_enabled": "enabled"}
COLUMNS = "id, user_id, name, kind, url, secret, chat_id, enabled, scope, config, rule_types, symbols, "
COLUMNS += "failure_count, paused_until, created_at, updated_at"


def webhook_view(row: asyncpg.Record, rate_per_minute: int) -> dict[str, Any]:
    """Return a webhook as the web client reads it (the secret is never echoed)."""
    config = row["config"]
    return {
        "id": str(row["id"]),
        "user_id": row["user_id"],
        "name": row["name"],
        "webhook_type": row["kind"],
        "webhook_url": row["url"],
        "scope": row["scope"],
        "is_enabled": row["enabled"],
        "max_alerts_per_minute": rate_per_minute,
        "config": orjson.loads(config) if isinstance(config, str) else config,
        "rule_types": row["rule_types"],
        "symbols": row["symbols"],
        "has_secret": row["secret"] is not None,
        "failure_count": row["failure_count"],
        "paused_until": iso(row["paused_until"]) if row["paused_until"] else None,
        "created_at": iso(row["created_at"]),
        "updated_at": iso(row["updated_at"]),
    }


def outbound_policy(request: web.Request) -> OutboundPolicy:
    """Return the outbound-address policy of ``SCREENER_OUTBOUND_ALLOW``."""
    return OutboundPolicy.from_setting(request.app[GATEWAY].settings.outbound_allow)


async def check_url(policy: OutboundPolicy, value: str, field: str = "webhook_url") -> str:
    """Return ``value`` when the outbound policy lets it be called: http(s), a public host, a valid port.

    The host is resolved now, so a name that points inside the network is refused when it is
    stored; delivery checks the addresses again when it connects.
    """
    reason = validation.unsafe_text(value)
    if reason is not None:
        raise BadParameter(field, reason)
    try:
        await policy.check_destination(value)
    except OutboundRefused as exc:
        raise BadParameter(field, str(exc)) from None
    return value


def _config(body: dict[str, Any]) -> dict[str, Any]:
    config = body.get("config")
    if config is None:
        return {}
    if not isinstance(config, dict) or len(json.dumps(config)) > MAX_CONFIG_BYTES:
        raise BadParameter("config", f"must be a JSON object of at most {MAX_CONFIG_BYTES} bytes")
    return config


async def _fields(policy: OutboundPolicy, body: dict[str, Any], *, partial: bool) -> dict[str, Any]:
    """Return the validated columns to write from a POST (``partial=False``) or PUT body."""
    validation.reject_unknown_fields(body, FIELDS | READ_ONLY)
    out: dict[str, Any] = {}
    if not partial or "name" in body:
        out["name"] = validation.string_field(body, "name", max_length=MAX_NAME)
    if not partial or "webhook_type" in body:
        kind = body.get("webhook_type")
        if kind not in KINDS:
            raise BadParameter("webhook_type", f"must be one of {', '.join(KINDS)}")
        out["kind"] = kind
    if not partial or "webhook_url" in body:
        url = validation.string_field(body, "webhook_url", max_length=MAX_URL)
        assert url is not None
        out["url"] = await check_url(policy, url)
    if "scope" in body or not partial:
        scope = body.get("scope", "all")
        if scope not in SCOPES:
            raise BadParameter("scope", "must be all or watchlist")
        out["scope"] = scope
    if "is_enabled" in body:
        out["enabled"] = validation.boolean_field(body, "is_enabled")
    if "config" in body or not partial:
        out["config"] = json.dumps(_config(body))
    if "secret" in body:
        out["secret"] = validation.string_field(body, "secret", max_length=200, required=False)
    if "rule_types" in body:
        out["rule_types"] = validation.string_list_field(body, "rule_types", validation.RULE_TYPE_RE, 200)
    if "symbols" in body:
        symbols = body["symbols"]
        if isinstance(symbols, list):
            body = {**body, "symbols": [s.upper() if isinstance(s, str) else s for s in symbols]}
        out["symbols"] = validation.string_list_field(body, "symbols", validation.SYMBOL_RE, 500)
    return out


def _telegram(fields: dict[str, Any]) -> None:
    """Fill ``chat_id`` of a Telegram webhook from its URL (the client has no separate field)."""
    if fields.get("kind") != "telegram":
        fields["chat_id"] = None
        return
    chat_id = telegram_chat_id(fields["url"])
    if chat_id is None or len(chat_id) > 64:
        raise BadParameter(
            "webhook_url",
            "must be a Telegram Bot API URL with its chat, like https://api.telegram.org/bot<token>/sendMessage?chat_id=<id>",
        )
    fields["chat_id"] = chat_id


def _webhook_id(request: web.Request) -> uuid.UUID:
    try:
        return uuid.UUID(request.match_info["webhook_id"])
    except ValueError:
        raise BadParameter("id", "must be a webhook id (a UUID)") from None


async def _owned(conn: asyncpg.Connection, webhook_id: uuid.UUID, user_id: str) -> asyncpg.Record:
    row = await conn.fetchrow(f"SELECT {COLUMNS} FROM webhooks WHERE id = $1 AND user_id = $2", webhook_id, user_id)
    if row is None:
        raise not_found(f"webhook {webhook_id}")
    return row


def _rate(request: web.Request) -> int:
    return request.app[GATEWAY].settings.webhook_rate_per_minute


async def user_webhooks(conn: asyncpg.Connection, user_id: str) -> list[asyncpg.Record]:
    """Return the rows of ``user_id``'s webhooks, oldest first."""
    return list(await conn.fetch(f"SELECT {COLUMNS} FROM webhooks WHERE user_id = $1 ORDER BY created_at", user_id))


async def list_webhooks(request: web.Request) -> web.Response:
    """Return ``{"webhooks": [...], "count", "limit"}`` of the caller."""
    user_id = require_user(request)
    async with request.app[GATEWAY].pool.acquire() as conn:
        rows = await user_webhooks(conn, user_id)
    rate = _rate(request)
    return json_ok({"webhooks": [webhook_view(r, rate) for r in rows], "count": len(rows), "limit": MAX_WEBHOOKS})


async def get_webhook(request: web.Request) -> web.Response:
    """Return one of the caller's webhooks."""
    user_id = require_user(request)
    webhook_id = _webhook_id(request)
    async with request.app[GATEWAY].pool.acquire() as conn:
        row = await _owned(conn, webhook_id, user_id)
    return json_ok(webhook_view(row, _rate(request)))


async def create_webhook(request: web.Request) -> web.Response:
    """Add a webhook; answer the created webhook (the client inserts it into its list as returned)."""
    user_id = require_user(request)
    fields = await _fields(outbound_policy(request), await validation.json_object(request), partial=False)
    _telegram(fields)
    async with request.app[GATEWAY].pool.acquire() as conn, conn.transaction():
        await user_lock(conn, "webhooks", user_id)
        count = await conn.fetchval("SELECT count(*) FROM webhooks WHERE user_id = $1", user_id)
        if count >= MAX_WEBHOOKS:
            raise ApiError(
                400,
                "webhook_limit",
                f"a user may have at most {MAX_WEBHOOKS} webhooks",
                error=f"Webhook limit of {MAX_WEBHOOKS} reached",
            )
        row = await conn.fetchrow(
            f"""INSERT INTO webhooks (id, user_id, name, kind, url, secret, chat_id, enabled, scope, config,
                                      rule_types, symbols)
                VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10::jsonb, $11, $12) RETURNING {COLUMNS}""",
            uuid.uuid4(),
            user_id,
            fields["name"],
            fields["kind"],
            fields["url"],
            fields.get("secret"),
            fields["chat_id"],
            fields.get("enabled", True),
            fields["scope"],
            fields["config"],
            fields.get("rule_types"),
            fields.get("symbols"),
        )
    assert row is not None
    return json_ok(webhook_view(row, _rate(request)), status=201)


async def _update(request: web.Request, user_id: str, webhook_id: uuid.UUID, fields: dict[str, Any]) -> web.Response:
    async with request.app[GATEWAY].pool.acquire() as conn:
        current = await _owned(conn, webhook_id, user_id)
        if "kind" in fields or "url" in fields:
            merged = {"kind": current["kind"], "url": current["url"], **fields}
            _telegram(merged)
            fields["chat_id"] = merged["chat_id"]
        assignments = ", ".join(
            f"{name} = ${i}{'::jsonb' if name == 'config' else ''}" for i, name in enumerate(fields, start=3)
        )
        if fields.get("enabled"):
            assignments += ", failure_count = 0, paused_until = NULL"  # re-enabling clears a pause
        row = await conn.fetchrow(
            f"UPDATE webhooks SET {assignments}, updated_at = now() WHERE id = $1 AND user_id = $2 RETURNING {COLUMNS}",
            webhook_id,
            user_id,
            *fields.values(),
        )
    if row is None:  # deleted meanwhile
        raise not_found(f"webhook {webhook_id}")
    return json_ok(webhook_view(row, _rate(request)))


async def update_webhook(request: web.Request) -> web.Response:
    """Change fields of one of the caller's webhooks; answer the full updated webhook."""
    user_id = require_user(request)
    webhook_id = _webhook_id(request)
    fields = await _fields(outbound_policy(request), await validation.json_object(request), partial=True)
    if not fields:
        raise BadParameter("body", f"give at least one of {', '.join(sorted(FIELDS))}")
    return await _update(request, user_id, webhook_id, fields)


async def toggle_webhook(request: web.Request) -> web.Response:
    """Switch one of the caller's webhooks on or off: ``{"enabled": bool}``."""
    user_id = require_user(request)
    webhook_id = _webhook_id(request)
    body = await validation.json_object(request)
    validation.reject_unknown_fields(body, {"enabled"})
    return await _update(request, user_id, webhook_id, {"enabled": validation.boolean_field(body, "enabled")})


async def delete_webhook(request: web.Request) -> web.Response:
    """Delete one of the caller's webhooks (its delivery log goes with it)."""
    user_id = require_user(request)
    webhook_id = _webhook_id(request)
    async with request.app[GATEWAY].pool.acquire() as conn:
        await _owned(conn, webhook_id, user_id)
        await conn.execute("DELETE FROM webhooks WHERE id = $1 AND user_id = $2", webhook_id, user_id)
    return json_ok({"id": str(webhook_id), "deleted": True})


async def test_webhook(request: web.Request) -> web.Response:
    """Send a sample alert to the webhook now; 200 when it was accepted, 502 naming only the status when not.

    The destination's answer body is never passed on, and a destination the outbound policy
    refuses is a 400 before anything is sent: the endpoint must not become a way to read what an
    arbitrary URL answers, or to tell open ports from closed ones inside the network.
    """
    user_id = require_user(request)
    webhook_id = _webhook_id(request)
    gw = request.app[GATEWAY]
    async with gw.pool.acquire() as conn:
        row = await _owned(conn, webhook_id, user_id)
    policy = outbound_policy(request)
    await check_url(policy, row["url"])
    await _count_test_send(request, user_id)
    retry = RetryPolicy(max_attempts=1, timeout_seconds=gw.settings.webhook_timeout_seconds)
    try:
        async with policy.client_session() as session:
            result = await send_test(session, dict(row), policy=retry, outbound=policy)
    except InvalidWebhook as exc:
        raise ApiError(400, "invalid_webhook", str(exc)) from None
    if result.ok:
        return json_ok({"id": str(webhook_id), "status": "sent", "http_status": result.http_status})
    answer = f"it answered HTTP {result.http_status}" if result.http_status else "it could not be reached"
    raise ApiError(
        502,
        "webhook_test_failed",
        f"test delivery to webhook {webhook_id} failed: {answer}",
        error=f"Test alert to {row['name'] or 'the webhook'} failed: {answer}",
    )


async def _count_test_send(request: web.Request, user_id: str) -> None:
    """Count one test delivery of ``user_id``; 429 past ``TEST_SENDS_PER_MINUTE``."""
    try:
        decision = await request.app[_TEST_LIMITER].hit(f"webhook-test:{user_id}")
    except (redis.exceptions.RedisError, OSError) as exc:
        log.warning("webhook test limit skipped, Redis unavailable: %s", exc)  # fail open, like the API limit
        return
    if not decision.allowed:
        raise ApiError(
            429,
            "rate_limited",
            f"at most {TEST_SENDS_PER_MINUTE} test deliveries per minute; retry after {decision.retry_after_seconds} s",
            headers={"Retry-After": str(decision.retry_after_seconds)},
            error=f"Too many test alerts, please retry in {decision.retry_after_seconds} seconds.",
        )


def setup(app: web.Application) -> None:
    """Give the app the limiter of test deliveries (shared by replicas through Redis)."""
    app[_TEST_LIMITER] = RateLimiter(app[GATEWAY].redis, TEST_SENDS_PER_MINUTE)


async def webhook_deliveries(request: web.Request) -> web.Response:
    """Return the newest deliveries of one webhook, one per alert."""
    user_id = require_user(request)
    webhook_id = _webhook_id(request)
    validation.only_params(request, {"limit"})
    limit = validation.integer("limit", request.query.get("limit"), default=100, low=1, high=1000, clamp=True)
    async with request.app[GATEWAY].pool.acquire() as conn:
        await _owned(conn, webhook_id, user_id)
        rows = await conn.fetch(
            """SELECT alert_id, status, attempts, last_error, http_status, sent_at, updated_at
               FROM webhook_deliveries WHERE webhook_id = $1 ORDER BY updated_at DESC LIMIT $2""",
            webhook_id,
            limit,
        )
    return json_ok(
        {
            "webhook_id": str(webhook_id),
            "deliveries": [delivery_view(r, "alert_id") for r in rows],
        }
    )
