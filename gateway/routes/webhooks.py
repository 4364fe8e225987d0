"""A user's webhooks: CRUD, a test delivery, and the delivery log."""

from __future__ import annotations

import re
import uuid
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import asyncpg
from aiohttp import web

from functions.notifier.delivery import RetryPolicy, send_test
from functions.notifier.models import InvalidWebhook
from gateway import validation
from gateway.context import GATEWAY, require_user
from gateway.errors import ApiError, BadParameter, json_ok, not_found
from gateway.views import delivery_view, iso

KINDS = ("discord", "telegram", "json")
MAX_WEBHOOKS = 20
FIELDS = {"kind", "url", "secret", "chat_id", "enabled", "rule_types", "symbols"}
COLUMNS = "id, user_id, kind, url, secret, chat_id, enabled, rule_types, symbols, failure_count, paused_until, "
COLUMNS += "created_at, updated_at"
CHAT_ID_RE = re.compile(r"^-?[0-9]{1,20}$|^@[A-Za-z0-9_]{4,64}$")


def webhook_view(row: asyncpg.Record) -> dict[str, Any]:
    """Return a webhook as the API shows it (the secret is never echoed)."""
    return {
        "id": str(row["id"]),
        "kind": row["kind"],
        "url": row["url"],
        "has_secret": row["secret"] is not None,
        "chat_id": row["chat_id"],
        "enabled": row["enabled"],
        "rule_types": row["rule_types"],
        "symbols": row["symbols"],
        "failure_count": row["failure_count"],
        "paused_until": iso(row["paused_until"]) if row["paused_until"] else None,
        "created_at": iso(row["created_at"]),
        "updated_at": iso(row["updated_at"]),
    }


def _url(body: dict[str, Any]) -> str:
    url = validation.string_field(body, "url", max_length=2000)
    assert url is not None
    parts = urlsplit(url)
    if parts.scheme not in ("https", "http") or not parts.hostname:
        raise BadParameter("url", "must be an http(s) URL with a host")
    if parts.username or parts.password:
        raise BadParameter("url", "must not carry credentials")
    return url


def _fields(body: dict[str, Any], *, partial: bool) -> dict[str, Any]:
    validation.reject_unknown_fields(body, FIELDS)
    out: dict[str, Any] = {}
    if not partial or "kind" in body:
        kind = body.get("kind")
        if kind not in KINDS:
            raise BadParameter("kind", f"must be one of {', '.join(KINDS)}")
        out["kind"] = kind
    if not partial or "url" in body:
        out["url"] = _url(body)
    if "secret" in body:
        out["secret"] = validation.string_field(body, "secret", max_length=200, required=False)
    if "chat_id" in body:
        chat = body["chat_id"]
        if isinstance(chat, int) and not isinstance(chat, bool):
            chat = str(chat)
        if chat is not None and (not isinstance(chat, str) or not CHAT_ID_RE.match(chat)):
            raise BadParameter("chat_id", "must be a Telegram chat id (digits) or @channel name")
        out["chat_id"] = chat
    if "enabled" in body:
        out["enabled"] = validation.boolean_field(body, "enabled")
    if "rule_types" in body:
        out["rule_types"] = validation.string_list_field(body, "rule_types", validation.RULE_TYPE_RE, 200)
    if "symbols" in body:
        symbols = body["symbols"]
        if isinstance(symbols, list):
            body = {**body, "symbols": [s.upper() if isinstance(s, str) else s for s in symbols]}
        out["symbols"] = validation.string_list_field(body, "symbols", validation.SYMBOL_RE, 500)
    return out


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


def _check_kind(row: dict[str, Any]) -> None:
    if row.get("kind") == "telegram" and not row.get("chat_id"):
        raise BadParameter("chat_id", "is required for a telegram webhook")


async def list_webhooks(request: web.Request) -> web.Response:
    """Return the caller's webhooks."""
    user_id = require_user(request)
    async with request.app[GATEWAY].pool.acquire() as conn:
        rows = await conn.fetch(f"SELECT {COLUMNS} FROM webhooks WHERE user_id = $1 ORDER BY created_at", user_id)
    return json_ok({"webhooks": [webhook_view(r) for r in rows], "count": len(rows)})


async def create_webhook(request: web.Request) -> web.Response:
    """Add a webhook (Discord, Telegram or plain JSON signed with ``secret``)."""
    user_id = require_user(request)
    fields = _fields(await validation.json_object(request), partial=False)
    _check_kind(fields)
    async with request.app[GATEWAY].pool.acquire() as conn:
        count = await conn.fetchval("SELECT count(*) FROM webhooks WHERE user_id = $1", user_id)
        if count >= MAX_WEBHOOKS:
            raise ApiError(409, "too_many_webhooks", f"a user may have at most {MAX_WEBHOOKS} webhooks")
        row = await conn.fetchrow(
            f"""INSERT INTO webhooks (id, user_id, kind, url, secret, chat_id, enabled, rule_types, symbols)
                VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) RETURNING {COLUMNS}""",
            uuid.uuid4(),
            user_id,
            fields["kind"],
            fields["url"],
            fields.get("secret"),
            fields.get("chat_id"),
            fields.get("enabled", True),
            fields.get("rule_types"),
            fields.get("symbols"),
        )
    assert row is not None
    return json_ok(webhook_view(row), status=201)


async def update_webhook(request: web.Request) -> web.Response:
    """Change some fields of one of the caller's webhooks."""
    user_id = require_user(request)
    webhook_id = _webhook_id(request)
    fields = _fields(await validation.json_object(request), partial=True)
    if not fields:
        raise BadParameter("body", f"give at least one of {', '.join(sorted(FIELDS))}")
    async with request.app[GATEWAY].pool.acquire() as conn:
        current = dict(await _owned(conn, webhook_id, user_id))
        _check_kind({**current, **fields})
        assignments = ", ".join(f"{name} = ${i}" for i, name in enumerate(fields, start=3))
        if fields.get("enabled"):
            assignments += ", failure_count = 0, paused_until = NULL"  # re-enabling clears a pause
        row = await conn.fetchrow(
            f"UPDATE webhooks SET {assignments}, updated_at = now() WHERE id = $1 AND user_id = $2 RETURNING {COLUMNS}",
            webhook_id,
            user_id,
            *fields.values(),
        )
    assert row is not None
    return json_ok(webhook_view(row))


async def delete_webhook(request: web.Request) -> web.Response:
    """Delete one of the caller's webhooks (its delivery log goes with it)."""
    user_id = require_user(request)
    webhook_id = _webhook_id(request)
    async with request.app[GATEWAY].pool.acquire() as conn:
        await _owned(conn, webhook_id, user_id)
        await conn.execute("DELETE FROM webhooks WHERE id = $1 AND user_id = $2", webhook_id, user_id)
    return json_ok({"id": str(webhook_id), "deleted": True})


async def test_webhook(request: web.Request) -> web.Response:
    """Send a sample alert to the webhook now (the notifier's own delivery code) and report the answer."""
    user_id = require_user(request)
    webhook_id = _webhook_id(request)
    gw = request.app[GATEWAY]
    async with gw.pool.acquire() as conn:
        row = await _owned(conn, webhook_id, user_id)
    policy = RetryPolicy(max_attempts=1, timeout_seconds=gw.settings.webhook_timeout_seconds)
    try:
        async with aiohttp.ClientSession() as session:
            result = await send_test(session, dict(row), policy=policy)
    except InvalidWebhook as exc:
        raise ApiError(400, "invalid_webhook", str(exc)) from None
    return json_ok(
        {
            "id": str(webhook_id),
            "ok": result.ok,
            "status": result.status,
            "http_status": result.http_status,
            "error": result.error,
        }
    )


async def webhook_deliveries(request: web.Request) -> web.Response:
    """Return the newest deliveries of one webhook, one per alert."""
    user_id = require_user(request)
    webhook_id = _webhook_id(request)
    validation.only_params(request, {"limit"})
    limit = validation.integer("limit", request.query.get("limit"), default=100, low=1, high=1000)
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
