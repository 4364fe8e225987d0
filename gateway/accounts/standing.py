"""Whether a verified token's account may still act: it exists, is not disabled, and was not reset since.

A signature and an expiry say nothing about what happened to the account after the token was
issued. The operator's ``screener users disable`` and a password reset ("someone may have my
password") must end the account's sessions everywhere, not only on the accounts endpoints: so the
identity middleware asks ``Standing.refusal`` for every token and serves a refused one as anonymous
(public endpoints) or answers with the refusal (endpoints that need a user).

The columns it reads are cached per user for ``max_age`` seconds, so a client polling public data
with its token costs one primary-key lookup per few seconds, and a disable made by another process
(the CLI, another replica) takes effect within that time.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

import asyncpg

from gateway.accounts.errors import ShownError
from gateway.accounts.tokens import ISSUER
from gateway.auth import Identity
from screener.subjects import user_uuid

STANDING_SECONDS = 5.0
MAX_CACHED_USERS = 10_000


@dataclass(frozen=True)
class AccountState:
    """The columns of a user row that decide whether its tokens still count."""

    disabled_at: datetime | None
    tokens_valid_after: datetime | None


def refusal_of(state: AccountState | None, caller: Identity) -> ShownError | None:
    """Return why ``caller``'s token no longer counts for an account in ``state`` (None: no row), else None."""
    if state is None:
        # A token of an external issuer may come before its row exists (``/api/me`` provisions it).
        if caller.issuer == ISSUER:
            return ShownError(401, "unauthorized", "Your account no longer exists", "no user has this token's id")
        return None
    if state.disabled_at is not None:
        return ShownError(403, "account_disabled", "This account is disabled", "the operator disabled this account")
    valid_after = state.tokens_valid_after
    if valid_after is not None and caller.issued_at is not None and caller.issued_at < int(valid_after.timestamp()):
        return ShownError(
            401,
            "token_revoked",
            "Your session has ended. Please sign in again.",
            "the password was reset after this token was issued",
        )
    return None


class Standing:
    """Look up the account behind a token, with a short per-user cache."""

    def __init__(
        self,
        pool: asyncpg.Pool,
        max_age: float = STANDING_SECONDS,
        max_entries: int = MAX_CACHED_USERS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._pool = pool
        self._max_age = max_age
        self._max_entries = max_entries
        self._clock = clock
        self._cache: dict[uuid.UUID, tuple[float, AccountState | None]] = {}

    async def refusal(self, caller: Identity) -> ShownError | None:
        """Return why ``caller``'s token must not act for its account, or None when it may."""
        if caller.user_id is None:
            return None
        return refusal_of(await self._state(user_uuid(caller.user_id)), caller)

    def forget(self, user_id: uuid.UUID) -> None:
        """Drop the cached state of ``user_id`` (after a change this process made, e.g. a reset)."""
        self._cache.pop(user_id, None)

    async def _state(self, user_id: uuid.UUID) -> AccountState | None:
        now = self._clock()
        cached = self._cache.get(user_id)
        if cached is not None and now - cached[0] < self._max_age:
            return cached[1]
        async with self._pool.acquire() as conn:
            row = await conn.fetchrow("SELECT disabled_at, tokens_valid_after FROM users WHERE id = $1", user_id)
        state = AccountState(row["disabled_at"], row["tokens_valid_after"]) if row is not None else None
        self._cache.pop(user_id, None)
        if len(self._cache) >= self._max_entries:
            del self._cache[next(iter(self._cache))]  # the oldest entry: dicts keep insertion order
        self._cache[user_id] = (now, state)
        return state
