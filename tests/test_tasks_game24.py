"""Tests of the Game of 24: exact verifier, solver, puzzle list, and the legal-move mask."""

import functools
import itertools
import math
import random

import pytest
import torch
from tokenizers import Tokenizer, decoders, models
from transformers import PreTrainedTokenizerFast

from tempo_search.tasks import Game24Task, all_game24_puzzles, solve_game24, verify_game24

EOS = "<eos>"


def make_tokenizer(pieces):
    """A tokenizer whose ids decode to exactly the given pieces, id 0 being EOS."""
    vocab = {EOS: 0, "<unk>": 1}
    for piece in pieces:
        vocab.setdefault(piece, len(vocab))
    model = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    model.decoder = decoders.Fuse()
    return PreTrainedTokenizerFast(tokenizer_object=model, eos_token=EOS, unk_token="<unk>")


# Single characters make every legal text spellable; longer pieces cross word and line borders.
PIECES = [*"0123456789/+-*=() :\n", "left", "Answer", " +", " -", " *", " /", " =", " (",
          "(left", ": ", ")\n", "13", "10", " 1", "24", " 24", "Answer:", "\nAnswer", "x", " .",
          "4 +", "3)\n"]  # fmt: skip


@pytest.fixture(scope="module")
def tokenizer():
    return make_tokenizer(PIECES)


# ----------------------------------------------------------------------------------------------
# Verifier

VERIFY_CASES = [
    # (numbers, answer text, correct, part of the error)
    ([3, 3, 8, 8], "8/(3-8/3)", True, None),
    ([3, 3, 8, 8], "8 / (3 - 8 / 3) = 24", True, None),
    ([4, 9, 10, 13], "(10 - 4) * (13 - 9)", True, None),
    ([4, 9, 10, 13], "Answer: (13 - 9) * (10 - 4) = 24", True, None),
    ([4, 9, 10, 13], "some words\nAnswer: (10-4)*(13-9)\n", True, None),
    ([4, 9, 10, 13], "(10 - 4) * (13 - 9) * 1", False, "not one of"),
    ([4, 9, 10, 13], "4 * 6", False, "6, which is not one of"),
    ([4, 9, 10, 13], "(10 - 4) * (4 + 0)", False, "more often than given"),
    ([4, 9, 10, 13], "10 + 13", False, "unused"),
    ([4, 9, 10, 13], "4 + 9 + 10 + 13", False, "equals 36, not 24"),
    ([1, 2, 3, 4], "(1 + 2 + 3) * 4", True, None),
    ([1, 2, 3, 4], "(1 + 2 + 3) * 4 / (4 - 4)", False, "division by zero"),
    ([1, 2, 3, 4], "1 2 * 3 - 4 / 3", False, "missing operator between 1 and 2"),
    ([1, 2, 3, 4], "12 * (4 - 3 + 1)", False, "12, which is not one of"),  # "1" "2" glued
    ([1, 2, 3, 4], "__import__('os').system('true')", False, "unexpected character"),
    ([1, 2, 3, 4], "", False, "no answer"),
    ([2, 2, 6, 6], "6 * 6 - 6 * 2", False, "more often"),  # reused number
    ([1, 5, 5, 5], "5 * (5 - 1 / 5)", True, None),
    ([4, 4, 10, 10], "(10 * 10 - 4) / 4", True, None),
]


@pytest.mark.parametrize(("numbers", "text", "correct", "error"), VERIFY_CASES)
def test_verify_game24_cases(numbers, text, correct, error):
    verdict = verify_game24(numbers, text)
    assert verdict.correct == correct
    if error is not None:
        assert error in verdict.error


STEPS_RIGHT = "13 - 9 = 4 (left: 4 4 10)\n10 - 4 = 6 (left: 4 6)\n4 * 6 = 24 (left: 24)\n"


def test_verify_game24_steps_without_answer_line():
    verdict = verify_game24([4, 9, 10, 13], STEPS_RIGHT)
    assert verdict.correct
    assert verdict.legal
    assert verdict.value == 24


@pytest.mark.parametrize(
    ("steps", "error"),
    [
        ("13 - 9 = 5 (left: 4 5 10)\n", "claims 5, but it is 4"),
        ("13 - 13 = 0 (left: 0 4 9 10)\n", "uses 13, not among 4 9 10"),
        ("13 - 9 = 4 (left: 4 10)\n", "lists left numbers"),
        ("4 / 0 = 1 (left: 1 9 10 13)\n", "uses 0"),
    ],
)
def test_verify_game24_illegal_steps(steps, error):
    verdict = verify_game24([4, 9, 10, 13], steps)
    assert not verdict.legal
    assert error in verdict.error


def test_verify_game24_fraction_steps():
    text = "8 / 3 = 8/3 (left: 3 8 8/3)\n3 - 8/3 = 1/3 (left: 1/3 8)\n8 / 1/3 = 24 (left: 24)\n"
    verdict = verify_game24([3, 3, 8, 8], text)
    assert verdict.correct
    assert verdict.legal


def test_verify_game24_reports_bad_steps_next_to_right_answer():
    text = "13 - 9 = 5 (left: 4 5 10)\nAnswer: (10 - 4) * (13 - 9) = 24"
    verdict = verify_game24([4, 9, 10, 13], text)
    assert verdict.correct
    assert not verdict.legal


# ----------------------------------------------------------------------------------------------
# Solver and the list of all puzzles


@functools.cache
def float_solvable(values):
    """Whether the sorted values make 24, by pairwise reduction over floats (independent of the
    library's exact solver)."""
    if len(values) == 1:
        return math.isclose(values[0], 24, abs_tol=1e-9)
    for i, j in itertools.combinations(range(len(values)), 2):
        a, b = values[i], values[j]
        rest = [v for k, v in enumerate(values) if k not in (i, j)]
        results = [a + b, a - b, b - a, a * b]
        if b:
            results.append(a / b)
        if a:
            results.append(b / a)
        if any(float_solvable(tuple(sorted([*rest, r]))) for r in results):
            return True
    return False


@pytest.fixture(scope="module")
def puzzles():
    return all_game24_puzzles()


def test_all_puzzles_are_every_multiset(puzzles):
    expected = list(itertools.combinations_with_replacement(range(1, 14), 4))
    assert len(puzzles) == 1820
    assert [p.numbers for p in puzzles] == expected


def test_all_puzzles_solvable_flags_match_float_search(puzzles):
    expected = [float_solvable(tuple(float(n) for n in p.numbers)) for p in puzzles]
    assert [p.solvable for p in puzzles] == expected


def test_all_puzzles_solvable_count(puzzles):
    # 1362 is the published count of solvable sets of four numbers from 1 to 13.
    assert sum(p.solvable for p in puzzles) == 1362


@pytest.mark.parametrize("numbers", [(1, 1, 1, 1), (1, 1, 2, 2), (1, 1, 1, 2)])
def test_known_unsolvable_flagged(puzzles, numbers):
    puzzle = next(p for p in puzzles if p.numbers == numbers)
    assert not puzzle.solvable
    assert puzzle.solution is None


def test_all_listed_solutions_verify(puzzles):
    for puzzle in puzzles:
        if puzzle.solvable:
            assert verify_game24(puzzle.numbers, puzzle.solution).correct, puzzle


def test_step_format_loses_no_puzzle(puzzles):
    """The format forbids subtraction below zero; every solvable puzzle still has a solution."""
    for puzzle in puzzles:
        task = Game24Task(puzzle.numbers)
        assert task.state_can_succeed(task.initial_state()) == puzzle.solvable, puzzle


def test_packaged_puzzles_match_solver(puzzles):
    for puzzle in puzzles[::12]:
        assert (solve_game24(puzzle.numbers) is not None) == puzzle.solvable, puzzle


def test_solve_game24_3388():
    solution = solve_game24([3, 3, 8, 8])
    assert verify_game24([3, 3, 8, 8], solution).correct


def test_solve_game24_unsolvable():
    assert solve_game24([1, 1, 1, 1]) is None


# ----------------------------------------------------------------------------------------------
# Task construction


@pytest.mark.parametrize(
    ("numbers", "error", "message"),
    [
        ([1, 2, 3], ValueError, "exactly 4 numbers, got 3"),
        ([1, 2, 3, 4, 5], ValueError, "exactly 4 numbers, got 5"),
        ([0, 2, 3, 4], ValueError, "number 0 is outside 1..13"),
        ([1, 2, 3, 14], ValueError, "number 14 is outside 1..13"),
        ([1, 2, 3, "4"], TypeError, "got '4'"),
        ([1, 2, 3, 4.0], TypeError, "got 4.0"),
        ([1, 2, 3, True], TypeError, "got True"),
        ("4 9 10 13", TypeError, "parse_numbers"),
        (None, TypeError, "4 ints"),
    ],
)
def test_game24_task_invalid(numbers, error, message):
    with pytest.raises(error, match=message):
        Game24Task(numbers)


def test_game24_prompt_messages():
    prompt = Game24Task([1, 2, 3, 4]).prompt
    assert [m["role"] for m in prompt] == ["system", "user"]
    assert prompt[1]["content"] == "Numbers: 1 2 3 4"
    assert "Answer: (13 - 9) * (10 - 4) = 24" in prompt[0]["content"]


def test_game24_prompt_example_is_legal_text():
    example = Game24Task([4, 9, 10, 13]).prompt[0]["content"].split("Numbers: 4 9 10 13\n")[1]
    task = Game24Task([4, 9, 10, 13])
    assert task.is_finished(example)
    assert task.reward(example) == 1.0


# ----------------------------------------------------------------------------------------------
# Mask


def all_texts(task, state=None, prefix=""):
    """Every complete legal text of a move task."""
    state = task.initial_state() if state is None else state
    moves = task.moves(state)
    if not moves:
        return [prefix]
    texts = []
    for line, next_state in moves.items():
        texts.extend(all_texts(task, next_state, prefix + line))
    return texts


def allowed_pieces(task, tokenizer, ids, text):
    mask = task.allowed_tokens(ids, text)
    return {tokenizer.convert_ids_to_tokens(i) for i in torch.nonzero(mask).flatten().tolist()}


def test_game24_mask_is_exact(tokenizer):
    """At each prefix the mask admits exactly the pieces that keep the text a prefix of some
    complete legal text, and EOS exactly at complete texts."""
    task = Game24Task([3, 3, 8, 8])
    task.bind(tokenizer, 80)
    texts = all_texts(task)
    complete = set(texts)
    prefixes = ["", "8", "8 ", "8 /", "8 / 3 = 8/3", "8 / 3 = 8/3 (left: 8/3 3 8)\n",
                "8 / 3 = 8/3 (left: 8/3 3 8)\n3 - 8/3 = 1/3 (left: 1/3 8)\n8 / 1/3 = 24 (left: 24)\n",
                "8 / 3 = 8/3 (left: 8/3 3 8)\n3 - 8/3 = 1/3 (left: 1/3 8)\n8 / 1/3 = 24 (left: 24)\nAns",
                "3 + 3 = 6 (left: 6 8 8)\n6 + 8 = 14 (left: 8 14)\n8 + 14 = 22 (left: 22)\n"]  # fmt: skip
    for prefix in prefixes:
        candidates = [t for t in texts if t.startswith(prefix)]
        expected = {p for p in PIECES if any(t.startswith(prefix + p) for t in candidates)}
        if prefix in complete:
            expected.add(EOS)
        assert allowed_pieces(task, tokenizer, [1] * bool(prefix), prefix) == expected, prefix


def random_walk(task, tokenizer, rng, prefer=None, limit=300):
    """Follow allowed tokens from the empty text; with `prefer`, take the longest allowed token
    that continues that text. Returns the text and whether EOS was chosen."""
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


def test_game24_random_walk_is_always_legal(tokenizer):
    rng = random.Random(0)
    for numbers in ([4, 9, 10, 13], [3, 3, 8, 8], [1, 1, 1, 1]):
        task = Game24Task(numbers)
        task.bind(tokenizer, 80)
        for _ in range(15):
            text, ended = random_walk(task, tokenizer, rng)
            verdict = verify_game24(numbers, text)
            assert ended
            assert task.is_finished(text)
            assert verdict.legal, (text, verdict)
            assert task.reward(text) == float(verdict.correct)


def test_game24_greedy_walk_along_solver_solves(tokenizer):
    for numbers in ([4, 9, 10, 13], [3, 3, 8, 8], [1, 5, 5, 5]):
        task = Game24Task(numbers)
        task.bind(tokenizer, 80)
        solution = task.solution_text()
        text, ended = random_walk(task, tokenizer, random.Random(0), prefer=solution)
        assert ended
        assert text == solution
        assert task.reward(text) == 1.0
        assert task.is_satisfied(text)


def test_game24_unsolvable_has_no_solution_text():
    assert Game24Task([1, 1, 1, 1]).solution_text() is None


def test_game24_report():
    task = Game24Task([4, 9, 10, 13])
    report = task.report(STEPS_RIGHT + "Answer: (13 - 9) * (10 - 4) = 24")
    assert report == {
        "solved": True,
        "answer": "(13 - 9) * (10 - 4)",
        "verified": True,
        "error": None,
    }


def test_game24_report_unfinished():
    report = Game24Task([4, 9, 10, 13]).report("13 - 9 = 4 (left: 4 4 10)\n")
    assert report["solved"] is False
    assert report["verified"] is False


def test_game24_progress_switch():
    dead_end = "4 + 9 = 13 (left: 10 13 13)\n"  # 10 13 13 cannot make 24
    live = "13 - 9 = 4 (left: 4 4 10)\n"
    assert Game24Task([4, 9, 10, 13]).progress(live) is None
    task = Game24Task([4, 9, 10, 13], use_solver_progress=True)
    assert task.progress(live) == 1.0
    assert task.progress(dead_end) == 0.0


def test_game24_task_verifies_text_once():
    task = Game24Task([4, 9, 10, 13])
    calls = []
    verify = task.verify

    def counted(text):
        calls.append(text)
        return verify(text)

    task.verify = counted
    text = "Answer: (13 - 9) * (10 - 4) = 24"
    task.reward(text)
    task.is_satisfied(text)
    assert calls == [text]
