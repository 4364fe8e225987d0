"""A user's own rules raise at most ``user_alerts_per_minute`` alerts a minute; the same ones on redelivery.

50 always-true rules of one user would otherwise raise 50 alerts per symbol per minute, each stored,
published and delivered, on the path every other user's alerts take.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import asyncpg
import pytest
import redis.asyncio as aioredis

from functions.rules.function import RulesFunction
from functions.rules.store import seed_rules
from screener.config import load_settings
from screener.events.models import MINUTE_MS
from screener.runtime.function import Delivery
from screener.subjects import user_uuid
from tests.functions.rules.snapshots import T0, metrics_event, snapshot

CAP = 4
SYMBOLS = ("SOLUSDT", "ETHUSDT", "XRPUSDT")


@pytest.fixture
async def function(
    postgres_dsn: str, redis_url: str, redis_client: aioredis.Redis, pg: asyncpg.Connection
) -> AsyncIterator[RulesFunction]:
    await seed_rules(pg)
    settings = load_settings({}, postgres_dsn=postgres_dsn, redis_url=redis_url, user_alerts_per_minute=CAP)
    started = RulesFunction(settings, watch=False)
    yield started
    await started.close()


async def _owner_with_rules(pg: asyncpg.Connection, count: int) -> tuple[str, list[str]]:
    """Insert a user and ``count`` of their rules that fire on every dipping minute."""
    owner = str(uuid.uuid4())
    await pg.execute("INSERT INTO users (id, email) VALUES ($1, $2)", user_uuid(owner), f"{owner}@example.com")
    rule_types = [f"dip_{owner[:8]}_{k}" for k in range(count)]
    for rule_type in rule_types:
        await pg.execute(
            """INSERT INTO alert_rules (rule_type, name, expression, frequency, owner)
               VALUES ($1, 'Dip', 'c5m < -1', 'once_per_bar_close', $2)""",
            rule_type,
            owner,
        )
    return owner, rule_types


async def _minute(function: RulesFunction, minute: int) -> list[tuple[str, str, str]]:
    """Return (rule_type, symbol, id) of the alerts of a minute where every symbol dips."""
    batch = [snapshot(symbol, minute, c5m=-2.0) for symbol in SYMBOLS]
    events = await function.handle([Delivery(metrics_event(s), s) for s in batch])
    alerts = []
    for event in events:
        data = event.get_data()
        assert isinstance(data, dict)
        alerts.append((data["rule_type"], data["symbol"], event.get_id()))
    return alerts


async def test_a_users_rules_share_a_budget_per_minute_and_others_keep_theirs(
    function: RulesFunction, pg: asyncpg.Connection
) -> None:
    _, flood_rules = await _owner_with_rules(pg, 3)  # 3 rules x 3 symbols = 9 alerts a minute
    _, (quiet_rule,) = await _owner_with_rules(pg, 1)
    await function.start()

    first = await _minute(function, T0)
    flooded = [a for a in first if a[0] in flood_rules]
    assert len(flooded) == CAP
    assert {a[1] for a in first if a[0] == quiet_rule} == set(SYMBOLS)  # another user's budget is theirs
    stored = await pg.fetch("SELECT rule_type FROM alert_history WHERE rule_type = ANY($1::text[])", flood_rules)
    assert len(stored) == CAP  # nothing over the budget is stored either
    assert function.alerts_over_budget == 9 - CAP

    assert await _minute(function, T0) == first  # a redelivered minute keeps the very same alerts
    assert len([a for a in await _minute(function, T0 + MINUTE_MS) if a[0] in flood_rules]) == CAP  # a new minute
