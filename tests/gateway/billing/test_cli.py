"""``screener users show`` and ``set-plan``: support sees and sets a user's plan and its Whop memberships."""

from __future__ import annotations

from tests.fakes.whop_server import RunningWhop
from tests.gateway.accounts.helpers import Client
from tests.gateway.accounts.test_cli import users
from tests.gateway.billing.helpers import buyer, me, start_checkout, webhook_url


async def test_show_lists_the_plan_memberships_and_checkouts(
    billing_gw: Client, whop: RunningWhop, postgres_dsn: str
) -> None:
    _, headers = await buyer(billing_gw, "support@example.com")
    status, out, err = await users(postgres_dsn, "show", "support@example.com")
    assert status == 0, err
    assert "support@example.com (user, trial" in out and "no Whop membership or checkout" in out
    ref, checkout_id = await start_checkout(billing_gw, whop, headers, "bundle_monthly")
    paid = whop.whop.pay(checkout_id)
    assert (await whop.whop.deliver(webhook_url(billing_gw), paid)).status == 200
    membership_id = paid["data"]["membership"]["id"]
    await whop.whop.deliver(webhook_url(billing_gw), whop.whop.deactivate(membership_id))
    status, out, err = await users(postgres_dsn, "show", "support@example.com")
    assert status == 0, err
    assert "(user, expired, monthly until" in out and "may use paid features now: no" in out
    assert membership_id in out and "bundle_monthly" in out and ref in out and checkout_id in out

    # Support grants a month by hand: the user row changes, the memberships stay as Whop said.
    status, out, err = await users(
        postgres_dsn, "set-plan", "support@example.com", "--plan", "monthly", "--expires", "30d"
    )
    assert status == 0, err
    assert (await me(billing_gw, headers))["status"] == "active"
    _, out, _ = await users(postgres_dsn, "show", "support@example.com")
    assert "may use paid features now: yes" in out and membership_id in out


async def test_show_names_an_unknown_user(postgres_dsn: str) -> None:
    status, _, err = await users(postgres_dsn, "show", "nobody@example.com")
    assert status == 1 and "no user has the e-mail" in err
