"""The SQL of billing (migration 009_billing): checkouts, Whop memberships and applied webhook deliveries."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import asyncpg

from gateway.accounts import store
from gateway.accounts.plans import KnownMembership, derive
from gateway.accounts.users import User

# Deliveries are kept well past Whop's retry schedule (days), so a late redelivery is still recognised.
EVENT_RETENTION = timedelta(days=30)


@dataclass(frozen=True)
class Checkout:
    """One checkout the gateway started."""

    ref: str
    user_id: uuid.UUID
    plan_slug: str
    checkout_id: str
    purchase_url: str
    created_at: datetime
    confirmed_at: datetime | None


@dataclass(frozen=True)
class MembershipFacts:
    """What Whop says of one membership, at ``observed_at``."""

    membership_id: str
    plan_slug: str
    status: str
    renewal_period_end: datetime | None
    cancel_at_period_end: bool
    manage_url: str | None
    observed_at: datetime


_CHECKOUT_COLUMNS = "ref, user_id, plan_slug, checkout_id, purchase_url, created_at, confirmed_at"
_MEMBERSHIP_COLUMNS = (
    "membership_id, plan_slug, status, renewal_period_end, cancel_at_period_end, manage_url, refunded_at, created_at"
)


async def insert_checkout(
    conn: asyncpg.Connection, ref: str, user_id: uuid.UUID, *, plan_slug: str, checkout_id: str, purchase_url: str
) -> None:
    """Record a checkout the gateway created at Whop."""
    await conn.execute(
        """INSERT INTO billing_checkouts (ref, user_id, plan_slug, checkout_id, purchase_url)
           VALUES ($1, $2, $3, $4, $5)""",
        ref,
        user_id,
        plan_slug,
        checkout_id,
        purchase_url,
    )


async def checkouts_since(conn: asyncpg.Connection, user_id: uuid.UUID, since: datetime) -> int:
    """Return how many checkouts ``user_id`` started since ``since``."""
    count: int = await conn.fetchval(
        "SELECT count(*) FROM billing_checkouts WHERE user_id = $1 AND created_at >= $2", user_id, since
    )
    return count


async def checkout(conn: asyncpg.Connection, session: str) -> Checkout | None:
    """Return the checkout a ``?session=`` names: the gateway's reference or Whop's ``ch_`` id."""
    row = await conn.fetchrow(
        f"SELECT {_CHECKOUT_COLUMNS} FROM billing_checkouts WHERE ref = $1 OR checkout_id = $1", session
    )
    return Checkout(**dict(row)) if row else None


async def mark_confirmed(conn: asyncpg.Connection, ref: str, payment_id: str, membership_id: str) -> None:
    """Stamp a checkout confirmed with the payment and membership it produced (first confirm wins)."""
    await conn.execute(
        """UPDATE billing_checkouts SET confirmed_at = now(), payment_id = $2, membership_id = $3
           WHERE ref = $1 AND confirmed_at IS NULL""",
        ref,
        payment_id,
        membership_id,
    )


async def owner_of_membership(conn: asyncpg.Connection, membership_id: str) -> uuid.UUID | None:
    """Return the user a known membership belongs to."""
    owner: uuid.UUID | None = await conn.fetchval(
        "SELECT user_id FROM billing_memberships WHERE membership_id = $1", membership_id
    )
    return owner


async def upsert_membership(conn: asyncpg.Connection, user_id: uuid.UUID, facts: MembershipFacts) -> bool:
    """Store what Whop says of a membership unless something newer is stored; return whether it was."""
    applied = await conn.fetchval(
        """INSERT INTO billing_memberships (membership_id, user_id, plan_slug, status, renewal_period_end,
               cancel_at_period_end, manage_url, observed_at)
           VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
           ON CONFLICT (membership_id) DO UPDATE SET status = EXCLUDED.status,
               renewal_period_end = EXCLUDED.renewal_period_end,
               cancel_at_period_end = EXCLUDED.cancel_at_period_end,
               manage_url = coalesce(EXCLUDED.manage_url, billing_memberships.manage_url),
               observed_at = EXCLUDED.observed_at, updated_at = now()
           WHERE billing_memberships.observed_at <= EXCLUDED.observed_at
           RETURNING true""",
        facts.membership_id,
        user_id,
        facts.plan_slug,
        facts.status,
        facts.renewal_period_end,
        facts.cancel_at_period_end,
        facts.manage_url,
        facts.observed_at,
    )
    return bool(applied)


async def mark_refunded(conn: asyncpg.Connection, membership_id: str, at: datetime) -> bool:
    """End a membership because its payment was refunded; return whether the membership is known."""
    updated = await conn.fetchval(
        """UPDATE billing_memberships SET refunded_at = coalesce(refunded_at, $2), updated_at = now()
           WHERE membership_id = $1 RETURNING true""",
        membership_id,
        at,
    )
    return bool(updated)


async def memberships_of(conn: asyncpg.Connection, user_id: uuid.UUID) -> list[KnownMembership]:
    """Return every membership known for ``user_id``, oldest first."""
    rows = await conn.fetch(
        f"SELECT {_MEMBERSHIP_COLUMNS} FROM billing_memberships WHERE user_id = $1 ORDER BY created_at",
        user_id,
    )
    return [KnownMembership.from_row(r) for r in rows]


async def refresh_user(conn: asyncpg.Connection, user_id: uuid.UUID, now: datetime) -> User:
    """Derive ``user_id``'s plan from its memberships and store it (the row locked meanwhile)."""
    row = await conn.fetchrow("SELECT id FROM users WHERE id = $1 FOR UPDATE", user_id)
    if row is None:
        raise LookupError(f"no user {user_id}")
    user = await store.by_id(conn, user_id)
    assert user is not None
    changes: dict[str, Any] = derive(user, await memberships_of(conn, user_id), now)
    return await store.update_user(conn, user_id, changes)


async def event_seen(conn: asyncpg.Connection, webhook_id: str) -> bool:
    """Return whether the delivery ``webhook_id`` was applied already."""
    seen: bool = await conn.fetchval(
        "SELECT EXISTS (SELECT 1 FROM billing_webhook_events WHERE webhook_id = $1)", webhook_id
    )
    return seen


async def record_event(conn: asyncpg.Connection, webhook_id: str, event_type: str) -> bool:
    """Record a delivery as applied; return False when another request recorded it first."""
    recorded = await conn.fetchval(
        """INSERT INTO billing_webhook_events (webhook_id, event_type) VALUES ($1, $2)
           ON CONFLICT DO NOTHING RETURNING true""",
        webhook_id,
        event_type[:100],
    )
    if recorded:
        await conn.execute(
            "DELETE FROM billing_webhook_events WHERE received_at < now() - $1::interval", EVENT_RETENTION
        )
    return bool(recorded)
