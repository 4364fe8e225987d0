"""Parse a rule expression into the syntax tree of ``functions.rules.ast``: no ``eval``, bounded size.

Grammar (lowest precedence first)::

    expr       := and ('or' and)*
    and        := not ('and' not)*
    not        := 'not' not | comparison
    comparison := sum (('<' | '<=' | '>' | '>=' | '==' | '!=') sum)*
    sum        := product (('+' | '-') product)*
    product    := unary (('*' | '/') unary)*
    unary      := ('-' | '+') unary | primary
    primary    := NUMBER | STRING | '(' expr ')' | 'symbol'
                | ('abs' | 'min' | 'max') '(' expr (',' expr)* ')'
                | 'recent' '(' RULE ',' DURATION ')'
                | PREFIX '.' METRIC | METRIC | RULE

Type rules: ``and``/``or``/``not`` take predicates; comparisons, arithmetic and functions take
numbers; a string may only be compared with ``symbol`` by ``==`` or ``!=``; the whole expression
must be a predicate. Every violation raises ``ExpressionError`` with the position and the reason.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import cast

from functions.rules import ast
from functions.rules.errors import ExpressionError
from functions.rules.vocabulary import full_symbol, is_metric

MAX_LENGTH = 4000
MAX_NODES = 400
MAX_DEPTH = 40
MAX_RECENT_MS = 7 * 24 * 3600 * 1000

KEYWORDS = {"and", "or", "not", "symbol", "recent", "abs", "min", "max"}
_DURATION_UNITS_MS = {"s": 1000, "m": 60_000, "h": 3_600_000, "d": 86_400_000, "w": 604_800_000}

_TOKEN = re.compile(
    r"""
    (?P<ws>\s+)
  | (?P<duration>\d+(?:\.\d+)?[smhdw](?![A-Za-z0-9_]))
  | (?P<number>(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?(?![A-Za-z_]))
  | (?P<ident>[A-Za-z_][A-Za-z0-9_]*)
  | (?P<string>"[^"\\\n]*"|'[^'\\\n]*')
  | (?P<op><=|>=|==|!=|<|>|\+|-|\*|/|\(|\)|,|\.)
    """,
    re.VERBOSE,
)


@dataclass(frozen=True)
class Token:
    """One lexical token: its kind, text and offset."""

    kind: str  # duration, number, ident, string, op, end
    text: str
    pos: int


def tokenize(text: str) -> list[Token]:
    """Split ``text`` into tokens; raise ``ExpressionError`` at the first character that fits none."""
    tokens: list[Token] = []
    pos = 0
    while pos < len(text):
        match = _TOKEN.match(text, pos)
        if match is None:
            raise ExpressionError(f"unexpected character {text[pos]!r}", pos, text)
        kind = cast(str, match.lastgroup)
        if kind != "ws":
            tokens.append(Token(kind, match.group(), pos))
        pos = match.end()
    tokens.append(Token("end", "", len(text)))
    return tokens


def parse(text: str) -> ast.Expr:
    """Return the syntax tree of the predicate ``text``; raise ``ExpressionError`` if it is not one."""
    if len(text) > MAX_LENGTH:
        raise ExpressionError(f"expression is longer than {MAX_LENGTH} characters", MAX_LENGTH, text[:200])
    if not text.strip():
        raise ExpressionError("expression is empty", 0, text)
    parser = _Parser(text, tokenize(text))
    tree = parser.expression()
    if parser.peek.kind != "end":
        raise ExpressionError(f"unexpected {parser.describe(parser.peek)}", parser.peek.pos, text)
    if len(ast.walk(tree)) > MAX_NODES:
        raise ExpressionError(f"expression has more than {MAX_NODES} nodes", 0, text)
    _check_predicate(tree, text)
    return tree


def is_predicate(node: ast.Expr) -> bool:
    """Return whether ``node`` yields true/false (rather than a number or a string)."""
    return isinstance(node, ast.Compare | ast.Not | ast.BoolOp | ast.RuleRef | ast.Recent)


def _check_predicate(node: ast.Expr, text: str) -> None:
    if not is_predicate(node):
        raise ExpressionError("expression must be a condition (a comparison, a rule or recent())", node.pos, text)


def _check_number(node: ast.Expr, text: str, what: str) -> None:
    if isinstance(node, ast.RuleRef):
        reason = f"{what} needs a number, and {node.rule_type!r} is no metric (a rule name is a condition)"
        raise ExpressionError(reason, node.pos, text)
    if is_predicate(node):
        raise ExpressionError(f"{what} needs a number, got a condition", node.pos, text)
    if isinstance(node, ast.String | ast.SymbolName):
        raise ExpressionError(f"{what} needs a number, got a string", node.pos, text)


class _Parser:
    def __init__(self, text: str, tokens: list[Token]) -> None:
        self.text = text
        self.tokens = tokens
        self.index = 0
        self.depth = 0

    @property
    def peek(self) -> Token:
        return self.tokens[self.index]

    def advance(self) -> Token:
        token = self.tokens[self.index]
        if token.kind != "end":
            self.index += 1
        return token

    def describe(self, token: Token) -> str:
        return "end of expression" if token.kind == "end" else f"{token.text!r}"

    def error(self, reason: str, token: Token | None = None) -> ExpressionError:
        token = token or self.peek
        return ExpressionError(reason, token.pos, self.text)

    def at_op(self, *texts: str) -> bool:
        return self.peek.kind == "op" and self.peek.text in texts

    def at_word(self, word: str) -> bool:
        return self.peek.kind == "ident" and self.peek.text == word

    def expect_op(self, text: str) -> Token:
        if not self.at_op(text):
            raise self.error(f"expected {text!r}, found {self.describe(self.peek)}")
        return self.advance()

    def nested(self) -> None:
        self.depth += 1
        if self.depth > MAX_DEPTH:
            raise self.error(f"expression is nested deeper than {MAX_DEPTH} levels")

    # --- predicates ----------------------------------------------------------------------------
    def expression(self) -> ast.Expr:
        self.nested()
        try:
            return self.boolean("or", self.conjunction)
        finally:
            self.depth -= 1

    def conjunction(self) -> ast.Expr:
        return self.boolean("and", self.negation)

    def boolean(self, word: str, operand: Callable[[], ast.Expr]) -> ast.Expr:
        first = operand()
        operands = [first]
        while self.at_word(word):
            self.advance()
            operands.append(operand())
        if len(operands) == 1:
            return first
        for node in operands:
            if not is_predicate(node):
                raise ExpressionError(f"'{word}' needs conditions on both sides", node.pos, self.text)
        op = cast(ast.BoolOpName, word)
        return ast.BoolOp(op, tuple(operands), first.pos)

    def negation(self) -> ast.Expr:
        if self.at_word("not"):
            token = self.advance()
            self.nested()
            try:
                operand = self.negation()
            finally:
                self.depth -= 1
            if not is_predicate(operand):
                raise ExpressionError("'not' needs a condition", operand.pos, self.text)
            return ast.Not(operand, token.pos)
        return self.comparison()

    def comparison(self) -> ast.Expr:
        first = self.sum()
        operands = [first]
        ops: list[ast.CompareOp] = []
        while self.at_op("<", "<=", ">", ">=", "==", "!="):
            op_token = self.advance()
            operands.append(self.sum())
            ops.append(cast(ast.CompareOp, op_token.text))
            self.check_comparison(operands[-2], op_token, operands[-1])
        if not ops:
            return first
        return ast.Compare(tuple(operands), tuple(ops), first.pos)

    def check_comparison(self, left: ast.Expr, op: Token, right: ast.Expr) -> None:
        textual = [isinstance(n, ast.String | ast.SymbolName) for n in (left, right)]
        if any(textual):
            if not all(textual) or op.text not in ("==", "!="):
                raise self.error("a string can only be compared with 'symbol' by == or !=", op)
            if isinstance(left, ast.String) and isinstance(right, ast.String):
                raise self.error("comparing two strings is always constant", op)
            return
        for node in (left, right):
            _check_number(node, self.text, f"comparison {op.text!r}")

    # --- numbers -------------------------------------------------------------------------------
    def sum(self) -> ast.Expr:
        left = self.product()
        while self.at_op("+", "-"):
            op = self.advance()
            right = self.product()
            for node in (left, right):
                _check_number(node, self.text, f"{op.text!r}")
            left = ast.Arith(cast(ast.ArithOp, op.text), left, right, left.pos)
        return left

    def product(self) -> ast.Expr:
        left = self.unary()
        while self.at_op("*", "/"):
            op = self.advance()
            right = self.unary()
            for node in (left, right):
                _check_number(node, self.text, f"{op.text!r}")
            left = ast.Arith(cast(ast.ArithOp, op.text), left, right, left.pos)
        return left

    def unary(self) -> ast.Expr:
        if self.at_op("-", "+"):
            token = self.advance()
            self.nested()
            try:
                operand = self.unary()
            finally:
                self.depth -= 1
            _check_number(operand, self.text, f"unary {token.text!r}")
            if token.text == "+":
                return operand
            if isinstance(operand, ast.Number):
                return ast.Number(-operand.value, token.pos)
            return ast.Negate(operand, token.pos)
        return self.primary()

    def primary(self) -> ast.Expr:
        token = self.peek
        if token.kind == "number":
            self.advance()
            return ast.Number(float(token.text), token.pos)
        if token.kind == "string":
            self.advance()
            return ast.String(token.text[1:-1], token.pos)
        if token.kind == "duration":
            raise self.error(f"a duration like {token.text!r} is only allowed as recent()'s second argument")
        if self.at_op("("):
            self.advance()
            inner = self.expression()
            self.expect_op(")")
            return inner
        if token.kind == "ident":
            return self.name()
        raise self.error(f"expected a number, a metric, a rule or '(', found {self.describe(token)}")

    def name(self) -> ast.Expr:
        token = self.advance()
        word = token.text
        if word in ("and", "or", "not"):
            raise self.error(f"'{word}' is missing its left-hand condition", token)
        if word == "symbol":
            return ast.SymbolName(token.pos)
        if word in ("abs", "min", "max"):
            return self.call(token)
        if word == "recent":
            return self.recent(token)
        if self.at_op("."):
            self.advance()
            metric = self.peek
            if metric.kind != "ident" or not is_metric(metric.text):
                raise self.error(f"expected a metric name after '{word}.', found {self.describe(metric)}")
            if not re.fullmatch(r"[A-Z0-9]{2,30}", word):
                raise self.error(f"symbol prefix {word!r} must be upper case letters and digits, like BTC", token)
            self.advance()
            return ast.Metric(metric.text, token.pos, full_symbol(word))
        if self.at_op("("):
            raise self.error(f"unknown function {word!r} (known: abs, min, max, recent)", token)
        if is_metric(word):
            return ast.Metric(word, token.pos)
        return ast.RuleRef(word, token.pos)

    def call(self, token: Token) -> ast.Expr:
        self.expect_op("(")
        args = [self.expression()]
        while self.at_op(","):
            self.advance()
            args.append(self.expression())
        self.expect_op(")")
        for arg in args:
            _check_number(arg, self.text, f"{token.text}()")
        if token.text == "abs" and len(args) != 1:
            raise self.error("abs() takes exactly one argument", token)
        if token.text != "abs" and len(args) < 2:
            raise self.error(f"{token.text}() takes at least two arguments", token)
        return ast.Call(cast(ast.FuncName, token.text), tuple(args), token.pos)

    def recent(self, token: Token) -> ast.Expr:
        self.expect_op("(")
        rule = self.peek
        if rule.kind != "ident" or rule.text in KEYWORDS or is_metric(rule.text):
            raise self.error(f"recent() needs a rule id first, found {self.describe(rule)}")
        self.advance()
        self.expect_op(",")
        duration = self.peek
        if duration.kind != "duration":
            raise self.error(f"recent() needs a duration like 12h second, found {self.describe(duration)}")
        self.advance()
        self.expect_op(")")
        millis = round(float(duration.text[:-1]) * _DURATION_UNITS_MS[duration.text[-1]])
        if not 60_000 <= millis <= MAX_RECENT_MS:
            raise ExpressionError("recent() duration must be between 1m and 7d", duration.pos, self.text)
        return ast.Recent(rule.text, millis, token.pos)
