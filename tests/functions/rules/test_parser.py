"""The rule language's parser: the trees it builds and the errors it reports with their position."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from functions.rules import ast
from functions.rules.errors import ExpressionError
from functions.rules.parser import MAX_DEPTH, MAX_LENGTH, parse, tokenize

SEED = Path(__file__).resolve().parents[3] / "functions" / "rules" / "seed" / "rules.json"


def test_parse_every_seed_rule_of_rules_md() -> None:
    rules = json.loads(SEED.read_text())
    assert len(rules) == 20
    for rule in rules:
        assert isinstance(parse(rule["expression"]), ast.BoolOp)


def test_parse_cross_symbol_reference_names_full_symbol() -> None:
    tree = parse("c1h - BTC.c1h >= 0.5")
    assert isinstance(tree, ast.Compare)
    left = tree.operands[0]
    assert isinstance(left, ast.Arith)
    assert left.right == ast.Metric("c1h", 6, "BTCUSDT")


def test_parse_chained_comparison_keeps_all_links() -> None:
    tree = parse("-10 <= c14d <= -5")
    assert tree == ast.Compare((ast.Number(-10.0, 0), ast.Metric("c14d", 7), ast.Number(-5.0, 15)), ("<=", "<="), 0)


def test_parse_precedence_of_arithmetic_and_logic() -> None:
    tree = parse("6*v1h > v8h or not c5m > 1 and c1h < 2")
    assert isinstance(tree, ast.BoolOp) and tree.op == "or"
    right = tree.operands[1]
    assert isinstance(right, ast.BoolOp) and right.op == "and"
    assert isinstance(right.operands[0], ast.Not)


def test_parse_recent_duration_in_milliseconds() -> None:
    tree = parse("recent(futures_bottom_hunter, 12h)")
    assert tree == ast.Recent("futures_bottom_hunter", 12 * 3600 * 1000, 0)


def test_parse_functions_and_wider_vocabulary() -> None:
    parse("abs(c5m) < 0.3 and max(vr1h, vr4h, 2) > 3 and vwap1h < price and vcp1h > 0 and rsi1h > 50")
    parse("macdh15m > 0 and bbl1d < close1d and fib_pivot > 0 and cov1h == 1 and rsi1m < 30")


def test_tokenize_duration_is_not_an_identifier() -> None:
    kinds = [t.kind for t in tokenize("recent(x, 90m)")]
    assert kinds == ["ident", "op", "ident", "op", "duration", "op", "end"]


@pytest.mark.parametrize(
    ("text", "position", "reason"),
    [
        ("c1h >", 5, "expected a number"),
        ("c1h > 1 and", 11, "expected a number"),
        ("c1h > 1 and 5", 12, "needs conditions on both sides"),
        ("c1h $ 2", 4, "unexpected character '$'"),
        ("c1h > (1", 8, "expected ')'"),
        ("c1h > 1)", 7, "unexpected ')'"),
        ("foo(1) > 2", 0, "unknown function 'foo'"),
        ("c1h + (c5m > 1) > 2", 7, "needs a number, got a condition"),
        ("c1h", 0, "must be a condition"),
        ("recent(futures_bottom_hunter, 12)", 30, "needs a duration"),
        ("recent(c1h, 12h)", 7, "needs a rule id"),
        ("recent(x, 30d)", 10, "between 1m and 7d"),
        ('symbol > "XMRUSDT"', 7, "compared with 'symbol' by == or !="),
        ('c1h == "XMRUSDT"', 4, "compared with 'symbol'"),
        ("BTC.x1h > 1", 4, "expected a metric name after 'BTC.'"),
        ("btc.c1h > 1", 0, "must be upper case"),
        ("abs(c1h, c5m) > 1", 0, "exactly one argument"),
        ("min(c1h) > 1", 0, "at least two arguments"),
        ("c1h > 12h", 6, "only allowed as recent()"),
        ("", 0, "empty"),
        ("c1h.__class__ > 1", 4, "expected a metric name after 'c1h.'"),
    ],
)
def test_parse_rejects_bad_expression_with_position_and_reason(text: str, position: int, reason: str) -> None:
    with pytest.raises(ExpressionError) as caught:
        parse(text)
    assert caught.value.position == position, str(caught.value)
    assert reason in caught.value.reason


def test_parse_bounds_length_and_depth() -> None:
    with pytest.raises(ExpressionError, match="longer than"):
        parse("c1h > 1 and " * (MAX_LENGTH // 10) + "c1h > 1")
    with pytest.raises(ExpressionError, match="nested deeper"):
        parse("(" * (MAX_DEPTH + 1) + "c1h > 1" + ")" * (MAX_DEPTH + 1))
    with pytest.raises(ExpressionError, match="more than"):
        parse(" and ".join(["c1h > 1"] * 150))
