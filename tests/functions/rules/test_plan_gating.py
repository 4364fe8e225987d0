"""With billing on, a user's own rules run only while their plan is live (client.md decision 7).

An owner whose plan has lapsed gets no alert from their rules: nothing is published, nothing lands
in ``alert_history`` (which ``GET /api/alerts`` shows them). The plans are read at start, at every
reload and periodically, so a plan bought again brings the rules back. Billing off: every rule runs.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import asyncpg
import pytest
import redis.asyncio as aioredis

from functions.rules.changes import RuleChanges
from functions.rules.function import RulesFunction
from functions.rules.store import seed_rules
from screener.config import load_settings
from screener.db.plans import refresh_periodically
from screener.events.models import MINUTE_MS, alert_id
from screener.runtime.function import Delivery
from screener.subjects import user_uuid
from tests.fakes.whop_server import BILLING_SETTINGS
from tests.functions.rules.snapshots import T0, metrics_event, snapshot

DIP = {"c5m": -2.0}  # fires every "c5m < -1" rule below
PUBLIC = "futures_top_hunter"  # a seeded rule without an owner
MakeFunction = Callable[..., Awaitable[RulesFunction]]


@pytest.fixture
async def make_function(
    postgres_dsn: str, redis_url: str, redis_client: aioredis.Redis, pg: asyncpg.Connection
) -> AsyncIterator[MakeFunction]:
    """Return a factory of started rules functions (billing on or off), closed after the test."""
    await seed_rules(pg)
    started: list[RulesFunction] = []

    async def make(*, billing: bool, **options: Any) -> RulesFunction:
        billing_settings = BILLING_SETTINGS if billing else {}
        settings = load_settings({}, postgres_dsn=postgres_dsn, redis_url=redis_url, **billing_settings)
        function = RulesFunction(settings, watch=False, **options)
        await function.start()
        started.append(function)
        return function

    yield make
    for function in started:
        await function.close()


async def _owner(pg: asyncpg.Connection, status: str) -> str:
    """Insert an account of ``status``; return its token subject, the owner of its rules."""
    subject = str(uuid.uuid4())
    await pg.execute(
        "INSERT INTO users (id, email, status) VALUES ($1, $2, $3)",
        user_uuid(subject),
        f"{subject}@example.com",
        status,
    )
    return subject


async def _dip_rule(pg: asyncpg.Connection, owner: str) -> str:
    """Insert ``owner``'s rule that fires on every dipping minute; return its rule_type."""
    rule_type = f"dip_{owner[:8]}"
    await pg.execute(
        """INSERT INTO alert_rules (rule_type, name, expression, frequency, owner)
           VALUES ($1, 'Dip', 'c5m < -1', 'once_per_bar_close', $2)""",
        rule_type,
        owner,
    )
    return rule_type


async def _set_status(pg: asyncpg.Connection, owner: str, status: str) -> None:
    await pg.execute("UPDATE users SET status = $2 WHERE id = $1", user_uuid(owner), status)


async def _fired(function: RulesFunction, minute: int) -> set[str]:
    """Return the ids of the alerts a dipping SOLUSDT minute publishes."""
    s = snapshot("SOLUSDT", minute, **DIP)
    return {e.get_id() for e in await function.handle([Delivery(metrics_event(s), s)])}


def _ids(minute: int, *rule_types: str) -> set[str]:
    return {alert_id(rule_type, "SOLUSDT", minute) for rule_type in rule_types}


async def _until(condition: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not condition():
        assert asyncio.get_running_loop().time() < deadline, "condition not met in time"
        await asyncio.sleep(0.02)


@pytest.mark.parametrize("billing", [True, False], ids=["billing_on", "billing_off"])
async def test_a_lapsed_owners_rule_is_not_evaluated_until_their_plan_is_live_again(
    billing: bool, make_function: MakeFunction, pg: asyncpg.Connection
) -> None:
    paying = await _dip_rule(pg, await _owner(pg, "active"))
    lapsed_owner = await _owner(pg, "expired")
    lapsed = await _dip_rule(pg, lapsed_owner)
    function = await make_function(billing=billing)

    fired = await _fired(function, T0)
    assert fired & _ids(T0, paying, lapsed) == (_ids(T0, paying) if billing else _ids(T0, paying, lapsed))
    stored = {r["rule_type"] for r in await pg.fetch("SELECT rule_type FROM alert_history")}
    assert (lapsed in stored) is not billing  # nothing for GET /api/alerts to show them either

    await _set_status(pg, lapsed_owner, "active")  # a plan bought again: no rule changed, no NOTIFY
    await function.refresh_plans()
    minute = T0 + MINUTE_MS
    assert _ids(minute, paying, lapsed) <= await _fired(function, minute)


async def test_public_rules_are_never_gated(make_function: MakeFunction, pg: asyncpg.Connection) -> None:
    await _dip_rule(pg, await _owner(pg, "expired"))
    ungated = await make_function(billing=False)
    gated = await make_function(billing=True)
    public = [r for r in ungated.config.enabled() if ungated.config.rules[r].owner is None]
    assert len(public) == 20
    assert [r for r in gated.config.enabled() if gated.config.rules[r].owner is None] == public
    assert PUBLIC in public


async def test_the_plans_are_read_again_periodically_and_at_every_reload(
    make_function: MakeFunction, pg: asyncpg.Connection
) -> None:
    owner = await _owner(pg, "trial")  # an open-ended trial: live
    rule = await _dip_rule(pg, owner)
    function = await make_function(billing=True, plan_refresh_seconds=0.05)
    assert rule in function.config.enabled()

    await _set_status(pg, owner, "expired")  # the trial ends (Whop, the clock, an operator)
    await _until(lambda: owner in function.config.lapsed_owners)
    assert rule not in function.config.enabled()
    assert PUBLIC in function.config.enabled()

    newcomer = await _owner(pg, "expired")
    newcomers_rule = await _dip_rule(pg, newcomer)
    await function.reload(RuleChanges(frozenset({newcomers_rule}), frozenset()))
    assert newcomers_rule in function.config.rules
    assert newcomers_rule not in function.config.enabled()  # gated as soon as it is loaded


async def test_a_failed_plan_read_keeps_the_last_answer_and_warns(caplog: pytest.LogCaptureFixture) -> None:
    answers: list[str] = []

    async def refresh() -> None:
        if not answers:
            answers.append("failed")
            raise ConnectionRefusedError("PostgreSQL is down")
        answers.append("read")

    with caplog.at_level(logging.WARNING, logger="screener.db.plans"):
        task = asyncio.create_task(refresh_periodically(refresh, 0.01))
        await _until(lambda: "read" in answers)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    assert answers[:2] == ["failed", "read"]  # the loop went on after the failure
    assert "reading the rule owners' plans failed: PostgreSQL is down" in caplog.text
