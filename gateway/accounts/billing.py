"""The seam of a billing provider (client.md section 4, decisions 6 and 7), and the one without billing.

A provider decides a new user's status, creates checkouts, confirms them, applies the provider's
webhook and names the account's membership. ``NoBilling`` is the default: every user is active, plans
are set by ``screener users``, and checkout, confirm and the webhook answer 503 "Billing is not
configured". ``gateway.accounts.whop.WhopBilling`` is chosen once the ``SCREENER_WHOP_*`` settings
are given; only then does the server gate paid features (``gateway.accounts.gate``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Protocol

import asyncpg

from gateway.accounts.errors import ShownError
from gateway.accounts.users import User
from screener.config import PLAN_SLUGS, Settings

# PLAN_SLUGS (client.md section 4) lives with the settings that map each slug to a provider's plan id.
__all__ = ["PLAN_SLUGS", "BillingNotConfigured", "BillingProvider", "Membership", "NoBilling", "SignupState"]


@dataclass(frozen=True)
class SignupState:
    """The status a new account starts with."""

    status: str
    trial_ends_at: datetime | None = None


@dataclass(frozen=True)
class Membership:
    """What the billing page links to: the provider's membership id and its self-service page."""

    membership_id: str | None
    manage_url: str


class BillingProvider(Protocol):
    """What the accounts endpoints need from a billing provider."""

    # True when the provider sells plans: the server then gates paid features.
    enabled: bool

    async def start(self) -> None:
        """Open what the provider needs (called at the gateway's start-up)."""
        ...

    async def close(self) -> None:
        """Release it (called at the gateway's clean-up)."""
        ...

    def signup_state(self, *, invited: bool, now: datetime) -> SignupState:
        """Return the status of an account created now (``invited``: through an invite code)."""
        ...

    async def checkout(self, user: User, plan: str) -> str:
        """Return the URL the browser goes to to buy ``plan`` (one of ``PLAN_SLUGS``)."""
        ...

    async def confirm(self, user: User, session: str) -> None:
        """Activate ``user`` from the checkout ``session`` they came back with (idempotent)."""
        ...

    async def membership(self, user: User) -> Membership:
        """Return the user's membership at the provider."""
        ...

    async def webhook(self, headers: Mapping[str, str], body: bytes) -> dict[str, Any]:
        """Apply one server-to-server notification of the provider (signature checked); return the answer."""
        ...


class BillingNotConfigured(ShownError):
    """No billing provider is configured: checkout and confirm are unavailable (decision 7)."""

    def __init__(self) -> None:
        super().__init__(
            503,
            "billing_not_configured",
            "Billing is not configured",
            "this server sells no plans; the operator sets plans with `screener users set-plan`",
        )


class NoBilling:
    """No billing provider: every account is active and plans are the operator's to set."""

    enabled = False

    async def start(self) -> None:
        """Nothing to open."""

    async def close(self) -> None:
        """Nothing to close."""

    def signup_state(self, *, invited: bool, now: datetime) -> SignupState:
        """Return ``active``: without billing nothing gates the product (decision 7)."""
        return SignupState("active")

    async def checkout(self, user: User, plan: str) -> str:
        """Refuse: there is nothing to buy."""
        raise BillingNotConfigured()

    async def confirm(self, user: User, session: str) -> None:
        """Refuse: there is nothing to confirm."""
        raise BillingNotConfigured()

    async def membership(self, user: User) -> Membership:
        """Return no membership and no management page."""
        return Membership(None, "")

    async def webhook(self, headers: Mapping[str, str], body: bytes) -> dict[str, Any]:
        """Refuse: no provider sends webhooks here."""
        raise BillingNotConfigured()


def billing_provider(settings: Settings, pool: asyncpg.Pool) -> BillingProvider:
    """Return the billing provider the settings configure: Whop once its settings are given, else none."""
    if not settings.billing_enabled:
        return NoBilling()
    from gateway.accounts.whop import WhopBilling  # imports this module: a top-level import would be circular

    return WhopBilling(settings, pool)


def signup_state(settings: Settings, *, invited: bool, now: datetime) -> SignupState:
    """Return the status an account created now starts with, without building a provider (``screener users``)."""
    if not settings.billing_enabled:
        return SignupState("active")
    if invited or settings.open_signup_trial:
        return SignupState("trial", now + timedelta(days=settings.trial_days))
    return SignupState("expired")
