"""Rules and users' switches in PostgreSQL: seed the shipped rules, load the configuration."""

from __future__ import annotations

import json
from functools import lru_cache
from importlib import resources

import asyncpg

from functions.rules.changes import RuleChanges
from functions.rules.config import RulesConfig
from functions.rules.ruleset import Rule

RULE_COLUMNS = tuple(Rule.model_fields)
RULES_CHANGED_CHANNEL = "screener_rules_changed"  # notified by the row triggers of 008


@lru_cache(maxsize=1)
def seed_file_rules() -> tuple[Rule, ...]:
    """Return the 20 product rules of ``seed/rules.json`` (rules.md)."""
    text = resources.files("functions.rules").joinpath("seed/rules.json").read_text(encoding="utf-8")
    return tuple(Rule.model_validate(row) for row in json.loads(text))


async def seed_rules(conn: asyncpg.Connection | asyncpg.Pool) -> int:
    """Insert the shipped rules that are missing; never overwrite a row (edits survive). Return how many."""
    rules = seed_file_rules()
    columns = ", ".join(RULE_COLUMNS)
    status = await conn.fetchval(
        f"""WITH inserted AS (
                INSERT INTO alert_rules ({columns})
                SELECT * FROM unnest({", ".join(_array_casts())}) AS u({columns})
                ON CONFLICT (rule_type) DO NOTHING
                RETURNING 1)
            SELECT count(*) FROM inserted""",
        *[[getattr(rule, column) for rule in rules] for column in RULE_COLUMNS],
    )
    return int(status)


def _array_casts() -> list[str]:
    types = {
        "enabled": "boolean",
        "default_on": "boolean",
        "live": "boolean",
        "cooldown_seconds": "integer",
        "min_coverage": "double precision",
    }
    return [f"${i}::{types.get(column, 'text')}[]" for i, column in enumerate(RULE_COLUMNS, start=1)]


async def load_rules(conn: asyncpg.Connection | asyncpg.Pool) -> list[Rule]:
    """Return every row of ``alert_rules`` as a ``Rule``, in rule_type order."""
    rows = await conn.fetch(f"SELECT {', '.join(RULE_COLUMNS)} FROM alert_rules ORDER BY rule_type")
    return [Rule.model_validate(dict(row)) for row in rows]


async def load_switches(conn: asyncpg.Connection | asyncpg.Pool) -> dict[str, dict[str, bool]]:
    """Return each registered user's personal rule switches ``{user_id: {rule_type: on}}``."""
    rows = await conn.fetch("SELECT user_id, rules FROM user_settings")
    return {row["user_id"]: _switches(row["rules"]) for row in rows}


def _switches(raw: object) -> dict[str, bool]:
    overrides = json.loads(raw) if isinstance(raw, str | bytes) else (raw or {})
    return {str(k): bool(v) for k, v in overrides.items()} if isinstance(overrides, dict) else {}


async def load_config(conn: asyncpg.Connection | asyncpg.Pool) -> RulesConfig:
    """Return the current rules configuration (broken rules are logged and skipped)."""
    return RulesConfig.of(await load_rules(conn), await load_switches(conn))


async def reload_config(
    conn: asyncpg.Connection | asyncpg.Pool, config: RulesConfig, changes: RuleChanges
) -> RulesConfig:
    """Return ``config`` with the rows ``changes`` names read again (everything: a full load)."""
    if changes.everything:
        return await load_config(conn)
    rules: dict[str, Rule | None] = dict.fromkeys(changes.rule_types)
    if changes.rule_types:
        rows = await conn.fetch(
            f"SELECT {', '.join(RULE_COLUMNS)} FROM alert_rules WHERE rule_type = any($1::text[])",
            sorted(changes.rule_types),
        )
        rules.update({row["rule_type"]: Rule.model_validate(dict(row)) for row in rows})
    switches: dict[str, dict[str, bool] | None] = dict.fromkeys(changes.users)
    if changes.users:
        rows = await conn.fetch(
            "SELECT user_id, rules FROM user_settings WHERE user_id = any($1::text[])", sorted(changes.users)
        )
        switches.update({row["user_id"]: _switches(row["rules"]) for row in rows})
    return config.changed(rules, switches)
