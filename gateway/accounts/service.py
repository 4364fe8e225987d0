"""The accounts' collaborators, built once per app, and what the handlers share: the caller's user row."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Coroutine
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import asyncpg
import redis.asyncio as aioredis
import redis.exceptions
from aiohttp import web

from gateway.accounts import store
from gateway.accounts.billing import BillingProvider, billing_provider
from gateway.accounts.errors import ShownError
from gateway.accounts.mail import ResetMailer, parse_smtp_url
from gateway.accounts.passwords import Passwords
from gateway.accounts.standing import AccountState, Standing, refusal_of
from gateway.accounts.tokens import ISSUER, TokenIssuer
from gateway.accounts.users import User
from gateway.context import identity, require_user
from gateway.ratelimit import IPNetwork, RateLimiter, client_bucket, client_ip, parse_networks
from screener.config import Settings
from screener.subjects import user_uuid

log = logging.getLogger(__name__)
DRAIN_SECONDS = 5.0


@dataclass
class Accounts:
    """Everything the accounts endpoints use."""

    settings: Settings
    pool: asyncpg.Pool
    passwords: Passwords
    tokens: TokenIssuer | None
    mailer: ResetMailer | None
    billing: BillingProvider
    limiter: RateLimiter
    trusted_proxies: tuple[IPNetwork, ...]
    standing: Standing
    _tasks: set[asyncio.Task[None]] = field(default_factory=set)

    def issuer(self) -> TokenIssuer:
        """Return the token issuer; 503 when no secret is configured (the gateway cannot sign anyone in)."""
        if self.tokens is None:
            raise ShownError(
                503,
                "accounts_not_configured",
                "Sign-in is not available on this server",
                "the gateway has no SCREENER_JWT_SECRET, so it cannot issue tokens",
            )
        return self.tokens

    async def check_guessing_limit(self, request: web.Request) -> None:
        """Count one sign-in, sign-up or reset attempt of the client's IP; 429 past the stricter auth limit."""
        ip = client_ip(request.remote, request.headers.get("X-Forwarded-For"), self.trusted_proxies)
        try:
            decision = await self.limiter.hit(f"auth:{client_bucket(ip)}")
        except (redis.exceptions.RedisError, OSError) as exc:
            log.warning("auth rate limit skipped, Redis unavailable: %s", exc)  # as the global limit: fail open
            return
        if not decision.allowed:
            raise ShownError(
                429,
                "rate_limited",
                f"Too many attempts. Try again in {decision.retry_after_seconds} seconds.",
                f"more than {decision.limit} sign-in, sign-up or password-reset requests per minute from {ip}",
                headers={"Retry-After": str(decision.retry_after_seconds)},
            )

    async def current_user(self, request: web.Request) -> User:
        """Return the caller's user row, provisioning one for a valid token of an external issuer.

        ``/api/me`` must succeed for every valid token (client.md section 14.3): a Supabase or JWKS
        user signs in elsewhere and arrives here with no row yet.
        """
        require_user(request)
        caller = identity(request)
        assert caller.user_id is not None
        user_id = user_uuid(caller.user_id)
        async with self.pool.acquire() as conn:
            user = await store.by_id(conn, user_id)
            if user is None:
                if caller.issuer == ISSUER:
                    raise ShownError(
                        401, "unauthorized", "Your account no longer exists", "no user has this token's id"
                    )
                state = self.billing.signup_state(invited=False, now=datetime.now(UTC))
                user = await store.provision(conn, user_id, caller.email, state)
                log.info("provisioned user %s for an external token (issuer %s)", user.id, caller.issuer or "unnamed")
        refused = refusal_of(AccountState(user.disabled_at, user.tokens_valid_after), caller)
        if refused is not None:
            raise refused
        return user

    def spawn(self, job: Coroutine[Any, Any, None]) -> None:
        """Run ``job`` in the background (kept referenced until done; awaited at shutdown)."""
        task = asyncio.create_task(job)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def drain(self) -> None:
        """Let background jobs (reset mails) finish, up to a few seconds."""
        if self._tasks:
            _, late = await asyncio.wait(set(self._tasks), timeout=DRAIN_SECONDS)
            for task in late:
                task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.gather(*late, return_exceptions=True)


ACCOUNTS: web.AppKey[Accounts] = web.AppKey("accounts", Accounts)


def build_accounts(settings: Settings, pool: asyncpg.Pool, redis: aioredis.Redis) -> Accounts:
    """Return the accounts service the settings describe."""
    tokens = (
        TokenIssuer(settings.jwt_secret, settings.jwt_audience, settings.token_lifetime_hours * 3600)
        if settings.jwt_secret
        else None
    )
    mailer = (
        ResetMailer(parse_smtp_url(settings.smtp_url), settings.mail_from, settings.frontend_origin)
        if settings.smtp_url
        else None
    )
    return Accounts(
        settings=settings,
        pool=pool,
        passwords=Passwords(),
        tokens=tokens,
        mailer=mailer,
        billing=billing_provider(settings, pool),
        limiter=RateLimiter(redis, settings.auth_rate_limit_per_minute),
        trusted_proxies=parse_networks(settings.trusted_proxies),
        standing=Standing(pool),
    )


def setup(app: web.Application, settings: Settings, pool: asyncpg.Pool, redis: aioredis.Redis) -> None:
    """Attach the accounts service to ``app``: say at start-up what is off, drain mails at shutdown."""
    accounts = build_accounts(settings, pool, redis)
    app[ACCOUNTS] = accounts

    async def announce(_: web.Application) -> None:
        if accounts.tokens is None:
            log.warning("sign-in and sign-up are off: SCREENER_JWT_SECRET is not set (`screener up` generates one)")
        if accounts.mailer is None:
            log.warning("password reset is off: SCREENER_SMTP_URL is not set (forgot-password answers as if sent)")
        else:
            log.info("password reset mail goes through %s", accounts.mailer.server.describe())
        log.info("sign-up mode: %s", settings.signup_mode)
        if accounts.billing.enabled:
            await accounts.billing.start()
            log.info("billing through Whop at %s: paid features need a live plan or trial", settings.whop_api_url)
        else:
            log.info("billing is off: every user is active, plans are set with `screener users set-plan`")

    async def drain(_: web.Application) -> None:
        await accounts.drain()

    async def close(_: web.Application) -> None:
        await accounts.billing.close()

    app.on_startup.append(announce)
    app.on_shutdown.append(drain)
    app.on_cleanup.append(close)
