"""Tests of the task contract helpers: sentence ends, AllOf with puzzles, and MoveTask masks."""

import pytest
import torch
from tokenizers import Tokenizer, decoders, models
from transformers import PreTrainedTokenizerFast

from tempo_search.tasks import AllOf, BannedWords, Keywords, MoveTask, Task
from tempo_search.tasks.base import sentence_ended

EOS = "<eos>"


def make_tokenizer(pieces):
    """A tokenizer whose ids decode to exactly the given pieces, id 0 being EOS."""
    vocab = {EOS: 0, "<unk>": 1}
    for piece in pieces:
        vocab.setdefault(piece, len(vocab))
    model = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    model.decoder = decoders.Fuse()
    return PreTrainedTokenizerFast(tokenizer_object=model, eos_token=EOS, unk_token="<unk>")


class Route(MoveTask):
    """Toy puzzle: "go left" then "stop", or "go right" then a dead end."""

    def initial_state(self):
        return "start"

    def legal_moves(self, state):
        if state == "start":
            return [("go left\n", "left"), ("go right\n", "right")]
        if state == "left":
            return [("stop", "end")]
        return []

    def state_is_success(self, state):
        return state == "end"

    def reward(self, text):
        return 1.0 if self.is_finished(text) and self.parse(text).state == "end" else 0.0

    def report(self, text):
        return {"solved": self.reward(text) == 1.0}


PIECES = ["go", " left", " l", "eft", "eft\n", "\n", "\ns", " right", "go left\nstop", "stop",
          "s", "top", " r", "x", "go "]  # fmt: skip


@pytest.fixture(scope="module")
def tokenizer():
    return make_tokenizer(PIECES)


def allowed_pieces(task, tokenizer, text, num_tokens=1):
    mask = task.allowed_tokens(list(range(num_tokens)), text)
    return {tokenizer.convert_ids_to_tokens(i) for i in torch.nonzero(mask).flatten().tolist()}


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("", {"go", "go left\nstop", "go "}),
        ("go", {" left", " l", " right", " r"}),
        ("go l", {"eft", "eft\n"}),  # a token may end a line
        ("go left", {"\n", "\ns"}),  # or span into the next line
        ("go left\n", {"stop", "s"}),
        ("go left\ns", {"top"}),
        ("go left\nstop", {EOS}),
        ("go right\n", {EOS}),  # a dead end: finished unsolved
    ],
)
def test_move_task_mask_admits_legal_prefixes(tokenizer, text, expected):
    task = Route()
    task.bind(tokenizer, 32)
    assert allowed_pieces(task, tokenizer, text, num_tokens=len(text) > 0) == expected


def test_move_task_invalid_text_allows_only_eos(tokenizer, caplog):
    task = Route()
    task.bind(tokenizer, 32)
    assert allowed_pieces(task, tokenizer, "go up") == {EOS}
    assert "leaves the legal moves" in caplog.text


def test_move_task_parse():
    parse = Route().parse("go left\nst")
    assert parse.lines == ("go left\n",)
    assert parse.state == "left"
    assert parse.rest == "st"
    assert parse.valid


def test_move_task_finished():
    task = Route()
    assert task.is_finished("go left\nstop")
    assert task.is_finished("go right\n")
    assert not task.is_finished("go left\n")
    assert not task.is_finished("go left\nstop\n")


def test_move_task_solution_text():
    assert Route().solution_text() == "go left\nstop"


def test_move_task_needs_bind():
    with pytest.raises(RuntimeError, match="bind"):
        Route().allowed_tokens([], "")


def test_move_task_needs_eos():
    tokenizer = make_tokenizer(["a"])
    tokenizer.eos_token = None
    with pytest.raises(ValueError, match="eos_token_id"):
        Route().bind(tokenizer, 8)


def test_all_of_puzzle_and_constraint(tokenizer):
    task = AllOf(Route(), BannedWords(["right"]))
    task.bind(tokenizer, 32)
    assert allowed_pieces(task, tokenizer, "go") == {" left", " l", " right", " r"}
    assert allowed_pieces(task, tokenizer, "go right") == set()  # the members disagree
    assert task.is_finished("go left\nstop")
    assert task.is_satisfied("go left\nstop")
    assert not task.is_satisfied("go right\n")


def test_all_of_conflicting_prompts():
    class WithPrompt(Route):
        def __init__(self, prompt):
            super().__init__()
            self.prompt = prompt

    with pytest.raises(ValueError, match="different prompts"):
        AllOf(WithPrompt("a"), WithPrompt("b"))
    assert AllOf(WithPrompt("a"), Keywords(["x"])).prompt == "a"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("The cat sat.", True),
        ("The cat sat!  ", True),
        ('He said "go."', True),
        ("Is it (really?)", True),
        ("The cat sat", False),
        ("...", False),
        ("", False),
        ("3.", True),
    ],
)
def test_sentence_ended(text, expected):
    assert sentence_ended(text) == expected


def test_task_default_satisfied_uses_reward():
    class Half(Task):
        def allowed_tokens(self, token_ids, text):
            return None

        def reward(self, text):
            return 0.5

        def is_finished(self, text):
            return True

        def report(self, text):
            return {}

    assert not Half().is_satisfied("x")
    assert Half().progress("x") is None
    assert Half().prompt is None
