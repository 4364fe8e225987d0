"""Rules as data: the ``Rule`` row, and a ``RuleSet`` compiled, checked and ordered for evaluation."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from functions.rules import ast
from functions.rules.compiler import Predicate, compile_predicate
from functions.rules.errors import ExpressionError, RuleCycleError
from functions.rules.parser import parse

log = logging.getLogger(__name__)

Frequency = Literal["once_per_bar_close", "cooldown", "on_change"]
RULE_TYPE_PATTERN = r"^[a-z][a-z0-9_]{0,63}$"


class Rule(BaseModel):
    """One row of ``alert_rules`` (rules.md, "Behaviour every rule shares")."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    rule_type: str = Field(pattern=RULE_TYPE_PATTERN)
    name: str = Field(min_length=1, max_length=120)
    description: str = ""
    category: str = "custom"
    expression: str = Field(min_length=1)
    enabled: bool = True
    default_on: bool = True
    frequency: Frequency = "cooldown"
    cooldown_seconds: int = Field(default=300, ge=0)
    live: bool = False
    min_coverage: float = Field(default=1.0, ge=0.0, le=1.0)
    owner: str | None = None


@dataclass(frozen=True)
class CompiledRule:
    """A rule with its syntax tree, its compiled predicate and what the predicate reads."""

    rule: Rule
    tree: ast.Expr
    predicate: Predicate
    references: frozenset[str]  # rules whose predicate this one reads at the same minute
    recents: frozenset[tuple[str, int]]  # (rule_type, duration_ms) of its recent() calls
    metrics: tuple[ast.Metric, ...]  # metrics it reads directly, in order of appearance
    named: tuple[tuple[str, int], ...] = ()  # every rule it names, with the position

    @property
    def rule_type(self) -> str:
        """Return the rule's id."""
        return self.rule.rule_type


# Compiled expressions by their text: a reload or a validation recompiles only rules whose text is
# new. Bounded: a max-size rule compiles to about a hundred kilobytes of tree and closures.
COMPILE_CACHE_SIZE = 1024


@dataclass(frozen=True)
class _Compiled:
    tree: ast.Expr
    predicate: Predicate
    references: frozenset[str]
    recents: frozenset[tuple[str, int]]
    metrics: tuple[ast.Metric, ...]
    named: tuple[tuple[str, int], ...]  # every rule it names (plain or in recent()), with its position


@lru_cache(maxsize=COMPILE_CACHE_SIZE)
def _compile_text(expression: str, min_coverage: float) -> _Compiled:
    tree = parse(expression)
    nodes = ast.walk(tree)
    metrics: list[ast.Metric] = []
    for node in nodes:
        if isinstance(node, ast.Metric) and node not in metrics:
            metrics.append(node)
    metrics.sort(key=lambda m: m.pos)
    unique: dict[str, ast.Metric] = {}
    for metric in metrics:
        unique.setdefault(metric.label, metric)
    return _Compiled(
        tree=tree,
        predicate=compile_predicate(tree, min_coverage),
        references=frozenset(n.rule_type for n in nodes if isinstance(n, ast.RuleRef)),
        recents=frozenset((n.rule_type, n.duration_ms) for n in nodes if isinstance(n, ast.Recent)),
        metrics=tuple(unique.values()),
        named=tuple((n.rule_type, n.pos) for n in nodes if isinstance(n, ast.RuleRef | ast.Recent)),
    )


def compile_rule(rule: Rule) -> CompiledRule:
    """Compile ``rule`` (cached by its text); raise ``ExpressionError`` naming the rule, position and reason."""
    try:
        parts = _compile_text(rule.expression, rule.min_coverage)
    except ExpressionError as exc:
        raise ExpressionError(exc.reason, exc.position, exc.expression, rule.rule_type) from None
    return CompiledRule(
        rule=rule,
        tree=parts.tree,
        predicate=parts.predicate,
        references=parts.references,
        recents=parts.recents,
        metrics=parts.metrics,
        named=parts.named,
    )


class RuleSet:
    """Compiled rules in an order where every rule comes after the rules it references.

    ``recent()`` reads only minutes before the evaluated one, so a rule may name itself or a rule
    that names it inside ``recent()``; a cycle of plain references is an error.
    """

    def __init__(self, compiled: Sequence[CompiledRule]) -> None:
        by_type = {c.rule_type: c for c in compiled}
        self._check_references(by_type)
        self.ordered: tuple[CompiledRule, ...] = tuple(by_type[t] for t in _topological_order(by_type))
        self.by_type = by_type
        self.cross_symbols = frozenset(m.symbol for c in compiled for m in c.metrics if m.symbol is not None)

    @classmethod
    def build(cls, rules: Iterable[Rule], *, strict: bool = True) -> RuleSet:
        """Compile ``rules``; a broken rule raises when ``strict``, else it and its dependants are skipped."""
        compiled: dict[str, CompiledRule] = {}
        for rule in rules:
            try:
                compiled[rule.rule_type] = compile_rule(rule)
            except ExpressionError:
                if strict:
                    raise
                log.exception("skipping rule %s: its expression is invalid", rule.rule_type)
        if strict:
            return cls(list(compiled.values()))
        while True:
            try:
                return cls(list(compiled.values()))
            except _BrokenReference as exc:
                log.error("skipping rule %s: %s", exc.referrer, exc)
                del compiled[exc.referrer]
            except RuleCycleError as exc:
                log.error("skipping rules %s: %s", exc.cycle, exc)
                for rule_type in set(exc.cycle):
                    compiled.pop(rule_type, None)

    def __len__(self) -> int:
        return len(self.ordered)

    def needed_for(self, rule_types: Iterable[str]) -> list[CompiledRule]:
        """Return, in evaluation order, ``rule_types`` plus every rule they reference."""
        needed: set[str] = set()
        stack = list(rule_types)
        while stack:
            current = stack.pop()
            if current in needed:
                continue
            needed.add(current)
            stack.extend(self.by_type[current].references)
        return [c for c in self.ordered if c.rule_type in needed]

    def read_metrics(self, rule_type: str) -> list[ast.Metric]:
        """Return the metrics ``rule_type`` reads, through its references too, without repeats."""
        seen: dict[str, ast.Metric] = {}
        for compiled in [self.by_type[rule_type], *self.needed_for(self.by_type[rule_type].references)]:
            for metric in compiled.metrics:
                seen.setdefault(metric.label, metric)
        return list(seen.values())

    @staticmethod
    def _check_references(by_type: dict[str, CompiledRule]) -> None:
        for compiled in by_type.values():
            for name, position in compiled.named:
                if name not in by_type:
                    raise _BrokenReference(compiled, name, position)


class _BrokenReference(ExpressionError):
    def __init__(self, compiled: CompiledRule, name: str, position: int) -> None:
        super().__init__(f"unknown rule or metric {name!r}", position, compiled.rule.expression, compiled.rule_type)
        self.referrer = compiled.rule_type


def _topological_order(by_type: dict[str, CompiledRule]) -> list[str]:
    order: list[str] = []
    state: dict[str, int] = {}  # 1 visiting, 2 done
    for start in sorted(by_type):
        if state.get(start) == 2:
            continue
        # Iterative DFS keeps a path, so a cycle is reported as the rules that form it.
        path: list[str] = [start]
        iterators = [iter(sorted(by_type[start].references))]
        state[start] = 1
        while path:
            child = next(iterators[-1], None)
            if child is None:
                state[path[-1]] = 2
                order.append(path.pop())
                iterators.pop()
                continue
            if state.get(child) == 1:
                raise RuleCycleError([*path[path.index(child) :], child])
            if state.get(child) != 2:
                state[child] = 1
                path.append(child)
                iterators.append(iter(sorted(by_type[child].references)))
    return order


def validate_rule(rule: Rule, existing: Iterable[Rule]) -> None:
    """Check that ``rule`` compiles and fits with ``existing`` rules; raise ``RuleError`` if not.

    The gateway calls this before it saves a new or edited rule, so a bad expression never
    reaches a worker.
    """
    others = [r for r in existing if r.rule_type != rule.rule_type]
    RuleSet.build([*others, rule], strict=True)
