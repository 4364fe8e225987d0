"""Fuzzing the rule language's parser: any text either parses or raises ``ExpressionError`` with a position.

Two generators: arbitrary text (including control characters and surrogates), and token soups built
from the language's own vocabulary, which reach deep into the grammar. Neither may crash, hang or
recurse past the depth cap; whatever parses must also compile.
"""

from __future__ import annotations

import time

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from functions.rules.errors import ExpressionError
from functions.rules.parser import MAX_LENGTH, parse
from functions.rules.ruleset import Rule, compile_rule

TOKENS = [
    "c5m", "v1h", "c1h", "BTC.c1h", "ETH.v5m", "symbol", "'BTCUSDT'", '"X"', "recent", "abs", "min", "max",
    "and", "or", "not", "(", ")", ",", ".", "<", "<=", ">", ">=", "==", "!=", "+", "-", "*", "/",
    "1", "0.5", "1e9", "1e999", "5m", "2h", "futures_top_hunter", "unknown_rule", " ", "\n", "\x00", "\ud800",
]  # fmt: skip
FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _check(text: str) -> None:
    started = time.perf_counter()
    problem: ExpressionError | None = None
    try:
        parse(text)
    except ExpressionError as exc:
        problem = exc
    if problem is not None:
        assert 0 <= problem.position <= max(len(text), MAX_LENGTH)
        assert problem.reason
    else:
        compile_rule(Rule(rule_type="fuzzed", name="f", expression=text))
    assert time.perf_counter() - started < 2.0


@FUZZ
@given(st.text(max_size=300))
def test_any_text_parses_or_fails_with_a_position(text: str) -> None:
    _check(text)


@FUZZ
@given(st.lists(st.sampled_from(TOKENS), max_size=120))
def test_token_soups_parse_or_fail_with_a_position(tokens: list[str]) -> None:
    _check(" ".join(tokens))


@FUZZ
@given(st.integers(min_value=1, max_value=3000), st.sampled_from(["(", "not ", "-", "abs("]))
def test_deep_nesting_is_refused_without_recursion_errors(depth: int, opener: str) -> None:
    closer = ")" if opener in ("(", "abs(") else ""
    _check(opener * depth + "c5m > 1" + closer * depth)
