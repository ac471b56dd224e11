"""Tests of Countdown: rules of the exact verifier, the solver, and the legal-move mask."""

import random

import pytest
import torch
from tokenizers import Tokenizer, decoders, models
from transformers import PreTrainedTokenizerFast

from tempo_search.tasks import CountdownTask, solve_countdown, verify_countdown

EOS = "<eos>"


def make_tokenizer(pieces):
    """A tokenizer whose ids decode to exactly the given pieces, id 0 being EOS."""
    vocab = {EOS: 0, "<unk>": 1}
    for piece in pieces:
        vocab.setdefault(piece, len(vocab))
    model = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    model.decoder = decoders.Fuse()
    return PreTrainedTokenizerFast(tokenizer_object=model, eos_token=EOS, unk_token="<unk>")


PIECES = [*"0123456789/+-*=() :\n", "left", "Answer", " +", " *", " =", ")\n", "100", "25",
          "Answer:", "x"]  # fmt: skip


@pytest.fixture(scope="module")
def tokenizer():
    return make_tokenizer(PIECES)


VERIFY_CASES = [
    # (numbers, target, answer, correct, part of the error)
    ([2, 3, 7, 25, 50, 100], 307, "100 * 3 + 7", True, None),
    ([2, 3, 7, 25, 50, 100], 307, "Answer: 100 * 3 + 7 = 307", True, None),
    ([2, 3, 7, 25, 50, 100], 300, "100 * 3", True, None),  # not every number is needed
    ([2, 3, 7, 25, 50, 100], 307, "100 * 3 + 7 + 0", False, "0, which is not one of"),
    ([2, 3, 7, 25, 50, 100], 600, "100 * 3 * 2", True, None),
    ([2, 3, 7, 25, 50, 100], 900, "100 * 3 * 3", False, "more often than given"),
    ([2, 3, 4], 6, "3 / 2 * 4", False, "divisions must be exact"),
    ([2, 3, 4], 6, "4 * 3 / 2", True, None),  # 12 / 2 is exact
    ([2, 3, 4], 3, "(2 - 3) + 4", False, "must be positive"),
    ([2, 3, 4], 3, "4 - 3 + 2", True, None),
    ([3, 3, 4], 4, "(3 - 3) + 4", False, "must be positive"),
    ([2, 3, 4], 9, "2 + 3 + 4", True, None),
    ([2, 3, 4], 10, "2 + 3 + 4", False, "equals 9, not 10"),
    ([2, 3, 4], 10, "2 / 0", False, "division by zero"),
    ([2, 3, 4], 10, "2 3 + 4", False, "missing operator"),
    ([2, 3, 4], 10, "", False, "no answer"),
]


@pytest.mark.parametrize(("numbers", "target", "text", "correct", "error"), VERIFY_CASES)
def test_verify_countdown_cases(numbers, target, text, correct, error):
    verdict = verify_countdown(numbers, target, text)
    assert verdict.correct == correct
    if error is not None:
        assert error in verdict.error


def test_verify_countdown_steps():
    text = "100 * 3 = 300 (left: 2 7 25 50 300)\n300 + 7 = 307 (left: 2 25 50 307)\n"
    verdict = verify_countdown([2, 3, 7, 25, 50, 100], 307, text)
    assert verdict.correct
    assert verdict.legal


@pytest.mark.parametrize(
    ("steps", "error"),
    [
        ("3 - 7 = -4 (left: -4 2)\n", "zero or below"),
        ("3 / 2 = 3/2 (left: 3/2 7)\n", "not an exact division"),
        ("7 - 7 = 0 (left: 0 2 3)\n", "uses 7, not among"),
    ],
)
def test_verify_countdown_illegal_steps(steps, error):
    verdict = verify_countdown([2, 3, 7], 10, steps)
    assert not verdict.legal
    assert error in verdict.error


@pytest.mark.parametrize(
    ("numbers", "target"),
    [([25, 50, 75, 100, 3, 6], 952), ([2, 3, 7, 25, 50, 100], 307), ([100], 100), ([4, 6], 24)],
)
def test_solve_countdown_solutions_verify(numbers, target):
    solution = solve_countdown(numbers, target)
    assert verify_countdown(numbers, target, solution).correct


@pytest.mark.parametrize(("numbers", "target"), [([1, 1], 5), ([1, 1, 2, 2, 3, 3], 999)])
def test_solve_countdown_unsolvable(numbers, target):
    assert solve_countdown(numbers, target) is None


@pytest.mark.parametrize(
    ("numbers", "target", "error", "message"),
    [
        ([], 10, ValueError, "numbers is empty"),
        ([1, 2], -5, ValueError, "target -5 is not positive"),
        ([1, 2], 0, ValueError, "target 0 is not positive"),
        ([1, -2], 5, ValueError, "number -2 is not positive"),
        ([1, 2, 3, 4, 5, 6, 7, 8], 5, ValueError, "at most 7 numbers, got 8"),
        ([1, 2.5], 5, TypeError, "got 2.5"),
        ([1, 2], "5", TypeError, "target must be a positive int"),
        ("1 2", 5, TypeError, "parse_numbers"),
    ],
)
def test_countdown_invalid(numbers, target, error, message):
    with pytest.raises(error, match=message):
        CountdownTask(numbers, target)


def test_countdown_prompt():
    prompt = CountdownTask([1, 2, 3], 6).prompt
    assert [m["role"] for m in prompt] == ["system", "user"]
    assert prompt[1]["content"] == "Numbers: 1 2 3\nTarget: 6"
    assert "Answer: 100 * 3 + 7 = 307" in prompt[0]["content"]


def test_countdown_moves_follow_rules():
    task = CountdownTask([2, 3, 7], 100)
    lines = list(task.moves(task.initial_state()))
    assert "7 - 3 = 4 (left: 2 4)\n" in lines
    assert not any(line.startswith("3 - 7") for line in lines)  # below zero
    assert not any(line.startswith("7 / 2") for line in lines)  # not exact
    assert all(line.endswith(")\n") for line in lines)


def test_countdown_target_among_numbers_forces_answer():
    task = CountdownTask([5, 100], 100)
    assert list(task.moves(task.initial_state())) == ["Answer: 100 = 100"]


def random_walk(task, tokenizer, rng, prefer=None, limit=400):
    ids: list[int] = []
    text = ""
    for _ in range(limit):
        choices = torch.nonzero(task.allowed_tokens(ids, text)).flatten().tolist()
        assert choices, text
        if prefer is not None:
            rest = prefer[len(text) :]
            along = [i for i in choices if i != 0 and rest.startswith(tokenizer.decode([i]))]
            choices = [max(along, key=lambda i: len(tokenizer.decode([i])))] if along else choices
        choice = rng.choice(choices)
        if choice == tokenizer.eos_token_id:
            return text, True
        ids.append(choice)
        text = tokenizer.decode(ids)
    return text, False


def test_countdown_random_walk_is_always_legal(tokenizer):
    rng = random.Random(0)
    task = CountdownTask([2, 3, 7, 25], 31)
    task.bind(tokenizer, 64)
    for _ in range(20):
        text, ended = random_walk(task, tokenizer, rng)
        verdict = verify_countdown([2, 3, 7, 25], 31, text)
        assert ended
        assert verdict.legal, (text, verdict)
        assert task.reward(text) == float(verdict.correct)


def test_countdown_greedy_walk_along_solver_solves(tokenizer):
    task = CountdownTask([25, 50, 75, 100, 3, 6], 952)
    task.bind(tokenizer, 64)
    solution = task.solution_text()
    text, ended = random_walk(task, tokenizer, random.Random(0), prefer=solution)
    assert ended
    assert text == solution
    assert task.is_satisfied(text)
    assert task.report(text)["verified"] is True


def test_countdown_progress_switch():
    text = "2 + 3 = 5 (left: 5)\n"
    assert CountdownTask([2, 3], 6).progress(text) is None
    assert CountdownTask([2, 3], 6, use_solver_progress=True).progress(text) == 0.0
    assert CountdownTask([2, 3], 6, use_solver_progress=True).progress("") == 1.0
