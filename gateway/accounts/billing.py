"""The seam of a billing provider (client.md section 4, decisions 6 and 7), and the one without billing.

A provider decides a new user's status, creates checkouts, confirms them, and names the account's
membership. ``NoBilling`` is the default: every user is active, plans are set by ``screener users``,
and checkout and confirm answer 503 "Billing is not configured". A Whop provider implements the same
protocol and is chosen in ``billing_provider``.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from gateway.accounts.errors import ShownError
from gateway.accounts.users import User
from screener.config import Settings

# The client's plan slugs (client.md section 4); a provider maps them to its own plan ids.
PLAN_SLUGS = ("screener_monthly", "screener_yearly", "bundle_monthly", "bundle_yearly", "tv_monthly", "tv_yearly")


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

    def signup_state(self, *, invited: bool, now: datetime) -> SignupState:
        """Return the status of an account created now (``invited``: through an invite code)."""
        ...

    async def checkout(self, user: User, plan: str) -> str:
        """Return the URL the browser goes to to buy ``plan`` (one of ``PLAN_SLUGS``)."""
        ...

    async def confirm(self, user: User, session: str) -> None:
        """Activate ``user`` from the checkout ``session`` they came back with (idempotent)."""
        ...

    def membership(self, user: User) -> Membership:
        """Return the user's membership at the provider."""
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

    def signup_state(self, *, invited: bool, now: datetime) -> SignupState:
        """Return ``active``: without billing nothing gates the product (decision 7)."""
        return SignupState("active")

    async def checkout(self, user: User, plan: str) -> str:
        """Refuse: there is nothing to buy."""
        raise BillingNotConfigured()

    async def confirm(self, user: User, session: str) -> None:
        """Refuse: there is nothing to confirm."""
        raise BillingNotConfigured()

    def membership(self, user: User) -> Membership:
        """Return no membership and no management page."""
        return Membership(None, "")


def billing_provider(settings: Settings) -> BillingProvider:
    """Return the billing provider the settings configure (today: none)."""
    return NoBilling()
