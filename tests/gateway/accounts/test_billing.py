"""Plans without a billing provider (client.md section 4, decision 7)."""

from __future__ import annotations

import uuid

import asyncpg

from tests.gateway.accounts.helpers import Client, bearer, error_of, register


async def test_billing_answers_the_plan_from_the_user_row(accounts_gw: Client, pool: asyncpg.Pool) -> None:
    created = await register(accounts_gw, "plan@example.com")
    headers = bearer(created["token"])
    response = await accounts_gw.get("/api/billing", headers=headers)
    assert response.status == 200
    assert await response.json() == {
        "plan": None,
        "status": "active",
        "plan_expires_at": None,
        "whop_membership_id": None,
        "tv_addon_active": False,
        "tv_username": None,
        "manage_url": "",
    }
    async with pool.acquire() as conn:
        await conn.execute(
            """UPDATE users SET plan = 'yearly', plan_activated_at = now(), tv_addon_active = true,
                   plan_expires_at = '2027-03-01T00:00:00Z', tv_username = 'ada_trades' WHERE id = $1""",
            uuid.UUID(created["user"]["id"]),
        )
    body = await (await accounts_gw.get("/api/billing", headers=headers)).json()
    assert body["plan"] == "yearly"
    assert body["plan_expires_at"] == "2027-03-01T00:00:00.000Z"
    assert body["tv_addon_active"] is True and body["tv_username"] == "ada_trades"
    me = await (await accounts_gw.get("/api/me", headers=headers)).json()
    assert me["plan"] == "yearly" and me["plan_activated_at"] is not None and me["tv_addon_active"] is True


async def test_checkout_and_confirm_say_billing_is_not_configured(accounts_gw: Client) -> None:
    headers = bearer((await register(accounts_gw, "buyer@example.com"))["token"])
    checkout = await accounts_gw.post("/api/checkout", json={"plan": "screener_monthly"}, headers=headers)
    body = await error_of(checkout, 503, "billing_not_configured")
    assert body["error"] == "Billing is not configured"
    confirm = await accounts_gw.post("/api/billing/confirm?session=ref_123", json={}, headers=headers)
    assert (await error_of(confirm, 503, "billing_not_configured"))["error"] == "Billing is not configured"


async def test_checkout_and_confirm_reject_garbage_first(accounts_gw: Client) -> None:
    headers = bearer((await register(accounts_gw, "garbage@example.com"))["token"])
    bad_plan = await accounts_gw.post("/api/checkout", json={"plan": "gold"}, headers=headers)
    assert "'plan'" in (await error_of(bad_plan, 400, "invalid_parameter"))["message"]
    no_session = await accounts_gw.post("/api/billing/confirm", json={}, headers=headers)
    assert "'session'" in (await error_of(no_session, 400, "invalid_parameter"))["message"]


async def test_billing_endpoints_need_a_token(accounts_gw: Client) -> None:
    for method, path in (("GET", "/api/billing"), ("POST", "/api/checkout"), ("POST", "/api/billing/confirm")):
        await error_of(await accounts_gw.request(method, path, json={}), 401, "unauthorized")
