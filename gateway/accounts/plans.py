"""What each plan slug sells, who may use the product now, and a user's plan derived from their memberships.

client.md section 1 computes gating in the client: admin → app; ``trial`` with a future
``trial_ends_at`` (or none) → app; ``active`` → app; ``canceled`` with a future ``plan_expires_at`` →
app; anything else → the "expired" page. ``entitled`` is that same rule, so the server's 403 and the
client's screen never disagree.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from gateway.accounts.users import User

# Whop membership statuses (API v1) under which the buyer keeps access: ``canceling`` is a
# cancellation at the period's end, ``past_due`` Whop's retry window.
LIVE_STATUSES = frozenset({"trialing", "active", "past_due", "canceling"})


@dataclass(frozen=True)
class PlanSlug:
    """One of the client's plan slugs: the billing period and what it unlocks."""

    slug: str
    period: str  # "monthly" or "yearly", the User object's ``plan``
    screener: bool  # the screener itself
    tv_addon: bool  # the TradingView add-on


CATALOGUE = {
    p.slug: p
    for p in (
        PlanSlug("screener_monthly", "monthly", screener=True, tv_addon=False),
        PlanSlug("screener_yearly", "yearly", screener=True, tv_addon=False),
        PlanSlug("bundle_monthly", "monthly", screener=True, tv_addon=True),
        PlanSlug("bundle_yearly", "yearly", screener=True, tv_addon=True),
        # The add-on alone: the client offers it next to a screener plan, so it does not unlock the screener.
        PlanSlug("tv_monthly", "monthly", screener=False, tv_addon=True),
        PlanSlug("tv_yearly", "yearly", screener=False, tv_addon=True),
    )
}


def entitled(user: User, now: datetime) -> bool:
    """Return whether ``user`` may use the paid features now (the client's SubscriptionGuard rule)."""
    if user.role == "admin" or user.status == "active":
        return True
    if user.status == "trial":
        return user.trial_ends_at is None or user.trial_ends_at > now
    if user.status == "canceled":
        return user.plan_expires_at is not None and user.plan_expires_at > now
    return False


@dataclass(frozen=True)
class KnownMembership:
    """A Whop membership as stored in ``billing_memberships``."""

    membership_id: str
    plan_slug: str
    status: str
    renewal_period_end: datetime | None
    cancel_at_period_end: bool
    manage_url: str | None
    refunded_at: datetime | None
    created_at: datetime

    @classmethod
    def from_row(cls, row: Any) -> KnownMembership:
        """Return the membership of a ``billing_memberships`` row."""
        return cls(**{name: row[name] for name in cls.__dataclass_fields__})

    @property
    def live(self) -> bool:
        """Return whether the membership still gives access (a refund ends it whatever Whop says)."""
        return self.refunded_at is None and self.status in LIVE_STATUSES

    @property
    def ending(self) -> bool:
        """Return whether the buyer canceled: access stays until the period's end, then stops."""
        return self.cancel_at_period_end or self.status == "canceling"


def _newest(memberships: Iterable[KnownMembership]) -> KnownMembership | None:
    ordered = sorted(memberships, key=lambda m: (m.live, m.renewal_period_end or m.created_at, m.created_at))
    return ordered[-1] if ordered else None


def derive(user: User, memberships: list[KnownMembership], now: datetime) -> dict[str, Any]:
    """Return the changes to ``user``'s row that its Whop memberships call for.

    The screener plan follows the best screener membership (a live one first, then the latest
    period): live → ``active`` (``canceled`` when it ends at the period's end), none live →
    ``expired``. A user with no screener membership keeps their status (a trial runs on). The
    add-on is on while any membership that includes it is live.
    """
    changes: dict[str, Any] = {"tv_addon_active": any(m.live and CATALOGUE[m.plan_slug].tv_addon for m in memberships)}
    screener = _newest(m for m in memberships if CATALOGUE[m.plan_slug].screener)
    if screener is None:
        return changes
    changes["plan"] = CATALOGUE[screener.plan_slug].period
    if user.plan_activated_at is None:
        changes["plan_activated_at"] = now
    if screener.live:
        changes["status"] = "canceled" if screener.ending else "active"
        changes["plan_expires_at"] = screener.renewal_period_end
    else:
        changes["status"] = "expired"
        ended = screener.refunded_at or screener.renewal_period_end
        changes["plan_expires_at"] = min(ended, now) if ended else now
    return changes
