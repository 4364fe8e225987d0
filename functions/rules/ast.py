"""The syntax tree of a rule expression (rules.md, "Behaviour every rule shares").

Nodes are immutable; ``pos`` is the character offset of the node's first token, for error messages.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

CompareOp = Literal["<", "<=", ">", ">=", "==", "!="]
ArithOp = Literal["+", "-", "*", "/"]
BoolOpName = Literal["and", "or"]
FuncName = Literal["abs", "min", "max"]


@dataclass(frozen=True)
class Number:
    """A numeric literal."""

    value: float
    pos: int


@dataclass(frozen=True)
class String:
    """A string literal (only compared with ``symbol``)."""

    value: str
    pos: int


@dataclass(frozen=True)
class Metric:
    """A metric of the evaluated symbol, or of ``symbol`` (a full symbol such as BTCUSDT) when set."""

    name: str
    pos: int
    symbol: str | None = None

    @property
    def label(self) -> str:
        """Return the name as written in metadata: ``c1h`` or ``BTCUSDT.c1h``."""
        return self.name if self.symbol is None else f"{self.symbol}.{self.name}"


@dataclass(frozen=True)
class SymbolName:
    """The evaluated symbol's name (``symbol``)."""

    pos: int


@dataclass(frozen=True)
class RuleRef:
    """Another rule's predicate at the same minute, by rule type."""

    rule_type: str
    pos: int


@dataclass(frozen=True)
class Recent:
    """``recent(rule, duration)``: the rule fired for this symbol in the ``duration_ms`` before this minute."""

    rule_type: str
    duration_ms: int
    pos: int


@dataclass(frozen=True)
class Negate:
    """Arithmetic negation."""

    operand: Expr
    pos: int


@dataclass(frozen=True)
class Arith:
    """A binary arithmetic operation."""

    op: ArithOp
    left: Expr
    right: Expr
    pos: int


@dataclass(frozen=True)
class Call:
    """A call of ``abs``, ``min`` or ``max``."""

    func: FuncName
    args: tuple[Expr, ...]
    pos: int


@dataclass(frozen=True)
class Compare:
    """A possibly chained comparison: ``a <= x <= b`` means ``a <= x and x <= b``."""

    operands: tuple[Expr, ...]
    ops: tuple[CompareOp, ...]
    pos: int


@dataclass(frozen=True)
class Not:
    """Logical negation."""

    operand: Expr
    pos: int


@dataclass(frozen=True)
class BoolOp:
    """``and`` / ``or`` over two or more operands."""

    op: BoolOpName
    operands: tuple[Expr, ...]
    pos: int


Expr = Number | String | Metric | SymbolName | RuleRef | Recent | Negate | Arith | Call | Compare | Not | BoolOp


def walk(node: Expr) -> list[Expr]:
    """Return ``node`` and all its descendants, parents first."""
    found: list[Expr] = []
    stack: list[Expr] = [node]
    while stack:
        current = stack.pop()
        found.append(current)
        match current:
            case Negate(operand=o) | Not(operand=o):
                stack.append(o)
            case Arith(left=left, right=right):
                stack.extend((right, left))
            case Call(args=children) | Compare(operands=children) | BoolOp(operands=children):
                stack.extend(reversed(children))
            case _:
                pass
    return found
