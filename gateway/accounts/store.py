"""The SQL of accounts: users, invites and password-reset tokens (migration 005_accounts)."""

from __future__ import annotations

import hashlib
import secrets
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import asyncpg

from gateway.accounts.billing import SignupState
from gateway.accounts.users import COLUMNS, User

RESET_LIFETIME = timedelta(hours=1)
# Unused, unexpired reset tokens a user may have at once: more requests send no more mail (no mail bombing).
MAX_ACTIVE_RESETS = 3


async def by_id(conn: asyncpg.Connection, user_id: uuid.UUID) -> User | None:
    """Return the user with ``user_id``."""
    row = await conn.fetchrow(f"SELECT {COLUMNS} FROM users WHERE id = $1", user_id)
    return User.from_row(row) if row else None


async def by_email(conn: asyncpg.Connection, email: str) -> User | None:
    """Return the user with ``email``, whatever its case."""
    row = await conn.fetchrow(f"SELECT {COLUMNS} FROM users WHERE lower(email) = lower($1)", email)
    return User.from_row(row) if row else None


async def insert_user(
    conn: asyncpg.Connection, email: str, password_hash: str, state: SignupState, role: str = "user"
) -> User | None:
    """Create a user; return None when the e-mail is taken."""
    row = await conn.fetchrow(
        f"""INSERT INTO users (email, password_hash, role, status, trial_ends_at)
            VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING RETURNING {COLUMNS}""",
        email,
        password_hash,
        role,
        state.status,
        state.trial_ends_at,
    )
    return User.from_row(row) if row else None


async def provision(conn: asyncpg.Connection, user_id: uuid.UUID, email: str | None, state: SignupState) -> User:
    """Return the user ``user_id``, creating it for a token of an external issuer that has no row yet.

    The token's e-mail is kept unless another account already has it (then the row has none).
    """
    for address in (email, None) if email else (None,):
        row = await conn.fetchrow(
            f"""INSERT INTO users (id, email, status, trial_ends_at) VALUES ($1, $2, $3, $4)
                ON CONFLICT DO NOTHING RETURNING {COLUMNS}""",
            user_id,
            address,
            state.status,
            state.trial_ends_at,
        )
        if row:
            return User.from_row(row)
        existing = await by_id(conn, user_id)  # a concurrent request provisioned it first
        if existing:
            return existing
    raise RuntimeError(f"could not provision user {user_id}")


async def record_login(conn: asyncpg.Connection, user_id: uuid.UUID, new_hash: str | None) -> User:
    """Stamp ``last_login_at`` (and store a re-made hash); return the updated user."""
    row = await conn.fetchrow(
        f"""UPDATE users SET last_login_at = now(), password_hash = coalesce($2, password_hash)
            WHERE id = $1 RETURNING {COLUMNS}""",
        user_id,
        new_hash,
    )
    return User.from_row(row)


async def set_password(conn: asyncpg.Connection, user_id: uuid.UUID, password_hash: str, *, revoke: bool) -> None:
    """Replace the password hash; ``revoke`` also refuses every token issued before now."""
    await conn.execute(
        """UPDATE users SET password_hash = $2, updated_at = now(),
               tokens_valid_after = CASE WHEN $3 THEN now() ELSE tokens_valid_after END
           WHERE id = $1""",
        user_id,
        password_hash,
        revoke,
    )


async def update_user(conn: asyncpg.Connection, user_id: uuid.UUID, changes: dict[str, Any]) -> User:
    """Set the given columns (names from ``users.COLUMNS`` only); return the updated user."""
    allowed = set(User.__dataclass_fields__) - {"id", "created_at"}
    unknown = set(changes) - allowed
    if unknown:
        raise ValueError(f"not a user column: {sorted(unknown)}")
    names = list(changes)
    assignments = ", ".join(f"{name} = ${i + 2}" for i, name in enumerate(names))
    row = await conn.fetchrow(
        f"UPDATE users SET {assignments}, updated_at = now() WHERE id = $1 RETURNING {COLUMNS}",
        user_id,
        *(changes[name] for name in names),
    )
    return User.from_row(row)


async def list_users(conn: asyncpg.Connection) -> list[User]:
    """Return every user, oldest first."""
    return [User.from_row(r) for r in await conn.fetch(f"SELECT {COLUMNS} FROM users ORDER BY created_at, id")]


# --- invites ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Invite:
    """One invite code and its state."""

    code: str
    created_at: datetime
    expires_at: datetime
    used_at: datetime | None
    used_by_email: str | None

    def state(self, now: datetime) -> str:
        """Return ``used``, ``expired`` or ``valid``."""
        if self.used_at is not None:
            return "used"
        return "expired" if self.expires_at <= now else "valid"


_INVITE_COLUMNS = "i.code, i.created_at, i.expires_at, i.used_at, u.email AS used_by_email"


async def create_invite(conn: asyncpg.Connection, lifetime: timedelta, created_by: uuid.UUID | None = None) -> Invite:
    """Create a single-use invite valid for ``lifetime``; return it."""
    code = secrets.token_urlsafe(16)  # 128 bits: not guessable, URL-safe for /invite/<code>
    await conn.execute(
        "INSERT INTO invites (code, created_by, expires_at) VALUES ($1, $2, now() + $3::interval)",
        code,
        created_by,
        lifetime,
    )
    found = await invite(conn, code)
    assert found is not None
    return found


async def invite(conn: asyncpg.Connection, code: str) -> Invite | None:
    """Return the invite ``code``."""
    row = await conn.fetchrow(
        f"SELECT {_INVITE_COLUMNS} FROM invites i LEFT JOIN users u ON u.id = i.used_by WHERE i.code = $1", code
    )
    return Invite(**dict(row)) if row else None


async def list_invites(conn: asyncpg.Connection) -> list[Invite]:
    """Return every invite, newest first."""
    rows = await conn.fetch(
        f"SELECT {_INVITE_COLUMNS} FROM invites i LEFT JOIN users u ON u.id = i.used_by ORDER BY i.created_at DESC"
    )
    return [Invite(**dict(r)) for r in rows]


async def use_invite(conn: asyncpg.Connection, code: str, user_id: uuid.UUID) -> bool:
    """Mark a valid invite used by ``user_id``; return False when it is unknown, used or expired.

    One UPDATE with the conditions in its WHERE: of two sign-ups racing on one code, only one wins.
    """
    used = await conn.fetchval(
        """UPDATE invites SET used_at = now(), used_by = $2
           WHERE code = $1 AND used_at IS NULL AND expires_at > now() RETURNING code""",
        code,
        user_id,
    )
    return used is not None


# --- password reset --------------------------------------------------------------------------------
def reset_token_hash(raw: str) -> bytes:
    """Return what is stored of a reset token: its SHA-256 (the token has 256 random bits, no salt needed)."""
    return hashlib.sha256(raw.encode()).digest()


async def create_reset(conn: asyncpg.Connection, user_id: uuid.UUID) -> str | None:
    """Return a new raw reset token for ``user_id``, or None when it already has enough live ones."""
    async with conn.transaction():
        # Serialise per user so two requests cannot both pass the count below.
        await conn.execute("SELECT 1 FROM users WHERE id = $1 FOR UPDATE", user_id)
        live = await conn.fetchval(
            "SELECT count(*) FROM password_resets WHERE user_id = $1 AND used_at IS NULL AND expires_at > now()",
            user_id,
        )
        if live >= MAX_ACTIVE_RESETS:
            return None
        raw = secrets.token_urlsafe(32)
        await conn.execute(
            "INSERT INTO password_resets (token_hash, user_id, expires_at) VALUES ($1, $2, now() + $3::interval)",
            reset_token_hash(raw),
            user_id,
            RESET_LIFETIME,
        )
        await conn.execute(
            "DELETE FROM password_resets WHERE user_id = $1 AND expires_at < now() - interval '1 day'", user_id
        )
    return raw


async def consume_reset(conn: asyncpg.Connection, raw: str) -> uuid.UUID | None:
    """Use a reset token once; return its user, or None when it is unknown, used or expired.

    Every other live token of that user is used up with it: one reset ends them all.
    """
    user_id: uuid.UUID | None = await conn.fetchval(
        """UPDATE password_resets SET used_at = now()
           WHERE token_hash = $1 AND used_at IS NULL AND expires_at > now() RETURNING user_id""",
        reset_token_hash(raw),
    )
    if user_id is not None:
        await conn.execute("UPDATE password_resets SET used_at = now() WHERE user_id = $1 AND used_at IS NULL", user_id)
    return user_id
