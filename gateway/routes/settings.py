"""A user's settings: ``GET/POST /settings`` and ``/api/settings``, and ``PUT /api/settings/tv-username``."""

from __future__ import annotations

import json
import re
from typing import Any

from aiohttp import web

from gateway import rules_store, validation
from gateway.context import GATEWAY, require_user
from gateway.errors import BadParameter, json_ok
from gateway.routes.watchlist import symbols_of
from gateway.routes.webhooks import user_webhooks, webhook_view

MAX_PREFERENCES_BYTES = 16 * 1024
# TradingView usernames: letters, digits, underscores, dots and hyphens.
TV_USERNAME_RE = re.compile(r"^[A-Za-z0-9_.\-]{1,64}$")


async def _settings(request: web.Request, user_id: str) -> dict[str, Any]:
    async with request.app[GATEWAY].pool.acquire() as conn:
        rules = await rules_store.visible_rules(conn, user_id)
        overrides, preferences = await rules_store.user_overrides(conn, user_id)
        hooks = await user_webhooks(conn, user_id)
        watchlist = await symbols_of(conn, user_id)
        tv_username = await conn.fetchval("SELECT tv_username FROM tv_usernames WHERE user_id = $1", user_id)
    rate = request.app[GATEWAY].settings.webhook_rate_per_minute
    switches = {r["rule_type"]: overrides.get(r["rule_type"], r["default_on"]) for r in rules}
    return {
        "user_id": user_id,
        "rules": switches,
        "enabled_rules": sorted(k for k, on in switches.items() if on),
        "webhooks": [webhook_view(h, rate) for h in hooks],
        "watchlist": watchlist,
        "tv_username": tv_username,
        "preferences": preferences,
    }


async def get_settings(request: web.Request) -> web.Response:
    """Return the caller's rule switches, webhooks and preferences."""
    return json_ok(await _settings(request, require_user(request)))


async def post_settings(request: web.Request) -> web.Response:
    """Update rule switches (``rules``: {rule_type: bool}, merged) and/or ``preferences`` (replaced)."""
    user_id = require_user(request)
    body = await validation.json_object(request)
    validation.reject_unknown_fields(body, {"rules", "preferences", "enabled_rules"})
    gw = request.app[GATEWAY]
    switches: dict[str, bool] = {}
    if "rules" in body:
        rules = body["rules"]
        if not isinstance(rules, dict) or not all(isinstance(v, bool) for v in rules.values()):
            raise BadParameter("rules", "must be an object of rule_type: true/false")
        switches.update(rules)
    preferences = body.get("preferences")
    if preferences is not None and (
        not isinstance(preferences, dict) or len(json.dumps(preferences)) > MAX_PREFERENCES_BYTES
    ):
        raise BadParameter("preferences", f"must be a JSON object of at most {MAX_PREFERENCES_BYTES} bytes")
    async with gw.pool.acquire() as conn:
        known = {r["rule_type"] for r in await rules_store.visible_rules(conn, user_id)}
        if "enabled_rules" in body:
            enabled = body["enabled_rules"]
            if not isinstance(enabled, list) or not all(isinstance(v, str) for v in enabled):
                raise BadParameter("enabled_rules", "must be a list of rule types")
            switches.update({rule: rule in enabled for rule in known})
        unknown = sorted(set(switches) - known)
        if unknown:
            raise BadParameter("rules", f"unknown rule {unknown[0][:64]!r}")
        async with conn.transaction():
            if switches:
                await rules_store.set_switches(conn, user_id, switches)
            if preferences is not None:
                await rules_store.set_preferences(conn, user_id, preferences)
    for rule_type, on in switches.items():
        gw.switches.set_user_rule(user_id, rule_type, on)
    return json_ok(await _settings(request, user_id))


async def put_tv_username(request: web.Request) -> web.Response:
    """Store the caller's TradingView username ``{"tv_username"}`` (trimmed, non-empty; client.md, section 5)."""
    user_id = require_user(request)
    body = await validation.json_object(request)
    validation.reject_unknown_fields(body, {"tv_username"})
    name = validation.string_field(body, "tv_username", max_length=64)
    assert name is not None
    if not TV_USERNAME_RE.match(name):
        raise BadParameter("tv_username", "may only hold letters, digits, underscores, dots and hyphens")
    async with request.app[GATEWAY].pool.acquire() as conn:
        await conn.execute(
            """INSERT INTO tv_usernames (user_id, tv_username) VALUES ($1, $2)
               ON CONFLICT (user_id) DO UPDATE SET tv_username = EXCLUDED.tv_username, updated_at = now()""",
            user_id,
            name,
        )
    return json_ok({"tv_username": name, "message": "TradingView username saved"})
