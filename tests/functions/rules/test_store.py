"""Rules in PostgreSQL: idempotent seeding that keeps edits, loading rules and switches."""

from __future__ import annotations

import asyncpg

from functions.rules.store import load_config, load_rules, load_switches, seed_file_rules, seed_rules


async def test_seed_inserts_the_twenty_rules_once(pg: asyncpg.Connection) -> None:
    assert await seed_rules(pg) == 20
    assert await seed_rules(pg) == 0
    rules = await load_rules(pg)
    assert {r.rule_type for r in rules} == {r.rule_type for r in seed_file_rules()}
    by_type = {r.rule_type: r for r in rules}
    assert by_type["futures_surge_42"].expression == next(
        r.expression for r in seed_file_rules() if r.rule_type == "futures_surge_42"
    )
    assert by_type["futures_whale_detector"].default_on is False
    assert all(r.enabled and r.cooldown_seconds == 300 and r.min_coverage == 1.0 for r in rules)


async def test_seed_keeps_edited_rows_and_restores_none_it_did_not_miss(pg: asyncpg.Connection) -> None:
    await seed_rules(pg)
    await pg.execute(
        "UPDATE alert_rules SET expression = 'c1h > 9', enabled = false WHERE rule_type = 'futures_top_hunter'"
    )
    await pg.execute("DELETE FROM alert_rules WHERE rule_type = 'futures_surge_42'")
    assert await seed_rules(pg) == 1  # the missing one comes back
    edited = next(r for r in await load_rules(pg) if r.rule_type == "futures_top_hunter")
    assert (edited.expression, edited.enabled) == ("c1h > 9", False)


async def test_load_switches_and_config(pg: asyncpg.Connection) -> None:
    await seed_rules(pg)
    await pg.execute(
        """INSERT INTO user_settings (user_id, rules) VALUES
           ('alice', '{"futures_whale_detector": true}'), ('bob', '{"futures_big_bull_60": false}')"""
    )
    assert await load_switches(pg) == {"alice": {"futures_whale_detector": True}, "bob": {"futures_big_bull_60": False}}
    config = await load_config(pg)
    assert len(config.enabled()) == 20
    assert config.audiences["futures_whale_detector"].public is False
    assert config.audiences["futures_whale_detector"].users == ["alice"]
    assert config.audiences["futures_big_bull_60"].users == ["alice"]


async def test_load_config_skips_a_broken_row(pg: asyncpg.Connection) -> None:
    await seed_rules(pg)
    await pg.execute(
        "INSERT INTO alert_rules (rule_type, name, expression) VALUES ('broken', 'Broken', 'c1h >'), "
        "('uses_broken', 'Uses', 'broken and c5m > 1')"
    )
    config = await load_config(pg)
    assert "broken" not in config.ruleset.by_type and "uses_broken" not in config.ruleset.by_type
    assert len(config.ruleset) == 20
