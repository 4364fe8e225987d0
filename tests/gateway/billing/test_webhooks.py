"""Whop's server-to-server webhook: every event moving a user through trial, active, canceled and expired
exactly as the client's gating reads them, and forged, stale or replayed deliveries refused."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg

from tests.fakes.whop_server import RunningWhop, signature
from tests.gateway.accounts.helpers import Client, error_of
from tests.gateway.billing.helpers import buyer, me, start_checkout, webhook_url


def _at(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


async def _watchlist_status(client: Client, headers: dict[str, str]) -> int:
    response = await client.get("/api/watchlist", headers=headers)
    if response.status == 403:
        assert (await response.json())["error"] == "subscription_expired"
    return response.status


async def _deliver(client: Client, whop: RunningWhop, event: dict[str, Any], **signing: Any) -> Any:
    delivery = await whop.whop.deliver(webhook_url(client), event, **signing)
    assert delivery.status == 200, delivery.answer
    return delivery.answer


async def test_a_user_moves_through_trial_active_canceled_and_expired(billing_gw: Client, whop: RunningWhop) -> None:
    user, headers = await buyer(billing_gw, "lifecycle@example.com")
    assert user["status"] == "trial" and await _watchlist_status(billing_gw, headers) == 200
    _, checkout_id = await start_checkout(billing_gw, whop, headers, "screener_monthly")
    # The buyer pays but never comes back to confirm: the webhook alone activates them.
    paid = whop.whop.pay(checkout_id)
    membership_id = paid["data"]["membership"]["id"]
    assert (await _deliver(billing_gw, whop, paid))["applied"] is True
    active = await me(billing_gw, headers)
    assert active["status"] == "active" and active["plan"] == "monthly" and active["plan_activated_at"]
    first_end = _at(active["plan_expires_at"])
    await _deliver(billing_gw, whop, whop.whop.activate(membership_id))
    assert (await me(billing_gw, headers))["status"] == "active"

    # A renewal: Whop charges the next period, the plan runs a period longer.
    await _deliver(billing_gw, whop, whop.whop.renew(membership_id))
    renewed = await me(billing_gw, headers)
    assert renewed["status"] == "active" and _at(renewed["plan_expires_at"]) == first_end + timedelta(days=30)

    # Canceled at the period's end: access (and the banner) until plan_expires_at.
    await _deliver(billing_gw, whop, whop.whop.cancel_at_period_end(membership_id))
    canceled = await me(billing_gw, headers)
    assert canceled["status"] == "canceled" and canceled["plan_expires_at"] == renewed["plan_expires_at"]
    assert await _watchlist_status(billing_gw, headers) == 200

    # Resumed, canceled again, then the period ends: expired, the paid features refused.
    await _deliver(billing_gw, whop, whop.whop.cancel_at_period_end(membership_id, cancel=False))
    assert (await me(billing_gw, headers))["status"] == "active"
    await _deliver(billing_gw, whop, whop.whop.cancel_at_period_end(membership_id))
    await _deliver(billing_gw, whop, whop.whop.deactivate(membership_id))
    expired = await me(billing_gw, headers)
    assert expired["status"] == "expired" and expired["plan"] == "monthly"
    assert _at(expired["plan_expires_at"]) <= datetime.now(UTC)
    assert await _watchlist_status(billing_gw, headers) == 403
    billing = await (await billing_gw.get("/api/billing", headers=headers)).json()
    assert billing["status"] == "expired" and billing["whop_membership_id"] == membership_id


async def test_a_refund_ends_the_plan_at_once(billing_gw: Client, whop: RunningWhop) -> None:
    _, headers = await buyer(billing_gw, "refund@example.com")
    _, checkout_id = await start_checkout(billing_gw, whop, headers, "bundle_yearly")
    paid = whop.whop.pay(checkout_id)
    await _deliver(billing_gw, whop, paid)
    bought = await me(billing_gw, headers)
    assert (bought["status"], bought["plan"], bought["tv_addon_active"]) == ("active", "yearly", True)
    # A refund that failed gives nothing back, so it changes nothing.
    await _deliver(billing_gw, whop, whop.whop.refund(paid["data"]["id"], status="failed"))
    assert (await me(billing_gw, headers))["status"] == "active"
    await _deliver(billing_gw, whop, whop.whop.refund(paid["data"]["id"]))
    refunded = await me(billing_gw, headers)
    assert (refunded["status"], refunded["tv_addon_active"]) == ("expired", False)
    assert await _watchlist_status(billing_gw, headers) == 403
    # Whop's membership event that follows (still "active" there) does not undo the refund.
    membership_id = paid["data"]["membership"]["id"]
    await _deliver(billing_gw, whop, whop.whop.activate(membership_id))
    assert (await me(billing_gw, headers))["status"] == "expired"


async def test_the_tv_add_on_follows_its_own_membership(billing_gw: Client, whop: RunningWhop) -> None:
    _, headers = await buyer(billing_gw, "addon@example.com")
    _, screener_checkout = await start_checkout(billing_gw, whop, headers, "screener_monthly")
    await _deliver(billing_gw, whop, whop.whop.pay(screener_checkout))
    _, tv_checkout = await start_checkout(billing_gw, whop, headers, "tv_yearly")
    tv_paid = whop.whop.pay(tv_checkout)
    await _deliver(billing_gw, whop, tv_paid)
    with_addon = await me(billing_gw, headers)
    assert (with_addon["status"], with_addon["plan"], with_addon["tv_addon_active"]) == ("active", "monthly", True)
    await _deliver(billing_gw, whop, whop.whop.deactivate(tv_paid["data"]["membership"]["id"], status="canceled"))
    without = await me(billing_gw, headers)
    assert (without["status"], without["plan"], without["tv_addon_active"]) == ("active", "monthly", False)
    assert without["plan_expires_at"] == with_addon["plan_expires_at"]


async def test_forged_stale_and_replayed_deliveries_are_refused(
    billing_gw: Client, whop: RunningWhop, pool: asyncpg.Pool
) -> None:
    _, headers = await buyer(billing_gw, "forged@example.com")
    _, checkout_id = await start_checkout(billing_gw, whop, headers, "screener_monthly")
    paid = whop.whop.pay(checkout_id)
    url = webhook_url(billing_gw)
    forged = await whop.whop.deliver(url, paid, secret="ws_" + "0" * 32)
    stale = await whop.whop.deliver(url, paid, timestamp=int(time.time()) - 301)
    future = await whop.whop.deliver(url, paid, timestamp=int(time.time()) + 301)
    for delivery in (forged, stale, future):
        assert delivery.status == 401 and delivery.answer["code"] == "invalid_signature", delivery.answer
    sent_headers, body = whop.whop.signed(paid)
    tampered = await billing_gw.post("/api/billing/webhook", data=body.replace(b"paid", b"PAID"), headers=sent_headers)
    await error_of(tampered, 401, "invalid_signature")
    unsigned = await billing_gw.post("/api/billing/webhook", data=body, headers={"Content-Type": "application/json"})
    await error_of(unsigned, 401, "invalid_signature")
    assert (await me(billing_gw, headers))["status"] == "trial"

    # Genuine, then replayed (same webhook-id, freshly signed): applied once.
    assert (await _deliver(billing_gw, whop, paid))["applied"] is True
    membership_id = paid["data"]["membership"]["id"]
    expired = whop.whop.deactivate(membership_id)
    await _deliver(billing_gw, whop, expired)
    assert (await me(billing_gw, headers))["status"] == "expired"
    replay = await _deliver(billing_gw, whop, paid)
    assert replay == {"received": True, "duplicate": True}
    assert (await me(billing_gw, headers))["status"] == "expired"
    # An older event arriving late (a new id, an earlier timestamp) cannot undo a newer one.
    whop.whop.memberships[membership_id]["status"] = "active"
    late = whop.whop.event(
        "membership.activated",
        dict(whop.whop.memberships[membership_id]),
        at=datetime.now(UTC) - timedelta(minutes=3),
    )
    assert (await _deliver(billing_gw, whop, late))["applied"] is False
    assert (await me(billing_gw, headers))["status"] == "expired"
    async with pool.acquire() as conn:
        seen = await conn.fetchval("SELECT count(*) FROM billing_webhook_events")
    assert seen == 3  # paid, expired, late: refused deliveries leave no trace


async def test_events_of_other_plans_or_users_are_acknowledged_and_ignored(
    billing_gw: Client, whop: RunningWhop
) -> None:
    stranger = whop.whop.event(
        "membership.activated",
        {"id": "mem_stranger01", "status": "active", "plan": {"id": "plan_SomeoneElse01"}, "metadata": {}},
    )
    assert (await _deliver(billing_gw, whop, stranger))["applied"] is False
    unknown_type = whop.whop.event("invoice.created", {"id": "inv_1"})
    assert (await _deliver(billing_gw, whop, unknown_type))["applied"] is False
    # Signed, yet not an event: a 400 naming the problem.
    body, stamp = b"not json", int(time.time())
    sent = {
        "webhook-id": "msg_notjson01",
        "webhook-timestamp": str(stamp),
        "webhook-signature": signature(whop.whop.secret, "msg_notjson01", stamp, body),
    }
    await error_of(await billing_gw.post("/api/billing/webhook", data=body, headers=sent), 400, "invalid_json")


async def test_the_webhook_answers_503_without_billing(make_gateway: Any, whop: RunningWhop) -> None:
    plain = await make_gateway()
    event = whop.whop.event("membership.activated", {"id": "mem_x"})
    delivery = await whop.whop.deliver(webhook_url(plain), event)
    assert delivery.status == 503 and delivery.answer["error"] == "Billing is not configured"


async def test_a_signed_membership_event_without_a_membership_is_a_400(billing_gw: Client, whop: RunningWhop) -> None:
    broken = whop.whop.event("membership.activated", {"plan": {"id": "plan_ScreenerMonth1"}})
    delivery = await whop.whop.deliver(webhook_url(billing_gw), broken)
    assert delivery.status == 400 and delivery.answer["code"] == "invalid_event"


# --- Whop's other names for membership changes ------------------------------------------------------


async def test_v2_went_valid_and_went_invalid_are_read_back_from_api_v1(billing_gw: Client, whop: RunningWhop) -> None:
    """A v2 (legacy) event is a notice: the membership it names is read from API v1, never its v2 body."""
    _, headers = await buyer(billing_gw, "legacy@example.com")
    _, checkout_id = await start_checkout(billing_gw, whop, headers, "screener_yearly")
    membership_id = whop.whop.pay(checkout_id)["data"]["membership"]["id"]
    went_valid = whop.whop.legacy_event("membership.went_valid", membership_id)
    assert "type" not in went_valid and went_valid["data"]["plan"] == whop.whop.memberships[membership_id]["plan"]["id"]
    asked = len(whop.whop.calls)

    assert (await _deliver(billing_gw, whop, went_valid))["applied"] is True
    assert [call[:2] for call in whop.whop.calls[asked:]] == [("GET", f"/api/v1/memberships/{membership_id}")]
    active = await me(billing_gw, headers)
    assert (active["status"], active["plan"]) == ("active", "yearly")
    assert await _watchlist_status(billing_gw, headers) == 200

    # Whop ends the membership; the v2 notice says so, and API v1 is what decides.
    whop.whop.deactivate(membership_id)
    await _deliver(billing_gw, whop, whop.whop.legacy_event("membership.went_invalid", membership_id))
    assert (await me(billing_gw, headers))["status"] == "expired"
    assert await _watchlist_status(billing_gw, headers) == 403


async def test_a_v2_notice_is_not_trusted_over_api_v1(billing_gw: Client, whop: RunningWhop) -> None:
    _, headers = await buyer(billing_gw, "legacy-lie@example.com")
    _, checkout_id = await start_checkout(billing_gw, whop, headers, "screener_monthly")
    membership_id = whop.whop.pay(checkout_id)["data"]["membership"]["id"]
    whop.whop.deactivate(membership_id)
    # Its body claims the membership is valid; Whop's API says it ended.
    claim = whop.whop.legacy_event("membership.went_valid", membership_id)
    claim["data"].update(valid=True, status="active")
    await _deliver(billing_gw, whop, claim)
    assert (await me(billing_gw, headers))["status"] == "expired"


async def test_a_v2_notice_with_a_malformed_id_asks_whop_nothing(billing_gw: Client, whop: RunningWhop) -> None:
    asked = len(whop.whop.calls)
    for number, bad in enumerate(("mem_../../payments", "mem_x?y=1", "pay_0001", 7, None)):
        event = {"id": f"msg_malformed{number}", "action": "membership.went_valid", "data": {"id": bad}}
        assert (await _deliver(billing_gw, whop, event))["applied"] is False
    assert whop.whop.calls[asked:] == []


async def test_membership_updated_is_applied_like_the_other_v1_membership_events(
    billing_gw: Client, whop: RunningWhop
) -> None:
    _, headers = await buyer(billing_gw, "updated@example.com")
    _, checkout_id = await start_checkout(billing_gw, whop, headers, "screener_monthly")
    membership_id = whop.whop.pay(checkout_id)["data"]["membership"]["id"]
    membership = whop.whop.memberships[membership_id]
    await _deliver(billing_gw, whop, whop.whop.event("membership.updated", dict(membership)))
    assert (await me(billing_gw, headers))["status"] == "active"
    membership.update(cancel_at_period_end=True, status="canceling")
    await _deliver(billing_gw, whop, whop.whop.event("membership.updated", dict(membership)))
    assert (await me(billing_gw, headers))["status"] == "canceled"
