"""Evaluate the rules over whole blocks of minutes: every (symbol, minute) of a block is one row.

The compiled predicates (``compiler``) evaluate numpy columns whatever the rows stand for, so a
``BlockFrame`` hands them a block's metrics with one row per symbol and minute. What is sequential
in time stays exact and cheap: ``recent()`` reads the firings of minutes before, so rules run in an
order where every rule a ``recent()`` names has fired for the whole block first, and the frequency
decisions (cooldown, on_change) walk each symbol's true minutes in order. Rules that name each other
through ``recent()`` in a cycle (or a rule itself) run minute by minute, as the engine does.

The decisions are those of ``MemoryFiringState`` and the engine's (tests compare the alerts with
the minute-by-minute pipeline's).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from itertools import repeat
from typing import NamedTuple

import numpy as np
import numpy.typing as npt

from functions.calculator.columns import ColumnMetrics
from functions.rules.compiler import FALSE, TRUE, Scope, TruthArray
from functions.rules.config import RulesConfig
from functions.rules.ruleset import CompiledRule
from functions.rules.vocabulary import METRICS, MetricSpec
from screener.events.models import MINUTE_MS, Alert, AlertAudience, alert_id, minute_close_iso

FloatArray = npt.NDArray[np.float64]
BoolArray = npt.NDArray[np.bool_]


def metric_array(metrics: ColumnMetrics, spec: MetricSpec) -> FloatArray:
    """Return the (S, T) values of one metric of the vocabulary, ungated."""
    match spec.kind:
        case "price":
            return metrics.last_price
        case "change_14d":
            return metrics.change_14d
        case "indicator" | "indicator_1m":
            return metrics.indicators[spec.timeframe or ""][spec.field]
        case "fibonacci":
            return metrics.fibonacci[spec.field]
        case "coverage":
            return metrics.windows[spec.timeframe or ""]["coverage"]
        case _:
            return metrics.windows[spec.timeframe or ""][spec.field]


def gated(metrics: ColumnMetrics, name: str, min_coverage: float) -> FloatArray:
    """Return metric ``name`` (S, T), NaN where its window's coverage is below ``min_coverage``."""
    spec = METRICS[name]
    values = metric_array(metrics, spec)
    window = spec.gated_window
    if window is None or (window in metrics.full_coverage and min_coverage <= 1.0):
        return values
    covered = metrics.windows[window]["coverage"] >= min_coverage
    return values if covered.all() else np.where(covered, values, np.nan)


@dataclass(frozen=True)
class SymbolRow:
    """Where another symbol's metrics are: a block's metrics and the symbol's row in them."""

    metrics: ColumnMetrics
    row: int


class BlockFrame:
    """A block's metrics as the rows of a ``Frame``: row ``s * T + c`` is symbol s at column c.

    ``others`` gives the symbols rules name (``BTC.c1h``) that are not rows of this block; a named
    symbol reads as null at minutes it has no candle (as the engine's closed world does).
    """

    def __init__(
        self,
        metrics: ColumnMetrics,
        symbols: Sequence[str],
        others: Mapping[str, SymbolRow],
        rows: npt.NDArray[np.int64] | None = None,
        block_columns: dict[tuple[str, str | None, float], FloatArray] | None = None,
    ) -> None:
        self.metrics = metrics
        self.minutes = metrics.present.shape[1]
        self._symbol_names = list(symbols)
        self._others = others
        self._rows = rows
        self.size = metrics.present.size if rows is None else len(rows)
        # The whole block's columns, shared with the frames of its subsets (each selects its rows).
        self._block_columns = {} if block_columns is None else block_columns
        self._columns: dict[tuple[str, str | None, float], FloatArray] = {}
        self._symbols: npt.NDArray[np.object_] | None = None

    @property
    def symbols(self) -> npt.NDArray[np.object_]:
        """Return each row's symbol."""
        if self._symbols is None:
            names = np.array(self._symbol_names, dtype=object)
            # A subset's rows only (row s * T + c is symbol s), not the whole block's repeated.
            self._symbols = np.repeat(names, self.minutes) if self._rows is None else names[self._rows // self.minutes]
        return self._symbols

    def select(self, rows: npt.NDArray[np.int64]) -> BlockFrame:
        """Return the frame of some rows only (indices of this frame's rows, in order)."""
        chosen = rows if self._rows is None else self._rows[rows]
        return BlockFrame(self.metrics, self._symbol_names, self._others, chosen, self._block_columns)

    def column(self, name: str, symbol: str | None, min_coverage: float) -> FloatArray:
        """Return metric ``name`` of every row (of ``symbol`` at the row's minute), NaN where null or gated."""
        key = (name, symbol, min_coverage)
        cached = self._columns.get(key)
        if cached is not None:
            return cached
        values = self._block_columns.get(key)
        if values is None:
            values = self._block_columns[key] = self._full(name, symbol, min_coverage).reshape(-1)
        if self._rows is not None:
            values = values[self._rows]
        self._columns[key] = values
        return values

    def _full(self, name: str, symbol: str | None, min_coverage: float) -> FloatArray:
        if symbol is None:
            return gated(self.metrics, name, min_coverage)
        where = self._locate(symbol)
        shape = self.metrics.present.shape
        if where is None:
            return np.full(shape, np.nan)
        values = gated(where.metrics, name, min_coverage)[where.row]
        values = np.where(where.metrics.present[where.row], values, np.nan)
        return np.broadcast_to(values, shape)

    def _locate(self, symbol: str) -> SymbolRow | None:
        if symbol in self._symbol_names:
            return SymbolRow(self.metrics, self._symbol_names.index(symbol))
        return self._others.get(symbol)


@dataclass
class _History:
    """One run rule's firings that later blocks need: the last ``keep`` minutes of each symbol, and more."""

    keep: int  # minutes of firings ``recent()`` may look back at
    fired: BoolArray  # (S, keep): the firings of the minutes just before the next block
    last_fired: npt.NDArray[np.int64]  # (S,) minute number of the latest firing, very negative if none
    true_before: BoolArray  # (S,) whether the predicate was true at the minute before the next block


@dataclass
class BlockEvaluator:
    """Evaluate ``config``'s enabled rules over consecutive blocks of one list of symbols."""

    config: RulesConfig
    symbols: list[str]
    _history: dict[str, _History] = field(init=False, default_factory=dict)
    _plan: list[list[CompiledRule]] = field(init=False, default_factory=list)

    def __post_init__(self) -> None:
        ruleset = self.config.ruleset
        self._run = self.config.enabled()
        self._needed = ruleset.needed_for(self._run)
        self._plan = _stages(self._needed, set(self._run))
        looks = dict.fromkeys(self._run, 0)
        for compiled in self._needed:
            for rule_type, duration in compiled.recents:
                if rule_type in looks:
                    looks[rule_type] = max(looks[rule_type], -(-duration // MINUTE_MS))
        rows = len(self.symbols)
        self._history = {
            rule_type: _History(
                keep,
                np.zeros((rows, keep), dtype=bool),
                np.full(rows, np.iinfo(np.int64).min // 2),
                np.zeros(rows, dtype=bool),
            )
            for rule_type, keep in looks.items()
        }

    def evaluate(
        self, frame: BlockFrame, evaluated: BoolArray, rows: npt.NDArray[np.int64] | None = None
    ) -> dict[str, BoolArray]:
        """Return, per enabled rule, where it fires (S, T) among the ``evaluated`` cells; record them.

        ``rows`` (indices into ``symbols``, ascending) says which symbols the frame holds when not
        all: the others have no minute to evaluate in the block, so nothing fires for them.
        """
        if rows is None:
            return self._evaluate(frame, evaluated)
        full = self._history
        self._history = {
            rule_type: _History(h.keep, h.fired[rows], h.last_fired[rows], h.true_before[rows])
            for rule_type, h in full.items()
        }
        try:
            fired = self._evaluate(frame, evaluated)
        finally:
            subset, self._history = self._history, full
        self.skip(evaluated.shape[1])
        for rule_type, history in full.items():
            done = subset[rule_type]
            history.fired[rows], history.last_fired[rows], history.true_before[rows] = (
                done.fired,
                done.last_fired,
                done.true_before,
            )
        return fired

    def skip(self, minutes: int) -> None:
        """Carry the firing history over a block of ``minutes`` in which no symbol fires."""
        shape = (len(self.symbols), minutes)
        for history in self._history.values():
            self._remember(history, None, None, shape)

    def _evaluate(self, frame: BlockFrame, evaluated: BoolArray) -> dict[str, BoolArray]:
        truth: dict[str, TruthArray] = {}
        fired: dict[str, BoolArray] = {}
        shape = evaluated.shape
        # 1 where evaluated, else 0: a predicate's value times it is FALSE (0) where not evaluated.
        evaluated_mask = None if bool(evaluated.all()) else evaluated.reshape(-1).view(np.int8)
        # recent() of a rule that has run in this block, once for the rules that read it (its firings are final).
        recents: dict[tuple[str, int], TruthArray] = {}
        for stage in self._plan:
            if len(stage) == 1 and not _self_recent(stage[0]):
                compiled = stage[0]
                recent: dict[tuple[str, int], TruthArray] = {}
                for key in compiled.recents:
                    found = recents.get(key)
                    if found is None:
                        found = self._recent(key, fired, shape)
                        if key[0] in fired:
                            recents[key] = found
                    recent[key] = found
                value = compiled.predicate(Scope(frame, truth, recent))
                if evaluated_mask is not None:
                    value = np.multiply(value, evaluated_mask, dtype=np.int8)
                truth[compiled.rule_type] = value
                if compiled.rule_type in self._history:
                    fired[compiled.rule_type] = self._decide(compiled, value.reshape(shape) == TRUE)
            else:
                self._minute_by_minute(stage, frame, evaluated, truth, fired)
        for rule_type, history in self._history.items():
            self._remember(history, fired.get(rule_type), truth.get(rule_type), shape)
        return {rule_type: fired[rule_type] for rule_type in self._run if rule_type in fired}

    def _recent(self, key: tuple[str, int], fired: Mapping[str, BoolArray], shape: tuple[int, int]) -> TruthArray:
        """Return recent(rule, duration) at every row: a firing in [t - duration, t)."""
        rule_type, duration = key
        history = self._history.get(rule_type)
        if history is None:  # a rule that does not run never fires
            return np.full(shape[0] * shape[1], FALSE, dtype=np.int8)
        span = -(-duration // MINUTE_MS)
        block = fired.get(rule_type, np.zeros(shape, dtype=bool))
        both = np.concatenate((history.fired, block), axis=1)
        counts = np.zeros((shape[0], both.shape[1] + 1), dtype=np.int64)
        np.cumsum(both, axis=1, out=counts[:, 1:])
        now = slice(history.keep, history.keep + shape[1])  # span <= keep: the window starts in ``both``
        window = counts[:, now] - counts[:, now.start - span : now.stop - span]
        return np.where(window > 0, TRUE, FALSE).astype(np.int8).reshape(-1)

    def _decide(self, compiled: CompiledRule, true: BoolArray) -> BoolArray:
        """Return where ``compiled`` fires given where its predicate is true (MemoryFiringState's rules)."""
        rule = compiled.rule
        history = self._history[compiled.rule_type]
        if rule.frequency == "once_per_bar_close" or (rule.frequency == "cooldown" and rule.cooldown_seconds <= 60):
            return true
        if rule.frequency == "on_change":
            before = np.concatenate((history.true_before[:, None], true[:, :-1]), axis=1)
            return true & ~before
        cooldown = rule.cooldown_seconds * 1000 / MINUTE_MS  # minutes; a firing needs last <= t - cooldown
        fires = np.zeros_like(true)
        width = true.shape[1]
        last_fired = history.last_fired.tolist()
        chosen = []  # flat indices of the firings
        # The true cells row by row, each row's in time order (row-major), in one pass.
        cells = true.reshape(-1).nonzero()[0]
        rows, columns = np.divmod(cells, width)
        for cell, row, column in zip(cells.tolist(), rows.tolist(), columns.tolist(), strict=True):
            if column - last_fired[row] >= cooldown:
                chosen.append(cell)
                last_fired[row] = column
        fires.reshape(-1)[chosen] = True
        history.last_fired = np.array(last_fired, dtype=np.int64)
        return fires

    def _remember(
        self, history: _History, fired: BoolArray | None, truth: TruthArray | None, shape: tuple[int, int]
    ) -> None:
        """Carry what the next block needs: the last minutes of firings, the last firing, the last truth.

        ``fired`` None: nothing fired in the block.
        """
        rows, width = shape
        if history.keep:
            if width >= history.keep:  # the block's last minutes only, copied (not a view of the whole block)
                last = np.zeros((rows, history.keep), bool) if fired is None else fired[:, -history.keep :]
                history.fired = last.copy()
            else:
                new = np.zeros(shape, bool) if fired is None else fired
                history.fired = np.concatenate((history.fired[:, width:], new), axis=1)
        # Minute numbers relative to the next block: this block's column c becomes c - width.
        if fired is not None:
            any_fired = fired.any(axis=1)
            if any_fired.any():
                latest = width - 1 - np.argmax(fired[:, ::-1], axis=1)
                history.last_fired = np.where(any_fired, latest, history.last_fired)
        history.last_fired = history.last_fired - width
        history.true_before = truth.reshape(shape)[:, -1] == TRUE if truth is not None else np.zeros(rows, bool)

    def _minute_by_minute(
        self,
        stage: list[CompiledRule],
        frame: BlockFrame,
        evaluated: BoolArray,
        truth: dict[str, TruthArray],
        fired: dict[str, BoolArray],
    ) -> None:
        """Evaluate rules that read each other's firings through ``recent()``, one minute at a time."""
        rows, width = evaluated.shape
        for rule_type in (c.rule_type for c in stage):
            truth[rule_type] = np.full(rows * width, FALSE, dtype=np.int8)
            if rule_type in self._history:
                fired[rule_type] = np.zeros((rows, width), dtype=bool)
        for column in range(width):
            flat = np.arange(rows) * width + column
            sub = frame.select(flat)
            sub_truth = {k: v[flat] for k, v in truth.items()}
            for compiled in stage:
                recent = {key: self._recent_column(key, fired, column, rows) for key in compiled.recents}
                value = compiled.predicate(Scope(sub, sub_truth, recent))
                value = np.where(evaluated[:, column], value, FALSE).astype(np.int8)
                sub_truth[compiled.rule_type] = value
                truth[compiled.rule_type][flat] = value
                if compiled.rule_type in self._history:
                    before = truth[compiled.rule_type][flat - 1] == TRUE if column else None
                    fired[compiled.rule_type][:, column] = self._decide_column(compiled, value == TRUE, column, before)

    def _recent_column(
        self, key: tuple[str, int], fired: Mapping[str, BoolArray], column: int, rows: int
    ) -> TruthArray:
        """Return recent(rule, duration) at one column of the block (of ``rows`` symbols)."""
        rule_type, duration = key
        history = self._history.get(rule_type)
        if history is None:
            return np.full(rows, FALSE, dtype=np.int8)
        span = -(-duration // MINUTE_MS)
        block = fired.get(rule_type)
        found = np.zeros(rows, dtype=bool)
        if column - span < 0 and history.keep:
            found |= history.fired[:, max(history.keep + column - span, 0) :].any(axis=1)
        if block is not None and column > 0:
            found |= block[:, max(column - span, 0) : column].any(axis=1)
        return np.where(found, TRUE, FALSE).astype(np.int8)

    def _decide_column(
        self, compiled: CompiledRule, true: BoolArray, column: int, true_before: BoolArray | None
    ) -> BoolArray:
        """Return which rows of one column fire (MemoryFiringState's rules)."""
        rule = compiled.rule
        history = self._history[compiled.rule_type]
        if rule.frequency == "once_per_bar_close":
            return true
        if rule.frequency == "on_change":
            return true & ~(history.true_before if true_before is None else true_before)
        cooldown = rule.cooldown_seconds * 1000 / MINUTE_MS
        fires = true & (column - history.last_fired >= cooldown)
        history.last_fired = np.where(fires, column, history.last_fired)
        return fires


def _self_recent(compiled: CompiledRule) -> bool:
    return any(rule_type == compiled.rule_type for rule_type, _ in compiled.recents)


def _stages(needed: Sequence[CompiledRule], run: set[str]) -> list[list[CompiledRule]]:
    """Return the rules in groups to evaluate in order: each after the rules it reads (truth or firings).

    A group of several rules is a cycle through ``recent()``; it runs minute by minute.
    """
    by_type = {c.rule_type: c for c in needed}
    edges = {
        c.rule_type: sorted(set(c.references) | {q for q, _ in c.recents if q in run and q in by_type}) for c in needed
    }
    order: list[list[str]] = _strongly_connected(edges)
    rank = {c.rule_type: i for i, c in enumerate(needed)}
    return [[by_type[t] for t in sorted(group, key=rank.__getitem__)] for group in order]


def _strongly_connected(edges: Mapping[str, Sequence[str]]) -> list[list[str]]:
    """Return the strongly connected components, each after those it has edges to (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []
    counter = 0

    def visit(node: str) -> None:
        nonlocal counter
        index[node] = low[node] = counter
        counter += 1
        stack.append(node)
        on_stack.add(node)
        for child in edges.get(node, ()):
            if child not in index:
                visit(child)
                low[node] = min(low[node], low[child])
            elif child in on_stack:
                low[node] = min(low[node], index[child])
        if low[node] == index[node]:
            group = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                group.append(member)
                if member == node:
                    break
            out.append(group)

    for node in sorted(edges):
        if node not in index:
            visit(node)
    return out


class FoundAlert(NamedTuple):
    """An alert the backtest found: the fields of ``Alert``, made into one only when asked (``alert()``).

    A backtest finds alerts by the thousand; a tuple costs a fraction of a validated model, and the
    ISO timestamp is derived from ``minute`` when read.
    """

    id: str
    rule_type: str
    symbol: str
    minute: int
    price: float
    metadata: dict[str, float | None]
    description: str
    audience: AlertAudience

    @property
    def timestamp(self) -> str:
        """Return the ISO-8601 UTC instant at which the alert's minute closed."""
        return minute_close_iso(self.minute)

    def alert(self) -> Alert:
        """Return the alert as the pipeline's ``Alert``."""
        # Built without validation: every field is of its type by construction.
        return Alert.model_construct(
            id=self.id,
            symbol=self.symbol,
            rule_type=self.rule_type,
            description=self.description,
            timestamp=self.timestamp,
            price=self.price,
            metadata=self.metadata,
            minute=self.minute,
            audience=self.audience,
        )


def block_alerts(
    config: RulesConfig, frame: BlockFrame, symbols: Sequence[str], fired: Mapping[str, BoolArray]
) -> list[FoundAlert]:
    """Return the alerts of a block's firings, with the metric values each rule read (``metadata``)."""
    ruleset = config.ruleset
    metrics = frame.metrics
    alerts = []
    for rule_type, where in fired.items():
        flat = np.flatnonzero(where)  # row-major: the rows and columns of np.nonzero, in one cheaper pass
        if not len(flat):
            continue
        rows, columns = np.divmod(flat, frame.minutes)
        rule = ruleset.by_type[rule_type].rule
        read = ruleset.read_metrics(rule_type)
        labels = [m.label for m in read]
        # Per alert, the values it read in ``labels``' order, null for NaN.
        columns_read = []
        for m in read:
            read_column = frame.column(m.name, m.symbol, rule.min_coverage)[flat]
            listed: list[float | None] = read_column.tolist()
            for at in np.flatnonzero(np.isnan(read_column)).tolist():
                listed[at] = None
            columns_read.append(listed)
        read_values = zip(*columns_read, strict=True) if columns_read else repeat(())
        prices = metrics.last_price[rows, columns].tolist()
        minutes = (metrics.first + MINUTE_MS * columns).tolist()
        description = rule.description or rule.name
        audience = config.audiences[rule_type]
        for row, minute, price, values in zip(rows.tolist(), minutes, prices, read_values, strict=True):
            symbol = symbols[row]
            alerts.append(
                FoundAlert(
                    alert_id(rule_type, symbol, minute),
                    rule_type,
                    symbol,
                    minute,
                    price,
                    dict(zip(labels, values, strict=True)),
                    description,
                    audience,
                )
            )
    return alerts
