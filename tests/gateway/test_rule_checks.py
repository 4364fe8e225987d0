"""Creating a rule compiles nothing on the gateway's event loop, checks against the visible set, and is capped."""

from __future__ import annotations

import asyncio

from aiohttp import web
from aiohttp.test_utils import TestClient

from functions.rules.ruleset import _compile_text
from gateway.routes.rules import MAX_OWN_RULES, MAX_RULE_TEXT_PER_USER
from tests.gateway.helpers import auth

Client = TestClient[web.Request, web.Application]


def _long_expression(seed: int) -> str:
    return " and ".join(f"(c5m > {seed + i} or v1h < {i * 1000})" for i in range(50))


async def test_the_gateway_process_compiles_no_rule(gw: Client) -> None:
    misses = _compile_text.cache_info().misses
    created = await gw.post("/api/alert-rules", json={"name": "n", "expression": _long_expression(7)}, headers=auth())
    assert created.status == 201, await created.text()
    bad = await gw.post("/api/alert-rules", json={"name": "n", "expression": "c5m >"}, headers=auth())
    assert bad.status == 400 and "position" in (await bad.json())["message"]
    # Both were compiled in the rule checker's worker process, not here on the event loop.
    assert _compile_text.cache_info().misses == misses


async def test_references_and_cycles_are_checked_against_the_visible_rules(gw: Client) -> None:
    unknown = await gw.post("/api/alert-rules", json={"name": "n", "expression": "someone_elses_rule"}, headers=auth())
    assert unknown.status == 400 and "someone_elses_rule" in (await unknown.json())["message"]
    first = await gw.post("/api/alert-rules", json={"name": "a", "expression": "c5m > 1"}, headers=auth())
    first_id = (await first.json())["id"]
    second = await gw.post(
        "/api/alert-rules", json={"name": "b", "expression": f"{first_id} and v5m > 10"}, headers=auth()
    )
    assert second.status == 201, await second.text()
    other_user = await gw.post("/api/alert-rules", json={"name": "c", "expression": first_id}, headers=auth("other"))
    assert other_user.status == 400  # another user's rule is not visible, so not referable


async def test_the_total_size_of_a_users_rules_is_capped(gw: Client) -> None:
    total, i = 0, 0
    while total + len(_long_expression(i * 100)) <= MAX_RULE_TEXT_PER_USER:
        expression = _long_expression(i * 100)
        created = await gw.post(
            "/api/alert-rules", json={"name": f"r{i}", "expression": expression}, headers=auth("big")
        )
        assert created.status == 201, await created.text()
        total, i = total + len(expression), i + 1
    refused = await gw.post(
        "/api/alert-rules", json={"name": "one more", "expression": _long_expression(i * 100)}, headers=auth("big")
    )
    body = await refused.json()
    assert refused.status == 409 and body["code"] == "rule_budget_exceeded"
    assert i < 20  # the budget, not the count of 50, is what stopped it
    small = await gw.post("/api/alert-rules", json={"name": "tiny", "expression": "c5m > 1"}, headers=auth("big"))
    assert small.status == 201  # what is left of the budget stays usable


async def test_concurrent_creates_stop_at_the_rule_cap(gw: Client) -> None:
    async def create(i: int) -> int:
        response = await gw.post(
            "/api/alert-rules", json={"name": f"r{i}", "expression": f"c5m > {i}"}, headers=auth("racer")
        )
        return response.status

    # Every create passes the first cap check while the others wait for the rule checker.
    statuses = await asyncio.gather(*(create(i) for i in range(MAX_OWN_RULES + 10)))
    assert statuses.count(201) == MAX_OWN_RULES and statuses.count(409) == 10
    listed = await (await gw.get("/api/alert-rules", headers=auth("racer"))).json()
    assert sum(1 for r in listed["rules"] if r["category"] == "custom") == MAX_OWN_RULES
