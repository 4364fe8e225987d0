"""The fake Whop's hosted checkout, as a browser meets it (bench/client_billing_journey.py drives it in Chromium).

The checkout URL the gateway hands out is the fake's page; paying there sends the browser back to the
gateway's return URL with its session reference, and Whop's payment webhooks reach the gateway at once
(or never: then only the client's confirm activates the buyer).
"""

from __future__ import annotations

import asyncio
from urllib.parse import parse_qs, urlsplit

import aiohttp
import pytest

from tests.fakes.whop_server import RunningWhop
from tests.gateway.accounts.helpers import Client
from tests.gateway.billing.conftest import FRONTEND
from tests.gateway.billing.helpers import buyer, confirm, me, webhook_url


@pytest.mark.parametrize("payment_webhooks", ["now", "never"])
async def test_paying_on_the_hosted_page_returns_the_browser_and_activates_the_buyer(
    payment_webhooks: str, billing_gw: Client, whop: RunningWhop
) -> None:
    fake = whop.whop
    fake.checkout_base = whop.base_url.removesuffix("/api/v1")
    fake.webhook_url = webhook_url(billing_gw)
    fake.payment_webhooks = payment_webhooks
    _, headers = await buyer(billing_gw, f"hosted-{payment_webhooks}@example.com")
    response = await billing_gw.post("/api/checkout", json={"plan": "bundle_monthly"}, headers=headers)
    checkout_url = (await response.json())["checkout_url"]
    assert checkout_url.startswith(fake.checkout_base + "/checkout/")

    async with aiohttp.ClientSession() as browser:
        async with browser.get(checkout_url) as page:
            assert page.status == 200 and 'id="pay"' in await page.text()
        pay_url = checkout_url.replace("/?session=", "/pay?session=")
        async with browser.post(pay_url, allow_redirects=False) as paid:
            assert paid.status == 303
            back = paid.headers["Location"]
        async with browser.get(checkout_url.replace("session=ch_", "session=ch_unknown")) as unknown:
            assert unknown.status == 404

    assert back.startswith(FRONTEND + "/billing?session=ref_")
    assert [d.status for d in fake.deliveries] == ([200, 200] if payment_webhooks == "now" else [])
    before = await me(billing_gw, headers)
    assert before["status"] == ("active" if payment_webhooks == "now" else "trial")
    # The client lands on /billing and confirms, whatever the webhooks did.
    session = parse_qs(urlsplit(back).query)["session"][0]
    assert (await confirm(billing_gw, headers, session)).status == 200
    after = await me(billing_gw, headers)
    assert (after["status"], after["plan"], after["tv_addon_active"]) == ("active", "monthly", True)


async def test_webhooks_racing_the_confirm_leave_one_active_plan(billing_gw: Client, whop: RunningWhop) -> None:
    fake = whop.whop
    fake.checkout_base = whop.base_url.removesuffix("/api/v1")
    fake.webhook_url = webhook_url(billing_gw)
    fake.payment_webhooks = "after"
    _, headers = await buyer(billing_gw, "race@example.com")
    response = await billing_gw.post("/api/checkout", json={"plan": "screener_yearly"}, headers=headers)
    checkout_url = (await response.json())["checkout_url"]
    async with aiohttp.ClientSession() as browser:
        pay_url = checkout_url.replace("/?session=", "/pay?session=")
        async with browser.post(pay_url, allow_redirects=False) as paid:
            back = paid.headers["Location"]
    session = parse_qs(urlsplit(back).query)["session"][0]
    confirms = [confirm(billing_gw, headers, session) for _ in range(3)]  # the client's pages, reloaded
    assert [r.status for r in await asyncio.gather(*confirms)] == [200, 200, 200]
    async with asyncio.timeout(10):
        await fake.sent()
    assert [d.status for d in fake.deliveries] == [200, 200]
    after = await me(billing_gw, headers)
    assert (after["status"], after["plan"]) == ("active", "yearly")
    billing = await (await billing_gw.get("/api/billing", headers=headers)).json()
    assert billing["whop_membership_id"] == next(iter(fake.memberships))
