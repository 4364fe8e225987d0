"""Serialise one user's writes to a capped list (watchlist, webhooks, own rules) inside a transaction."""

from __future__ import annotations

import asyncpg


async def user_lock(conn: asyncpg.Connection, scope: str, user_id: str) -> None:
    """Take a transaction-scoped advisory lock on (``scope``, ``user_id``).

    Two concurrent adds would otherwise both see 49 entries and both insert the 50th; the lock
    makes count-then-insert atomic per user without locking anyone else.
    """
    await conn.execute("SELECT pg_advisory_xact_lock(hashtext($1), hashtext($2))", scope, user_id)
