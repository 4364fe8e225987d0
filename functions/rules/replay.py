"""Run the calculator's compute code and the rule engine over recorded klines, in-process.

The streaming path minute by minute, without broker, Redis or PostgreSQL: candles are written into
in-memory rings with the write rules of the live state (``replay_state``), every minute's metrics
come from ``functions.calculator.compute`` as in the calculator function, and the rules run through
the same ``RuleEngine`` with the firing decisions of the Redis script, kept in memory. The backtest
itself runs whole columns at a time (``blockwise``); tests and bench/backtest_throughput.py hold it
to this path's alerts.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from functions.calculator.compute import compute_snapshots
from functions.rules.config import RulesConfig
from functions.rules.engine import RuleEngine
from functions.rules.firing import MemoryFiringState
from functions.rules.replay_state import MemoryCandleState
from functions.rules.ruleset import Rule
from marketdata.klines import KlineSeries, read_folder
from screener.events.models import MINUTE_MS, Alert, MetricsSnapshot


@dataclass(frozen=True)
class ReplayResult:
    """The alerts of a replay, with the series they came from."""

    alerts: list[Alert]
    series: dict[str, KlineSeries]
    start: int
    end: int
    symbol_minutes: int


def read_market(data: Path, symbols: Sequence[str] | None = None) -> dict[str, KlineSeries]:
    """Read every kline file under ``data`` (Binance 12-column or OHLCV CSV, plain or gzip)."""
    return read_folder(data, list(symbols) if symbols else None)


def span(series: dict[str, KlineSeries]) -> tuple[int, int]:
    """Return the first and last minute (open times) of ``series``."""
    return min(s.first_open_time for s in series.values()), max(s.last_open_time for s in series.values())


def iter_snapshots(
    series: dict[str, KlineSeries], *, start: int | None = None, end: int | None = None
) -> Iterator[tuple[int, list[MetricsSnapshot]]]:
    """Yield ``(minute, snapshots)`` for every minute ``start <= t < end`` that has candles.

    Every candle before ``start`` is written into the state first (the warm-up: windows, bars and
    indicators are as full from the first evaluated minute as the data allows). Minutes without any
    candle yield nothing; minutes of the warm-up yield ``(minute, [])`` so a caller can count them.
    """
    first, last = span(series)
    start = first if start is None else max(start, first)
    end = last + MINUTE_MS if end is None else min(end, last + MINUTE_MS)
    state = MemoryCandleState()
    # Ring rows (layout.CANDLE_FIELDS): open time, then open..trades of the series' values.
    rows = {
        symbol: np.column_stack((s.open_time.astype(np.float64), s.values[:, :7])).tolist()
        for symbol, s in series.items()
    }
    cursors = dict.fromkeys(series, 0)
    for minute in range(first, end, MINUTE_MS):
        written = []
        for symbol, s in series.items():
            at = cursors[symbol]
            if at < len(s) and int(s.open_time[at]) == minute:
                state.write_row(symbol, rows[symbol][at])
                written.append(symbol)
                cursors[symbol] = at + 1
        if minute >= start and written:
            yield minute, compute_snapshots(minute, [state.state(symbol) for symbol in written])
        else:
            yield minute, []


async def replay(
    series: dict[str, KlineSeries],
    rules: Sequence[Rule],
    *,
    start: int | None = None,
    end: int | None = None,
    on_minute: Callable[[int], None] | None = None,
) -> ReplayResult:
    """Evaluate ``rules`` for every minute ``start <= t < end`` of ``series``; return the alerts.

    Firings before ``start`` are not known, so ``recent()`` and cooldowns start empty there.
    ``on_minute`` is called after each minute (warm-up minutes included).
    """
    first, last = span(series)
    start = first if start is None else max(start, first)
    end = last + MINUTE_MS if end is None else min(end, last + MINUTE_MS)
    engine = RuleEngine(RulesConfig.of(list(rules)), MemoryFiringState())
    config = engine.config
    alerts: list[Alert] = []
    evaluated = 0
    for minute, snapshots in iter_snapshots(series, start=start, end=end):
        if snapshots:
            alerts.extend(await engine.evaluate_minute(config, minute, snapshots))
            evaluated += len(snapshots)
        if on_minute is not None:
            on_minute(minute)
    return ReplayResult(alerts, series, start, end, evaluated)
