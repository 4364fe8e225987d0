"""Whop down, slow or failing: a clear 502/503 with client.md's error body, and nothing half-written."""

from __future__ import annotations

import asyncpg
import pytest

from tests.fakes.whop_server import RunningWhop
from tests.gateway.accounts.helpers import Client, error_of
from tests.gateway.billing.helpers import buyer, confirm, me, start_checkout, webhook_url


async def _counts(pool: asyncpg.Pool) -> tuple[int, int, int]:
    async with pool.acquire() as conn:
        return (
            await conn.fetchval("SELECT count(*) FROM billing_checkouts"),
            await conn.fetchval("SELECT count(*) FROM billing_memberships"),
            await conn.fetchval("SELECT count(*) FROM billing_webhook_events"),
        )


@pytest.mark.parametrize(
    ("fault", "status", "code"),
    [("slow", 503, "billing_unavailable"), ("503", 503, "billing_unavailable"), ("500", 502, "billing_provider_error")],
)
async def test_checkout_when_whop_is_slow_or_failing(
    billing_gw: Client, whop: RunningWhop, pool: asyncpg.Pool, fault: str, status: int, code: str
) -> None:
    _, headers = await buyer(billing_gw, f"checkout-{fault}@example.com")
    if fault == "slow":
        whop.whop.delay_seconds = 2.0  # the gateway waits 1 s
    else:
        whop.whop.fail_status = int(fault)
    response = await billing_gw.post("/api/checkout", json={"plan": "screener_monthly"}, headers=headers)
    body = await error_of(response, status, code)
    assert "Whop" in body["message"] and "Bearer" not in body["message"]
    assert await _counts(pool) == (0, 0, 0)


async def test_checkout_when_whop_is_down(billing_gw: Client, whop: RunningWhop, pool: asyncpg.Pool) -> None:
    _, headers = await buyer(billing_gw, "down@example.com")
    await whop.stop()
    response = await billing_gw.post("/api/checkout", json={"plan": "bundle_yearly"}, headers=headers)
    await error_of(response, 503, "billing_unavailable")
    assert await _counts(pool) == (0, 0, 0)


async def test_confirm_when_whop_fails_changes_nothing_and_works_once_it_is_back(
    billing_gw: Client, whop: RunningWhop, pool: asyncpg.Pool
) -> None:
    _, headers = await buyer(billing_gw, "confirmdown@example.com")
    ref, checkout_id = await start_checkout(billing_gw, whop, headers, "screener_monthly")
    whop.whop.pay(checkout_id)
    whop.whop.delay_seconds = 2.0
    await error_of(await confirm(billing_gw, headers, ref), 503, "billing_unavailable")
    whop.whop.delay_seconds, whop.whop.fail_status = 0.0, 500
    await error_of(await confirm(billing_gw, headers, ref), 502, "billing_provider_error")
    assert (await me(billing_gw, headers))["status"] == "trial"
    assert await _counts(pool) == (1, 0, 0)
    whop.whop.fail_status = None
    assert (await confirm(billing_gw, headers, ref)).status == 200
    assert (await me(billing_gw, headers))["status"] == "active"


async def test_a_webhook_whop_must_be_asked_about_waits_for_whop(
    billing_gw: Client, whop: RunningWhop, pool: asyncpg.Pool
) -> None:
    _, headers = await buyer(billing_gw, "webhookdown@example.com")
    _, checkout_id = await start_checkout(billing_gw, whop, headers, "screener_yearly")
    paid = whop.whop.pay(checkout_id)
    whop.whop.fail_status = 503
    refused = await whop.whop.deliver(webhook_url(billing_gw), paid)
    # Whop retries a delivery that failed; nothing was recorded, so the retry is applied.
    assert refused.status == 503 and refused.answer["code"] == "billing_unavailable"
    assert await _counts(pool) == (1, 0, 0)
    whop.whop.fail_status = None
    retried = await whop.whop.deliver(webhook_url(billing_gw), paid)
    assert retried.status == 200 and retried.answer["applied"] is True
    assert (await me(billing_gw, headers))["status"] == "active"
