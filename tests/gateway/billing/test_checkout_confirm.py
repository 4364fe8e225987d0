"""Checkout and confirm through Whop (client.md section 4): every slug, idempotent confirm, refusals."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from urllib.parse import parse_qs, urlsplit

import asyncpg
import pytest

from gateway.accounts.whop import MAX_CHECKOUTS_PER_HOUR
from screener.config import PLAN_SLUGS
from tests.fakes.whop_server import API_KEY, PLAN_IDS, RunningWhop
from tests.gateway.accounts.helpers import USER_FIELDS, Client, bearer, error_of
from tests.gateway.billing.conftest import FRONTEND
from tests.gateway.billing.helpers import buyer, confirm, me, start_checkout


def _at(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


@pytest.mark.parametrize("slug", PLAN_SLUGS)
async def test_checkout_creates_a_whop_checkout_of_the_slugs_plan(
    billing_gw: Client, whop: RunningWhop, slug: str
) -> None:
    user, headers = await buyer(billing_gw, f"{slug}@example.com")
    response = await billing_gw.post("/api/checkout", json={"plan": slug}, headers=headers)
    assert response.status == 200
    checkout_url = (await response.json())["checkout_url"]
    [(method, path, sent_headers, body)] = whop.whop.calls
    assert (method, path) == ("POST", "/api/v1/checkout_configurations")
    assert sent_headers["Authorization"] == f"Bearer {API_KEY}"
    assert body["plan_id"] == PLAN_IDS[slug]
    configuration = next(iter(whop.whop.checkouts.values()))
    # Whop's purchase_url as given (a hand-built URL would lose the metadata).
    assert checkout_url == configuration["purchase_url"]
    redirect = urlsplit(body["redirect_url"])
    assert f"{redirect.scheme}://{redirect.netloc}{redirect.path}" == f"{FRONTEND}/billing"
    ref = parse_qs(redirect.query)["session"][0]
    assert sent_headers["Idempotency-Key"] == ref
    assert body["metadata"] == {"screener_user_id": user["id"], "screener_checkout_ref": ref, "screener_plan": slug}


async def test_checkout_refuses_an_unknown_plan_and_caps_checkouts(billing_gw: Client, whop: RunningWhop) -> None:
    _, headers = await buyer(billing_gw, "capped@example.com")
    bad = await billing_gw.post("/api/checkout", json={"plan": "gold"}, headers=headers)
    assert "'plan'" in (await error_of(bad, 400, "invalid_parameter"))["message"]
    assert whop.whop.calls == []
    for _ in range(MAX_CHECKOUTS_PER_HOUR):
        assert (await billing_gw.post("/api/checkout", json={"plan": "tv_monthly"}, headers=headers)).status == 200
    over = await billing_gw.post("/api/checkout", json={"plan": "tv_monthly"}, headers=headers)
    await error_of(over, 429, "too_many_checkouts")
    assert over.headers["Retry-After"] == "3600"


async def test_confirm_activates_the_caller_at_once_and_twice_changes_nothing(
    billing_gw: Client, whop: RunningWhop
) -> None:
    user, headers = await buyer(billing_gw, "payer@example.com")
    assert user["status"] == "trial" and user["plan_activated_at"] is None
    ref, checkout_id = await start_checkout(billing_gw, whop, headers, "screener_yearly")
    whop.whop.pay(checkout_id, email="someone-else@whop.example")  # the e-mail on Whop does not matter
    first = await confirm(billing_gw, headers, ref)
    assert first.status == 200
    activated = await first.json()
    assert set(activated) == USER_FIELDS
    assert activated["status"] == "active" and activated["plan"] == "yearly"
    assert activated["plan_activated_at"] is not None and activated["tv_addon_active"] is False
    membership = next(iter(whop.whop.memberships.values()))
    assert _at(activated["plan_expires_at"]) == _at(membership["renewal_period_end"])
    calls = len(whop.whop.calls)
    second = await confirm(billing_gw, headers, ref)
    assert second.status == 200 and await second.json() == activated
    assert len(whop.whop.calls) == calls  # a confirmed checkout is not asked again
    # The client then calls refresh: a fresh token and the new plan.
    refreshed = await (await billing_gw.post("/api/refresh", json={}, headers=headers)).json()
    assert refreshed["user"]["status"] == "active" and refreshed["token"]
    assert (await me(billing_gw, bearer(refreshed["token"])))["plan"] == "yearly"
    billing = await (await billing_gw.get("/api/billing", headers=headers)).json()
    assert billing["whop_membership_id"] == membership["id"]
    assert billing["manage_url"] == membership["manage_url"]
    assert billing["plan"] == "yearly" and billing["plan_expires_at"] == activated["plan_expires_at"]


async def test_confirm_with_whops_checkout_id_works_too(billing_gw: Client, whop: RunningWhop) -> None:
    _, headers = await buyer(billing_gw, "chid@example.com")
    _, checkout_id = await start_checkout(billing_gw, whop, headers, "screener_monthly")
    whop.whop.pay(checkout_id)
    response = await confirm(billing_gw, headers, checkout_id)
    assert response.status == 200 and (await response.json())["plan"] == "monthly"


@pytest.mark.parametrize(
    ("slug", "status", "plan", "tv"),
    [
        ("bundle_monthly", "active", "monthly", True),
        ("bundle_yearly", "active", "yearly", True),
        # The add-on alone leaves the screener plan as it was (here: the sign-up trial).
        ("tv_monthly", "trial", None, True),
        ("tv_yearly", "trial", None, True),
    ],
)
async def test_confirm_of_the_tv_add_on_and_bundles(
    billing_gw: Client, whop: RunningWhop, slug: str, status: str, plan: str | None, tv: bool
) -> None:
    _, headers = await buyer(billing_gw, f"tv-{slug}@example.com")
    ref, checkout_id = await start_checkout(billing_gw, whop, headers, slug)
    whop.whop.pay(checkout_id)
    user = await (await confirm(billing_gw, headers, ref)).json()
    assert (user["status"], user["plan"], user["tv_addon_active"]) == (status, plan, tv)


async def test_confirm_refuses_another_users_checkout(billing_gw: Client, whop: RunningWhop) -> None:
    _, owner = await buyer(billing_gw, "owner@example.com")
    _, thief_headers = await buyer(billing_gw, "thief@example.com")
    ref, checkout_id = await start_checkout(billing_gw, whop, owner, "screener_monthly")
    whop.whop.pay(checkout_id)
    for session in (ref, checkout_id):
        await error_of(await confirm(billing_gw, thief_headers, session), 403, "checkout_of_another_user")
    assert (await me(billing_gw, thief_headers))["status"] == "trial"
    assert (await me(billing_gw, owner))["status"] == "trial"  # nothing confirmed for anyone


async def test_confirm_refuses_an_unpaid_or_unknown_checkout_and_writes_nothing(
    billing_gw: Client, whop: RunningWhop, pool: asyncpg.Pool
) -> None:
    user, headers = await buyer(billing_gw, "unpaid@example.com")
    ref, checkout_id = await start_checkout(billing_gw, whop, headers, "screener_monthly")
    await error_of(await confirm(billing_gw, headers, ref), 402, "checkout_unpaid")
    whop.whop.pay(checkout_id, substatus="failed")  # a declined card
    await error_of(await confirm(billing_gw, headers, ref), 402, "checkout_unpaid")
    await error_of(await confirm(billing_gw, headers, "ref_doesnotexist"), 404, "checkout_not_found")
    bad = await billing_gw.post("/api/billing/confirm?session=a%20b", json={}, headers=headers)
    await error_of(bad, 400, "invalid_parameter")
    assert (await me(billing_gw, headers))["status"] == "trial"
    async with pool.acquire() as conn:
        assert await conn.fetchval("SELECT count(*) FROM billing_memberships") == 0
        confirmed = await conn.fetchval("SELECT confirmed_at FROM billing_checkouts WHERE ref = $1", ref)
        assert confirmed is None
        row = await conn.fetchrow("SELECT user_id, plan_slug FROM billing_checkouts WHERE ref = $1", ref)
        assert row["user_id"] == uuid.UUID(user["id"]) and row["plan_slug"] == "screener_monthly"


async def test_open_sign_up_starts_a_seven_day_trial(billing_gw: Client) -> None:
    user, _ = await buyer(billing_gw, "trial@example.com")
    ends = _at(user["trial_ends_at"])
    assert user["status"] == "trial"
    assert abs(ends - (datetime.now(UTC) + timedelta(days=7))) < timedelta(minutes=1)
