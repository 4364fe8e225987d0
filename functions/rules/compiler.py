"""Compile a rule's syntax tree into vectorised numpy evaluation over the rows of a ``Frame``.

Predicates use Kleene's three-valued logic, encoded as int8: FALSE 0, UNKNOWN 1, TRUE 2, so that
``and`` is the minimum, ``or`` the maximum and ``not`` is ``2 - x``. A comparison with a null
metric (NaN: missing, or read from a window below the rule's ``min_coverage``) is UNKNOWN, and a
rule fires only where its predicate is TRUE. So ``not (c14d < -5)`` does not fire while ``c14d``
is still unknown, and ``c15m > 0 or rsi15m > 50`` fires on ``c15m`` alone when the RSI is null.
Arithmetic with a null, a division by zero or an overflow gives null.
"""

from __future__ import annotations

import operator
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from functions.rules import ast
from functions.rules.frame import FloatArray, Frame

TruthArray = npt.NDArray[np.int8]
FALSE, UNKNOWN, TRUE = np.int8(0), np.int8(1), np.int8(2)

_COMPARE: dict[str, Callable[[Any, Any], Any]] = {
    "<": operator.lt,
    "<=": operator.le,
    ">": operator.gt,
    ">=": operator.ge,
    "==": operator.eq,
    "!=": operator.ne,
}


@dataclass
class Scope:
    """What a compiled predicate reads besides the frame: other rules' truth and recent() answers."""

    frame: Frame
    truth: Mapping[str, TruthArray]
    recent: Mapping[tuple[str, int], TruthArray]


Numeric = Callable[[Scope], FloatArray | np.float64]
Predicate = Callable[[Scope], TruthArray]


def compile_predicate(tree: ast.Expr, min_coverage: float) -> Predicate:
    """Return a function evaluating ``tree`` for every row of a scope's frame."""
    inner = _predicate(tree, min_coverage)

    def evaluate(scope: Scope) -> TruthArray:
        result = inner(scope)
        return np.broadcast_to(result, (scope.frame.size,)).astype(np.int8, copy=False)

    return evaluate


def _full(scope: Scope, value: np.int8) -> TruthArray:
    return np.full(scope.frame.size, value, dtype=np.int8)


def _predicate(node: ast.Expr, cov: float) -> Predicate:
    match node:
        case ast.BoolOp(op="and", operands=operands):
            parts = [_predicate(o, cov) for o in operands]
            return lambda s: _reduce(np.minimum, [p(s) for p in parts])
        case ast.BoolOp(op="or", operands=operands):
            parts = [_predicate(o, cov) for o in operands]
            return lambda s: _reduce(np.maximum, [p(s) for p in parts])
        case ast.Not(operand=operand):
            part = _predicate(operand, cov)
            return lambda s: (TRUE - part(s)).astype(np.int8)
        case ast.RuleRef(rule_type=rule_type):
            return lambda s: s.truth[rule_type]
        case ast.Recent(rule_type=rule_type, duration_ms=duration):
            key = (rule_type, duration)
            return lambda s: s.recent[key] if key in s.recent else _full(s, UNKNOWN)
        case ast.Compare(operands=operands, ops=ops):
            return _compare(operands, ops, cov)
    raise TypeError(f"not a predicate node: {node!r}")  # the parser's type check makes this unreachable


def _reduce(func: Callable[[TruthArray, TruthArray], TruthArray], parts: list[TruthArray]) -> TruthArray:
    result = parts[0]
    for part in parts[1:]:
        result = func(result, part)
    return result


def _compare(operands: tuple[ast.Expr, ...], ops: tuple[ast.CompareOp, ...], cov: float) -> Predicate:
    if any(isinstance(o, ast.SymbolName | ast.String) for o in operands):
        return _compare_symbol(operands, ops)
    values = [_numeric(o, cov) for o in operands]
    funcs = [_COMPARE[op] for op in ops]

    def evaluate(scope: Scope) -> TruthArray:
        computed = [v(scope) for v in values]
        results = []
        for i, func in enumerate(funcs):
            left, right = computed[i], computed[i + 1]
            known = ~(np.isnan(left) | np.isnan(right))
            results.append(np.where(known, np.where(func(left, right), TRUE, FALSE), UNKNOWN).astype(np.int8))
        return _reduce(np.minimum, results)

    return evaluate


def _compare_symbol(operands: tuple[ast.Expr, ...], ops: tuple[ast.CompareOp, ...]) -> Predicate:
    # The parser allows only ``symbol == "X"`` / ``symbol != "X"`` (either order), one pair per link.
    def side(node: ast.Expr) -> Callable[[Scope], object]:
        if isinstance(node, ast.String):
            text = node.value
            return lambda s: text
        return lambda s: s.frame.symbols

    sides = [side(o) for o in operands]
    funcs = [_COMPARE[op] for op in ops]

    def evaluate(scope: Scope) -> TruthArray:
        results = []
        for i, func in enumerate(funcs):
            equal = np.asarray(func(sides[i](scope), sides[i + 1](scope)), dtype=bool)
            results.append(np.where(equal, TRUE, FALSE).astype(np.int8))
        return _reduce(np.minimum, results)

    return evaluate


def _numeric(node: ast.Expr, cov: float) -> Numeric:
    match node:
        case ast.Number(value=value):
            constant = np.float64(value)
            return lambda s: constant
        case ast.Metric(name=name, symbol=symbol):
            return lambda s: s.frame.column(name, symbol, cov)
        case ast.Negate(operand=operand):
            part = _numeric(operand, cov)
            return lambda s: -part(s)
        case ast.Arith(op=op, left=left, right=right):
            return _arith(op, _numeric(left, cov), _numeric(right, cov))
        case ast.Call(func="abs", args=(arg,)):
            part = _numeric(arg, cov)
            return lambda s: np.abs(part(s))
        case ast.Call(func=func, args=args):
            parts = [_numeric(a, cov) for a in args]
            ufunc = np.minimum if func == "min" else np.maximum  # both propagate NaN: null in, null out
            return lambda s: _reduce_numeric(ufunc, [p(s) for p in parts])
    raise TypeError(f"not a numeric node: {node!r}")  # the parser's type check makes this unreachable


def _reduce_numeric(ufunc: np.ufunc, parts: list[FloatArray | np.float64]) -> FloatArray | np.float64:
    result = parts[0]
    for part in parts[1:]:
        result = ufunc(result, part)
    return result


def _arith(op: ast.ArithOp, left: Numeric, right: Numeric) -> Numeric:
    func = {"+": np.add, "-": np.subtract, "*": np.multiply, "/": np.divide}[op]

    def evaluate(scope: Scope) -> FloatArray | np.float64:
        with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
            result = func(left(scope), right(scope))
        return np.where(np.isfinite(result), result, np.nan)

    return evaluate
