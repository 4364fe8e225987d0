"""Who may use the paid features now, asked of PostgreSQL: shared by the notifier and the gateway's stream.

The rule is the gateway's ``gateway.accounts.plans.entitled`` (client.md decision 7), in SQL so one
query answers for many users; tests/functions/notifier/test_plan_gating.py holds the two together.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from datetime import datetime
from typing import Any

from screener.subjects import user_uuid

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
