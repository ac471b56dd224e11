"""Countdown numbers game: reach a target from a set of numbers with + - * /.

Rules, as in the TV game: each number is used at most once, and not every number must be used.
Every intermediate result must be a positive integer, so a subtraction must leave more than zero
and a division must be exact.

Output format, one step per line in the style of the Game of 24 module, then the answer line as
soon as the target is among the numbers left:

    100 * 3 = 300 (left: 2 7 25 50 300)
    300 + 7 = 307 (left: 2 25 50 307)
    Answer: 100 * 3 + 7 = 307

When no step is left (one number) and the target was not reached, the text is finished unsolved.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from fractions import Fraction
from typing import Any

from tempo_search.tasks.arithmetic import BinaryOp
from tempo_search.tasks.base import Verdict
from tempo_search.tasks.game24 import (
    NumbersPuzzleTask,
    initial_numbers_state,
    solve_numbers,
    verify_numbers,
)

logger = logging.getLogger(__name__)

__all__ = ["CountdownTask", "solve_countdown", "verify_countdown"]

# The exact solver's cost grows several-fold per extra number (measured on one CPU core for
# unsolvable sets: about 0.5 s for six numbers, 3 s for seven), so larger sets are rejected.
MAX_COUNTDOWN_NUMBERS = 7


def countdown_results(a: Fraction, b: Fraction) -> list[tuple[str, Fraction]]:
    """`a op b` under the Countdown rules: positive integer results only."""
    results = [("+", a + b), ("*", a * b)]
    if a > b:
        results.append(("-", a - b))
    if b != 0 and a % b == 0:
        results.append(("/", a / b))
    return results


def _validate(numbers: Any, target: Any) -> tuple[tuple[int, ...], int]:
    if isinstance(numbers, str):
        raise TypeError(
            f"numbers must be a sequence of ints, got the str {numbers!r}; convert it with "
            "parse_numbers()"
        )
    if not isinstance(numbers, Iterable):
        raise TypeError(f"numbers must be a sequence of positive ints, got {numbers!r}")
    numbers = list(numbers)
    if not numbers:
        raise ValueError("numbers is empty; pass the numbers to combine, such as [25, 50, 3, 7]")
    if len(numbers) > MAX_COUNTDOWN_NUMBERS:
        raise ValueError(
            f"Countdown takes at most {MAX_COUNTDOWN_NUMBERS} numbers, got {len(numbers)}; "
            "pass fewer numbers (the TV game uses 6)"
        )
    for number in numbers:
        if isinstance(number, bool) or not isinstance(number, int):
            raise TypeError(f"numbers must be positive ints, got {number!r}")
        if number < 1:
            raise ValueError(f"number {number} is not positive; pass numbers >= 1")
    if isinstance(target, bool) or not isinstance(target, int):
        raise TypeError(f"target must be a positive int, got {target!r}")
    if target < 1:
        raise ValueError(
            f"target {target} is not positive; Countdown results are positive integers, so pass "
            "a target >= 1"
        )
    return tuple(sorted(numbers)), target


def solve_countdown(numbers: Sequence[int], target: int) -> str | None:
    """Return one expression that reaches `target` under the Countdown rules, or None.

    Exhaustive exact search with memoised states. Measured on one CPU core: 0.05 to 0.8 s for a
    solvable 6-number TV puzzle, about 0.5 s when six numbers cannot reach the target.

    Raises:
        ValueError, TypeError: for empty or non-positive numbers or a non-positive target.
    """
    numbers, target = _validate(numbers, target)
    items = initial_numbers_state(numbers).items
    item = solve_numbers(items, target, countdown_results, use_all=False)
    return None if item is None else item.expression


def _step_allowed(op: str, value: Fraction) -> str | None:
    if value <= 0:
        return "goes to zero or below; Countdown results must be positive"
    if value.denominator != 1:
        return "is not an exact division; Countdown results must be integers"
    return None


def _node_allowed(node: BinaryOp) -> str | None:
    value = node.exact_value
    if value <= 0:
        return f"a step gives {value}; Countdown results must be positive"
    if value.denominator != 1:
        return f"a division gives {value}; Countdown divisions must be exact"
    return None


def verify_countdown(numbers: Sequence[int], target: int, answer_text: str) -> Verdict:
    """Check a Countdown answer exactly: numbers used at most once, every intermediate result a
    positive integer, and the value equal to `target`.

    `answer_text` may be a whole output (the last `Answer:` line counts, else the step lines) or
    a bare expression. Problems are reported in the verdict, not raised.

    Raises:
        ValueError, TypeError: for empty or non-positive numbers or a non-positive target.
    """
    numbers, target = _validate(numbers, target)
    return verify_numbers(
        numbers,
        target,
        answer_text,
        use_all=False,
        step_allowed=_step_allowed,
        node_allowed=_node_allowed,
    )


_SYSTEM = """You play the Countdown numbers game. Reach the target number by combining the \
given numbers with +, -, * and /. Use each number at most once; you do not have to use all of \
them. Every result must be a positive whole number.
Write one step per line: two of the numbers left, the operation, the result, and the numbers \
left after it, like `a op b = result (left: ...)`. As soon as the target is among the numbers \
left, write the last line `Answer: expression = target`.

Example:
{example}"""

_EXAMPLE_NUMBERS = (2, 3, 7, 25, 50, 100)
_EXAMPLE_TARGET = 307
_EXAMPLE_LINES = (
    "100 * 3 = 300 (left: 2 7 25 50 300)\n",
    "300 + 7 = 307 (left: 2 25 50 307)\n",
)


def _describe(numbers: Sequence[int], target: int) -> str:
    return f"Numbers: {' '.join(map(str, numbers))}\nTarget: {target}"


class CountdownTask(NumbersPuzzleTask):
    """Reach `target` from `numbers` under the Countdown rules, in the step format above.

    Args:
        numbers: 1 to `MAX_COUNTDOWN_NUMBERS` positive ints (the TV game deals 6).
        target: a positive int (the TV game picks 100 to 999).
        use_solver_progress: give `progress` from the exact solver (1.0 while the target is
            still reachable). Off by default because it gives the answer away.

    Raises:
        ValueError, TypeError: for empty, too many or non-positive numbers, or a non-positive
            target.
    """

    use_all = False
    rule = staticmethod(countdown_results)

    def __init__(
        self, numbers: Sequence[int], target: int, *, use_solver_progress: bool = False
    ) -> None:
        super().__init__()
        self.numbers, self.target = _validate(numbers, target)
        self.use_solver_progress = bool(use_solver_progress)

    @property
    def prompt(self) -> list[dict[str, str]]:
        """System message with the rules, the format and a worked example, then the puzzle."""
        return [
            {"role": "system", "content": _SYSTEM.format(example=_example())},
            {"role": "user", "content": _describe(self.numbers, self.target)},
        ]

    def __repr__(self) -> str:
        return f"CountdownTask({list(self.numbers)}, {self.target})"

    def verify(self, text: str) -> Verdict:
        return verify_countdown(self.numbers, self.target, text)


def _example() -> str:
    """Write the worked example of the prompt through the moves, so that it matches the mask."""
    task = CountdownTask(_EXAMPLE_NUMBERS, _EXAMPLE_TARGET)
    state = task.initial_state()
    for line in _EXAMPLE_LINES:
        state = task.moves(state)[line]
    ((answer, _),) = task.moves(state).items()
    return f"{_describe(_EXAMPLE_NUMBERS, _EXAMPLE_TARGET)}\n{''.join(_EXAMPLE_LINES)}{answer}"
