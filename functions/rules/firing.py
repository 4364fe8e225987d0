"""When a true predicate fires: the frequency rules, the fired-minutes index and ``recent()``.

One fact per (rule, symbol) is kept: the minutes it fired at (for ``on_change`` also the minutes
its predicate was true). Every decision is a pure function of that record and the minute, so a
redelivered or replayed minute re-derives the same answer: a minute that already fired "fires
again" with the same alert id (the publish is retried, JetStream's duplicate window and
``ON CONFLICT DO NOTHING`` drop the copy), and a minute that was held back by a cooldown stays held
back. ``RedisFiringState`` decides atomically in a Lua script, so several workers never double-fire;
``MemoryFiringState`` is the same logic in-process for the backtest.

Frequencies (rules.md): ``once_per_bar_close`` fires every minute the predicate is true;
``cooldown`` D fires at minute t only if the rule's last firing before t was at or before t - D;
``on_change`` fires when the predicate is true at t but was not at t - 1 minute.
"""

from __future__ import annotations

import bisect
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from screener.events.models import MINUTE_MS


@dataclass(frozen=True)
class Candidate:
    """A rule whose predicate is true for ``symbol`` at ``minute``: fire it or not?"""

    rule_type: str
    symbol: str
    minute: int
    frequency: str
    cooldown_ms: int


@dataclass(frozen=True)
class RecentQuery:
    """Did ``rule_type`` fire for ``symbol`` at a minute m with ``start <= m < end``?"""

    rule_type: str
    symbol: str
    start: int
    end: int


class FiringState(Protocol):
    """The record of firings that frequencies and ``recent()`` read."""

    async def decide(self, candidates: Sequence[Candidate]) -> list[bool]:
        """Return, per candidate, whether it fires; record the firings."""
        ...

    async def recent(self, queries: Sequence[RecentQuery]) -> list[bool]:
        """Return, per query, whether the rule fired for the symbol in the range."""
        ...


class MemoryFiringState:
    """``FiringState`` in a dict: the backtest's, with the exact decisions of the Redis script."""

    def __init__(self) -> None:
        self._fired: dict[tuple[str, str], list[int]] = defaultdict(list)
        self._true: dict[tuple[str, str], set[int]] = defaultdict(set)

    async def decide(self, candidates: Sequence[Candidate]) -> list[bool]:
        """Return, per candidate, whether it fires; record the firings."""
        return [self._decide(c) for c in candidates]

    def _decide(self, c: Candidate) -> bool:
        fired = self._fired[(c.rule_type, c.symbol)]
        at = bisect.bisect_left(fired, c.minute)
        if at < len(fired) and fired[at] == c.minute:
            return True
        if c.frequency == "cooldown":
            fire = at == 0 or fired[at - 1] <= c.minute - c.cooldown_ms
        elif c.frequency == "on_change":
            trues = self._true[(c.rule_type, c.symbol)]
            trues.add(c.minute)
            fire = c.minute - MINUTE_MS not in trues
        else:
            fire = True
        if fire:
            fired.insert(at, c.minute)
        return fire

    async def recent(self, queries: Sequence[RecentQuery]) -> list[bool]:
        """Return, per query, whether the rule fired for the symbol in the range."""
        answers = []
        for q in queries:
            fired = self._fired.get((q.rule_type, q.symbol), [])
            at = bisect.bisect_left(fired, q.start)
            answers.append(at < len(fired) and fired[at] < q.end)
        return answers

    def fired(self, rule_type: str, symbol: str) -> list[int]:
        """Return the minutes ``rule_type`` fired at for ``symbol``, in order."""
        return list(self._fired.get((rule_type, symbol), []))
