"""Plan gating on the server (decision 7): paid features need a live plan or trial once billing is on."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import pytest

from gateway.accounts import store
from tests.fakes.whop_server import RunningWhop
from tests.gateway.accounts.helpers import Client, bearer, error_of, register
from tests.gateway.billing.conftest import billing_settings
from tests.gateway.billing.helpers import buyer
from tests.gateway.conftest import GatewayFactory
from tests.gateway.helpers import token

RULE = "futures_big_bull_60"
WEBHOOK = {"name": "hook", "webhook_type": "http", "webhook_url": "http://127.0.0.1:9/hook", "scope": "all"}
# Every paid feature: watchlist, webhooks, custom rules and rule toggles.
GATED: list[tuple[str, str, Any]] = [
    ("GET", "/api/watchlist", None),
    ("POST", "/api/watchlist", {"symbol": "BTC"}),
    ("DELETE", "/api/watchlist", {"symbol": "BTC"}),
    ("PUT", "/api/watchlist", {"symbols": ["BTC"]}),
    ("GET", "/api/webhooks", None),
    ("POST", "/api/webhooks", WEBHOOK),
    ("GET", f"/api/webhooks/{uuid.uuid4()}", None),
    ("PATCH", f"/api/webhooks/{uuid.uuid4()}/toggle", {"enabled": False}),
    ("POST", f"/api/webhooks/{uuid.uuid4()}/test", {}),
    ("PUT", f"/api/alert-rules/{RULE}", {"enabled": False}),
    ("POST", "/api/alert-rules", {"name": "mine", "expression": "close > 1", "cooldown": 5}),
    ("DELETE", f"/api/alert-rules/{uuid.uuid4()}", None),
    ("POST", "/api/settings", {"rules": {RULE: False}}),
]
PUBLIC = ["/api/metrics/", "/api/tickers", "/api/alerts?limit=5", "/api/alert-rules", "/api/symbols"]


async def _set(pool: asyncpg.Pool, user_id: str, **changes: Any) -> None:
    async with pool.acquire() as conn:
        await store.update_user(conn, uuid.UUID(user_id), changes)


async def _entitled(client: Client, headers: dict[str, str]) -> bool:
    """Return whether every paid feature lets the caller in (no 403), asserting the body of each 403."""
    allowed = []
    for method, path, body in GATED:
        response = await client.request(method, path, json=body, headers=headers)
        if response.status == 403:
            assert await response.json() == {
                "error": "subscription_expired",
                "code": "subscription_expired",
                "message": "your trial or plan has ended: buy a plan to use this feature",
            }
        allowed.append(response.status != 403)
    assert len(set(allowed)) == 1, list(zip(GATED, allowed, strict=True))
    return allowed[0]


@pytest.fixture
async def strict_gw(make_gateway: GatewayFactory, whop: RunningWhop) -> Client:
    """Return a gateway with billing on whose open sign-ups start without a trial."""
    return await make_gateway(**billing_settings(whop, open_signup_trial=False))


async def test_every_paid_feature_refuses_a_user_without_a_plan(strict_gw: Client) -> None:
    created = await register(strict_gw, "noplan@example.com")
    assert created["user"]["status"] == "expired" and created["user"]["plan_activated_at"] is None
    headers = bearer(created["token"])
    assert await _entitled(strict_gw, headers) is False
    # Public data stays public, with or without the token; the account endpoints stay open.
    for path in PUBLIC:
        assert (await strict_gw.get(path, headers=headers)).status == 200, path
        assert (await strict_gw.get(path)).status == 200, path
    for path in ("/api/me", "/api/billing"):
        assert (await strict_gw.get(path, headers=headers)).status == 200
    checkout = await strict_gw.post("/api/checkout", json={"plan": "screener_monthly"}, headers=headers)
    assert checkout.status == 200


async def test_gating_follows_the_clients_rule(strict_gw: Client, pool: asyncpg.Pool) -> None:
    created = await register(strict_gw, "rule@example.com")
    user_id, headers = created["user"]["id"], bearer(created["token"])
    now = datetime.now(UTC)
    cases: list[tuple[dict[str, Any], bool]] = [
        ({"status": "trial", "trial_ends_at": now + timedelta(days=2)}, True),
        ({"status": "trial", "trial_ends_at": now - timedelta(seconds=1)}, False),
        ({"status": "trial", "trial_ends_at": None}, True),  # the client shows "7 days"
        ({"status": "active", "plan": "monthly", "plan_expires_at": now + timedelta(days=20)}, True),
        ({"status": "canceled", "plan_expires_at": now + timedelta(days=3)}, True),
        ({"status": "canceled", "plan_expires_at": now - timedelta(days=1)}, False),
        ({"status": "canceled", "plan_expires_at": None}, False),
        ({"status": "expired", "plan_expires_at": now - timedelta(days=1)}, False),
    ]
    for changes, expected in cases:
        await _set(pool, user_id, **changes)
        assert await _entitled(strict_gw, headers) is expected, changes


async def test_admins_are_never_gated(strict_gw: Client, pool: asyncpg.Pool) -> None:
    created = await register(strict_gw, "admin@example.com")
    await _set(pool, created["user"]["id"], role="admin", status="expired")
    assert await _entitled(strict_gw, bearer(created["token"])) is True


async def test_an_invite_starts_a_trial_even_when_open_sign_up_does_not(strict_gw: Client, pool: asyncpg.Pool) -> None:
    async with pool.acquire() as conn:
        invite = await store.create_invite(conn, timedelta(days=1))
    created = await register(strict_gw, "invited@example.com", invite_code=invite.code)
    user = created["user"]
    assert user["status"] == "trial"
    ends = datetime.fromisoformat(user["trial_ends_at"].replace("Z", "+00:00"))
    assert abs(ends - (datetime.now(UTC) + timedelta(days=7))) < timedelta(minutes=1)
    assert await _entitled(strict_gw, bearer(created["token"])) is True


async def test_an_external_token_user_is_provisioned_as_the_settings_say(strict_gw: Client) -> None:
    headers = bearer(token(str(uuid.uuid4()), claims={"email": "supabase@example.com"}))
    assert await _entitled(strict_gw, headers) is False
    await error_of(await strict_gw.get("/api/watchlist"), 401, "unauthorized")


async def test_without_billing_nothing_is_gated(make_gateway: GatewayFactory, pool: asyncpg.Pool) -> None:
    plain = await make_gateway(auth_rate_limit_per_minute=100_000)
    created = await register(plain, "free@example.com")
    assert created["user"]["status"] == "active"
    await _set(pool, created["user"]["id"], status="expired")
    assert await _entitled(plain, bearer(created["token"])) is True


async def test_a_paid_user_passes(billing_gw: Client, pool: asyncpg.Pool) -> None:
    user, headers = await buyer(billing_gw, "paid@example.com")
    await _set(pool, user["id"], status="active", plan="yearly")
    assert await _entitled(billing_gw, headers) is True
