"""Evaluate the rules over batches of metrics snapshots and turn firings into alerts.

One minute is evaluated at a time, for all its symbols at once (vectorised), minutes in ascending
order, so that ``recent()`` at minute t sees every firing of the minutes before t.

Lookups that leave the process (another symbol's metrics, ``recent()``) are made only where they can
change a result: the rules are evaluated first with those values unknown, and Kleene logic is
monotone, so only rows whose predicate is still UNKNOWN need them. Then the rules are evaluated
again with the answers. ``BTC.c1h`` is thus fetched only for the rare rows where the rest of a
Surge 60 V2 rule already holds.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from functions.rules.compiler import FALSE, TRUE, UNKNOWN, Scope, TruthArray
from functions.rules.config import RulesConfig
from functions.rules.firing import Candidate, FiringState, RecentQuery
from functions.rules.frame import Frame, metric_value
from functions.rules.ruleset import CompiledRule
from screener.events.models import Alert, MetricsSnapshot, alert_id, minute_close_iso


class CrossSymbols(Protocol):
    """Where the metrics of other symbols at the same minute come from (``BTC.c1h``)."""

    async def fetch(self, symbols: Collection[str], minute: int) -> dict[str, MetricsSnapshot | None]:
        """Return each symbol's snapshot of ``minute``, None where it has none and will not have one.

        Raise ``TransientError`` when a symbol's snapshot may still arrive.
        """
        ...


class NoCrossSymbols:
    """``CrossSymbols`` for a closed world: a symbol not evaluated in the same minute reads as null."""

    async def fetch(self, symbols: Collection[str], minute: int) -> dict[str, MetricsSnapshot | None]:
        """Return None for every symbol."""
        return dict.fromkeys(symbols)


@dataclass(frozen=True)
class Evaluation:
    """The outcome of one batch: the alerts that fired and how many symbol-minutes were evaluated."""

    alerts: list[Alert]
    symbol_minutes: int


class RuleEngine:
    """Evaluate ``config`` with firings recorded in ``firing``; ``config`` may be replaced between batches."""

    def __init__(self, config: RulesConfig, firing: FiringState, cross: CrossSymbols | None = None) -> None:
        self.config = config
        self._firing = firing
        self._cross = cross or NoCrossSymbols()

    async def evaluate(self, snapshots: Iterable[MetricsSnapshot]) -> Evaluation:
        """Evaluate every snapshot (closed minutes: all enabled rules; forming ones: ``live`` rules)."""
        config = self.config  # one consistent rule set for the whole batch, even if a reload lands
        latest: dict[tuple[int, bool, str], MetricsSnapshot] = {}
        for snapshot in snapshots:
            latest[(snapshot.minute, snapshot.provisional, snapshot.symbol)] = snapshot
        groups: dict[tuple[int, bool], list[MetricsSnapshot]] = defaultdict(list)
        for (minute, provisional, _), snapshot in sorted(latest.items()):
            groups[(minute, provisional)].append(snapshot)
        alerts: list[Alert] = []
        for (minute, provisional), rows in sorted(groups.items(), key=lambda item: (item[0][0], not item[0][1])):
            alerts.extend(await self.evaluate_minute(config, minute, rows, live_only=provisional))
        return Evaluation(alerts, len(latest))

    async def evaluate_minute(
        self, config: RulesConfig, minute: int, rows: Sequence[MetricsSnapshot], *, live_only: bool = False
    ) -> list[Alert]:
        """Evaluate one minute of ``rows`` (one snapshot per symbol); record and return the firings."""
        run = config.enabled(live_only=live_only)
        if not run or not rows:
            return []
        needed = config.ruleset.needed_for(run)
        others: dict[str, MetricsSnapshot | None] = {}
        recent: dict[tuple[str, int], TruthArray] = {}
        frame = Frame(minute, rows, others)
        truth = _evaluate(needed, Scope(frame, {}, recent))

        missing = self._missing_symbols(needed, truth, frame)
        if missing and not live_only:
            others.update(await self._cross.fetch(missing, minute))
            frame = Frame(minute, rows, others)
            truth = _evaluate(needed, Scope(frame, {}, recent))

        queries = _recent_queries(needed, truth, frame)
        if queries:
            answers = await self._firing.recent([q for _, _, q in queries])
            for key in {key for key, _, _ in queries}:
                recent[key] = np.full(frame.size, UNKNOWN, dtype=np.int8)
            for (key, row, _), answer in zip(queries, answers, strict=True):
                recent[key][row] = TRUE if answer else FALSE
            truth = _evaluate(needed, Scope(frame, {}, recent))

        return await self._fire(config, run, truth, frame)

    @staticmethod
    def _missing_symbols(needed: list[CompiledRule], truth: dict[str, TruthArray], frame: Frame) -> set[str]:
        missing: set[str] = set()
        for compiled in needed:
            wanted = {m.symbol for m in compiled.metrics if m.symbol is not None and frame.other(m.symbol) is None}
            if wanted and bool(np.any(truth[compiled.rule_type] == UNKNOWN)):
                missing |= wanted
        return missing

    async def _fire(
        self, config: RulesConfig, run: list[str], truth: dict[str, TruthArray], frame: Frame
    ) -> list[Alert]:
        ruleset = config.ruleset
        candidates: list[tuple[CompiledRule, int]] = []
        for rule_type in run:
            compiled = ruleset.by_type[rule_type]
            candidates.extend((compiled, int(row)) for row in np.flatnonzero(truth[rule_type] == TRUE))
        if not candidates:
            return []
        decisions = await self._firing.decide(
            [
                Candidate(
                    c.rule_type,
                    frame.snapshots[row].symbol,
                    frame.minute,
                    c.rule.frequency,
                    c.rule.cooldown_seconds * 1000,
                )
                for c, row in candidates
            ]
        )
        return [
            _alert(config, compiled, frame, row)
            for (compiled, row), fires in zip(candidates, decisions, strict=True)
            if fires
        ]


def _evaluate(needed: list[CompiledRule], scope: Scope) -> dict[str, TruthArray]:
    truth: dict[str, TruthArray] = {}
    scope.truth = truth
    for compiled in needed:  # in dependency order: a referenced rule is evaluated first
        truth[compiled.rule_type] = compiled.predicate(scope)
    return truth


def _recent_queries(
    needed: list[CompiledRule], truth: dict[str, TruthArray], frame: Frame
) -> list[tuple[tuple[str, int], int, RecentQuery]]:
    rows_by_key: dict[tuple[str, int], set[int]] = defaultdict(set)
    for compiled in needed:
        if not compiled.recents:
            continue
        unknown = np.flatnonzero(truth[compiled.rule_type] == UNKNOWN)
        for key in compiled.recents:
            rows_by_key[key].update(int(r) for r in unknown)
    queries = []
    for (rule_type, duration), rows in sorted(rows_by_key.items()):
        for row in sorted(rows):
            query = RecentQuery(rule_type, frame.snapshots[row].symbol, frame.minute - duration, frame.minute)
            queries.append(((rule_type, duration), row, query))
    return queries


def _alert(config: RulesConfig, compiled: CompiledRule, frame: Frame, row: int) -> Alert:
    snapshot = frame.snapshots[row]
    rule = compiled.rule
    metadata: dict[str, float | None] = {}
    for metric in config.ruleset.read_metrics(rule.rule_type):
        source = snapshot if metric.symbol is None else frame.other(metric.symbol)
        value = metric_value(source, metric.name, rule.min_coverage)
        metadata[metric.label] = None if math.isnan(value) else value
    return Alert(
        id=alert_id(rule.rule_type, snapshot.symbol, frame.minute),
        symbol=snapshot.symbol,
        rule_type=rule.rule_type,
        description=rule.description or rule.name,
        timestamp=minute_close_iso(frame.minute),
        price=snapshot.last_price,
        metadata=metadata,
        minute=frame.minute,
        audience=config.audiences[rule.rule_type],
    )
