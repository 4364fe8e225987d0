"""The alert count of ``screener up``'s progress line, as a new user on the dashboard sees it.

The ALERTS stream holds every alert, but the dashboard and ``GET /api/alerts`` show an anonymous
visitor only public alerts: rules that are off by default (Whale Detector, ...) and users' own rules
are recorded for those who switch them on. A console that counts the stream would promise alerts
the dashboard never shows, so it counts what an anonymous visitor sees and names what is hidden.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import asyncpg

from gateway.history import VISIBLE_TO

_COUNTS = f"""
SELECT h.rule_type, coalesce(r.name, h.rule_type) AS name, (r.owner IS NOT NULL) AS own,
       {VISIBLE_TO.format(p="NULL::text")} AS shown, count(*) AS n
FROM alert_history h LEFT JOIN alert_rules r ON r.rule_type = h.rule_type
GROUP BY 1, 2, 3, 4
"""


@dataclass(frozen=True)
class AlertCounts:
    """Recorded alerts: how many an anonymous visitor sees, and the hidden ones per rule name."""

    shown: int = 0
    hidden: dict[str, int] = field(default_factory=dict)
    own_rules: int = 0  # alerts of users' own rules, seen only by their owners

    @property
    def total(self) -> int:
        """Return every recorded alert."""
        return self.shown + sum(self.hidden.values()) + self.own_rules

    def describe(self) -> str:
        """Return the progress line's alert part, e.g. ``alerts 94 on the dashboard (+7 hidden: ...)``."""
        text = f"alerts {self.shown} on the dashboard"
        hidden = [f"{name} {count}" for name, count in sorted(self.hidden.items())]
        if hidden:
            off = sum(self.hidden.values())
            text += f" (+{off} of rules off by default, shown once switched on: {', '.join(hidden)})"
        if self.own_rules:
            text += f" (+{self.own_rules} of users' own rules)"
        return text


async def alert_counts(conn: asyncpg.Connection) -> AlertCounts:
    """Count the recorded alerts by who sees them."""
    shown = own = 0
    hidden: dict[str, int] = {}
    for row in await conn.fetch(_COUNTS):
        if row["shown"]:
            shown += int(row["n"])
        elif row["own"]:
            own += int(row["n"])
        else:
            hidden[row["name"]] = hidden.get(row["name"], 0) + int(row["n"])
    return AlertCounts(shown, hidden, own)
