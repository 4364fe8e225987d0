"""Which alerts each user's stream delivers: rule defaults plus personal switches, cached in memory.

The cache follows ``screener_rules_changed``: the row triggers of 008 say which rule or which user's
switches changed, and only those rows are read again (a switch flipped through another replica takes
effect here within moments; a preferences-only write notifies nothing). The rules function's
``RulesWatcher`` does the listening: a LISTEN ends with its session (a PostgreSQL restart, a killed
backend), so it reconnects and reads everything again, since notifications sent while nobody
listened are gone.

With billing on, a user's own rules are a paid feature (client.md decision 7): the alerts of an
owner without a live plan reach no stream. Plans end by the clock and by Whop's webhooks (to any
replica), so the owners' plans are read again every ``screener.db.plans.PLAN_REFRESH_SECONDS`` and
after each reload (the rules function gates their evaluation the same way).
"""

from __future__ import annotations

import asyncio
import json
import logging
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import asyncpg

from functions.rules.changes import RuleChanges
from functions.rules.reload import RulesWatcher
from screener.db.plans import entitled_owners, refresh_periodically
from screener.events.models import Alert

log = logging.getLogger(__name__)
# Row notifications this close together are read as one change (a user's switches saved at once).
DEBOUNCE_SECONDS = 0.05


@dataclass(frozen=True)
class RuleInfo:
    """What the stream needs to know about a rule."""

    rule_type: str
    name: str
    default_on: bool
    owner: str | None


class RuleSwitches:
    """An in-memory view of alert_rules and user_settings.rules."""

    def __init__(self, pool: asyncpg.Pool, *, gate_plans: bool = False) -> None:
        """Read ``pool``; with ``gate_plans`` (billing on), stream owners' alerts only while their plan is live."""
        self._pool = pool
        self._gate_plans = gate_plans
        # Owners of rules whose plan has ended: their own alerts go to no stream.
        self.lapsed_owners: frozenset[str] = frozenset()
        self._plans_task: asyncio.Task[None] | None = None
        self.rules: dict[str, RuleInfo] = {}
        self._overrides: dict[str, dict[str, bool]] = {}
        self._watcher = RulesWatcher(pool.acquire, self.apply, debounce_seconds=DEBOUNCE_SECONDS)
        self.version = 0

    async def start(self) -> None:
        """Listen for changes, then load the tables (so no change falls between the two)."""
        await self._watcher.start()
        await self.reload()
        if self._gate_plans:
            self._plans_task = asyncio.create_task(
                refresh_periodically(self.refresh_plans), name="gateway-switches-plans"
            )

    async def close(self) -> None:
        """Stop listening."""
        if self._plans_task:
            self._plans_task.cancel()
            await asyncio.gather(self._plans_task, return_exceptions=True)
        await self._watcher.close()

    async def reload(self) -> None:
        """Read every rule and every user's overrides."""
        async with self._pool.acquire() as conn:
            rules = await conn.fetch("SELECT rule_type, name, default_on, owner FROM alert_rules")
            settings = await conn.fetch("SELECT user_id, rules FROM user_settings")
        self.rules = {r["rule_type"]: RuleInfo(r["rule_type"], r["name"], r["default_on"], r["owner"]) for r in rules}
        self._overrides = {s["user_id"]: _bool_map(s["rules"]) for s in settings}
        await self.refresh_plans()
        self.version += 1

    async def refresh_plans(self) -> None:
        """Read again which rule owners have a live plan (billing on; otherwise nobody is gated)."""
        if not self._gate_plans:
            return
        owners = {info.owner for info in self.rules.values() if info.owner is not None}
        live = await entitled_owners(self._pool, owners, datetime.now(UTC))
        self.lapsed_owners = frozenset(owners - live)

    async def apply(self, changes: RuleChanges) -> None:
        """Read again only the rules and users ``changes`` names (everything: ``reload``)."""
        if changes.everything:
            await self.reload()
            return
        async with self._pool.acquire() as conn:
            rules = await conn.fetch(
                "SELECT rule_type, name, default_on, owner FROM alert_rules WHERE rule_type = any($1::text[])",
                sorted(changes.rule_types),
            )
            settings = await conn.fetch(
                "SELECT user_id, rules FROM user_settings WHERE user_id = any($1::text[])", sorted(changes.users)
            )
        for rule_type in changes.rule_types:
            self.rules.pop(rule_type, None)
        for r in rules:
            self.rules[r["rule_type"]] = RuleInfo(r["rule_type"], r["name"], r["default_on"], r["owner"])
        for user_id in changes.users:
            self._overrides.pop(user_id, None)
        for row in settings:
            self._overrides[row["user_id"]] = _bool_map(row["rules"])
        if changes.rule_types:
            await self.refresh_plans()  # a new rule may have a new owner
        self.version += 1

    def set_user_rule(self, user_id: str, rule_type: str, enabled: bool) -> None:
        """Apply a switch this process just wrote (the NOTIFY round trip will confirm it)."""
        self._overrides.setdefault(user_id, {})[rule_type] = enabled

    def enabled_for(self, user_id: str | None, rule_type: str) -> bool:
        """Return whether ``rule_type`` is on for ``user_id`` (anonymous: the rule's default)."""
        info = self.rules.get(rule_type)
        default = info.default_on if info else True
        if user_id is None:
            return default
        return self._overrides.get(user_id, {}).get(rule_type, default)

    def delivers(self, user_id: str | None, alert: Alert) -> bool:
        """Return whether ``alert`` belongs on ``user_id``'s stream now."""
        audience = alert.audience
        if audience.owner is not None:
            return (
                user_id == audience.owner
                and audience.owner not in self.lapsed_owners
                and self.enabled_for(user_id, alert.rule_type)
            )
        if not audience.public and (user_id is None or user_id not in audience.users):
            return False
        return self.enabled_for(user_id, alert.rule_type)

    def visible_to(self, user_id: str | None, rule_type: str) -> bool:
        """Return whether ``rule_type`` exists and ``user_id`` may see it (global, or their own)."""
        info = self.rules.get(rule_type)
        return info is not None and (info.owner is None or info.owner == user_id)

    def name_of(self, rule_type: str) -> str:
        """Return the rule's product name (alert_rules.name), or the id when unknown."""
        info = self.rules.get(rule_type)
        return info.name if info else rule_type


def _bool_map(value: Any) -> dict[str, bool]:
    data = json.loads(value) if isinstance(value, str | bytes) else value
    if not isinstance(data, dict):
        return {}
    return {str(k): v for k, v in data.items() if isinstance(v, bool)}
