"""With billing on, a user's own rules are a paid feature on the stream too: no live plan, no alerts."""

from __future__ import annotations

import uuid

import asyncpg
from nats.aio.client import Client as NATS

from gateway.accounts import store
from gateway.context import GATEWAY
from screener.events.models import AlertAudience
from tests.gateway.accounts.helpers import Client
from tests.gateway.billing.helpers import buyer
from tests.gateway.helpers import make_alert, publish_alert
from tests.gateway.test_websocket import connected, next_json


async def test_a_lapsed_owner_gets_no_alerts_of_their_own_rules_on_the_stream(
    billing_gw: Client, nats_client: NATS, pool: asyncpg.Pool
) -> None:
    user, headers = await buyer(billing_gw, "owner@example.com")  # on the sign-up trial
    created = await billing_gw.post(
        "/api/alert-rules", json={"name": "mine", "expression": "c5m > 1", "cooldown": 5}, headers=headers
    )
    assert created.status in (200, 201), await created.text()
    rule_type = (await created.json())["rule_type"]
    switches = billing_gw.app[GATEWAY].switches
    await switches.reload()
    token = headers["Authorization"].removeprefix("Bearer ")
    ws = await billing_gw.ws_connect(f"/ws/alerts?token={token}")
    await connected(billing_gw, 1)
    own = AlertAudience(public=False, owner=user["id"])

    first = make_alert("BTCUSDT", rule_type, audience=own)
    await publish_alert(nats_client, first)
    assert (await next_json(ws))["id"] == first.id

    async with pool.acquire() as conn:  # the trial ends (Whop's webhook, the clock, an operator)
        await store.update_user(conn, uuid.UUID(user["id"]), {"status": "expired"})
    await switches.refresh_plans()
    assert switches.lapsed_owners == {user["id"]}
    hidden = make_alert("ETHUSDT", rule_type, audience=own)
    public = make_alert("ETHUSDT", "futures_top_hunter")
    await publish_alert(nats_client, hidden)
    await publish_alert(nats_client, public)
    assert (await next_json(ws))["id"] == public.id  # the public alert still comes; their own does not

    async with pool.acquire() as conn:  # a plan bought again
        await store.update_user(conn, uuid.UUID(user["id"]), {"status": "active"})
    await switches.refresh_plans()
    again = make_alert("SOLUSDT", rule_type, audience=own)
    await publish_alert(nats_client, again)
    assert (await next_json(ws))["id"] == again.id
    await ws.close()
