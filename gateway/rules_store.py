"""Rules and personal settings in PostgreSQL (alert_rules, user_settings).

Every write fires the NOTIFY triggers of 001_core.sql, so rule workers and other gateway replicas
pick the change up without a restart.
"""

from __future__ import annotations

import json
from typing import Any

import asyncpg
import orjson

RULE_COLUMNS = (
    "rule_type, name, description, category, expression, enabled, default_on, frequency, "
    "cooldown_seconds, live, min_coverage, owner, created_at, updated_at"
)


async def visible_rules(conn: asyncpg.Connection, user_id: str | None) -> list[asyncpg.Record]:
    """Return the global rules plus ``user_id``'s own, globals first."""
    return list(
        await conn.fetch(
            f"SELECT {RULE_COLUMNS} FROM alert_rules WHERE owner IS NULL OR owner = $1 "
            "ORDER BY owner NULLS FIRST, category, rule_type",
            user_id,
        )
    )


async def visible_rule(conn: asyncpg.Connection, rule_type: str, user_id: str | None) -> asyncpg.Record | None:
    """Return one rule if ``user_id`` may see it."""
    return await conn.fetchrow(
        f"SELECT {RULE_COLUMNS} FROM alert_rules WHERE rule_type = $1 AND (owner IS NULL OR owner = $2)",
        rule_type,
        user_id,
    )


async def user_overrides(conn: asyncpg.Connection, user_id: str) -> tuple[dict[str, bool], dict[str, Any]]:
    """Return the user's rule switches and preferences."""
    row = await conn.fetchrow("SELECT rules, preferences FROM user_settings WHERE user_id = $1", user_id)
    if row is None:
        return {}, {}
    rules, prefs = _load(row["rules"]), _load(row["preferences"])
    return {k: v for k, v in rules.items() if isinstance(v, bool)}, prefs


async def set_switches(conn: asyncpg.Connection, user_id: str, switches: dict[str, bool]) -> None:
    """Merge ``switches`` into the user's rule settings."""
    await conn.execute(
        """INSERT INTO user_settings (user_id, rules) VALUES ($1, $2::jsonb)
           ON CONFLICT (user_id) DO UPDATE SET rules = user_settings.rules || EXCLUDED.rules, updated_at = now()""",
        user_id,
        json.dumps(switches),
    )


async def set_preferences(conn: asyncpg.Connection, user_id: str, preferences: dict[str, Any]) -> None:
    """Replace the user's preferences."""
    await conn.execute(
        """INSERT INTO user_settings (user_id, preferences) VALUES ($1, $2::jsonb)
           ON CONFLICT (user_id) DO UPDATE SET preferences = EXCLUDED.preferences, updated_at = now()""",
        user_id,
        json.dumps(preferences),
    )


def rule_view(row: asyncpg.Record, enabled: bool) -> dict[str, Any]:
    """Return a rule object of ``GET /api/alert-rules``; ``enabled`` is the caller's setting."""
    return {
        "id": row["rule_type"],
        "rule_type": row["rule_type"],
        "name": row["name"],
        "description": row["description"],
        "enabled": enabled,
        "category": row["category"],
        "expression": row["expression"],
        "default_on": row["default_on"],
        "active": row["enabled"],
        "frequency": row["frequency"],
        "cooldown_seconds": row["cooldown_seconds"],
        "live": row["live"],
        "min_coverage": row["min_coverage"],
        "custom": row["owner"] is not None,
    }


def _load(value: Any) -> dict[str, Any]:
    # orjson reads an integer beyond 64 bits (jsonb keeps any) as a float, so it can be encoded back.
    data = orjson.loads(value) if isinstance(value, str | bytes) else value
    return data if isinstance(data, dict) else {}
