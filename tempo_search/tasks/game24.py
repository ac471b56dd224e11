"""Game of 24: combine four numbers from 1 to 13 with + - * / into exactly 24, using each once.

Output format (the Tree-of-Thoughts step style), one move per line:

    13 - 9 = 4 (left: 4 4 10)
    10 - 4 = 6 (left: 4 6)
    4 * 6 = 24 (left: 24)
    Answer: (13 - 9) * (10 - 4) = 24

A step combines two of the numbers left; `(left: ...)` lists the numbers left after it in
ascending order. Intermediate results may be fractions, written `8/3`. The answer line is the
steps composed into one expression. The mask proposes only legal steps and, after three steps
that end in 24, only that answer line; after three steps that end elsewhere the text is finished
unsolved.

Format rule: a subtraction step must not go below zero (write `9 - 4`, not `4 - 9`). This loses
no puzzle, because a negative intermediate can always be replaced by its negation with the sign
moved to the parent operation; the tests check that every solvable puzzle has a solution in this
format. Answers checked by `verify_game24` may use any exact arithmetic.

The numbers-and-steps machinery here is shared with Countdown.
"""

from __future__ import annotations

import functools
import importlib.resources
import itertools
import json
import logging
import re
from collections.abc import Callable, Hashable, Iterable, Sequence
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

from tempo_search.tasks._vocab import LruCache
from tempo_search.tasks.arithmetic import (
    BinaryOp,
    ExpressionError,
    format_number,
    numbers_used,
    parse_expression,
    walk,
)
from tempo_search.tasks.base import MoveTask, Verdict

logger = logging.getLogger(__name__)

__all__ = [
    "GAME24_TARGET",
    "Game24Puzzle",
    "Game24Task",
    "all_game24_puzzles",
    "solve_game24",
    "verify_game24",
]

GAME24_TARGET = 24
_GAME24_COUNT = 4
_GAME24_RANGE = (1, 13)
_PACKAGED_PUZZLES = "game24_puzzles.json"

# A rule maps two operands to the (operator, result) pairs it allows.
Rule = Callable[[Fraction, Fraction], list[tuple[str, Fraction]]]


def game24_results(a: Fraction, b: Fraction) -> list[tuple[str, Fraction]]:
    """`a op b` for the Game of 24 step format: any exact result, no subtraction below zero."""
    results = [("+", a + b), ("*", a * b)]
    if a >= b:
        results.append(("-", a - b))
    if b != 0:
        results.append(("/", a / b))
    return results


def _game24_any_results(a: Fraction, b: Fraction) -> list[tuple[str, Fraction]]:
    """`a op b` under the full rules (negative results allowed)."""
    results = [("+", a + b), ("*", a * b), ("-", a - b)]
    if b != 0:
        results.append(("/", a / b))
    return results


# ----------------------------------------------------------------------------------------------
# Numbers, steps and answers shared with Countdown


@dataclass(frozen=True, order=True)
class NumberItem:
    """A number left in a numbers puzzle: its value, whether a step made it, its expression and
    the expression's outermost operator ("" for a given number)."""

    value: Fraction
    derived: bool
    expression: str
    operator: str = ""


_PRECEDENCE = {"": 3, "*": 2, "/": 2, "+": 1, "-": 1}


def combine(a: NumberItem, op: str, b: NumberItem, value: Fraction) -> NumberItem:
    """Return the item for `a op b`, with parentheses only where precedence needs them."""
    left, right = a.expression, b.expression
    if _PRECEDENCE[a.operator] < _PRECEDENCE[op]:
        left = f"({left})"
    if _PRECEDENCE[b.operator] < _PRECEDENCE[op] or (
        _PRECEDENCE[b.operator] == _PRECEDENCE[op] and op in "-/"
    ):
        right = f"({right})"
    return NumberItem(value, True, f"{left} {op} {right}", op)


@dataclass(frozen=True)
class NumbersState:
    """Numbers left (sorted) and, once the answer line is written, `answered`."""

    items: tuple[NumberItem, ...]
    answered: bool = False


def initial_numbers_state(numbers: Iterable[int]) -> NumbersState:
    items = sorted(NumberItem(Fraction(n), False, str(n)) for n in numbers)
    return NumbersState(tuple(items))


def step_moves(state: NumbersState, rule: Rule) -> list[tuple[str, Hashable]]:
    """List every step line `a op b = r (left: ...)` the rule allows, with its next state."""
    moves: list[tuple[str, Hashable]] = []
    items = state.items
    for i, j in itertools.permutations(range(len(items)), 2):
        a, b = items[i], items[j]
        rest = [item for k, item in enumerate(items) if k not in (i, j)]
        for op, value in rule(a.value, b.value):
            made = combine(a, op, b, value)
            left = tuple(sorted([*rest, made]))
            line = (
                f"{format_number(a.value)} {op} {format_number(b.value)} = {format_number(value)}"
                f" (left: {' '.join(format_number(item.value) for item in left)})\n"
            )
            moves.append((line, NumbersState(left)))
    return moves


def answer_line(item: NumberItem, target: int) -> str:
    return f"Answer: {item.expression} = {target}"


# Solver results by state, keyed by integer pairs because hashing Fractions dominates the cost.
_REACH_CACHE: dict[tuple[Any, ...], bool] = {}
_REACH_CACHE_SIZE = 1 << 17


def _can_reach(values: tuple[Fraction, ...], target: Fraction, rule: Rule, use_all: bool) -> bool:
    """Return whether the sorted `values` reach `target` under `rule` (all values or a subset)."""
    if not use_all and target in values:
        return True
    if len(values) == 1:
        return values[0] == target
    key = (tuple((v.numerator, v.denominator) for v in values), target, rule, use_all)
    known = _REACH_CACHE.get(key)
    if known is not None:
        return known
    if len(_REACH_CACHE) >= _REACH_CACHE_SIZE:
        _REACH_CACHE.clear()
    _REACH_CACHE[key] = reached = _search_reach(values, target, rule, use_all)
    return reached


def _search_reach(
    values: tuple[Fraction, ...], target: Fraction, rule: Rule, use_all: bool
) -> bool:
    for i, j in itertools.combinations(range(len(values)), 2):
        a, b = values[i], values[j]
        results = [value for _, value in rule(a, b)] + [value for _, value in rule(b, a)]
        if len(values) == 2:
            if target in results:
                return True
            continue
        rest = values[:i] + values[i + 1 : j] + values[j + 1 :]
        for value in results:
            if _can_reach(tuple(sorted((*rest, value))), target, rule, use_all):
                return True
    return False


def solve_numbers(
    items: Sequence[NumberItem], target: int, rule: Rule, *, use_all: bool
) -> NumberItem | None:
    """Return a number item of value `target` built from `items` under `rule`, or None."""
    target_value = Fraction(target)
    for item in items:
        if item.value == target_value and (not use_all or len(items) == 1):
            return item
    values = tuple(sorted(item.value for item in items))
    if len(items) < 2 or not _can_reach(values, target_value, rule, use_all):
        return None
    for i, j in itertools.permutations(range(len(items)), 2):
        a, b = items[i], items[j]
        rest = [item for k, item in enumerate(items) if k not in (i, j)]
        for op, value in rule(a.value, b.value):
            made = combine(a, op, b, value)
            remaining = tuple(sorted((*(r.value for r in rest), value)))
            if _can_reach(remaining, target_value, rule, use_all):
                return solve_numbers([*rest, made], target, rule, use_all=use_all)
    raise AssertionError("a reachable target must have a reachable step")


_VERDICT_CACHE_SIZE = 64
"""Verdicts that a numbers puzzle keeps by text, because a search verifies each rollout's text
twice in a row."""


class NumbersPuzzleTask(MoveTask):
    """Shared moves of Game of 24 and Countdown: step lines until the target appears, then the
    answer line. Subclasses set `numbers`, `target`, `rule`, `use_all` and `prompt`."""

    numbers: tuple[int, ...]
    target: int
    use_all: bool
    use_solver_progress: bool

    def __init__(self) -> None:
        super().__init__()
        # The search computes the reward of a text and then checks `is_satisfied`, and both
        # run the verifier, so the second reads the cached verdict.
        self._verdicts: LruCache[str, Verdict] = LruCache(_VERDICT_CACHE_SIZE)

    def _verdict(self, text: str) -> Verdict:
        return self._verdicts.get_or_compute(text, lambda: self.verify(text))

    @staticmethod
    def rule(a: Fraction, b: Fraction) -> list[tuple[str, Fraction]]:
        raise NotImplementedError

    def initial_state(self) -> Hashable:
        return initial_numbers_state(self.numbers)

    def _reached(self, state: NumbersState) -> NumberItem | None:
        if self.use_all and len(state.items) != 1:
            return None
        return next((item for item in state.items if item.value == self.target), None)

    def legal_moves(self, state: Hashable) -> list[tuple[str, Hashable]]:
        assert isinstance(state, NumbersState)
        if state.answered:
            return []
        reached = self._reached(state)
        if reached is not None:
            return [(answer_line(reached, self.target), NumbersState(state.items, True))]
        if len(state.items) < 2:
            return []
        return step_moves(state, self.rule)

    def state_is_success(self, state: Hashable) -> bool:
        return isinstance(state, NumbersState) and state.answered

    def state_can_succeed(self, state: Hashable) -> bool:
        assert isinstance(state, NumbersState)
        values = tuple(sorted(item.value for item in state.items))
        return _can_reach(values, Fraction(self.target), self.rule, self.use_all)

    def progress(self, text: str) -> float | None:
        """With `use_solver_progress`, 1.0 while the numbers left can still reach the target
        (by the exact solver) and 0.0 otherwise; None without it, since it reveals the answer."""
        if not self.use_solver_progress:
            return None
        parse = self.parse(text)
        if not parse.valid:
            return 0.0
        state = parse.state
        assert isinstance(state, NumbersState)
        return 1.0 if state.answered or self.state_can_succeed(state) else 0.0

    def verify(self, text: str) -> Verdict:
        raise NotImplementedError

    def reward(self, text: str) -> float:
        """1.0 for an answer the exact verifier accepts, else 0.0."""
        return 1.0 if self._verdict(text).correct else 0.0

    def is_satisfied(self, text: str) -> bool:
        return self.is_finished(text) and self._verdict(text).correct

    def report(self, text: str) -> dict[str, Any]:
        """Report the answer: `solved` (the text is finished with an answer), `verified` (the exact
        verifier accepts it), `answer` (the expression read from the text) and `error`."""
        verdict = self._verdict(text)
        return {
            "solved": self.is_finished(text) and verdict.answer is not None,
            "answer": verdict.answer,
            "verified": verdict.correct,
            "error": verdict.error,
        }


# Lenient reading of answers that a model wrote without the mask.
_ANSWER_LINE = re.compile(r"^\s*answer\s*:\s*(.*?)\s*$", re.IGNORECASE | re.MULTILINE)
_OPERAND = r"(-?\d+(?:/\d+)?)"
_STEP_LINE = re.compile(
    rf"^\s*{_OPERAND}\s*([-+*/×÷−])\s*{_OPERAND}\s*=\s*{_OPERAND}"
    r"\s*(?:\(\s*left\s*:\s*([^)]*)\))?\s*$",
    re.IGNORECASE,
)
_OPERATOR_NAMES = {"×": "*", "÷": "/", "−": "-"}


def _apply(op: str, a: Fraction, b: Fraction) -> Fraction | None:
    if op == "+":
        return a + b
    if op == "-":
        return a - b
    if op == "*":
        return a * b
    return None if b == 0 else a / b


@dataclass(frozen=True)
class _StepsCheck:
    legal: bool
    error: str | None
    items: tuple[NumberItem, ...]
    count: int


def check_steps(
    numbers: Sequence[int], text: str, step_allowed: Callable[[str, Fraction], str | None]
) -> _StepsCheck:
    """Check the step lines of `text` in order against the numbers left.

    `step_allowed(op, result)` returns why a step breaks the puzzle's rules, or None.
    """
    items = list(initial_numbers_state(numbers).items)
    count = 0
    for line_number, line in enumerate(text.splitlines(), start=1):
        match = _STEP_LINE.match(line)
        if match is None:
            continue
        count += 1
        a_text, op, b_text, result_text, left_text = match.groups()
        op = _OPERATOR_NAMES.get(op, op)
        where = f"line {line_number} ({line.strip()!r})"
        try:
            a, b, claimed = (Fraction(x) for x in (a_text, b_text, result_text))
        except ZeroDivisionError:
            return _StepsCheck(False, f"{where} writes a fraction with denominator 0", (), count)

        # 1. Both operands must be among the numbers left.
        picked: list[NumberItem] = []
        for value in (a, b):
            item = next((it for it in items if it.value == value), None)
            if item is None:
                left = " ".join(format_number(it.value) for it in items)
                return _StepsCheck(
                    False, f"{where} uses {format_number(value)}, not among {left}", (), count
                )
            picked.append(item)
            items.remove(item)

        # 2. The result must be exact and allowed.
        value = _apply(op, a, b)
        if value is None:
            return _StepsCheck(False, f"{where} divides by zero", (), count)
        if value != claimed:
            return _StepsCheck(
                False,
                f"{where} claims {format_number(claimed)}, but it is {format_number(value)}",
                (),
                count,
            )
        reason = step_allowed(op, value)
        if reason is not None:
            return _StepsCheck(False, f"{where} {reason}", (), count)
        items.append(combine(picked[0], op, picked[1], value))
        items.sort()

        # 3. The numbers-left list, when given, must match.
        if left_text is not None:
            try:
                listed = sorted(Fraction(x) for x in left_text.split())
            except (ValueError, ZeroDivisionError):
                listed = None
            if listed != [it.value for it in items]:
                left = " ".join(format_number(it.value) for it in items)
                return _StepsCheck(
                    False, f"{where} lists left numbers {left_text!r}, not {left}", (), count
                )
    return _StepsCheck(True, None, tuple(items), count)


def find_answer(text: str) -> str | None:
    """Return the expression of the last `Answer:` line, without a trailing `= N`."""
    answers = _ANSWER_LINE.findall(text)
    if not answers:
        return None
    return answers[-1].split("=")[0].strip()


def _is_expression_text(text: str) -> bool:
    return bool(text.strip()) and "\n" not in text.strip()


def verify_numbers(
    numbers: Sequence[int],
    target: int,
    answer_text: str,
    *,
    use_all: bool,
    step_allowed: Callable[[str, Fraction], str | None],
    node_allowed: Callable[[BinaryOp], str | None],
) -> Verdict:
    """Check an answer to a numbers puzzle exactly; errors are reported, never raised."""
    if not isinstance(answer_text, str):
        return Verdict(
            False, None, None, False, f"answer must be text, got {type(answer_text).__name__}"
        )

    # 1. Step lines, if any, must be legal moves.
    steps = check_steps(numbers, answer_text, step_allowed)
    legal = steps.legal

    # 2. The answer: an Answer line, else the steps' result, else the whole text.
    answer = find_answer(answer_text)
    if answer is None and steps.count and steps.legal:
        reached = [it for it in steps.items if it.value == target]
        if reached and (not use_all or len(steps.items) == 1):
            answer = reached[0].expression
        else:
            left = " ".join(format_number(it.value) for it in steps.items)
            return Verdict(False, None, None, True, f"the steps end with {left}, not {target}")
    if answer is None and steps.count == 0 and _is_expression_text(answer_text):
        answer = answer_text.strip().split("=")[0].strip()
    if answer is None:
        return Verdict(False, None, None, legal, steps.error or "no answer found")

    # 3. Parse and evaluate it exactly.
    try:
        expression = parse_expression(answer)
    except ExpressionError as error:
        return Verdict(False, answer, None, legal, f"answer {answer!r}: {error}")
    value = expression.exact_value

    # 4. Numbers used, the puzzle's rules and the value; a bad step line does not undo a right
    # answer but is still reported.
    error = _check_numbers(numbers, numbers_used(expression), use_all)
    if error is None:
        for node in walk(expression):
            if isinstance(node, BinaryOp):
                error = node_allowed(node)
                if error is not None:
                    break
    if error is None and value != target:
        error = f"answer {answer!r} equals {format_number(value)}, not {target}"
    correct = error is None
    return Verdict(correct, answer, value, legal, error or steps.error)


def _check_numbers(numbers: Sequence[int], used: Sequence[int], use_all: bool) -> str | None:
    available = list(numbers)
    for number in used:
        if number not in available:
            if number in numbers:
                return f"answer uses {number} more often than given ({list(numbers)})"
            return f"answer uses {number}, which is not one of {list(numbers)}"
        available.remove(number)
    if use_all and available:
        return f"answer leaves {available} unused; use every number of {list(numbers)} once"
    return None


# ----------------------------------------------------------------------------------------------
# Game of 24


def _validate_game24_numbers(numbers: Any) -> tuple[int, int, int, int]:
    if isinstance(numbers, str):
        raise TypeError(
            f"numbers must be a sequence of ints, got the str {numbers!r}; convert it with "
            "parse_numbers()"
        )
    if not isinstance(numbers, Iterable):
        raise TypeError(f"numbers must be 4 ints from 1 to 13, got {numbers!r}")
    numbers = list(numbers)
    if len(numbers) != _GAME24_COUNT:
        raise ValueError(
            f"Game of 24 needs exactly {_GAME24_COUNT} numbers, got {len(numbers)} ({numbers}); "
            "pass four numbers such as [4, 9, 10, 13]"
        )
    low, high = _GAME24_RANGE
    for number in numbers:
        if isinstance(number, bool) or not isinstance(number, int):
            raise TypeError(f"numbers must be ints from {low} to {high}, got {number!r}")
        if not low <= number <= high:
            raise ValueError(
                f"number {number} is outside {low}..{high}; pass numbers from {low} to {high}"
            )
    a, b, c, d = sorted(numbers)
    return (a, b, c, d)


def solve_game24(numbers: Sequence[int]) -> str | None:
    """Return an expression that makes 24 from the four numbers (each once, exactly), or None.

    Raises:
        ValueError, TypeError: when `numbers` is not four ints from 1 to 13.
    """
    items = initial_numbers_state(_validate_game24_numbers(numbers)).items
    item = solve_numbers(items, GAME24_TARGET, _game24_any_results, use_all=True)
    return None if item is None else item.expression


@dataclass(frozen=True)
class Game24Puzzle:
    """One multiset of four numbers from 1 to 13, whether it makes 24, and one solution."""

    numbers: tuple[int, int, int, int]
    solvable: bool
    solution: str | None


def compute_game24_puzzles() -> tuple[Game24Puzzle, ...]:
    """Solve every multiset of four numbers from 1 to 13 (1820, ascending) by the exact search,
    in about 4 s on one CPU core. `all_game24_puzzles` reads the packaged result instead."""
    low, high = _GAME24_RANGE
    puzzles = []
    for numbers in itertools.combinations_with_replacement(range(low, high + 1), _GAME24_COUNT):
        solution = solve_game24(numbers)
        puzzles.append(Game24Puzzle(numbers, solution is not None, solution))
    return tuple(puzzles)


def save_game24_puzzles(path: str | Path) -> None:
    """Write `compute_game24_puzzles()` as the JSON list that `all_game24_puzzles` reads."""
    lines = [
        json.dumps({"numbers": list(p.numbers), "solvable": p.solvable, "solution": p.solution})
        for p in compute_game24_puzzles()
    ]
    Path(path).write_text("[\n" + ",\n".join(lines) + "\n]\n", encoding="utf-8")


@functools.cache
def all_game24_puzzles() -> tuple[Game24Puzzle, ...]:
    """Every multiset of four numbers from 1 to 13 (1820), in ascending order, with whether it
    makes 24 and one solution, as found by the exact search (`compute_game24_puzzles`).

    Read from the file packaged with tempo_search (1362 of the 1820 are solvable); the tests
    check it against the solver and an independent search.
    """
    resource = importlib.resources.files("tempo_search") / "data" / _PACKAGED_PUZZLES
    records = json.loads(resource.read_text(encoding="utf-8"))
    return tuple(
        Game24Puzzle(tuple(r["numbers"]), r["solvable"], r["solution"])  # type: ignore[arg-type]
        for r in records
    )


def _game24_step_allowed(op: str, value: Fraction) -> str | None:
    return None


def _game24_node_allowed(node: BinaryOp) -> str | None:
    return None


def verify_game24(numbers: Sequence[int], answer_text: str) -> Verdict:
    """Check a Game of 24 answer exactly: each number used once and the value exactly 24.

    `answer_text` may be a whole output (the last `Answer:` line counts, else the step lines),
    or a bare expression such as `8 / (3 - 8 / 3)`. Problems are reported in the verdict, not
    raised.

    Raises:
        ValueError, TypeError: when `numbers` is not four ints from 1 to 13.
    """
    puzzle_numbers = _validate_game24_numbers(numbers)
    return verify_numbers(
        puzzle_numbers,
        GAME24_TARGET,
        answer_text,
        use_all=True,
        step_allowed=_game24_step_allowed,
        node_allowed=_game24_node_allowed,
    )


_GAME24_SYSTEM = """You solve the Game of 24. Use each of the four numbers exactly once with \
+, -, * and / to make 24.
Write one step per line: two of the numbers left, the operation, the result, and the numbers \
left after it, like `a op b = result (left: ...)`. Fractions are written like 8/3. After three \
steps one number is left. If it is 24, write the last line `Answer: expression = 24`.

Example:
{example}"""

_EXAMPLE_NUMBERS = (4, 9, 10, 13)
_EXAMPLE_LINES = (
    "13 - 9 = 4 (left: 4 4 10)\n",
    "10 - 4 = 6 (left: 4 6)\n",
    "4 * 6 = 24 (left: 24)\n",
)


class Game24Task(NumbersPuzzleTask):
    """Solve one Game of 24 puzzle in the step format of this module.

    Args:
        numbers: four ints from 1 to 13.
        use_solver_progress: give `progress` from the exact solver (1.0 while 24 is still
            reachable). Off by default because it gives the answer away.

    Raises:
        ValueError, TypeError: when `numbers` is not four ints from 1 to 13.
    """

    target = GAME24_TARGET
    use_all = True
    rule = staticmethod(game24_results)

    def __init__(self, numbers: Sequence[int], *, use_solver_progress: bool = False) -> None:
        super().__init__()
        self.numbers = _validate_game24_numbers(numbers)
        self.use_solver_progress = bool(use_solver_progress)

    @property
    def prompt(self) -> list[dict[str, str]]:
        """System message with the format and a worked example, then the puzzle."""
        return [
            {"role": "system", "content": _GAME24_SYSTEM.format(example=_game24_example())},
            {"role": "user", "content": f"Numbers: {' '.join(map(str, self.numbers))}"},
        ]

    def __repr__(self) -> str:
        return f"Game24Task({list(self.numbers)})"

    def verify(self, text: str) -> Verdict:
        return verify_game24(self.numbers, text)


@functools.cache
def _game24_example() -> str:
    """Write the worked example of the prompt through the moves, so that it matches the mask."""
    task = Game24Task(_EXAMPLE_NUMBERS)
    state = task.initial_state()
    for line in _EXAMPLE_LINES:
        state = task.moves(state)[line]
    ((answer, _),) = task.moves(state).items()
    return f"Numbers: {' '.join(map(str, _EXAMPLE_NUMBERS))}\n{''.join(_EXAMPLE_LINES)}{answer}"
