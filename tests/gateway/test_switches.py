"""The gateway's rule switches keep following ``alert_rules`` when PostgreSQL drops their LISTEN."""

from __future__ import annotations

import asyncio
import time

import asyncpg

from gateway.switches import RuleSwitches

FOLLOW_WITHIN_SECONDS = 10.0


async def _drop_listening_sessions(pool: asyncpg.Pool) -> int:
    """End every session LISTENing on the test's database, as a PostgreSQL restart does."""
    async with pool.acquire() as conn:
        dropped = await conn.fetchval(
            """SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity
               WHERE datname = current_database() AND pid <> pg_backend_pid() AND query LIKE 'LISTEN %'"""
        )
    return int(dropped)


async def _add_rule(pool: asyncpg.Pool, rule_type: str) -> None:
    async with pool.acquire() as conn:
        await conn.execute(
            """INSERT INTO alert_rules (rule_type, name, description, category, expression, default_on)
               VALUES ($1, 'added after the drop', '', 'custom', 'c5m > 100', true)""",
            rule_type,
        )


async def _wait_for_rule(switches: RuleSwitches, rule_type: str) -> bool:
    deadline = time.monotonic() + FOLLOW_WITHIN_SECONDS
    while time.monotonic() < deadline:
        if rule_type in switches.rules:
            return True
        await asyncio.sleep(0.1)
    return False


async def test_switches_follow_changes_after_the_listening_session_is_dropped(pool: asyncpg.Pool) -> None:
    switches = RuleSwitches(pool)
    await switches.start()
    try:
        assert await _drop_listening_sessions(pool) == 1
        await _add_rule(pool, "custom_added_after_drop")
        assert await _wait_for_rule(switches, "custom_added_after_drop"), "the switches stopped following alert_rules"
        await _add_rule(pool, "custom_added_once_listening_again")
        assert await _wait_for_rule(switches, "custom_added_once_listening_again")
    finally:
        await switches.close()  # a clean stop although the first listening connection is gone


async def test_switches_close_cleanly_while_the_listening_session_is_gone(pool: asyncpg.Pool) -> None:
    switches = RuleSwitches(pool)
    await switches.start()
    await _drop_listening_sessions(pool)
    await asyncio.sleep(0.2)  # asyncpg notices the closed socket
    await switches.close()
