"""Rule changes reach a running worker as what changed: one rule recompiled, one user's switches, or nothing."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator

import asyncpg
import pytest
import redis.asyncio as aioredis

from functions.rules.changes import RuleChanges
from functions.rules.function import RulesFunction
from functions.rules.ruleset import _compile_text
from functions.rules.store import RULES_CHANGED_CHANNEL, seed_rules
from screener.config import load_settings


@pytest.fixture
async def rules_function(
    postgres_dsn: str, redis_url: str, redis_client: aioredis.Redis, pg: asyncpg.Connection
) -> AsyncIterator[RulesFunction]:
    await seed_rules(pg)
    function = RulesFunction(load_settings({}, postgres_dsn=postgres_dsn, redis_url=redis_url))
    await function.start()
    yield function
    await function.close()


async def _until(condition: object, timeout: float = 5.0) -> None:
    assert callable(condition)
    deadline = asyncio.get_running_loop().time() + timeout
    while not condition():
        assert asyncio.get_running_loop().time() < deadline, "condition not met in time"
        await asyncio.sleep(0.02)


async def _notifications(pg: asyncpg.Connection, dsn: str, statement: str) -> list[dict[str, object]]:
    received: list[str] = []
    listener = await asyncpg.connect(dsn)
    try:
        await listener.add_listener(RULES_CHANGED_CHANNEL, lambda *args: received.append(args[3]))
        await pg.execute(statement)
        await listener.execute("SELECT 1")  # delivered with the next round trip
        await asyncio.sleep(0.05)
        await listener.execute("SELECT 1")
    finally:
        await listener.close()
    return [json.loads(r) for r in received]


async def test_notifications_name_the_changed_rule_and_user(pg: asyncpg.Connection, postgres_dsn: str) -> None:
    await seed_rules(pg)
    inserted = await _notifications(
        pg,
        postgres_dsn,
        "INSERT INTO alert_rules (rule_type, name, expression, owner) VALUES ('ann_dip', 'Dip', 'c5m < -1', 'ann')",
    )
    assert inserted == [{"table": "alert_rules", "rule_type": "ann_dip", "owner": "ann"}]
    switched = await _notifications(
        pg, postgres_dsn, """INSERT INTO user_settings (user_id, rules) VALUES ('ann', '{"ann_dip": false}')"""
    )
    assert switched == [{"table": "user_settings", "user_id": "ann"}]


async def test_preference_writes_notify_nothing(pg: asyncpg.Connection, postgres_dsn: str) -> None:
    assert (
        await _notifications(
            pg, postgres_dsn, """INSERT INTO user_settings (user_id, preferences) VALUES ('pat', '{"a": 1}')"""
        )
        == []
    )
    assert (
        await _notifications(
            pg, postgres_dsn, """UPDATE user_settings SET preferences = '{"b": 2}' WHERE user_id = 'pat'"""
        )
        == []
    )
    assert await _notifications(pg, postgres_dsn, "DELETE FROM user_settings WHERE user_id = 'pat'") == []


async def test_a_new_rule_compiles_only_itself_and_switches_compile_nothing(
    rules_function: RulesFunction, pg: asyncpg.Connection
) -> None:
    ruleset = rules_function.config.ruleset
    misses = _compile_text.cache_info().misses
    before = rules_function.reloads
    await pg.execute("""INSERT INTO user_settings (user_id, rules) VALUES ('zed', '{"futures_top_hunter": false}')""")
    await _until(lambda: rules_function.reloads > before)
    assert "zed" in rules_function.config.switches
    assert rules_function.config.ruleset is ruleset  # switches alone keep the compiled set
    assert _compile_text.cache_info().misses == misses
    await pg.execute(
        "INSERT INTO alert_rules (rule_type, name, expression, owner) VALUES ('zed_pop', 'Pop', 'c5m > 3.25', 'zed')"
    )
    await _until(lambda: "zed_pop" in rules_function.config.ruleset.by_type)
    assert _compile_text.cache_info().misses == misses + 1  # the one new expression, nothing else
    await pg.execute("DELETE FROM alert_rules WHERE rule_type = 'zed_pop'")
    await _until(lambda: "zed_pop" not in rules_function.config.ruleset.by_type)


async def test_preference_writes_do_not_reload_a_worker(rules_function: RulesFunction, pg: asyncpg.Connection) -> None:
    before = rules_function.reloads
    for i in range(20):
        await pg.execute(
            "INSERT INTO user_settings (user_id, preferences) VALUES ('quiet', $1::jsonb) "
            "ON CONFLICT (user_id) DO UPDATE SET preferences = EXCLUDED.preferences",
            json.dumps({"theme": i}),
        )
    await asyncio.sleep(0.6)  # well past the watcher's debounce
    assert rules_function.reloads == before


def test_changes_merge_and_unreadable_payloads_mean_everything() -> None:
    rule = RuleChanges.parse('{"table": "alert_rules", "rule_type": "a", "owner": null}')
    user = RuleChanges.parse('{"table": "user_settings", "user_id": "u"}')
    assert RuleChanges.merge([rule, user]) == RuleChanges(frozenset({"a"}), frozenset({"u"}))
    assert RuleChanges.parse("alert_rules").everything  # the trigger of 001, before 008
    assert RuleChanges.parse('{"table": "alert_rules"}').everything
    assert RuleChanges.merge([rule, RuleChanges.all()]).everything
    assert not RuleChanges.merge([])
