"""The backtest's engine: recorded klines through the whole-column calculator and rules, block by block.

Time advances in blocks of whole UTC days; symbols are taken in groups (the symbols rules name,
``BTC.c1h``, in the first), so a block of a group is a (symbols, minutes) grid of bounded size
whatever the recording's length and width. Each group keeps its own carried state
(``ColumnCalculator``, ``BlockEvaluator``); files are read as the blocks reach them and dropped
behind them (``marketdata.blocks``). Forward returns after each alert are filled in as the blocks
that hold their horizons arrive.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from functions.calculator.columns import CONTEXT_MINUTES, DAY_MINUTES, ColumnCalculator, ColumnMetrics, MinuteGrid
from functions.rules.columnar import BlockEvaluator, BlockFrame, FoundAlert, SymbolRow, block_alerts
from functions.rules.config import RulesConfig
from functions.rules.ruleset import Rule
from marketdata.blocks import DAY_MS, MarketBlocks
from screener.events.models import MINUTE_MS

# A group's block holds about this many symbol-minutes: large enough that numpy's per-call cost is
# small, small enough that a block's ~150 metric arrays stay within a few hundred megabytes.
BLOCK_CELLS = 1 << 16
GROUP_SYMBOLS = 64
# Forward returns are measured this many minutes after each alert (report.HORIZONS).
HORIZONS: dict[str, int] = {"15m": 15, "1h": 60, "4h": 240, "1d": 1440}


@dataclass(frozen=True)
class BacktestResult:
    """The alerts of a backtest in time order, their forward returns and what was evaluated."""

    alerts: list[FoundAlert]
    returns: list[dict[str, float | None]]  # per alert: horizon name -> change in percent, None if unknown
    symbols: list[str]
    quote_volume_derived: list[str]
    start: int
    end: int
    symbol_minutes: int


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


def run_backtest(
    data: Path,
    rules: Sequence[Rule],
    *,
    symbols: Sequence[str] | None = None,
    start: int | None = None,
    end: int | None = None,
    on_block: Callable[[int], None] | None = None,
    cache: Path | None = None,
) -> BacktestResult:
    """Evaluate ``rules`` for every minute ``start <= t < end`` of the klines under ``data``.

    Data before ``start`` warms the state up (windows, bars, recursions) without being evaluated;
    firings before ``start`` are not known, so cooldowns and ``recent()`` start empty there, as in
    ``replay.replay``. ``on_block`` is called with the minutes of each block once done. ``cache``
    (a folder) keeps the parsed files for the next run (``marketdata.parsed_cache``).
    """
    market = MarketBlocks(data, symbols, cache)
    config = RulesConfig.of(list(rules))
    first = market.first
    last = market.last()
    start = first if start is None else max(start, first)
    end = last + MINUTE_MS if end is None else min(end, last + MINUTE_MS)
    named = sorted(config.ruleset.cross_symbols)
    groups = [_Group(config, g) for g in groups_of(market.symbols, named)]
    order = {s: i for i, s in enumerate(market.symbols)}
    run_order = {rule_type: i for i, rule_type in enumerate(config.enabled())}
    width = max(len(g.symbols) for g in groups)
    days = max(1, BLOCK_CELLS // (width * DAY_MINUTES))
    alerts: list[FoundAlert] = []
    pending = _Returns(market.symbols)
    evaluated_total = 0
    block = first - first % DAY_MS
    while block < end:
        block_end = block + days * DAY_MS
        others: dict[str, SymbolRow] = {}
        block_alerts_list: list[FoundAlert] = []
        for group in groups:
            grid = market.grid(group.symbols, block - CONTEXT_MINUTES * MINUTE_MS, block_end)
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
        block_alerts_list.sort(key=lambda a: (a.minute, run_order[a.rule_type], order[a.symbol]))
        alerts.extend(block_alerts_list)
        if on_block is not None:
            on_block((block_end - block) // MINUTE_MS)
        block = block_end
    return BacktestResult(
        alerts=alerts,
        returns=pending.of(alerts),
        symbols=market.symbols,
        quote_volume_derived=market.quote_volume_derived(),
        start=start,
        end=end,
        symbol_minutes=evaluated_total,
    )


class _Returns:
    """Forward returns of alerts, filled in when the blocks holding their horizons are read."""

    def __init__(self, symbols: Sequence[str]) -> None:
        self._row = {s: i for i, s in enumerate(symbols)}
        self._ids: list[str] = []
        self._values: list[float] = []  # alert k, horizon h at k * len(HORIZONS) + h; NaN while unknown
        self._symbol = np.empty(0, dtype=np.int64)  # per waiting horizon: symbol, minute, price, slot
        self._minute = np.empty(0, dtype=np.int64)
        self._price = np.empty(0)
        self._slot = np.empty(0, dtype=np.int64)

    def add(self, alerts: Sequence[FoundAlert]) -> None:
        """Register ``alerts`` as waiting for their horizons."""
        if not alerts:
            return
        base = len(self._values)
        self._ids.extend(a.id for a in alerts)
        self._values.extend([np.nan] * (len(alerts) * len(HORIZONS)))
        offsets = np.array(list(HORIZONS.values()), dtype=np.int64) * MINUTE_MS
        symbols = np.array([self._row[a.symbol] for a in alerts], dtype=np.int64)
        minutes = np.array([a.minute for a in alerts], dtype=np.int64)
        prices = np.array([a.price for a in alerts])
        self._symbol = np.concatenate((self._symbol, np.repeat(symbols, len(HORIZONS))))
        self._minute = np.concatenate((self._minute, (minutes[:, None] + offsets[None, :]).reshape(-1)))
        self._price = np.concatenate((self._price, np.repeat(prices, len(HORIZONS))))
        self._slot = np.concatenate((self._slot, base + np.arange(len(alerts) * len(HORIZONS))))

    def resolve(self, symbols: Sequence[str], metrics: ColumnMetrics) -> None:
        """Fill in the horizons that fall in ``metrics``' block for ``symbols``; forget them."""
        rows = np.full(len(self._row), -1, dtype=np.int64)
        rows[[self._row[s] for s in symbols]] = np.arange(len(symbols))
        begin = metrics.first
        width = metrics.present.shape[1]
        row = rows[self._symbol]
        column = (self._minute - begin) // MINUTE_MS
        inside = (row >= 0) & (column >= 0) & (column < width)
        if not inside.any():
            return
        r, c = row[inside], column[inside]
        close = np.where(metrics.present[r, c], metrics.last_price[r, c], np.nan)
        changes = (close / self._price[inside] - 1.0) * 100.0
        for slot, value in zip(self._slot[inside].tolist(), changes.tolist(), strict=True):
            self._values[slot] = value
        keep = ~inside
        self._symbol, self._minute = self._symbol[keep], self._minute[keep]
        self._price, self._slot = self._price[keep], self._slot[keep]

    def of(self, alerts: Sequence[FoundAlert]) -> list[dict[str, float | None]]:
        """Return the returns of ``alerts``, in their order (None where the horizon has no candle)."""
        index = {alert_id: k for k, alert_id in enumerate(self._ids)}
        table = np.array(self._values).reshape(-1, len(HORIZONS))[[index[a.id] for a in alerts]]
        names = list(HORIZONS)
        return [dict(zip(names, [None if math.isnan(v) else v for v in row], strict=True)) for row in table.tolist()]
