"""Exact arithmetic on puzzle answers: a recursive-descent parser over `fractions.Fraction`.

Model output is parsed, never run as code. The grammar covers non-negative integer literals,
`+ - * /` and parentheses, with the usual precedence and left associativity:

    expression := term (("+" | "-") term)*
    term       := factor (("*" | "/") factor)*
    factor     := INTEGER | "(" expression ")"

The Unicode signs `×`, `÷` and `−` are read as `*`, `/` and `-`. Unary minus is rejected, and so are
two numbers with only whitespace between them ("1 3" is two numbers, not 13).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator
from dataclasses import dataclass
from fractions import Fraction

logger = logging.getLogger(__name__)

__all__ = [
    "BinaryOp",
    "Expression",
    "ExpressionError",
    "Number",
    "format_number",
    "numbers_used",
    "parse_expression",
    "parse_numbers",
    "walk",
]

# Limits that keep a hostile or runaway answer from costing more than a puzzle needs.
MAX_EXPRESSION_CHARS = 1000
MAX_NESTING_DEPTH = 100
MAX_INTEGER_DIGITS = 18

_UNICODE_OPERATORS = str.maketrans({"×": "*", "÷": "/", "−": "-"})


class ExpressionError(ValueError):
    """An answer expression that cannot be parsed or evaluated; `position` is the 0-based column."""

    def __init__(self, message: str, position: int | None = None) -> None:
        super().__init__(message)
        self.position = position


@dataclass(frozen=True)
class Number:
    """An integer literal of the expression and its column in the text."""

    value: int
    position: int

    @property
    def exact_value(self) -> Fraction:
        return Fraction(self.value)


@dataclass(frozen=True)
class BinaryOp:
    """`left op right` with its exact value."""

    op: str
    left: Expression
    right: Expression
    exact_value: Fraction


Expression = Number | BinaryOp


def walk(expression: Expression) -> Iterator[Expression]:
    """Yield every node of the expression tree, children before their parent."""
    if isinstance(expression, BinaryOp):
        yield from walk(expression.left)
        yield from walk(expression.right)
    yield expression


def numbers_used(expression: Expression) -> tuple[int, ...]:
    """Integer literals of the expression, left to right."""
    return tuple(node.value for node in walk(expression) if isinstance(node, Number))


def format_number(value: Fraction | int) -> str:
    """Write an exact number as the puzzles print it: `13`, `8/3`, `-1/2`."""
    if not isinstance(value, Fraction):
        value = Fraction(value)
    if value.denominator == 1:
        return str(value.numerator)
    return f"{value.numerator}/{value.denominator}"


def parse_expression(text: str) -> Expression:
    """Parse and evaluate an arithmetic expression exactly.

    Raises:
        ExpressionError: on a syntax error, a division by zero, an expression longer than
            `MAX_EXPRESSION_CHARS` or nested deeper than `MAX_NESTING_DEPTH`. The message names
            the column.
    """
    if not isinstance(text, str):
        raise TypeError(f"text must be a str, got {type(text).__name__}")
    if len(text) > MAX_EXPRESSION_CHARS:
        raise ExpressionError(
            f"expression has {len(text)} characters, more than the {MAX_EXPRESSION_CHARS} allowed"
        )
    parser = _Parser(text.translate(_UNICODE_OPERATORS))
    return parser.parse()


_TOKEN = re.compile(r"\s*(?:(\d+)|([-+*/()])|(\S))")


class _Parser:
    def __init__(self, text: str) -> None:
        self.text = text
        self.tokens: list[tuple[str, str, int]] = []  # (kind, text, column); kind in int/op/end
        for match in _TOKEN.finditer(text):
            digits, op, other = match.groups()
            if digits is not None:
                self.tokens.append(("int", digits, match.start(1)))
            elif op is not None:
                self.tokens.append(("op", op, match.start(2)))
            elif other is not None:
                raise ExpressionError(
                    f"unexpected character {other!r} at column {match.start(3)}; use digits, "
                    "+ - * / and parentheses only",
                    match.start(3),
                )
        self.tokens.append(("end", "", len(text)))
        self.index = 0
        self.depth = 0

    def peek(self) -> tuple[str, str, int]:
        return self.tokens[self.index]

    def take(self) -> tuple[str, str, int]:
        token = self.tokens[self.index]
        self.index += 1
        return token

    def parse(self) -> Expression:
        if self.peek()[0] == "end":
            raise ExpressionError("expression is empty", 0)
        expression = self.expression()
        kind, value, column = self.peek()
        if kind != "end":
            raise self.unexpected(kind, value, column)
        return expression

    def unexpected(self, kind: str, value: str, column: int) -> ExpressionError:
        previous = self.tokens[self.index - 1] if self.index > 0 else None
        if kind == "int" and previous is not None and previous[0] == "int":
            return ExpressionError(
                f"missing operator between {previous[1]} and {value} at column {column}; "
                f"write one number as {previous[1]}{value} or put an operator between them",
                column,
            )
        if kind == "int" and previous is not None and previous[1] == ")":
            return ExpressionError(f"missing operator before {value} at column {column}", column)
        if kind == "end":
            return ExpressionError("expression ends early; an operand or ')' is missing", column)
        return ExpressionError(f"unexpected {value!r} at column {column}", column)

    def expression(self) -> Expression:
        left = self.term()
        while self.peek()[0] == "op" and self.peek()[1] in ("+", "-"):
            op = self.take()[1]
            right = self.term()
            if op == "+":
                value = left.exact_value + right.exact_value
            else:
                value = left.exact_value - right.exact_value
            left = BinaryOp(op, left, right, value)
        return left

    def term(self) -> Expression:
        left = self.factor()
        while self.peek()[0] == "op" and self.peek()[1] in ("*", "/"):
            _, op, column = self.take()
            right = self.factor()
            if op == "*":
                value = left.exact_value * right.exact_value
            else:
                if right.exact_value == 0:
                    raise ExpressionError(f"division by zero at column {column}", column)
                value = left.exact_value / right.exact_value
            left = BinaryOp(op, left, right, value)
        return left

    def factor(self) -> Expression:
        kind, value, column = self.take()
        if kind == "int":
            if len(value) > MAX_INTEGER_DIGITS:
                raise ExpressionError(
                    f"number at column {column} has {len(value)} digits, more than the "
                    f"{MAX_INTEGER_DIGITS} allowed",
                    column,
                )
            return Number(int(value), column)
        if value == "(":
            self.depth += 1
            if self.depth > MAX_NESTING_DEPTH:
                raise ExpressionError(
                    f"parentheses nest deeper than {MAX_NESTING_DEPTH} at column {column}", column
                )
            inner = self.expression()
            kind, closing, closing_column = self.take()
            if closing != ")":
                self.index -= 1
                if kind == "end":
                    raise ExpressionError(f"'(' at column {column} is never closed", closing_column)
                raise self.unexpected(kind, closing, closing_column)
            self.depth -= 1
            return inner
        if value == "-":
            raise ExpressionError(
                f"unary minus at column {column} is not allowed; numbers are non-negative", column
            )
        self.index -= 1
        raise self.unexpected(kind, value, column)


_NUMBER_SEPARATORS = re.compile(r"[\s,;]+")


def parse_numbers(text: str) -> tuple[int, ...]:
    """Parse a number list from a command line, such as "4 9 10 13" or "4,9,10,13".

    Raises:
        ValueError: when an item is not a non-negative integer, or the list is empty.
    """
    if not isinstance(text, str):
        raise TypeError(f"text must be a str such as '4 9 10 13', got {type(text).__name__}")
    items = [item for item in _NUMBER_SEPARATORS.split(text.strip()) if item]
    if not items:
        raise ValueError(f"numbers {text!r} contain no number; pass them like '4 9 10 13'")
    numbers = []
    for item in items:
        if not item.isdigit() or not item.isascii():
            raise ValueError(
                f"number {item!r} in {text!r} is not a non-negative integer; pass integers "
                "separated by spaces or commas, like '4 9 10 13'"
            )
        numbers.append(int(item))
    return tuple(numbers)
