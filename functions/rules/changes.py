"""What a rules change notification says changed: which rules, which users' switches, or everything.

The row triggers of 008_targeted_rule_notifications.sql send ``{"table": "alert_rules", "rule_type",
"owner"}`` or ``{"table": "user_settings", "user_id"}`` on ``screener_rules_changed``. Consumers
(rules workers, gateways) merge the notifications of a short burst into one ``RuleChanges`` and
reload only those rows. A payload they cannot read (an older trigger's bare table name) means
"reload everything", so a database not yet migrated is still followed correctly.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass

MAX_NAME = 256


@dataclass(frozen=True)
class RuleChanges:
    """Rules whose rows changed, users whose switches changed, or ``everything`` (reload all)."""

    rule_types: frozenset[str] = frozenset()
    users: frozenset[str] = frozenset()
    everything: bool = False

    @classmethod
    def all(cls) -> RuleChanges:
        """Return the change that asks for a full reload."""
        return cls(everything=True)

    @classmethod
    def parse(cls, payload: str) -> RuleChanges:
        """Return the change one notification payload describes (unreadable: everything)."""
        try:
            data = json.loads(payload)
        except ValueError:
            return cls.all()
        if not isinstance(data, dict):
            return cls.all()
        table = data.get("table")
        if table == "alert_rules" and _name(data.get("rule_type")):
            return cls(rule_types=frozenset({data["rule_type"]}))
        if table == "user_settings" and _name(data.get("user_id")):
            return cls(users=frozenset({data["user_id"]}))
        return cls.all()

    @classmethod
    def merge(cls, changes: Iterable[RuleChanges]) -> RuleChanges:
        """Return the union of ``changes``."""
        rule_types: set[str] = set()
        users: set[str] = set()
        for change in changes:
            if change.everything:
                return cls.all()
            rule_types |= change.rule_types
            users |= change.users
        return cls(frozenset(rule_types), frozenset(users))

    def __bool__(self) -> bool:
        return self.everything or bool(self.rule_types) or bool(self.users)


def _name(value: object) -> bool:
    return isinstance(value, str) and 0 < len(value) <= MAX_NAME
