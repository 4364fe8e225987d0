"""Errors of the rules package: one base class, specific errors that name the rule and the place."""

from __future__ import annotations


class RuleError(Exception):
    """Base class of every error the rules package raises on purpose."""


class ExpressionError(RuleError):
    """An expression does not parse or does not type-check.

    ``position`` is the 0-based character offset of the offending token in the expression text.
    """

    def __init__(self, reason: str, position: int, expression: str, rule_type: str | None = None) -> None:
        where = f"rule {rule_type!r}: " if rule_type else ""
        pointer = f"\n  {expression}\n  {' ' * position}^" if len(expression) <= 200 else ""
        super().__init__(f"{where}{reason} at position {position}{pointer}")
        self.reason = reason
        self.position = position
        self.expression = expression
        self.rule_type = rule_type


class RuleCycleError(RuleError):
    """Rules reference each other in a cycle (directly or through ``recent``)."""

    def __init__(self, cycle: list[str]) -> None:
        super().__init__(f"rules reference each other in a cycle: {' -> '.join(cycle)}")
        self.cycle = cycle


class InvalidRule(RuleError):
    """A rule row is malformed (unknown frequency, bad cooldown, ...); the message names the field."""

    def __init__(self, rule_type: str, reason: str) -> None:
        super().__init__(f"rule {rule_type!r}: {reason}")
        self.rule_type = rule_type
        self.reason = reason
