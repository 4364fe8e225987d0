"""Rules as data: compile, order by reference, reject cycles and unknown references."""

from __future__ import annotations

import pytest

from functions.rules.errors import ExpressionError, RuleCycleError
from functions.rules.ruleset import Rule, RuleSet, validate_rule
from functions.rules.store import seed_file_rules


def rule(rule_type: str, expression: str, **fields: object) -> Rule:
    return Rule(rule_type=rule_type, name=rule_type, expression=expression, **fields)  # type: ignore[arg-type]


def test_seed_has_the_twenty_rules_of_rules_md_with_defaults() -> None:
    rules = seed_file_rules()
    assert len(rules) == 20
    assert all(r.enabled and r.frequency == "cooldown" and r.cooldown_seconds == 300 for r in rules)
    assert [r.default_on for r in rules[:10]] == [True] * 10
    assert {r.rule_type for r in rules if not r.default_on} == {
        "futures_whale_detector",
        "futures_surge_42",
        "futures_knife_catcher",
        "futures_capitulation_catcher",
    }
    ruleset = RuleSet.build(rules)
    assert ruleset.cross_symbols == {"BTCUSDT"}


def test_referenced_rules_are_evaluated_first() -> None:
    ruleset = RuleSet.build(seed_file_rules())
    order = [c.rule_type for c in ruleset.ordered]
    assert order.index("futures_big_bull_60") < order.index("futures_big_bull_60_v2")
    assert order.index("futures_whale_detector") < order.index("futures_whale_accumulation")
    assert order.index("futures_pioneer_bear") < order.index("futures_knife_catcher")


def test_cycle_of_references_is_rejected_with_the_cycle() -> None:
    rules = [rule("a", "b and c1h > 1"), rule("b", "c and c5m > 1"), rule("c", "a")]
    with pytest.raises(RuleCycleError) as caught:
        RuleSet.build(rules)
    assert caught.value.cycle == ["a", "b", "c", "a"]


def test_self_reference_is_a_cycle_but_recent_of_itself_is_not() -> None:
    with pytest.raises(RuleCycleError):
        RuleSet.build([rule("a", "a and c1h > 1")])
    assert len(RuleSet.build([rule("a", "c1h > 1 and not recent(a, 1h)")])) == 1


def test_unknown_rule_reference_is_rejected_with_position() -> None:
    with pytest.raises(ExpressionError) as caught:
        RuleSet.build([rule("a", "c1h > 1 and futures_nope")])
    assert caught.value.position == 12
    assert caught.value.rule_type == "a"


def test_lenient_build_skips_broken_rules_and_their_dependants() -> None:
    rules = [
        rule("good", "c1h > 1"),
        rule("bad", "c1h >"),
        rule("uses_bad", "bad and c5m > 1"),
        rule("x", "y"),
        rule("y", "x"),
    ]
    ruleset = RuleSet.build(rules, strict=False)
    assert [c.rule_type for c in ruleset.ordered] == ["good"]


def test_validate_rule_checks_against_existing_rules() -> None:
    existing = list(seed_file_rules())
    validate_rule(rule("mine", "futures_pioneer_bear and c1h < -3", owner="u1"), existing)
    with pytest.raises(ExpressionError, match="'c2h' is no metric"):
        validate_rule(rule("mine", "c2h > 1"), existing)


def test_read_metrics_include_referenced_rules() -> None:
    ruleset = RuleSet.build(seed_file_rules())
    labels = [m.label for m in ruleset.read_metrics("futures_big_bull_60_v2")]
    assert labels[:2] == ["c1d", "c1h"]
    assert "BTCUSDT.c1h" in labels and "v8h" in labels
