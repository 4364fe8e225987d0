"""Billing through Whop (client.md section 4, decision 7): checkouts, confirmation and the webhook.

Checkout: the gateway makes its own reference, puts it into Whop's ``redirect_url``
(``<return URL>?session=<ref>``) and into the checkout configuration's metadata, and keeps ref →
``ch_`` id and user (nothing documented says which parameters Whop adds to ``redirect_url``).

Confirm (the browser came back): the caller's own, paid checkout activates them at once, from Whop's
answer, without waiting for the webhook and whatever e-mail was used on Whop. Another user's
checkout is refused (403), an unpaid one too (402).

Webhook (server to server): signature and timestamp verified, each ``webhook-id`` applied once
(stored in PostgreSQL). Whop is asked for what an event does not carry (a renewed membership's new
period) before anything is written, so a failing Whop leaves nothing half-done and Whop retries.
"""

from __future__ import annotations

import logging
import re
import secrets
import time
import uuid
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlencode, urlsplit

import asyncpg
import orjson

from gateway.accounts import billing_store
from gateway.accounts.billing import Membership, SignupState, signup_state
from gateway.accounts.billing_store import MembershipFacts
from gateway.accounts.errors import ShownError
from gateway.accounts.plans import CATALOGUE, LIVE_STATUSES
from gateway.accounts.users import User
from gateway.accounts.whop_client import WhopClient, WhopError
from gateway.accounts.whop_signature import BadSignature, signing_key, verify
from screener.config import ConfigError, Settings
from screener.outbound import OutboundPolicy, OutboundRefused

log = logging.getLogger(__name__)

# Checkouts one user may start per hour: each one is a call to Whop and a row here.
MAX_CHECKOUTS_PER_HOUR = 20
# Events whose ``data`` is a v1 membership, applied as given (``membership.updated`` is the name newer
# dated API versions send for any change of one).
MEMBERSHIP_EVENTS = (
    "membership.activated",
    "membership.deactivated",
    "membership.cancel_at_period_end_changed",
    "membership.updated",
)
# Whop's v2 (legacy) names of a membership gaining or losing access. Their v2 payload (``plan`` a string,
# ``valid``, ``expires_at``) is not v1's, so it is only a notice: the membership it names is read from API v1.
LEGACY_MEMBERSHIP_EVENTS = ("membership.went_valid", "membership.went_invalid")
# Refund statuses that give nothing back (RefundStatus in Whop's API); any other refund ends the access.
_REFUND_VOID = frozenset({"failed", "canceled"})
# Whop's ids (``mem_...``, ``pay_...``): an id goes into an API path, so nothing but these characters.
_WHOP_ID = re.compile(r"[A-Za-z0-9_]{1,200}")


class WhopBilling:
    """The Whop billing provider: one per gateway, on the gateway's pool."""

    enabled = True

    def __init__(self, settings: Settings, pool: asyncpg.Pool) -> None:
        assert settings.whop_api_key is not None
        self._key = check_settings(settings)
        policy = OutboundPolicy.from_setting(settings.outbound_allow)
        self._settings = settings
        self._pool = pool
        self._plans = settings.whop_plans
        self._slugs = {plan_id: slug for slug, plan_id in self._plans.items()}
        self._return_url = settings.whop_return_url or settings.frontend_origin.rstrip("/") + "/billing"
        self.client = WhopClient(
            settings.whop_api_url,
            settings.whop_api_key.get_secret_value(),
            settings.whop_timeout_seconds,
            policy,
        )

    async def start(self) -> None:
        """Open the connection pool to Whop."""
        await self.client.start()

    async def close(self) -> None:
        """Close the connection pool to Whop."""
        await self.client.close()

    def signup_state(self, *, invited: bool, now: datetime) -> SignupState:
        """Return a trial for an invite (and, unless turned off, for an open sign-up); else expired."""
        return signup_state(self._settings, invited=invited, now=now)

    # --- checkout ----------------------------------------------------------------------------------
    async def checkout(self, user: User, plan: str) -> str:
        """Create a Whop checkout for ``plan`` on behalf of ``user``; return its purchase URL."""
        now = datetime.now(UTC)
        async with self._pool.acquire() as conn:
            started = await billing_store.checkouts_since(conn, user.id, now - timedelta(hours=1))
        if started >= MAX_CHECKOUTS_PER_HOUR:
            raise ShownError(
                429,
                "too_many_checkouts",
                "Too many checkouts started. Please try again later.",
                f"at most {MAX_CHECKOUTS_PER_HOUR} checkouts per user per hour",
                headers={"Retry-After": "3600"},
            )
        ref = "ref_" + secrets.token_urlsafe(18)
        separator = "&" if urlsplit(self._return_url).query else "?"
        metadata = {"screener_user_id": str(user.id), "screener_checkout_ref": ref, "screener_plan": plan}
        answer = await self.client.create_checkout(
            self._plans[plan], f"{self._return_url}{separator}{urlencode({'session': ref})}", metadata, key=ref
        )
        checkout_id = _text(answer, "id")
        purchase_url = _text(answer, "purchase_url")
        if not checkout_id.startswith("ch_") or urlsplit(purchase_url).scheme not in ("http", "https"):
            raise WhopError("POST /checkout_configurations answered no ch_ id or no purchase_url")
        async with self._pool.acquire() as conn:
            await billing_store.insert_checkout(
                conn, ref, user.id, plan_slug=plan, checkout_id=checkout_id, purchase_url=purchase_url
            )
        log.info("user %s started checkout %s (%s, %s)", user.id, ref, plan, checkout_id)
        return purchase_url

    # --- confirm -----------------------------------------------------------------------------------
    async def confirm(self, user: User, session: str) -> None:
        """Activate ``user`` from their paid checkout ``session`` (idempotent)."""
        async with self._pool.acquire() as conn:
            found = await billing_store.checkout(conn, session)
        if found is None:
            raise ShownError(404, "checkout_not_found", "This checkout was not found", "parameter 'session': unknown")
        if found.user_id != user.id:
            raise ShownError(
                403,
                "checkout_of_another_user",
                "This checkout belongs to another account",
                "parameter 'session': the checkout was started by another user",
            )
        if found.confirmed_at is not None:
            return
        payments = await self.client.checkout_payments(found.checkout_id)
        paid = [p for p in payments if _paid(p)]
        if any(_metadata(p).get("screener_user_id") not in (None, str(user.id)) for p in paid):
            raise ShownError(
                403,
                "checkout_of_another_user",
                "This checkout belongs to another account",
                "the payment's metadata names another user",
            )
        paid = [p for p in paid if _membership_id(p) is not None]
        if not paid:
            raise ShownError(
                402,
                "checkout_unpaid",
                "This checkout has not been paid yet",
                "Whop reports no paid, succeeded payment for this checkout",
            )
        payment = paid[0]
        membership_id = _membership_id(payment)
        assert membership_id is not None
        facts = self._facts(await self.client.membership(membership_id), datetime.now(UTC))
        if facts is None or facts.plan_slug != found.plan_slug:
            raise WhopError(f"membership {membership_id} is not of the plan {found.plan_slug} this checkout sold")
        async with self._pool.acquire() as conn, conn.transaction():
            await billing_store.upsert_membership(conn, user.id, facts)
            await billing_store.mark_confirmed(conn, found.ref, _text(payment, "id"), membership_id)
            await billing_store.refresh_user(conn, user.id, datetime.now(UTC))
        log.info("user %s confirmed checkout %s (membership %s)", user.id, found.ref, membership_id)

    async def membership(self, user: User) -> Membership:
        """Return the user's most relevant Whop membership and its self-service page."""
        async with self._pool.acquire() as conn:
            known = await billing_store.memberships_of(conn, user.id)
        if not known:
            return Membership(None, "")
        best = max(known, key=lambda m: (m.live, CATALOGUE[m.plan_slug].screener, m.created_at))
        return Membership(best.membership_id, best.manage_url or "")

    # --- webhook -----------------------------------------------------------------------------------
    async def webhook(self, headers: Mapping[str, str], body: bytes) -> dict[str, Any]:
        """Apply one signed Whop webhook delivery; return what the answer says about it."""
        try:
            webhook_id = verify(self._key, headers, body, time.time())
        except BadSignature as exc:
            log.warning("Whop webhook refused: %s", exc)
            raise ShownError(401, "invalid_signature", "Invalid webhook signature", str(exc)) from None
        try:
            event = orjson.loads(body)
        except orjson.JSONDecodeError:
            raise ShownError(400, "invalid_json", "The webhook body is not JSON", "the body must be JSON") from None
        if isinstance(event, dict) and "type" not in event and isinstance(event.get("action"), str):
            event["type"] = event["action"]  # a v2 (legacy) body names its event "action"
        if not isinstance(event, dict) or not isinstance(event.get("type"), str):
            raise ShownError(400, "invalid_event", "The webhook body is not an event", "parameter 'type': missing")
        event_type = event["type"]
        async with self._pool.acquire() as conn:
            if await billing_store.event_seen(conn, webhook_id):
                return {"received": True, "duplicate": True}
        # Everything Whop must be asked is asked now, before the transaction below writes anything.
        change = await self._change_of(event)
        async with self._pool.acquire() as conn, conn.transaction():
            if not await billing_store.record_event(conn, webhook_id, event_type):
                return {"received": True, "duplicate": True}
            applied = await self._apply(conn, change) if change is not None else None
        log.info("Whop webhook %s (%s): %s", webhook_id, event_type, applied or "ignored")
        return {"received": True, "applied": applied is not None}

    async def _change_of(self, event: dict[str, Any]) -> _Change | None:
        data = event.get("data")
        if not isinstance(data, dict):
            raise ShownError(400, "invalid_event", "The webhook body is not an event", "parameter 'data': missing")
        observed = _when(event.get("timestamp")) or datetime.now(UTC)
        kind = event["type"]
        if kind in MEMBERSHIP_EVENTS:
            try:
                facts = self._facts(data, observed)
            except WhopError:
                raise ShownError(
                    400, "invalid_event", "The webhook body is not an event", "parameter 'data': not a membership"
                ) from None
            return _Change(facts, _metadata(data).get("screener_user_id")) if facts else None
        if kind in LEGACY_MEMBERSHIP_EVENTS:
            membership_id = _whop_id(data.get("id"))
            if membership_id is None or not membership_id.startswith("mem_"):
                return None
            membership = await self.client.membership(membership_id)
            facts = self._facts(membership, observed)
            return _Change(facts, _metadata(membership).get("screener_user_id")) if facts else None
        if kind == "payment.succeeded":
            membership_id = _membership_id(data)
            if membership_id is None or not _paid(data):
                return None
            # A renewal's payment does not carry the new period: Whop's membership does. It is dated
            # by the event, like every webhook, so Whop's own order of events decides.
            facts = self._facts(await self.client.membership(membership_id), observed)
            return _Change(facts, _metadata(data).get("screener_user_id")) if facts else None
        if kind == "refund.created":
            payment = data.get("payment")
            membership_id = _membership_id(payment) if isinstance(payment, dict) else None
            if membership_id is None or data.get("status") in _REFUND_VOID:
                return None
            return _Change(None, None, refunded=membership_id, at=observed)
        return None

    async def _apply(self, conn: asyncpg.Connection, change: _Change) -> str | None:
        now = datetime.now(UTC)
        if change.refunded is not None:
            owner = await billing_store.owner_of_membership(conn, change.refunded)
            if owner is None or not await billing_store.mark_refunded(conn, change.refunded, change.at or now):
                return None
            await billing_store.refresh_user(conn, owner, now)
            return f"membership {change.refunded} refunded"
        facts = change.facts
        assert facts is not None
        owner = await billing_store.owner_of_membership(conn, facts.membership_id)
        if owner is None:
            owner = await self._owner_by_metadata(conn, change.user_hint)
        if owner is None:
            log.info("Whop membership %s belongs to no user of this server", facts.membership_id)
            return None
        if not await billing_store.upsert_membership(conn, owner, facts):
            return None  # an older event than what is stored
        await billing_store.refresh_user(conn, owner, now)
        return f"membership {facts.membership_id} {facts.status}"

    async def _owner_by_metadata(self, conn: asyncpg.Connection, hint: object) -> uuid.UUID | None:
        if not isinstance(hint, str):
            return None
        try:
            user_id = uuid.UUID(hint)
        except ValueError:
            return None
        exists = await conn.fetchval("SELECT EXISTS (SELECT 1 FROM users WHERE id = $1)", user_id)
        return user_id if exists else None

    def _facts(self, membership: Any, observed_at: datetime) -> MembershipFacts | None:
        """Return a Whop membership object as facts, or None when it is not one of this server's plans."""
        if not isinstance(membership, dict):
            raise WhopError("a membership is not an object")
        membership_id = membership.get("id")
        status = membership.get("status")
        plan = membership.get("plan")
        plan_id = plan.get("id") if isinstance(plan, dict) else None
        if not isinstance(membership_id, str) or not isinstance(status, str) or _whop_id(membership_id) is None:
            raise WhopError("a membership has no id or status")
        slug = self._slugs.get(plan_id) if isinstance(plan_id, str) else None
        if slug is None:
            log.info("Whop membership %s is of plan %s, which this server does not sell", membership_id, plan_id)
            return None
        manage_url = membership.get("manage_url")
        return MembershipFacts(
            membership_id=membership_id,
            plan_slug=slug,
            status=status[:40],
            renewal_period_end=_when(membership.get("renewal_period_end")),
            cancel_at_period_end=membership.get("cancel_at_period_end") is True,
            manage_url=manage_url if isinstance(manage_url, str) and manage_url.startswith("https://") else None,
            observed_at=observed_at,
        )


def check_settings(settings: Settings) -> bytes:
    """Check what the settings model cannot: the API URL against the outbound policy, the secret's form.

    Return the webhook signing key; raise ``ConfigError`` naming the setting.
    """
    assert settings.whop_webhook_secret is not None
    try:
        OutboundPolicy.from_setting(settings.outbound_allow).check_url(settings.whop_api_url)
    except OutboundRefused as exc:
        raise ConfigError(f"SCREENER_WHOP_API_URL: {exc} (allow it in SCREENER_OUTBOUND_ALLOW)") from None
    try:
        return signing_key(settings.whop_webhook_secret.get_secret_value())
    except ValueError as exc:
        raise ConfigError(f"SCREENER_WHOP_WEBHOOK_SECRET: {exc}") from None


class _Change:
    """What one webhook event changes: a membership's facts, or a refund ending one."""

    def __init__(
        self,
        facts: MembershipFacts | None,
        user_hint: object,
        *,
        refunded: str | None = None,
        at: datetime | None = None,
    ) -> None:
        self.facts = facts
        self.user_hint = user_hint
        self.refunded = refunded
        self.at = at


def _text(obj: Any, name: str) -> str:
    value = obj.get(name) if isinstance(obj, dict) else None
    if not isinstance(value, str) or not value or len(value) > 2000:
        raise WhopError(f"Whop's answer has no '{name}'")
    return value


def _metadata(obj: Any) -> dict[str, Any]:
    metadata = obj.get("metadata") if isinstance(obj, dict) else None
    return metadata if isinstance(metadata, dict) else {}


def _membership_id(payment: Any) -> str | None:
    membership = payment.get("membership") if isinstance(payment, dict) else None
    membership_id = membership.get("id") if isinstance(membership, dict) else None
    return _whop_id(membership_id)


def _whop_id(value: Any) -> str | None:
    """Return ``value`` when it has the form of a Whop id, else None."""
    return value if isinstance(value, str) and _WHOP_ID.fullmatch(value) else None


def _paid(payment: Any) -> bool:
    """Return whether a Whop payment was collected and kept (``status: paid``, ``substatus: succeeded``)."""
    return isinstance(payment, dict) and payment.get("status") == "paid" and payment.get("substatus") == "succeeded"


def _when(value: Any) -> datetime | None:
    """Return an ISO 8601 instant (or Unix seconds) of Whop's as an aware datetime, else None."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        try:
            return datetime.fromtimestamp(value, UTC)
        except (OverflowError, OSError, ValueError):
            return None
    if not isinstance(value, str) or len(value) > 40:
        return None
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


__all__ = ["LEGACY_MEMBERSHIP_EVENTS", "LIVE_STATUSES", "MEMBERSHIP_EVENTS", "WhopBilling"]
