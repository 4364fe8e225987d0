"""The fake Whop's hosted checkout, as a browser meets it (bench/client_billing_journey.py drives it in Chromium).

The checkout URL the gateway hands out is the fake's page; paying there sends the browser back to the
gateway's return URL with its session reference, and Whop's payment webhooks reach the gateway at once
(or never: then only the client's confirm activates the buyer).
"""

from __future__ import annotations

from urllib.parse import parse_qs, urlsplit

import aiohttp
import pytest

from tests.fakes.whop_server import RunningWhop
from tests.gateway.accounts.helpers import Client
from tests.gateway.billing.conftest import FRONTEND
from tests.gateway.billing.helpers import buyer, confirm, me, webhook_url


@pytest.mark.parametrize("payment_webhooks", [True, False], ids=["webhooks_now", "webhooks_lost"])
async def test_paying_on_the_hosted_page_returns_the_browser_and_activates_the_buyer(
    payment_webhooks: bool, billing_gw: Client, whop: RunningWhop
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
    assert [d.status for d in fake.deliveries] == ([200, 200] if payment_webhooks else [])
    before = await me(billing_gw, headers)
    assert before["status"] == ("active" if payment_webhooks else "trial")
    # The client lands on /billing and confirms, whatever the webhooks did.
    session = parse_qs(urlsplit(back).query)["session"][0]
    assert (await confirm(billing_gw, headers, session)).status == 200
    after = await me(billing_gw, headers)
    assert (after["status"], after["plan"], after["tv_addon_active"]) == ("active", "monthly", True)
