"""Tests of the exact arithmetic parser used by the puzzle verifiers."""

import re
from fractions import Fraction

import pytest

from tempo_search.tasks.arithmetic import (
    BinaryOp,
    ExpressionError,
    Number,
    format_number,
    numbers_used,
    parse_expression,
    parse_numbers,
    walk,
)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("13", Fraction(13)),
        ("1 + 2 * 3", Fraction(7)),
        ("(1 + 2) * 3", Fraction(9)),
        ("8 - 3 - 2", Fraction(3)),  # left associative
        ("24 / 4 / 3", Fraction(2)),
        ("8/(3-8/3)", Fraction(24)),
        ("8 / (3 - 8 / 3)", Fraction(24)),
        ("1 / 3 + 1 / 6", Fraction(1, 2)),
        ("((((7))))", Fraction(7)),
        ("4 × 6", Fraction(24)),
        ("48 ÷ 2", Fraction(24)),
        ("30 − 6", Fraction(24)),
        ("  2*3  ", Fraction(6)),
    ],
)
def test_parse_expression_exact_values(text, expected):
    assert parse_expression(text).exact_value == expected


def test_parse_expression_tree_shape():
    tree = parse_expression("(10 - 4) * (13 - 9)")
    assert isinstance(tree, BinaryOp)
    assert tree.op == "*"
    assert isinstance(tree.left, BinaryOp)
    assert tree.left.op == "-"
    assert numbers_used(tree) == (10, 4, 13, 9)
    assert [type(node) for node in walk(tree)].count(Number) == 4


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("1 3", "missing operator between 1 and 3"),
        ("(1 + 2) 3", "missing operator before 3"),
        ("1 / 0", "division by zero"),
        ("4 / (2 - 2)", "division by zero"),
        ("-4 + 28", "unary minus"),
        ("2 ** 3", "unexpected '*'"),
        ("(1 + 2", "never closed"),
        ("1 + 2)", "unexpected ')'"),
        ("1 +", "ends early"),
        ("", "empty"),
        ("2 ^ 3", "unexpected character '^'"),
        ("__import__('os')", "unexpected character '_'"),
        ("1.5 + 2", "unexpected character '.'"),
        ("1" * 19, "digits"),
        ("(" * 101 + "1" + ")" * 101, "nest deeper"),
        ("1+" * 600 + "1", "more than the 1000 allowed"),
    ],
)
def test_parse_expression_errors(text, message):
    with pytest.raises(ExpressionError, match=re.escape(message)):
        parse_expression(text)


def test_expression_error_is_value_error_with_column():
    with pytest.raises(ValueError, match="column 2") as info:
        parse_expression("1 3")
    assert info.value.position == 2


def test_glued_digits_read_as_one_number():
    assert numbers_used(parse_expression("13 + 1")) == (13, 1)


@pytest.mark.parametrize(
    ("value", "text"), [(Fraction(13), "13"), (Fraction(8, 3), "8/3"), (Fraction(-1, 2), "-1/2")]
)
def test_format_number(value, text):
    assert format_number(value) == text


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("4 9 10 13", (4, 9, 10, 13)),
        ("4,9,10,13", (4, 9, 10, 13)),
        (" 4, 9 ,10  13 ", (4, 9, 10, 13)),
        ("100", (100,)),
    ],
)
def test_parse_numbers(text, expected):
    assert parse_numbers(text) == expected


@pytest.mark.parametrize(
    ("text", "message"), [("", "no number"), ("4 x 9", "'x'"), ("4 -2", "'-2'")]
)
def test_parse_numbers_errors(text, message):
    with pytest.raises(ValueError, match=message):
        parse_numbers(text)
