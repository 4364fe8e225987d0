"""Who may use the paid features now, asked of PostgreSQL: shared by the notifier, the rules and the stream.

The rule is the gateway's ``gateway.accounts.plans.entitled`` (client.md decision 7), in SQL so one
query answers for many users; tests/functions/notifier/test_plan_gating.py holds the two together.
Plans end by the clock and by Whop's webhooks, which notify no other process, so whoever gates on
them reads them again every ``PLAN_REFRESH_SECONDS`` (``refresh_periodically``).
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Awaitable, Callable, Iterable
from datetime import datetime
from typing import Any

import asyncpg

from screener.subjects import user_uuid

log = logging.getLogger(__name__)

# How soon a plan that ended (or was bought again) stops (or resumes) a user's own rules.
PLAN_REFRESH_SECONDS = 30.0

# Who may use the paid features at $2: not disabled, and an admin, active, on a running trial or
# canceled with time left (``u`` is the ``users`` row).
LIVE_PLAN_SQL = """u.disabled_at IS NULL AND (
    u.role = 'admin'
    OR u.status = 'active'
    OR (u.status = 'trial' AND (u.trial_ends_at IS NULL OR u.trial_ends_at > $2))
    OR (u.status = 'canceled' AND u.plan_expires_at > $2))"""


async def entitled_owners(db: Any, owners: Iterable[str], now: datetime) -> set[str]:
    """Return those of ``owners`` (token subjects) whose account has a live plan at ``now``.

    ``db`` is an ``asyncpg.Pool`` or ``Connection``. An owner without an account row has none.
    """
    by_id: dict[uuid.UUID, list[str]] = {}
    for owner in set(owners):
        by_id.setdefault(user_uuid(owner), []).append(owner)
    if not by_id:
        return set()
    sql = f"SELECT u.id FROM users u WHERE u.id = ANY($1::uuid[]) AND {LIVE_PLAN_SQL}"
    rows = await db.fetch(sql, list(by_id), now)
    return {owner for row in rows for owner in by_id[row["id"]]}


async def disabled_owners(db: Any, owners: Iterable[str]) -> set[str]:
    """Return those of ``owners`` (token subjects) whose account the operator disabled, billing or not.

    ``db`` is an ``asyncpg.Pool`` or ``Connection``. An owner without an account row is not disabled.
    """
    by_id: dict[uuid.UUID, list[str]] = {}
    for owner in set(owners):
        by_id.setdefault(user_uuid(owner), []).append(owner)
    if not by_id:
        return set()
    rows = await db.fetch("SELECT id FROM users WHERE id = ANY($1::uuid[]) AND disabled_at IS NOT NULL", list(by_id))
    return {owner for row in rows for owner in by_id[row["id"]]}


async def refresh_periodically(refresh: Callable[[], Awaitable[None]], seconds: float = PLAN_REFRESH_SECONDS) -> None:
    """Await ``refresh`` every ``seconds`` until cancelled; PostgreSQL unreachable: warn and go on.

    ``refresh`` replaces its answer only when it has a new one, so a failed read keeps the last.
    """
    while True:
        await asyncio.sleep(seconds)
        try:
            await refresh()
        except (OSError, asyncpg.PostgresError) as exc:  # the loop boundary: keep the last answer
            log.warning("reading the rule owners' plans failed: %s", exc)
