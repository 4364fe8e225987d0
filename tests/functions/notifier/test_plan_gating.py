"""With billing on, the notifier delivers only to owners with a live plan (client.md decision 7).

The API refuses an expired user's watchlist and webhooks (403); their webhooks made earlier must not
keep delivering alerts either. ``screener.db.plans.LIVE_PLAN_SQL`` is held here to the gateway's ``plans.entitled``.
Billing off: every webhook delivers as before, account row or not, except a disabled account's.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp
import asyncpg
import pytest

from functions.notifier.delivery import RetryPolicy
from functions.notifier.function import Notifier
from functions.notifier.store import find_recipients
from functions.rules.history import AlertHistory
from gateway.accounts import store as accounts_store
from gateway.accounts.plans import entitled
from screener.config import Settings
from screener.db.plans import entitled_owners
from screener.events.envelope import make_event
from screener.names import EVENT_SOURCE_RULES, TYPE_ALERT_TRIGGERED
from screener.runtime.function import Delivery
from screener.subjects import user_uuid
from tests.fakes.webhook_receivers import RECEIVER_ALLOW, WebhookReceiver
from tests.fakes.whop_server import BILLING_SETTINGS
from tests.functions.notifier.helpers import FakeClock, add_webhook, deliveries, make_alert

NOW = datetime(2026, 11, 21, 12, 0, tzinfo=UTC)
HOUR = timedelta(hours=1)

# Every kind of account the client's gating tells apart: (role, status, trial_ends_at, plan_expires_at, disabled).
CASES: dict[str, tuple[str, str, datetime | None, datetime | None, bool]] = {
    "active": ("user", "active", None, None, False),
    "trial_running": ("user", "trial", NOW + HOUR, None, False),
    "trial_open_ended": ("user", "trial", None, None, False),
    "trial_over": ("user", "trial", NOW - HOUR, None, False),
    "canceled_with_time_left": ("user", "canceled", None, NOW + HOUR, False),
    "canceled_and_over": ("user", "canceled", None, NOW - HOUR, False),
    "canceled_without_end": ("user", "canceled", None, None, False),
    "expired": ("user", "expired", None, NOW - HOUR, False),
    "expired_admin": ("admin", "expired", None, None, False),
    "active_but_disabled": ("user", "active", None, None, True),
}


async def _account(pg: asyncpg.Connection, name: str, subject: str | None = None) -> str:
    """Insert the account ``CASES[name]``; return the webhook owner id (its token subject)."""
    role, status, trial_ends_at, plan_expires_at, disabled = CASES[name]
    subject = subject or str(uuid.uuid4())
    await pg.execute(
        """INSERT INTO users (id, email, role, status, trial_ends_at, plan_expires_at, disabled_at)
           VALUES ($1, $2, $3, $4, $5, $6, $7)""",
        user_uuid(subject),
        f"{name}@example.com",
        role,
        status,
        trial_ends_at,
        plan_expires_at,
        NOW - HOUR if disabled else None,
    )
    return subject


async def test_the_sql_rule_is_the_gateways_rule(pg: asyncpg.Connection) -> None:
    owners = {name: await _account(pg, name) for name in CASES}
    allowed = await entitled_owners(pg, owners.values(), NOW)
    for name, owner in owners.items():
        user = await accounts_store.by_id(pg, user_uuid(owner))
        assert user is not None
        # A disabled account may not use its tokens at all (the API answers 403 account_disabled).
        expected = entitled(user, NOW) and not user.disabled
        assert (owner in allowed) == expected, name


async def test_paid_only_keeps_the_webhooks_of_owners_with_a_live_plan(pg: asyncpg.Connection) -> None:
    paying = await _account(pg, "active")
    lapsed = await _account(pg, "expired")
    admin = await _account(pg, "expired_admin")
    # An external issuer's subject that is no UUID: its account row is keyed by user_uuid(subject).
    auth0 = await _account(pg, "trial_running", subject="auth0|5f1c2b")
    for owner in (paying, lapsed, admin, auth0, "never-signed-in"):
        await add_webhook(pg, f"http://127.0.0.1:9/{owner}", user_id=owner)
    alert = make_alert()

    gated = await find_recipients(pg, [alert], paid_only=True, now=NOW)
    assert sorted(job.webhook.user_id for job in gated) == sorted([paying, admin, auth0])
    ungated = await find_recipients(pg, [alert])
    assert len(ungated) == 5  # billing off: as before, account row or not


async def test_billing_off_a_disabled_owners_webhook_gets_no_alert(pg: asyncpg.Connection) -> None:
    active = await _account(pg, "active")
    disabled = await _account(pg, "active_but_disabled")
    for owner in (active, disabled, "never-signed-in"):
        await add_webhook(pg, f"http://127.0.0.1:9/{owner}", user_id=owner)
    recipients = await find_recipients(pg, [make_alert()])
    # Before, only billing's plan check looked at the account: a disabled one kept its webhooks.
    assert sorted(job.webhook.user_id for job in recipients) == sorted([active, "never-signed-in"])


@pytest.fixture
async def pool(postgres_dsn: str) -> AsyncIterator[asyncpg.Pool]:
    created = await asyncpg.create_pool(postgres_dsn, min_size=1, max_size=4)
    yield created
    await created.close()


def _notifier(postgres_dsn: str, pool: asyncpg.Pool, http: aiohttp.ClientSession, **settings: Any) -> Notifier:
    return Notifier(
        Settings(postgres_dsn=postgres_dsn, outbound_allow=RECEIVER_ALLOW, **settings),
        pool=pool,
        session=http,
        retry=RetryPolicy(max_attempts=1, timeout_seconds=5.0),
        clock=FakeClock(NOW),
        close_grace_seconds=0.0,
    )


@pytest.mark.parametrize("billing", [True, False], ids=["billing_on", "billing_off"])
async def test_an_expired_owners_webhook_gets_no_alert_when_billing_is_on(
    billing: bool,
    postgres_dsn: str,
    pool: asyncpg.Pool,
    http: aiohttp.ClientSession,
    pg: asyncpg.Connection,
    receiver: WebhookReceiver,
) -> None:
    paying = await _account(pg, "canceled_with_time_left")
    lapsed = await _account(pg, "trial_over")
    await add_webhook(pg, receiver.url("/paying"), user_id=paying)
    await add_webhook(pg, receiver.url("/lapsed"), user_id=lapsed)
    notifier = _notifier(postgres_dsn, pool, http, **(BILLING_SETTINGS if billing else {}))
    await notifier.start()
    alert = make_alert()
    event = make_event(
        event_type=TYPE_ALERT_TRIGGERED, source=EVENT_SOURCE_RULES, event_id=alert.id, subject=alert.symbol, data=alert
    )

    await notifier.handle([Delivery(event, notifier.parse(event))])
    await notifier.wait_idle()
    await notifier.close()

    assert len(receiver.received("/paying")) == 1
    assert len(receiver.received("/lapsed")) == (0 if billing else 1)


async def test_a_pending_delivery_of_an_owner_whose_plan_ended_is_skipped_on_redrive(
    postgres_dsn: str,
    pool: asyncpg.Pool,
    http: aiohttp.ClientSession,
    pg: asyncpg.Connection,
    receiver: WebhookReceiver,
) -> None:
    paying = await _account(pg, "active")
    lapsed = await _account(pg, "canceled_and_over")
    paying_hook = await add_webhook(pg, receiver.url("/paying"), user_id=paying)
    lapsed_hook = await add_webhook(pg, receiver.url("/lapsed"), user_id=lapsed)
    alert = make_alert()
    await AlertHistory().save(pg, [alert])
    for webhook_id in (paying_hook, lapsed_hook):  # left pending by a notifier that died an hour ago
        await pg.execute(
            "INSERT INTO webhook_deliveries (webhook_id, alert_id, status, updated_at) VALUES ($1, $2, 'pending', $3)",
            webhook_id,
            uuid.UUID(alert.id),
            NOW - HOUR,
        )
    notifier = _notifier(postgres_dsn, pool, http, **BILLING_SETTINGS)

    await notifier.start()  # re-drives
    await notifier.wait_idle()
    await notifier.close()

    log = await deliveries(pg)
    assert log[(paying_hook, alert.id)]["status"] == "sent"
    lapsed_row = log[(lapsed_hook, alert.id)]
    assert (lapsed_row["status"], lapsed_row["last_error"]) == ("skipped", "the owner's plan has ended")
    assert receiver.received("/lapsed") == []
