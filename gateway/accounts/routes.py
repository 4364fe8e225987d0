"""The accounts endpoints of client.md: ``/auth/*``, ``/api/me``, refresh, password change and billing.

Every error here is client.md's body (decision 1): ``{"error": <sentence the client shows>, "code",
"message": <detail naming the field>}``.
"""

from __future__ import annotations

import logging
import re
from datetime import UTC, datetime
from typing import Any

import aiosmtplib
from aiohttp import web

from gateway import api_schemas, validation
from gateway.accounts import fields, store
from gateway.accounts.billing import PLAN_SLUGS
from gateway.accounts.errors import ShownError, client_errors
from gateway.accounts.service import ACCOUNTS, Accounts
from gateway.accounts.users import User, iso, user_view
from gateway.context import identity
from gateway.errors import json_ok
from gateway.openapi import Endpoint, Param

log = logging.getLogger(__name__)

_SESSION = re.compile(r"^[A-Za-z0-9_.-]{1,128}$")


def _session(accounts: Accounts, user: User, fallback_email: str | None = None) -> dict[str, Any]:
    return {"user": user_view(user, fallback_email), "token": accounts.issuer().issue(user)}


# --- /auth -----------------------------------------------------------------------------------------
@client_errors
async def register(request: web.Request) -> web.Response:
    """Create an account (open sign-up, or with an invite code) and sign it in."""
    accounts = request.app[ACCOUNTS]
    accounts.issuer()
    await accounts.check_guessing_limit(request)
    body = await validation.json_object(request)
    validation.reject_unknown_fields(body, {"email", "password", "invite_code"})
    mode = accounts.settings.signup_mode
    if mode == "closed":
        raise ShownError(
            403, "signup_closed", "Sign-up is closed", "this server creates accounts by invitation of the operator only"
        )
    code = body.get("invite_code")
    if mode == "invite" and not code:
        raise ShownError(
            403, "invite_required", "An invite is required to sign up", "parameter 'invite_code': is required"
        )
    email = fields.email(body)
    password = fields.new_password(body, "password")
    invite = None
    if code is not None:
        invite = fields.invite_code(code)
        if invite is None:
            raise _invalid_invite()
    password_hash = await accounts.passwords.hash(password)
    state = accounts.billing.signup_state(invited=invite is not None, now=datetime.now(UTC))
    async with accounts.pool.acquire() as conn, conn.transaction():
        user = await store.insert_user(conn, email, password_hash, state)
        if user is None:
            raise ShownError(
                409, "email_taken", "An account with this email already exists", "parameter 'email': is taken"
            )
        if invite is not None and not await store.use_invite(conn, invite, user.id):
            raise _invalid_invite()  # the transaction rolls the new user back
        user = await store.record_login(conn, user.id, None)
    log.info("user %s signed up%s", user.id, " with an invite" if invite else "")
    return json_ok(_session(accounts, user), status=201)


def _invalid_invite() -> ShownError:
    return ShownError(
        400,
        "invalid_invite",
        "This invite is invalid, used or expired",
        "parameter 'invite_code': is not a valid invite",
    )


@client_errors
async def login(request: web.Request) -> web.Response:
    """Sign in with e-mail and password; the answer never tells whether the e-mail exists."""
    accounts = request.app[ACCOUNTS]
    accounts.issuer()
    await accounts.check_guessing_limit(request)
    body = await validation.json_object(request)
    validation.reject_unknown_fields(body, {"email", "password"})
    email = fields.email(body)
    password = fields.given_password(body, "password")
    async with accounts.pool.acquire() as conn:
        user = await store.by_email(conn, email)
    # An unknown e-mail is verified against a dummy hash: both failures cost one argon2 verification,
    # and both get the same answer.
    matches = await accounts.passwords.verify(user.password_hash if user else None, password)
    if user is None or not matches:
        raise ShownError(401, "invalid_credentials", "Invalid email or password", "the e-mail or the password is wrong")
    if user.disabled:
        raise ShownError(403, "account_disabled", "This account is disabled", "the operator disabled this account")
    assert user.password_hash is not None
    rehashed = await accounts.passwords.hash(password) if accounts.passwords.needs_rehash(user.password_hash) else None
    async with accounts.pool.acquire() as conn:
        user = await store.record_login(conn, user.id, rehashed)
    return json_ok(_session(accounts, user))


@client_errors
async def check_invite(request: web.Request) -> web.Response:
    """Say whether an invite code can still be used (the client reads ``valid`` and ``message``)."""
    accounts = request.app[ACCOUNTS]
    await accounts.check_guessing_limit(request)
    if accounts.settings.signup_mode == "closed":
        return json_ok({"valid": False, "message": "Sign-up is closed"})
    code = fields.invite_code(request.match_info["code"])
    found = None
    if code is not None:
        async with accounts.pool.acquire() as conn:
            found = await store.invite(conn, code)
    if found is None:
        return json_ok({"valid": False, "message": "This invite link is not valid"})
    state = found.state(datetime.now(UTC))
    if state == "used":
        return json_ok({"valid": False, "message": "This invite has already been used"})
    if state == "expired":
        return json_ok({"valid": False, "message": "This invite has expired", "expires_at": iso(found.expires_at)})
    return json_ok({"valid": True, "expires_at": iso(found.expires_at)})


@client_errors
async def forgot_password(request: web.Request) -> web.Response:
    """Mail a reset link when the account exists; answer the same either way, at once (no enumeration)."""
    accounts = request.app[ACCOUNTS]
    await accounts.check_guessing_limit(request)
    body = await validation.json_object(request)
    validation.reject_unknown_fields(body, {"email"})
    email = fields.email(body)
    if accounts.mailer is not None:
        # Looked up and mailed in the background: the answer's timing says nothing about the account.
        accounts.spawn(_mail_reset(accounts, email))
    return json_ok({"message": "If an account exists for this address, a reset link is on its way"})


async def _mail_reset(accounts: Accounts, email: str) -> None:
    mailer = accounts.mailer
    assert mailer is not None
    try:
        async with accounts.pool.acquire() as conn:
            user = await store.by_email(conn, email)
            if user is None or user.disabled or user.email is None:
                return
            raw = await store.create_reset(conn, user.id)
        if raw is None:
            log.info("password reset for user %s not mailed: it has enough live reset links", user.id)
            return
        await mailer.send_reset(user.email, raw)
        log.info("password reset mail sent for user %s", user.id)
    except (aiosmtplib.SMTPException, OSError) as exc:
        log.warning("password reset mail not sent (%s): %s", mailer.server.describe(), type(exc).__name__)
    except Exception:  # a background job's boundary: nothing else would see it
        log.exception("password reset mail failed")


@client_errors
async def reset_password(request: web.Request) -> web.Response:
    """Set a new password with the token of a reset link (single use, one hour); end every session."""
    accounts = request.app[ACCOUNTS]
    await accounts.check_guessing_limit(request)
    body = await validation.json_object(request)
    validation.reject_unknown_fields(body, {"token", "password"})
    raw = fields.reset_token(body)
    password = fields.new_password(body, "password")
    password_hash = await accounts.passwords.hash(password)
    async with accounts.pool.acquire() as conn, conn.transaction():
        user_id = await store.consume_reset(conn, raw)
        if user_id is None:
            raise fields.invalid_reset_token()
        # A reset is the "someone may have my password" path: tokens issued before it stop working.
        await store.set_password(conn, user_id, password_hash, revoke=True)
    accounts.standing.forget(user_id)  # at once here; other replicas within the standing cache's seconds
    log.info("password of user %s reset", user_id)
    return json_ok({"message": "Your password has been reset. Please sign in."})


# --- /api (a token is needed) ----------------------------------------------------------------------
@client_errors
async def me(request: web.Request) -> web.Response:
    """Return the caller's User object."""
    user = await request.app[ACCOUNTS].current_user(request)
    return json_ok(user_view(user, identity(request).email))


@client_errors
async def refresh(request: web.Request) -> web.Response:
    """Return the caller's User object with a fresh token (the client calls it after a plan changes)."""
    accounts = request.app[ACCOUNTS]
    accounts.issuer()
    user = await accounts.current_user(request)
    return json_ok(_session(accounts, user, identity(request).email))


@client_errors
async def change_password(request: web.Request) -> web.Response:
    """Replace the caller's password after checking the current one."""
    accounts = request.app[ACCOUNTS]
    user = await accounts.current_user(request)
    await accounts.check_guessing_limit(request)
    body = await validation.json_object(request)
    validation.reject_unknown_fields(body, {"old_password", "new_password"})
    old = fields.given_password(body, "old_password")
    new = fields.new_password(body, "new_password")
    if not await accounts.passwords.verify(user.password_hash, old):
        raise ShownError(400, "wrong_password", "Current password is incorrect", "parameter 'old_password': is wrong")
    password_hash = await accounts.passwords.hash(new)
    async with accounts.pool.acquire() as conn:
        # Sessions stay valid: the client keeps its token after a change and has no way to swap it.
        await store.set_password(conn, user.id, password_hash, revoke=False)
    log.info("password of user %s changed", user.id)
    return json_ok({"message": "Password changed"})


@client_errors
async def billing(request: web.Request) -> web.Response:
    """Return the caller's plan (client.md's BillingInfo): the user row and, with Whop, the membership."""
    accounts = request.app[ACCOUNTS]
    user = await accounts.current_user(request)
    membership = await accounts.billing.membership(user)
    # The username the client saves through PUT /api/settings/tv-username, keyed by the token's sub.
    async with accounts.pool.acquire() as conn:
        tv_username = await conn.fetchval(
            "SELECT tv_username FROM tv_usernames WHERE user_id = $1", identity(request).user_id
        )
    return json_ok(
        {
            "plan": user.plan,
            "status": user.status,
            "plan_expires_at": iso(user.plan_expires_at),
            "whop_membership_id": membership.membership_id,
            "tv_addon_active": user.tv_addon_active,
            "tv_username": tv_username or user.tv_username,
            "manage_url": membership.manage_url,
        }
    )


@client_errors
async def checkout(request: web.Request) -> web.Response:
    """Start buying a plan: answer the provider's checkout URL (503 without a billing provider)."""
    accounts = request.app[ACCOUNTS]
    user = await accounts.current_user(request)
    body = await validation.json_object(request)
    validation.reject_unknown_fields(body, {"plan"})
    plan = body.get("plan")
    if plan not in PLAN_SLUGS:
        raise fields.bad("plan", "Please choose a plan", f"must be one of {', '.join(PLAN_SLUGS)}")
    return json_ok({"checkout_url": await accounts.billing.checkout(user, plan)})


@client_errors
async def confirm_billing(request: web.Request) -> web.Response:
    """Activate the caller's plan from the checkout they came back from (503 without a billing provider)."""
    accounts = request.app[ACCOUNTS]
    user = await accounts.current_user(request)
    validation.only_params(request, {"session"})
    session = request.query.get("session", "")
    if not _SESSION.match(session):
        raise fields.bad("session", "This checkout could not be confirmed", "must be the checkout's session reference")
    await accounts.billing.confirm(user, session)
    async with accounts.pool.acquire() as conn:
        updated = await store.by_id(conn, user.id)
    assert updated is not None
    return json_ok(user_view(updated, identity(request).email))


@client_errors
async def billing_webhook(request: web.Request) -> web.Response:
    """Apply a server-to-server webhook of the billing provider (Whop; Standard Webhooks signature)."""
    accounts = request.app[ACCOUNTS]
    body = await request.read()  # the raw bytes: the signature covers them exactly
    return json_ok(await accounts.billing.webhook(request.headers, body))


ENDPOINTS: list[Endpoint] = [
    Endpoint(
        "POST",
        "/auth/register",
        register,
        "Create an account and sign in (201 {user, token}); sign-up mode open, invite or closed",
        body="{email, password (8+ characters), invite_code?}",
        tag="accounts",
    ),
    Endpoint("POST", "/auth/login", login, "Sign in: {user, token}", body="{email, password}", tag="accounts"),
    Endpoint(
        "GET",
        "/auth/invite/{code}",
        check_invite,
        "Whether an invite code can be used: {valid, message?, expires_at?}",
        tag="accounts",
    ),
    Endpoint(
        "POST",
        "/auth/forgot-password",
        forgot_password,
        "Mail a reset link if the account exists (always 200)",
        body="{email}",
        tag="accounts",
    ),
    Endpoint(
        "POST",
        "/auth/reset-password",
        reset_password,
        "Set a new password with a reset link's token (single use, 1 h)",
        body="{token, password}",
        tag="accounts",
    ),
    Endpoint("GET", "/api/me", me, "Your User object", auth="required", tag="accounts"),
    Endpoint("POST", "/api/refresh", refresh, "A fresh token: {user, token}", auth="required", tag="accounts"),
    Endpoint(
        "POST",
        "/api/change-password",
        change_password,
        "Change your password",
        auth="required",
        body="{old_password, new_password}",
        tag="accounts",
    ),
    Endpoint(
        "GET",
        "/api/billing",
        billing,
        "Your plan (BillingInfo): plan, expiry, TV add-on and the Whop membership's manage_url",
        auth="required",
        schema=api_schemas.BILLING_INFO,
        tag="accounts",
    ),
    Endpoint(
        "POST",
        "/api/checkout",
        checkout,
        "Start a checkout at Whop: {checkout_url} (503 without a billing provider; 429 past 20 an hour)",
        auth="required",
        body="{plan: screener_monthly|screener_yearly|bundle_monthly|bundle_yearly|tv_monthly|tv_yearly}",
        body_schema=api_schemas.CHECKOUT,
        schema=api_schemas.CHECKOUT_URL,
        tag="accounts",
        errors=(502,),
    ),
    Endpoint(
        "POST",
        "/api/billing/confirm",
        confirm_billing,
        "Activate your plan from your paid checkout, idempotently: your User object "
        "(402 unpaid, 403 another user's, 404 unknown; 503 without a billing provider)",
        auth="required",
        params=(Param("session", "the checkout's session reference", required=True),),
        schema=api_schemas.USER,
        tag="accounts",
        errors=(402, 403, 502),
    ),
    Endpoint(
        "POST",
        "/api/billing/webhook",
        billing_webhook,
        "Whop's server-to-server webhook (Standard Webhooks signature, 5 min tolerance, each webhook-id once)",
        body="a Whop webhook event {id, type, timestamp, data}",
        schema=api_schemas.WEBHOOK_RECEIVED,
        tag="accounts",
        errors=(401, 502),
    ),
]
