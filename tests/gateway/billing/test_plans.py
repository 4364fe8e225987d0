"""A user's plan derived from their Whop memberships (``gateway.accounts.plans.derive``)."""

from __future__ import annotations

import uuid
from dataclasses import replace
from datetime import UTC, datetime, timedelta

from gateway.accounts.plans import KnownMembership, derive, entitled
from gateway.accounts.users import User

NOW = datetime(2026, 12, 6, 12, 0, tzinfo=UTC)
TRIAL = User(
    id=uuid.uuid4(),
    email="u@example.com",
    password_hash=None,
    role="user",
    status="trial",
    trial_ends_at=NOW + timedelta(days=3),
    plan=None,
    plan_activated_at=None,
    plan_expires_at=None,
    tv_addon_active=False,
    tv_username=None,
    disabled_at=None,
    tokens_valid_after=None,
    created_at=NOW - timedelta(days=4),
    last_login_at=None,
)


def _membership(slug: str, status: str = "active", days: int = 30, **extra: object) -> KnownMembership:
    values: dict[str, object] = {
        "membership_id": f"mem_{uuid.uuid4().hex[:8]}",
        "plan_slug": slug,
        "status": status,
        "renewal_period_end": NOW + timedelta(days=days),
        "cancel_at_period_end": False,
        "manage_url": None,
        "refunded_at": None,
        "created_at": NOW - timedelta(days=1),
    }
    values.update(extra)
    return KnownMembership(**values)  # type: ignore[arg-type]


def test_no_membership_leaves_the_trial_running() -> None:
    assert derive(TRIAL, [], NOW) == {"tv_addon_active": False}


def test_a_live_membership_is_active_until_its_period_ends() -> None:
    for status in ("active", "trialing", "past_due"):
        changes = derive(TRIAL, [_membership("screener_yearly", status, days=365)], NOW)
        assert changes["status"] == "active" and changes["plan"] == "yearly"
        assert changes["plan_expires_at"] == NOW + timedelta(days=365) and changes["plan_activated_at"] == NOW


def test_a_cancellation_keeps_access_until_the_period_ends() -> None:
    for ending in (
        _membership("bundle_monthly", cancel_at_period_end=True),
        _membership("bundle_monthly", "canceling"),
    ):
        changes = derive(TRIAL, [ending], NOW)
        assert (changes["status"], changes["tv_addon_active"]) == ("canceled", True)
        assert entitled(replace(TRIAL, status="canceled", plan_expires_at=changes["plan_expires_at"]), NOW)


def test_an_ended_or_refunded_membership_expires_the_plan() -> None:
    for ended in (
        _membership("screener_monthly", "expired", days=-1),
        _membership("screener_monthly", "canceled", days=20),
        _membership("screener_monthly", "completed", days=-2),
        _membership("screener_monthly", refunded_at=NOW - timedelta(hours=1)),
    ):
        changes = derive(TRIAL, [ended], NOW)
        assert changes["status"] == "expired" and changes["plan_expires_at"] <= NOW
        assert not entitled(replace(TRIAL, status="expired"), NOW)


def test_a_new_live_membership_wins_over_an_old_ended_one() -> None:
    old = _membership("screener_monthly", "expired", days=-40, created_at=NOW - timedelta(days=70))
    new = _membership("screener_yearly", days=365)
    assert derive(TRIAL, [old, new], NOW)["status"] == "active"
    assert derive(TRIAL, [new, old], NOW)["plan"] == "yearly"


def test_the_tv_add_on_alone_unlocks_only_the_add_on() -> None:
    changes = derive(TRIAL, [_membership("tv_monthly")], NOW)
    assert changes == {"tv_addon_active": True}
    with_plan = derive(TRIAL, [_membership("screener_monthly"), _membership("tv_yearly", "expired", days=-1)], NOW)
    assert (with_plan["status"], with_plan["tv_addon_active"]) == ("active", False)


def test_admins_are_always_entitled() -> None:
    assert entitled(replace(TRIAL, role="admin", status="expired"), NOW)
    assert not entitled(replace(TRIAL, trial_ends_at=NOW), NOW)  # the client: ends_at <= now is expired
