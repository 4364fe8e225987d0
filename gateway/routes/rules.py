"""Rules: list with personal switches, toggle, and a user's own rules (create, delete)."""

from __future__ import annotations

import secrets
from typing import Any

from aiohttp import web

from functions.rules.ruleset import Rule
from gateway import rules_store, validation
from gateway.context import GATEWAY, identity, require_user
from gateway.errors import ApiError, BadParameter, json_ok, not_found
from gateway.rule_checker import RuleChecker
from gateway.user_lock import user_lock

FREQUENCIES = ("once_per_bar_close", "cooldown", "on_change")
MAX_OWN_RULES = 50
# The sum of a user's expression lengths: compile time and memory grow with it, not with the count.
MAX_RULE_TEXT_PER_USER = 20_000
RULE_CHECKER = web.AppKey("rule_checker", RuleChecker)
CREATE_FIELDS = {"name", "expression", "description", "cooldown_seconds", "cooldown", "frequency", "live"}
CREATE_FIELDS |= {"min_coverage", "enabled"}


async def list_rules(request: web.Request) -> web.Response:
    """Return ``{"rules": [...], "count"}``; with a token ``enabled`` is the caller's own setting."""
    validation.only_params(request, set())
    gw = request.app[GATEWAY]
    user_id = identity(request).user_id
    async with gw.pool.acquire() as conn:
        rows = await rules_store.visible_rules(conn, user_id)
        overrides = (await rules_store.user_overrides(conn, user_id))[0] if user_id else {}
    rules = [rules_store.rule_view(r, overrides.get(r["rule_type"], r["default_on"])) for r in rows]
    return json_ok({"rules": rules, "count": len(rules)})


async def toggle_rule(request: web.Request) -> web.Response:
    """Store the caller's switch of one rule (``{"enabled": bool}``)."""
    user_id = require_user(request)
    rule_type = validation.rule_type("rule_type", request.match_info["rule_id"])
    assert rule_type is not None
    body = await validation.json_object(request)
    validation.reject_unknown_fields(body, {"enabled"})
    enabled = validation.boolean_field(body, "enabled")
    gw = request.app[GATEWAY]
    async with gw.pool.acquire() as conn:
        if await rules_store.visible_rule(conn, rule_type, user_id) is None:
            raise not_found(f"rule {rule_type!r}")
        await rules_store.set_switches(conn, user_id, {rule_type: enabled})
    gw.switches.set_user_rule(user_id, rule_type, enabled)
    state = "enabled" if enabled else "disabled"
    return json_ok({"rule_type": rule_type, "enabled": enabled, "message": f"rule {rule_type} {state}"})


def _int_field(body: dict[str, Any], name: str, low: int, high: int, default: int) -> int:
    value = body.get(name, default)
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise BadParameter(name, f"must be an integer between {low} and {high}")
    return value


def _parse_new_rule(body: dict[str, Any], user_id: str) -> Rule:
    validation.reject_unknown_fields(body, CREATE_FIELDS)
    name = validation.string_field(body, "name", max_length=120)
    expression = validation.string_field(body, "expression", max_length=2000)
    description = validation.string_field(body, "description", max_length=500, required=False) or ""
    # ``cooldown`` (minutes, as the product's UI says it) or ``cooldown_seconds``.
    if "cooldown" in body and "cooldown_seconds" in body:
        raise BadParameter("cooldown", "give either 'cooldown' (minutes) or 'cooldown_seconds', not both")
    cooldown = (
        _int_field(body, "cooldown", 0, 10080, 5) * 60
        if "cooldown" in body
        else _int_field(body, "cooldown_seconds", 0, 604800, 300)
    )
    frequency = body.get("frequency", "cooldown")
    if frequency not in FREQUENCIES:
        raise BadParameter("frequency", f"must be one of {', '.join(FREQUENCIES)}")
    min_coverage = body.get("min_coverage", 1.0)
    if isinstance(min_coverage, bool) or not isinstance(min_coverage, int | float) or not 0 <= min_coverage <= 1:
        raise BadParameter("min_coverage", "must be a number between 0 and 1")
    assert name is not None
    assert expression is not None
    return Rule(
        rule_type=f"custom_{secrets.token_hex(6)}",
        name=name,
        description=description,
        category="custom",
        expression=expression,
        enabled=True,
        default_on=validation.boolean_field(body, "enabled", default=True),
        frequency=frequency,
        cooldown_seconds=cooldown,
        live=validation.boolean_field(body, "live", default=False),
        min_coverage=float(min_coverage),
        owner=user_id,
    )


async def create_rule(request: web.Request) -> web.Response:
    """Add one of the caller's own rules; a bad expression is a 400 naming position and reason.

    The new rule is compiled and checked against the rules the caller can see (references, cycles)
    in the rule checker's worker process, never on the event loop.
    """
    user_id = require_user(request)
    rule = _parse_new_rule(await validation.json_object(request), user_id)
    gw = request.app[GATEWAY]
    async with gw.pool.acquire() as conn:
        rows = await rules_store.visible_rules(conn, user_id)
    # Checked before the compile, so a user at the cap costs no worker time ...
    _check_caps([r["expression"] for r in rows if r["owner"] == user_id], rule)
    problem = await request.app[RULE_CHECKER].check(rule, [_rule_of(r) for r in rows])
    if problem is not None:
        kind, reason, position = problem
        where = f" at position {position}" if kind == "expression" else ""
        raise ApiError(400, "invalid_expression", f"parameter 'expression': {reason}{where}")
    async with gw.pool.acquire() as conn, conn.transaction():
        # ... and again under the user's lock: concurrent creates all passed the first check while
        # they waited for the checker, and without the lock each would insert past the cap.
        await user_lock(conn, "rules", user_id)
        own = await conn.fetch("SELECT expression FROM alert_rules WHERE owner = $1", user_id)
        _check_caps([r["expression"] for r in own], rule)
        await conn.execute(
            """INSERT INTO alert_rules (rule_type, name, description, category, expression, enabled, default_on,
                   frequency, cooldown_seconds, live, min_coverage, owner)
               VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)""",
            rule.rule_type,
            rule.name,
            rule.description,
            rule.category,
            rule.expression,
            rule.enabled,
            rule.default_on,
            rule.frequency,
            rule.cooldown_seconds,
            rule.live,
            rule.min_coverage,
            rule.owner,
        )
        row = await rules_store.visible_rule(conn, rule.rule_type, user_id)
    assert row is not None
    return json_ok(rules_store.rule_view(row, rule.default_on), status=201)


def _check_caps(own_expressions: list[str], rule: Rule) -> None:
    """Raise 409 when adding ``rule`` to a user's own rules would pass the count or text cap."""
    if len(own_expressions) >= MAX_OWN_RULES:
        raise ApiError(409, "too_many_rules", f"a user may own at most {MAX_OWN_RULES} rules")
    text = sum(len(e) for e in own_expressions) + len(rule.expression)
    if text > MAX_RULE_TEXT_PER_USER:
        raise ApiError(
            409,
            "rule_budget_exceeded",
            f"a user's rules may hold at most {MAX_RULE_TEXT_PER_USER} characters of expressions in total "
            f"(this one would make {text})",
        )


def setup(app: web.Application) -> None:
    """Give the app its rule checker (a worker process started on first use, stopped at cleanup)."""
    checker = RuleChecker()
    app[RULE_CHECKER] = checker

    async def stop(_: web.Application) -> None:
        await checker.close()

    app.on_cleanup.append(stop)


def _rule_of(row: Any) -> Rule:
    return Rule(
        rule_type=row["rule_type"],
        name=row["name"],
        description=row["description"],
        category=row["category"],
        expression=row["expression"],
        enabled=row["enabled"],
        default_on=row["default_on"],
        frequency=row["frequency"],
        cooldown_seconds=row["cooldown_seconds"],
        live=row["live"],
        min_coverage=row["min_coverage"],
        owner=row["owner"],
    )


async def delete_rule(request: web.Request) -> web.Response:
    """Delete one of the caller's own rules (a global rule is 403, someone else's 404)."""
    user_id = require_user(request)
    rule_type = validation.rule_type("id", request.match_info["rule_id"])
    gw = request.app[GATEWAY]
    async with gw.pool.acquire() as conn:
        owner = await conn.fetchrow("SELECT owner FROM alert_rules WHERE rule_type = $1", rule_type)
        if owner is None or (owner["owner"] is not None and owner["owner"] != user_id):
            raise not_found(f"rule {rule_type!r}")
        if owner["owner"] is None:
            raise ApiError(403, "forbidden", f"rule {rule_type!r} is a global rule; switch it off instead")
        await conn.execute("DELETE FROM alert_rules WHERE rule_type = $1 AND owner = $2", rule_type, user_id)
    return json_ok({"id": rule_type, "deleted": True})
