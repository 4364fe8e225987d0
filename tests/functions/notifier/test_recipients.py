"""Who receives an alert on their webhooks: audience, personal switches, webhook filters."""

from __future__ import annotations

import asyncpg

from functions.notifier.store import find_recipients
from screener.events.models import Alert, AlertAudience
from tests.functions.notifier.helpers import add_rule, add_webhook, make_alert, set_user_rules


async def _users(pg: asyncpg.Connection, alert: Alert) -> list[str]:
    return sorted(job.webhook.user_id for job in await find_recipients(pg, [alert]))


async def _setup(pg: asyncpg.Connection) -> None:
    await add_rule(pg, "rule_on", default_on=True)
    await add_rule(pg, "rule_off", default_on=False)
    await add_rule(pg, "dave_rule", owner="dave")
    for user in ("alice", "bob", "carol", "dave"):
        await add_webhook(pg, f"http://127.0.0.1:9/{user}", user_id=user)
    await set_user_rules(pg, "bob", {"rule_on": False})
    await set_user_rules(pg, "carol", {"rule_off": True, "dave_rule": True})


async def test_a_public_alert_goes_to_everyone_whose_switch_is_on(pg: asyncpg.Connection) -> None:
    await _setup(pg)
    assert await _users(pg, make_alert("rule_on")) == ["alice", "carol", "dave"]


async def test_a_default_off_rule_goes_only_to_users_who_switched_it_on(pg: asyncpg.Connection) -> None:
    await _setup(pg)
    assert await _users(pg, make_alert("rule_off")) == ["carol"]
    listed = AlertAudience(public=False, users=["carol", "alice"])
    # Listed users still need their switch on: alice never turned rule_off on.
    assert await _users(pg, make_alert("rule_off", audience=listed)) == ["carol"]


async def test_a_non_public_alert_goes_only_to_the_listed_users(pg: asyncpg.Connection) -> None:
    await _setup(pg)
    audience = AlertAudience(public=False, users=["alice", "bob"])
    # bob is listed but switched rule_on off.
    assert await _users(pg, make_alert("rule_on", audience=audience)) == ["alice"]


async def test_a_users_own_rule_goes_only_to_its_owner(pg: asyncpg.Connection) -> None:
    await _setup(pg)
    audience = AlertAudience(public=False, owner="dave", users=["carol"])
    assert await _users(pg, make_alert("dave_rule", audience=audience)) == ["dave"]


async def test_an_unknown_rule_follows_the_audience(pg: asyncpg.Connection) -> None:
    await _setup(pg)
    await set_user_rules(pg, "alice", {"gone_rule": False})
    assert await _users(pg, make_alert("gone_rule")) == ["bob", "carol", "dave"]


async def test_webhook_filters_disabled_and_incomplete_webhooks(pg: asyncpg.Connection) -> None:
    await add_webhook(pg, "http://h/all", user_id="alice")
    await add_webhook(pg, "http://h/eth", user_id="alice", symbols=["ETHUSDT"])
    await add_webhook(pg, "http://h/btc", user_id="alice", symbols=["BTCUSDT"])
    await add_webhook(pg, "http://h/rule", user_id="alice", rule_types=["futures_big_bull_60"])
    await add_webhook(pg, "http://h/other-rule", user_id="alice", rule_types=["futures_big_bear_60"])
    await add_webhook(pg, "http://h/off", user_id="alice", enabled=False)
    await add_webhook(pg, "http://h/tg", user_id="alice", kind="telegram")  # no chat id
    jobs = await find_recipients(pg, [make_alert("futures_big_bull_60", "ETHUSDT")])
    assert sorted(job.webhook.url for job in jobs) == ["http://h/all", "http://h/eth", "http://h/rule"]


async def test_a_malformed_personal_switch_falls_back_to_the_default(pg: asyncpg.Connection) -> None:
    await add_rule(pg, "rule_on", default_on=True)
    await add_webhook(pg, "http://h/a", user_id="alice")
    await set_user_rules(pg, "alice", {"rule_on": "nope"})
    assert await _users(pg, make_alert("rule_on")) == ["alice"]


async def test_recipients_of_a_batch_keep_each_alert_apart(pg: asyncpg.Connection) -> None:
    await _setup(pg)
    mine = make_alert("dave_rule", audience=AlertAudience(public=False, owner="dave"))
    public = make_alert("rule_on")
    jobs = await find_recipients(pg, [mine, public])
    assert sorted((job.alert.rule_type, job.webhook.user_id) for job in jobs) == [
        ("dave_rule", "dave"),
        ("rule_on", "alice"),
        ("rule_on", "carol"),
        ("rule_on", "dave"),
    ]
    assert {job.rule_name for job in jobs} == {"Dave Rule", "Rule On"}
