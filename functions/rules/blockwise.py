"""The backtest's engine: recorded klines through the whole-column calculator and rules, block by block.

Time advances in blocks of whole UTC days; symbols are taken in groups (the symbols rules name,
``BTC.c1h``, in the first), so a block of a group is a (symbols, minutes) grid of bounded size
whatever the recording's length and width. Each group keeps its own carried state
(``ColumnCalculator``, ``BlockEvaluator``); a block computes only the symbols with a candle in it,
and lasts as many days as the symbols with data allow. Each grid reads only its minutes from the
parsed files (``marketdata.blocks``). Alerts are handed on block by block (``on_alerts``); forward
returns after each alert are filled in as the blocks that hold their horizons arrive.
"""

from __future__ import annotations

import math
from array import array
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt

from functions.calculator.columns import CONTEXT_MINUTES, DAY_MINUTES, ColumnCalculator, ColumnMetrics, MinuteGrid
from functions.rules.columnar import BlockEvaluator, BlockFrame, FoundAlert, SymbolRow, block_alerts
from functions.rules.config import RulesConfig
from functions.rules.ruleset import Rule
from marketdata.blocks import DAY_MS, Grid, MarketBlocks
from screener.events.models import MINUTE_MS

FloatArray = npt.NDArray[np.float64]

# A group's block holds about this many symbol-minutes: large enough that numpy's per-call cost is
# small, small enough that a block's ~150 metric arrays stay within about 70 MB.
BLOCK_CELLS = 1 << 16
# Symbols per group: few enough that a block spans several days, so the 2 days of context each block
# recomputes (CONTEXT_MINUTES) are a small share (650 symbols: 16 per group run ~5% faster and in a
# quarter less memory than 64, bench/backtest_memory.py).
GROUP_SYMBOLS = 16
# Up to this many symbols, each group keeps the last CONTEXT_MINUTES of its grid for the next block
# (the context the two share is copied, not read again); beyond, memory would grow with the groups.
CONTEXT_KEPT_SYMBOLS = 64
# Forward returns are measured this many minutes after each alert (report.HORIZONS).
HORIZONS: dict[str, int] = {"15m": 15, "1h": 60, "4h": 240, "1d": 1440}


@dataclass(frozen=True)
class BacktestResult:
    """What a backtest evaluated and found: every alert's rule, symbol and forward returns, in time order.

    ``alerts`` holds the alerts themselves unless the run passed them on instead (``on_alerts``
    with ``keep_alerts=False``, so memory does not grow with them); the per-alert arrays are always
    there: ``rule_index`` into ``rule_types``, ``symbol_index`` into ``symbols`` and ``forward``
    (alerts, HORIZONS) the change in percent from the alert's price to the close each horizon later,
    NaN where that minute has no candle.
    """

    alerts: list[FoundAlert]
    rule_types: list[str]
    rule_index: npt.NDArray[np.int32]
    symbol_index: npt.NDArray[np.int32]
    forward: FloatArray
    symbols: list[str]
    quote_volume_derived: list[str]
    start: int
    end: int
    symbol_minutes: int

    @property
    def count(self) -> int:
        """Return the number of alerts."""
        return len(self.rule_index)

    @property
    def returns(self) -> list[dict[str, float | None]]:
        """Return each alert's forward returns by horizon name (None where unknown), in alert order."""
        names = list(HORIZONS)
        return [
            dict(zip(names, [None if math.isnan(v) else v for v in row], strict=True)) for row in self.forward.tolist()
        ]


def groups_of(symbols: Sequence[str], first: Sequence[str], size: int = GROUP_SYMBOLS) -> list[list[str]]:
    """Split ``symbols`` into groups of at most ``size``, the ``first`` ones (named by rules) leading."""
    leading = [s for s in symbols if s in set(first)]
    ordered = leading + [s for s in symbols if s not in set(first)]
    return [ordered[i : i + size] for i in range(0, len(ordered), size)]


class _Group:
    """One group of symbols with its carried state."""

    def __init__(self, config: RulesConfig, symbols: list[str]) -> None:
        self.symbols = symbols
        self.calculator = ColumnCalculator(symbols)
        self.evaluator = BlockEvaluator(config, symbols)
        self.context: Grid | None = None  # the last minutes of the previous block's grid, when kept


def run_backtest(
    data: Path,
    rules: Sequence[Rule],
    *,
    symbols: Sequence[str] | None = None,
    start: int | None = None,
    end: int | None = None,
    on_block: Callable[[int], None] | None = None,
    on_alerts: Callable[[list[FoundAlert]], None] | None = None,
    keep_alerts: bool = True,
    cache: Path | None = None,
) -> BacktestResult:
    """Evaluate ``rules`` for every minute ``start <= t < end`` of the klines under ``data``.

    Data before ``start`` warms the state up (windows, bars, recursions) without being evaluated;
    firings before ``start`` are not known, so cooldowns and ``recent()`` start empty there, as in
    ``replay.replay``. ``on_block`` is called with the minutes of each block once done, ``on_alerts``
    with each block's alerts in time order; ``keep_alerts=False`` keeps none in the result (a long
    run's memory then holds a few numbers per alert). ``cache`` (a folder) keeps the parsed files
    for the next run (``marketdata.parsed_cache``).
    """
    market = MarketBlocks(data, symbols, cache)
    config = RulesConfig.of(list(rules))
    first = market.first
    last = market.last()
    start = first if start is None else max(start, first)
    end = last + MINUTE_MS if end is None else min(end, last + MINUTE_MS)
    named = sorted(config.ruleset.cross_symbols)
    groups = [_Group(config, g) for g in groups_of(market.symbols, named, GROUP_SYMBOLS)]
    order = {s: i for i, s in enumerate(market.symbols)}
    rule_types = list(config.enabled())
    run_order = {rule_type: i for i, rule_type in enumerate(rule_types)}
    alerts: list[FoundAlert] = []
    pending = _Returns(market.symbols, run_order)
    evaluated_total = 0
    keep_context = len(market.symbols) <= CONTEXT_KEPT_SYMBOLS
    block = first - first % DAY_MS
    while block < end:
        block_end = block + _block_days(market, groups, block, end) * DAY_MS
        others: dict[str, SymbolRow] = {}
        block_alerts_list: list[FoundAlert] = []
        for group in groups:
            grid = market.grid(group.symbols, block - CONTEXT_MINUTES * MINUTE_MS, block_end, group.context)
            if keep_context:
                group.context = grid.tail(CONTEXT_MINUTES)
            # Only the symbols with a candle in the block are computed (a recording's symbols start
            # and end at different times): the others' state carries over.
            active = np.flatnonzero(grid.present[:, CONTEXT_MINUTES:].any(axis=1))
            minutes_in_block = (block_end - block) // MINUTE_MS
            if len(active) == 0:
                group.calculator.skip(block, minutes_in_block)
                if block_end > start:
                    group.evaluator.skip(minutes_in_block)
                continue
            rows = None if len(active) == len(group.symbols) else active
            symbols = group.symbols if rows is None else [group.symbols[i] for i in active.tolist()]
            values, present = (
                (grid.values, grid.present) if rows is None else (grid.values[:, rows], grid.present[rows])
            )
            metrics = group.calculator.compute(MinuteGrid.of(grid.first, values, present), rows)
            for row, symbol in enumerate(symbols):
                if symbol in named:
                    others[symbol] = SymbolRow(metrics, row)
            minutes = metrics.first + MINUTE_MS * np.arange(metrics.present.shape[1])
            evaluated = metrics.present & ((minutes >= start) & (minutes < end))[None, :]
            evaluated_total += int(np.count_nonzero(evaluated))
            if block_end > start:  # blocks of warm-up only have no rule to run (and no firing to carry)
                frame = BlockFrame(metrics, symbols, others)
                fired = group.evaluator.evaluate(frame, evaluated, rows)
                found = block_alerts(config, frame, symbols, fired)
                block_alerts_list.extend(found)
                pending.add(found)
            pending.resolve(symbols, metrics)
        # The engine's order: minute, then the rules' order, then the symbols' (lexsort: the last key first).
        positions = np.lexsort(
            (
                np.array([order[a.symbol] for a in block_alerts_list], dtype=np.int64),
                np.array([run_order[a.rule_type] for a in block_alerts_list], dtype=np.int64),
                np.array([a.minute for a in block_alerts_list], dtype=np.int64),
            )
        ).tolist()
        pending.place(positions)
        in_order = [block_alerts_list[k] for k in positions]
        if on_alerts is not None and in_order:
            on_alerts(in_order)
        if keep_alerts:
            alerts.extend(in_order)
        if on_block is not None:
            on_block((block_end - block) // MINUTE_MS)
        block = block_end
    rule_index, symbol_index, forward = pending.in_order()
    return BacktestResult(
        alerts=alerts,
        rule_types=rule_types,
        rule_index=rule_index,
        symbol_index=symbol_index,
        forward=forward,
        symbols=market.symbols,
        quote_volume_derived=market.quote_volume_derived(),
        start=start,
        end=end,
        symbol_minutes=evaluated_total,
    )


def _block_days(market: MarketBlocks, groups: Sequence[_Group], block: int, end: int) -> int:
    """Return how many days the block from ``block`` spans: about BLOCK_CELLS cells for the widest group.

    Only the symbols with data in the span count, so a stretch where few symbols have any (one
    recording's symbol running on after the others) goes in long blocks, not many small ones.
    """
    left = max(1, -(-(end - block) // DAY_MS))

    def days_for(span: int) -> int:
        width = max(market.active(g.symbols, block, block + span * DAY_MS) for g in groups)
        return min(left, max(1, BLOCK_CELLS // (max(width, 1) * DAY_MINUTES)))

    days = days_for(1)
    return min(days, days_for(days))  # symbols starting inside a long span make it shorter


class _Returns:
    """Forward returns of alerts, filled in when the blocks holding their horizons are read.

    Alerts are numbered as they are added (group by group); ``place`` then gives a block's numbers
    in time order, so the result comes out in the alerts' order without looking any up.
    """

    def __init__(self, symbols: Sequence[str], run_order: Mapping[str, int]) -> None:
        self._row = {s: i for i, s in enumerate(symbols)}
        self._run_order = run_order
        self._rule = array("i")  # per alert in the order added: rule, symbol
        self._symbol = array("i")
        self._values = array("d")  # alert k, horizon h at k * len(HORIZONS) + h; NaN while unknown
        self._order = array("q")  # the alerts' numbers in time order
        self._block_base = 0  # number of the first alert of the current block
        self._waiting_symbol = np.empty(0, dtype=np.int64)  # per waiting horizon: symbol, minute, price, slot
        self._waiting_minute = np.empty(0, dtype=np.int64)
        self._waiting_price = np.empty(0)
        self._waiting_slot = np.empty(0, dtype=np.int64)

    def add(self, alerts: Sequence[FoundAlert]) -> None:
        """Register ``alerts`` as waiting for their horizons."""
        if not alerts:
            return
        base = len(self._rule)
        symbols = np.array([self._row[a.symbol] for a in alerts], dtype=np.int64)
        self._rule.extend(self._run_order[a.rule_type] for a in alerts)
        self._symbol.extend(symbols.tolist())
        self._values.extend(array("d", [math.nan]) * (len(alerts) * len(HORIZONS)))
        offsets = np.array(list(HORIZONS.values()), dtype=np.int64) * MINUTE_MS
        minutes = np.array([a.minute for a in alerts], dtype=np.int64)
        prices = np.array([a.price for a in alerts])
        horizons = len(HORIZONS)
        self._waiting_symbol = np.concatenate((self._waiting_symbol, np.repeat(symbols, horizons)))
        self._waiting_minute = np.concatenate((self._waiting_minute, (minutes[:, None] + offsets[None, :]).reshape(-1)))
        self._waiting_price = np.concatenate((self._waiting_price, np.repeat(prices, horizons)))
        self._waiting_slot = np.concatenate((self._waiting_slot, base * horizons + np.arange(len(alerts) * horizons)))

    def place(self, positions: Sequence[int]) -> None:
        """Record the order of the current block's alerts: ``positions[i]`` is the i-th one added."""
        self._order.extend(self._block_base + k for k in positions)
        self._block_base = len(self._rule)

    def resolve(self, symbols: Sequence[str], metrics: ColumnMetrics) -> None:
        """Fill in the horizons that fall in ``metrics``' block for ``symbols``; forget them."""
        rows = np.full(len(self._row), -1, dtype=np.int64)
        rows[[self._row[s] for s in symbols]] = np.arange(len(symbols))
        begin = metrics.first
        width = metrics.present.shape[1]
        row = rows[self._waiting_symbol]
        column = (self._waiting_minute - begin) // MINUTE_MS
        inside = (row >= 0) & (column >= 0) & (column < width)
        if not inside.any():
            return
        r, c = row[inside], column[inside]
        close = np.where(metrics.present[r, c], metrics.last_price[r, c], np.nan)
        changes = (close / self._waiting_price[inside] - 1.0) * 100.0
        values = np.frombuffer(self._values, dtype=np.float64)
        values[self._waiting_slot[inside]] = changes
        del values  # a view of the array: it must go before the array grows again
        keep = ~inside
        self._waiting_symbol, self._waiting_minute = self._waiting_symbol[keep], self._waiting_minute[keep]
        self._waiting_price, self._waiting_slot = self._waiting_price[keep], self._waiting_slot[keep]

    def in_order(self) -> tuple[npt.NDArray[np.int32], npt.NDArray[np.int32], FloatArray]:
        """Return every alert's rule number, symbol number and forward returns (alerts, HORIZONS), in time order."""
        order = np.frombuffer(self._order, dtype=np.int64)
        rules = np.frombuffer(self._rule, dtype=np.int32)[order]
        symbols = np.frombuffer(self._symbol, dtype=np.int32)[order]
        forward = np.frombuffer(self._values, dtype=np.float64).reshape(-1, len(HORIZONS))[order]
        return rules, symbols, forward
