"""Vectorised evaluation: Kleene logic over nulls, coverage gating, arithmetic edge cases."""

from __future__ import annotations

import numpy as np

from functions.rules.compiler import FALSE, TRUE, UNKNOWN, Scope, compile_predicate
from functions.rules.frame import Frame
from functions.rules.parser import parse
from screener.events.models import MetricsSnapshot
from tests.functions.rules.snapshots import snapshot


def evaluate(
    expression: str, rows: list[MetricsSnapshot], min_coverage: float = 1.0, **others: MetricsSnapshot
) -> list[int]:
    frame = Frame(rows[0].minute, rows, dict(others))
    result = compile_predicate(parse(expression), min_coverage)(Scope(frame, {}, {}))
    return [int(v) for v in result]


def test_comparison_per_row_with_null_unknown() -> None:
    rows = [snapshot("A", c5m=2.0), snapshot("B", c5m=0.5), snapshot("C", c5m=None)]
    assert evaluate("c5m > 1", rows) == [TRUE, FALSE, UNKNOWN]


def test_not_of_unknown_stays_unknown() -> None:
    rows = [snapshot("A", c14d=-7.0), snapshot("B", c14d=3.0), snapshot("C")]
    assert evaluate("not (-10 <= c14d <= -5)", rows) == [FALSE, TRUE, UNKNOWN]


def test_or_is_true_when_one_side_is_true_despite_null() -> None:
    rows = [snapshot("A", c15m=1.0), snapshot("B", c15m=-1.0), snapshot("C", c15m=-1.0, rsi15m=60.0)]
    assert evaluate("c15m > 0 or rsi15m > 50", rows) == [TRUE, UNKNOWN, TRUE]


def test_and_is_false_when_one_side_is_false_despite_null() -> None:
    rows = [snapshot("A", c5m=0.1), snapshot("B", c5m=2.0)]
    assert evaluate("c5m > 1 and rsi15m < 30", rows) == [FALSE, UNKNOWN]


def test_window_below_min_coverage_reads_null() -> None:
    rows = [snapshot("A", c5m=2.0, cov5m=0.8), snapshot("B", c5m=2.0)]
    assert evaluate("c5m > 1", rows) == [UNKNOWN, TRUE]
    assert evaluate("c5m > 1", rows, min_coverage=0.5) == [TRUE, TRUE]
    assert evaluate("cov5m < 1", rows) == [TRUE, FALSE]


def test_division_by_zero_is_null_not_infinite() -> None:
    rows = [snapshot("A", v5m=10.0, v15m=0.0), snapshot("B", v5m=10.0, v15m=30.0)]
    assert evaluate("v5m > v15m/0", rows) == [UNKNOWN, UNKNOWN]
    assert evaluate("v5m / v15m > 0.2", rows) == [UNKNOWN, TRUE]


def test_abs_min_max_and_arithmetic() -> None:
    rows = [snapshot("A", c5m=-0.2, c15m=3.0, c1h=1.0), snapshot("B", c5m=0.5, c15m=None, c1h=1.0)]
    assert evaluate("abs(c5m) < 0.3", rows) == [TRUE, FALSE]
    assert evaluate("max(c15m, c1h) - 2*c1h == 1", rows) == [TRUE, UNKNOWN]
    assert evaluate("min(c5m, c1h) < 0", rows) == [TRUE, FALSE]
    assert evaluate("-c5m > 0", rows) == [TRUE, FALSE]


def test_symbol_string_comparison() -> None:
    rows = [snapshot("XMRUSDT", c5m=1.0), snapshot("ETHUSDT", c5m=1.0)]
    assert evaluate('symbol != "XMRUSDT"', rows) == [FALSE, TRUE]
    assert evaluate('"ETHUSDT" == symbol', rows) == [FALSE, TRUE]


def test_cross_symbol_reads_same_minute_of_other_symbol() -> None:
    rows = [snapshot("ETHUSDT", c1h=3.0), snapshot("SOLUSDT", c1h=1.0)]
    btc = snapshot("BTCUSDT", c1h=1.2)
    assert evaluate("c1h - BTC.c1h >= 0.5", rows, BTCUSDT=btc) == [TRUE, FALSE]
    assert evaluate("c1h - BTC.c1h >= 0.5", rows) == [UNKNOWN, UNKNOWN]
    # BTC itself is a row: it reads its own row, no lookup needed
    rows.append(snapshot("BTCUSDT", c1h=1.2))
    assert evaluate("c1h - BTC.c1h >= 0.5", rows) == [TRUE, FALSE, FALSE]


def test_constant_predicate_broadcasts_to_every_row() -> None:
    rows = [snapshot("A"), snapshot("B")]
    result = evaluate("1 < 2", rows)
    assert result == [TRUE, TRUE]
    assert np.asarray(result).shape == (2,)
