"""Compile a rule's syntax tree into vectorised numpy evaluation over the rows of a ``Frame``.

Predicates use Kleene's three-valued logic, encoded as int8: FALSE 0, UNKNOWN 1, TRUE 2, so that
``and`` is the minimum, ``or`` the maximum and ``not`` is ``2 - x``. A comparison with a null
metric (NaN: missing, or read from a window below the rule's ``min_coverage``) is UNKNOWN, and a
rule fires only where its predicate is TRUE. So ``not (c14d < -5)`` does not fire while ``c14d``
is still unknown, and ``c15m > 0 or rsi15m > 50`` fires on ``c15m`` alone when the RSI is null.
Arithmetic with a null, a division by zero or an overflow gives null.
"""

from __future__ import annotations

import math
import operator
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

from functions.rules import ast
from functions.rules.frame import FloatArray

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


class Rows(Protocol):
    """The rows a predicate evaluates: one minute's snapshots (``Frame``) or a block of minutes."""

    @property
    def size(self) -> int:
        """Return the number of rows."""
        ...

    @property
    def symbols(self) -> npt.NDArray[np.object_]:
        """Return each row's symbol."""
        ...

    def column(self, name: str, symbol: str | None, min_coverage: float) -> FloatArray | np.float64:
        """Return metric ``name`` of every row (of ``symbol`` at the row's minute), NaN where null or gated."""
        ...

    def select(self, rows: npt.NDArray[np.int64]) -> Rows:
        """Return the same rows' subset ``rows`` (indices, in order)."""
        ...


@dataclass
class Scope:
    """What a compiled predicate reads besides the frame: other rules' truth and recent() answers."""

    frame: Rows
    truth: Mapping[str, TruthArray]
    recent: Mapping[tuple[str, int], TruthArray]

    def subset(self, rows: npt.NDArray[np.int64]) -> Scope:
        """Return the scope of some rows only."""
        return Scope(self.frame.select(rows), _Rows(self.truth, rows), _Rows(self.recent, rows))


class _Rows(Mapping[Any, TruthArray]):
    """Some rows of each array of a mapping, selected when read (a predicate reads few of them)."""

    def __init__(self, arrays: Mapping[Any, TruthArray], rows: npt.NDArray[np.int64]) -> None:
        self._arrays = arrays
        self._rows = rows
        self._selected: dict[Any, TruthArray] = {}

    def __getitem__(self, key: Any) -> TruthArray:
        found = self._selected.get(key)
        if found is None:
            found = self._selected[key] = self._arrays[key][self._rows]
        return found

    def __contains__(self, key: object) -> bool:
        return key in self._arrays

    def __iter__(self) -> Iterator[Any]:
        return iter(self._arrays)

    def __len__(self) -> int:
        return len(self._arrays)


Numeric = Callable[[Scope], FloatArray | np.float64]
Predicate = Callable[[Scope], TruthArray]


def compile_predicate(tree: ast.Expr, min_coverage: float) -> Predicate:
    """Return a function evaluating ``tree`` for every row of a scope's frame."""
    inner = _predicate(tree, min_coverage)

    def evaluate(scope: Scope) -> TruthArray:
        # Arithmetic may divide by zero or overflow (null, below): numpy's warnings are off for the
        # whole predicate, once, rather than around each operation (~3 us each time).
        with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
            result = inner(scope)
        return _rows_of(result, scope.frame.size).astype(np.int8, copy=False)

    return evaluate


def _rows_of(value: TruthArray | np.int8, size: int) -> TruthArray:
    """Return ``value`` as an array of ``size`` rows (a view when it is one value)."""
    if isinstance(value, np.ndarray) and value.shape == (size,):
        return value  # the usual case, without np.broadcast_to's cost per call
    return np.broadcast_to(value, (size,))


def _full(scope: Scope, value: np.int8) -> TruthArray:
    return np.full(scope.frame.size, value, dtype=np.int8)


def _predicate(node: ast.Expr, cov: float) -> Predicate:
    match node:
        case ast.BoolOp(op="and", operands=operands):
            return _short_circuit(np.minimum, FALSE, [_predicate(o, cov) for o in operands])
        case ast.BoolOp(op="or", operands=operands):
            return _short_circuit(np.maximum, TRUE, [_predicate(o, cov) for o in operands])
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


# Below this share of rows still undecided, the next operand is evaluated on those rows only.
_SUBSET_SHARE = 0.25


def _short_circuit(
    func: Callable[[TruthArray, TruthArray], TruthArray], decided: np.int8, parts: list[Predicate]
) -> Predicate:
    """Return ``func`` (min: and, max: or) of ``parts``, each evaluated only where the result is not yet ``decided``.

    Kleene's and is FALSE as soon as one operand is, or TRUE as soon as one is: rows that reached
    that value keep it whatever the other operands say, so those need not be computed there.
    """

    def evaluate(scope: Scope) -> TruthArray:
        size = scope.frame.size
        result = np.array(_rows_of(parts[0](scope), size), dtype=np.int8)
        open_rows: npt.NDArray[np.intp] | None = None  # the rows not yet decided, None: not known
        for part in parts[1:]:
            if open_rows is None:
                open_rows = (result != decided).nonzero()[0]
            if len(open_rows) == 0:
                break
            if len(open_rows) < _SUBSET_SHARE * size:
                value = part(scope.subset(open_rows))
                combined = func(result[open_rows], value)  # a value of one row for all broadcasts
                result[open_rows] = combined
                open_rows = open_rows[combined != decided]  # the open rows shrink without a pass over all
            else:
                result = func(result, part(scope)).astype(np.int8, copy=False)
                open_rows = None
        return result

    return evaluate


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
            results.append(_truth(func(computed[i], computed[i + 1]), computed[i], computed[i + 1]))
        return _reduce(np.minimum, results)

    return evaluate


def _truth(
    holds: npt.NDArray[np.bool_] | np.bool_, left: FloatArray | np.float64, right: FloatArray | np.float64
) -> TruthArray:
    """Return TRUE where ``holds``, FALSE elsewhere, UNKNOWN where either side is null (NaN)."""
    if isinstance(holds, np.ndarray):
        out: TruthArray = holds.view(np.int8) * TRUE  # False 0 (FALSE), True 2 (TRUE)
    else:
        out = np.where(holds, TRUE, FALSE)
    for side in (left, right):
        if not isinstance(side, np.ndarray) or side.ndim == 0:
            if math.isnan(side):
                return np.full(np.shape(out), UNKNOWN, dtype=np.int8)
        # The minimum is NaN exactly when a value is: one pass without a temporary in the usual case.
        elif side.size and math.isnan(np.minimum.reduce(side, axis=None)):
            if isinstance(holds, np.ndarray) and side.shape == out.shape:
                out[np.isnan(side)] = UNKNOWN  # ``out`` is the product's fresh array
            else:
                out = np.where(np.isnan(side), UNKNOWN, out)
    return out.astype(np.int8, copy=False)


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
        result = func(left(scope), right(scope))  # numpy's warnings are off (compile_predicate)
        if _all_finite(result):
            return result
        return np.where(np.isfinite(result), result, np.nan)

    return evaluate


def _all_finite(values: FloatArray | np.float64) -> bool:
    """Return whether every value is finite (one reduction: a sum is finite only if every term is)."""
    if not isinstance(values, np.ndarray):
        return math.isfinite(values)
    return math.isfinite(np.add.reduce(values, axis=None)) or bool(np.isfinite(values).all())
