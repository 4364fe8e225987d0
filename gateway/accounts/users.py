"""The user row and the client's User object (client.md section 1)."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

ROLES = ("user", "admin")
STATUSES = ("trial", "active", "expired", "canceled")
PLANS = ("monthly", "yearly")

# The columns ``User.from_row`` reads, in one place for every query of the store.
COLUMNS = (
    "id, email, password_hash, role, status, trial_ends_at, plan, plan_activated_at, plan_expires_at, "
    "tv_addon_active, tv_username, disabled_at, tokens_valid_after, created_at, last_login_at"
)


@dataclass(frozen=True)
class User:
    """One row of ``users``; the password hash never appears in its repr."""

    id: uuid.UUID
    email: str | None
    password_hash: str | None = field(repr=False)
    role: str
    status: str
    trial_ends_at: datetime | None
    plan: str | None
    plan_activated_at: datetime | None
    plan_expires_at: datetime | None
    tv_addon_active: bool
    tv_username: str | None
    disabled_at: datetime | None
    tokens_valid_after: datetime | None
    created_at: datetime
    last_login_at: datetime | None

    @classmethod
    def from_row(cls, row: Any) -> User:
        """Return the user of a row selected with ``COLUMNS``."""
        return cls(**{name: row[name] for name in cls.__dataclass_fields__})

    @property
    def disabled(self) -> bool:
        """Return whether the operator disabled the account."""
        return self.disabled_at is not None


def iso(moment: datetime | None) -> str | None:
    """Return ``moment`` as ISO 8601 in UTC with milliseconds and ``Z``, like JavaScript's ``toISOString``."""
    if moment is None:
        return None
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def user_view(user: User, fallback_email: str | None = None) -> dict[str, Any]:
    """Return the client's User object (``/api/me``, and ``user`` of login, register and refresh)."""
    return {
        "id": str(user.id),
        "email": user.email or fallback_email or "",
        "role": user.role,
        "status": user.status,
        "trial_ends_at": iso(user.trial_ends_at),
        "plan": user.plan,
        "plan_activated_at": iso(user.plan_activated_at),
        "plan_expires_at": iso(user.plan_expires_at),
        "tv_addon_active": user.tv_addon_active,
        "created_at": iso(user.created_at),
        "last_login_at": iso(user.last_login_at),
    }
