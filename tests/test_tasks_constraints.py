"""Tests of the free-text constraints on a hand-built tokenizer whose pieces the tests choose."""

import random
import re

import pytest
import regex
import torch
from tokenizers import Tokenizer, decoders, models
from transformers import PreTrainedTokenizerFast

from tempo_search.tasks import (
    AllOf,
    BannedWords,
    Keywords,
    Length,
    Regex,
    constraints_task,
    inflected_forms,
)
from tempo_search.tasks._vocab import trailing_word

EOS = "<eos>"
PIECES = [
    "the", " the", "The", " ", "  ", ".", "!", ",", "\n", "a", " a",
    "c", "ca", "cat", " cat", " Cat", "CAT", " cat.", "cat.", "cat,", "at", "at.", "t", "t ",
    "t.", "tal", "alog", "s", " dog", "do", "g", "g!", "bob", " bob", "é", "É", "_", "ß",
    "1", "2", "3", "12", "123", "-", "5-", "-1", " is", " red", " blue", "x",
]  # fmt: skip
VOCAB_SIZE = 64  # wider than the tokenizer, like a padded logits matrix


def make_tokenizer(pieces):
    """A tokenizer whose ids decode to exactly the given pieces, id 0 being EOS."""
    vocab = {EOS: 0, "<unk>": 1}
    for piece in pieces:
        vocab.setdefault(piece, len(vocab))
    model = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    model.decoder = decoders.Fuse()
    return PreTrainedTokenizerFast(tokenizer_object=model, eos_token=EOS, unk_token="<unk>")


@pytest.fixture(scope="module")
def tokenizer():
    return make_tokenizer(PIECES)


def token_id(tokenizer, piece):
    return tokenizer.convert_tokens_to_ids(piece)


def allowed(task, tokenizer, text, piece, num_tokens=1):
    mask = task.allowed_tokens(list(range(num_tokens)), text)
    return bool(mask[token_id(tokenizer, piece)])


# ----------------------------------------------------------------------------------------------
# Keywords


def test_keywords_reward_fraction_covered():
    task = Keywords(["cat", "dog", "bird"])
    assert task.reward("The cat and the dog.") == pytest.approx(2 / 3)


def test_keywords_whole_words_only():
    task = Keywords(["cat"])
    assert task.reward("a catalog of bobcats") == 0.0


def test_keywords_case_insensitive_and_punctuation():
    task = Keywords(["cat"])
    assert task.reward("CAT's toy, cat-like.") == 1.0


def test_keywords_split_across_tokens(tokenizer):
    ids = [token_id(tokenizer, p) for p in ("the", " ", "ca", "t", ".")]
    text = tokenizer.decode(ids)
    assert Keywords(["cat"]).reward(text) == 1.0


def test_keywords_no_mask(tokenizer):
    task = Keywords(["cat"])
    task.bind(tokenizer, VOCAB_SIZE)
    assert task.allowed_tokens([], "") is None


@pytest.fixture(scope="module")
def cat_dog(tokenizer):
    task = Keywords(["cat", "dog"])
    task.bind(tokenizer, VOCAB_SIZE)
    return task


def guided(task, tokenizer, text, piece, num_tokens=1):
    mask = task.guide_tokens(list(range(num_tokens)), text)
    return mask is not None and bool(mask[token_id(tokenizer, piece)])


@pytest.mark.parametrize(
    ("text", "piece", "expected"),
    [
        # After a whole other word: a new word starts with a leading-space token.
        ("the", " cat", True),
        ("the", " Cat", True),
        ("the", " cat.", True),
        ("the", " dog", True),
        ("the", "cat", False),  # glued on: "thecat"
        ("the", "ca", False),
        ("the", " the", False),
        ("the", " a", False),
        # At a word boundary: the word, its first pieces, any case.
        ("the ", "cat", True),
        ("the ", "CAT", True),
        ("the ", "c", True),
        ("the ", "ca", True),
        ("the ", "cat,", True),
        ("the ", "do", True),
        ("the ", "at", False),
        ("the ", "g", False),
        # Inside a started word: the pieces that finish it, bounded or not.
        ("the ca", "t", True),
        ("the ca", "t.", True),
        ("the ca", "t ", True),
        ("the ca", "tal", False),  # "catal" is no prefix of "cat"
        ("the ca", "at", False),
        ("the ca", " cat", True),
        ("the do", "g", True),
        ("the do", "g!", True),
        # A covered word is no longer guided.
        ("the cat", " cat", False),
        ("the cat", " dog", True),
    ],
)
def test_keywords_guide_case_table(cat_dog, tokenizer, text, piece, expected):
    assert guided(cat_dog, tokenizer, text, piece) == expected


def test_keywords_guide_first_token(cat_dog, tokenizer):
    assert guided(cat_dog, tokenizer, "", "cat", num_tokens=0)


def test_keywords_guide_none_when_all_covered(cat_dog):
    assert cat_dog.guide_tokens([1, 2], "the cat, the dog") is None


def test_keywords_guide_needs_bind():
    with pytest.raises(RuntimeError, match="bind"):
        Keywords(["cat"]).guide_tokens([], "")


def test_all_of_guide_is_members_guide(cat_dog, tokenizer):
    task = AllOf(Keywords(["cat", "dog"]), BannedWords(["bob"]))
    task.bind(tokenizer, VOCAB_SIZE)
    assert torch.equal(task.guide_tokens([1], "the "), cat_dog.guide_tokens([1], "the "))


def test_all_of_guide_none_without_guides(tokenizer):
    task = AllOf(BannedWords(["bob"]), Length(max_words=3))
    task.bind(tokenizer, VOCAB_SIZE)
    assert task.guide_tokens([1], "the ") is None


@pytest.mark.parametrize(
    ("word", "form"),
    [
        ("cat", "cats"),
        ("box", "boxes"),
        ("study", "studies"),
        ("study", "studied"),
        ("jump", "jumped"),
        ("bake", "baked"),
        ("bake", "baking"),
        ("bake", "baker"),
        ("run", "running"),
        ("stop", "stopped"),
        ("tie", "tying"),
        ("fast", "faster"),
        ("happy", "happier"),
    ],
)
def test_inflected_forms_include(word, form):
    assert form in inflected_forms(word)


def test_inflected_forms_exclude_other_words():
    assert "catalog" not in inflected_forms("cat")


def test_keywords_inflections_flag():
    text = "She was running with the cats."
    assert Keywords(["run", "cat"], inflections=True).reward(text) == 1.0
    assert Keywords(["run", "cat"], inflections=False).reward(text) == 0.0


def test_keywords_finished_needs_sentence_end():
    task = Keywords(["cat"])
    assert not task.is_finished("the cat")
    assert task.is_finished("the cat sat.")
    assert not task.is_finished("the dog sat.")


@pytest.mark.parametrize(
    ("words", "error", "message"),
    [
        ([], ValueError, "empty"),
        ("", ValueError, "empty"),
        (["ice cream"], ValueError, "not one word"),
        (["don't"], ValueError, "not one word"),
        ([3], TypeError, "str words"),
        (None, TypeError, "list of words"),
    ],
)
def test_keywords_invalid(words, error, message):
    with pytest.raises(error, match=message):
        Keywords(words)


def test_keywords_string_is_split():
    assert Keywords("cat, dog bird").words == ("cat", "dog", "bird")


# ----------------------------------------------------------------------------------------------
# BannedWords

# (text so far, next piece, allowed); "cat" and "dog" are banned.
BANNED_CASES = [
    ("the ca", "t", True),  # "cat" may still become "catalog"
    ("the ca", "t ", False),  # completes "cat" and a space ends it
    ("the ca", "t.", False),
    ("the ca", "tal", True),
    ("the ca", "at", True),  # "caat"
    ("the cat", ".", False),
    ("the cat", " ", False),
    ("the cat", " the", False),
    ("the cat", ",", False),
    ("the cat", "\n", False),
    ("the cat", "alog", True),
    ("the cat", "s", True),
    ("the cat", "é", True),  # a letter continues the word
    ("the cat", "_", False),  # underscore is not a word character here
    ("the cat", "1", True),  # "cat1" is another word
    ("the", " cat", True),  # pending, the next token decides
    ("the", " cat.", False),  # the whole word inside one token
    ("the", " Cat", True),
    ("the ", "cat.", False),
    ("the ", "cat,", False),
    ("the ", "cat", True),
    ("", "cat.", False),
    ("", "CAT", True),
    ("The CA", "t.", False),  # capitals
    ("the c", "at.", False),
    ("the c", "at", True),
    ("bob", "cat.", True),  # "bobcat" is another word
    ("the do", "g!", False),
    ("the do", "g", True),
    ("the dog", "!", False),
    ("a", " dog", True),
    ("hot", "do", True),  # "hotdo..." is not "dog"
    ("hotdo", "g!", True),  # "hotdog" is another word
]


@pytest.mark.parametrize(("text", "piece", "expected"), BANNED_CASES)
def test_banned_words_case_table(tokenizer, text, piece, expected):
    task = BannedWords(["cat", "dog"])
    task.bind(tokenizer, VOCAB_SIZE)
    assert allowed(task, tokenizer, text, piece) == expected


@pytest.mark.parametrize(("text", "expected"), [("the cat", False), ("the ca", True), ("", True)])
def test_banned_words_eos(tokenizer, text, expected):
    task = BannedWords(["cat"])
    task.bind(tokenizer, VOCAB_SIZE)
    assert bool(task.allowed_tokens([1], text)[0]) == expected


def test_banned_words_never_padding_or_unknown(tokenizer):
    task = BannedWords(["cat"])
    task.bind(tokenizer, VOCAB_SIZE)
    mask = task.allowed_tokens([1], "the ")
    assert mask.shape == (VOCAB_SIZE,)
    assert mask.dtype == torch.bool
    assert not mask[len(tokenizer) :].any()
    assert not mask[token_id(tokenizer, "<unk>")]


def _completed_part(text):
    """Text without its trailing word run: the words in it are final."""
    return text[: len(text) - len(trailing_word(text))]


def test_banned_words_random_walk_never_completes_banned(tokenizer):
    task = BannedWords(["cat", "dog", "at"])
    task.bind(tokenizer, VOCAB_SIZE)
    rng = random.Random(0)
    for _ in range(200):
        ids: list[int] = []
        text = ""
        for _ in range(12):
            choices = torch.nonzero(task.allowed_tokens(ids, text)).flatten().tolist()
            choice = rng.choice(choices)
            if choice == tokenizer.eos_token_id:
                assert task.holds(text)
                break
            ids.append(choice)
            text = tokenizer.decode(ids)
            assert task.holds(_completed_part(text)), text


def test_banned_words_mask_matches_definition(tokenizer):
    """A token is allowed exactly when every word that the text with it ends is not banned."""
    task = BannedWords(["cat", "dog"])
    task.bind(tokenizer, VOCAB_SIZE)
    texts = ["", "the ", "the ca", "the cat", "bob", "hotdo", "the c", "the do", "The CA"]
    for text in texts:
        mask = task.allowed_tokens([1], text)
        for piece in PIECES:
            expected = task.holds(_completed_part(text + piece))
            assert bool(mask[token_id(tokenizer, piece)]) == expected, (text, piece)


def test_banned_words_reward_and_report():
    task = BannedWords(["cat", "dog"])
    assert task.reward("the cat sat.") == 0.5
    assert task.report("the cat sat.") == {"constraints": {"banned:cat": False, "banned:dog": True}}


def test_banned_words_needs_bind():
    with pytest.raises(RuntimeError, match="bind"):
        BannedWords(["cat"]).allowed_tokens([], "")


# ----------------------------------------------------------------------------------------------
# Regex


def brute_force_regex_mask(pattern, tokenizer, text, flags=0):
    compiled = regex.compile(pattern, flags)
    expected = set()
    for piece in PIECES:
        if compiled.fullmatch(text + piece, partial=True) is not None:
            expected.add(piece)
    return expected


def mask_pieces(mask, tokenizer):
    return {tokenizer.convert_ids_to_tokens(i) for i in torch.nonzero(mask).flatten().tolist()}


REGEX_CASES = [
    (r"\d{3}-\d{4}", ["", "1", "12", "123", "123-", "123-1"]),
    (r"[A-Z][a-z ,]+\.", ["", "T", "The", "The cat", "The cat."]),
    (r"(yes|no)", ["", "y"]),
    (r"The \w+ is (red|blue)\.", ["", "The", "The cat", "The cat is", "The cat is red"]),
    (r"(?i)the cat\b.*", ["", "THE", "the cat", "the cat."]),
    (r"the (?i:cat)!", ["the ", "the C", "the cAt"]),
    (r"[[:alpha:]]+ ?", ["", "é", "ab "]),  # POSIX class: the character classes are skipped
    (r"\p{Lu}\p{Ll}+", ["", "É", "Th"]),  # Unicode property: regex-only syntax
    (r"(ca)t\1", ["", "cat", "catc"]),  # backreference
    (r"[^\n]{0,6}\.", ["", "the", "the ca", "the cat"]),
    (r"[ß_é]+", ["", "ß"]),
    (r".*", ["", "anything"]),
]


@pytest.mark.parametrize(("pattern", "texts"), REGEX_CASES)
def test_regex_mask_matches_brute_force(tokenizer, pattern, texts):
    task = Regex(pattern)
    task.bind(tokenizer, VOCAB_SIZE)
    for text in texts:
        mask = task.allowed_tokens([1], text)
        assert mask_pieces(mask, tokenizer) - {EOS} == brute_force_regex_mask(
            pattern, tokenizer, text
        ), text


@pytest.mark.parametrize(
    ("text", "expected"), [("123-1234", True), ("123-12", False), ("", False), ("12a", False)]
)
def test_regex_eos_only_on_full_match(tokenizer, text, expected):
    task = Regex(r"\d{3}-\d{4}")
    task.bind(tokenizer, VOCAB_SIZE)
    assert bool(task.allowed_tokens([1], text)[tokenizer.eos_token_id]) == expected


def test_regex_full_match_without_extension_allows_only_eos(tokenizer):
    task = Regex(r"\d{3}")
    task.bind(tokenizer, VOCAB_SIZE)
    mask = task.allowed_tokens([1], "123")
    assert mask_pieces(mask, tokenizer) == {EOS}


def test_regex_invalid_pattern_names_pattern_and_error():
    with pytest.raises(ValueError, match=re.escape("regex pattern '(ab' is invalid: missing )")):
        Regex("(ab")


def test_regex_finished_without_sentence_end():
    task = Regex(r"\d{3}")
    assert task.is_finished("123")
    assert not task.is_finished("12")


# ----------------------------------------------------------------------------------------------
# Length


def test_length_min_words_masks_eos(tokenizer):
    task = Length(min_words=3)
    task.bind(tokenizer, VOCAB_SIZE)
    assert not task.allowed_tokens([1, 2], "the cat")[tokenizer.eos_token_id]
    assert task.allowed_tokens([1, 2, 3], "the cat is")[tokenizer.eos_token_id]


def test_length_max_words_masks_new_words(tokenizer):
    task = Length(max_words=2)
    task.bind(tokenizer, VOCAB_SIZE)
    assert not allowed(task, tokenizer, "the cat", " the")  # a third word
    assert allowed(task, tokenizer, "the cat", "s")  # continues the second word
    assert allowed(task, tokenizer, "the ", "cat")  # the second word
    assert allowed(task, tokenizer, "the cat", ".")


def test_length_max_words_sentence_end_allows_only_eos(tokenizer):
    task = Length(max_words=2)
    task.bind(tokenizer, VOCAB_SIZE)
    mask = task.allowed_tokens([1, 2], "the cat.")
    assert mask_pieces(mask, tokenizer) == {EOS}


def test_length_max_tokens_allows_only_eos(tokenizer):
    task = Length(max_tokens=3)
    task.bind(tokenizer, VOCAB_SIZE)
    assert mask_pieces(task.allowed_tokens([5, 6, 7], "the cat"), tokenizer) == {EOS}
    assert task.allowed_tokens([5, 6], "the ").sum() > 1


def test_length_min_tokens_masks_eos(tokenizer):
    task = Length(min_tokens=2)
    task.bind(tokenizer, VOCAB_SIZE)
    assert not task.allowed_tokens([5], "the")[tokenizer.eos_token_id]
    assert task.allowed_tokens([5, 6], "the cat")[tokenizer.eos_token_id]


def test_length_reward_formula():
    task = Length(min_words=4, max_words=6)
    assert task.reward("one two") == pytest.approx(2 / 4)
    assert task.reward("a b c d e f g h") == pytest.approx(6 / 8)
    assert task.reward("a b c d e") == 1.0


def test_length_report_names():
    report = Length(min_words=2, max_words=3).report("one two three four")
    assert report == {"constraints": {"min_words:2": True, "max_words:3": False}}


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({}, "no limit"),
        ({"min_words": 5, "max_words": 3}, "min_words=5 is greater than max_words=3"),
        ({"min_tokens": 9, "max_tokens": 2}, "min_tokens=9 is greater than max_tokens=2"),
        ({"min_words": -1}, "min_words must be >= 0, got -1"),
        ({"max_tokens": 0}, "max_tokens=0"),
    ],
)
def test_length_invalid(kwargs, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        Length(**kwargs)


def test_length_non_int_rejected():
    with pytest.raises(TypeError, match="max_words"):
        Length(max_words=2.5)


# ----------------------------------------------------------------------------------------------
# AllOf and constraints_task


def test_all_of_mask_is_and(tokenizer):
    banned = BannedWords(["cat"])
    regex_task = Regex(r"[a-z .]*")
    both = AllOf(banned, regex_task)
    both.bind(tokenizer, VOCAB_SIZE)
    text = "the ca"
    expected = banned.allowed_tokens([1], text) & regex_task.allowed_tokens([1], text)
    assert torch.equal(both.allowed_tokens([1], text), expected)


def test_all_of_without_masks_is_none(tokenizer):
    task = AllOf(Keywords(["cat"]), Keywords(["dog"]))
    task.bind(tokenizer, VOCAB_SIZE)
    assert task.allowed_tokens([], "") is None


def test_all_of_reward_is_mean():
    task = AllOf(Keywords(["cat", "dog"]), BannedWords(["bird"]), Length(max_words=2))
    text = "the cat flew."
    expected = (0.5 + 1.0 + 2 / 3) / 3
    assert task.reward(text) == pytest.approx(expected)


def test_all_of_finished_and_satisfied():
    task = AllOf(Keywords(["cat"]), BannedWords(["dog"]))
    assert not task.is_finished("the cat")
    assert task.is_finished("the cat sat.")
    assert task.is_satisfied("the cat sat.")
    assert not task.is_finished("the dog and the cat sat.")


def test_all_of_regex_decides_end():
    task = AllOf(Keywords(["cat"]), Regex(r"[a-z ]+"))
    assert task.is_finished("the cat")


def test_all_of_report_merged():
    task = AllOf(Keywords(["cat"]), BannedWords(["dog"]))
    report = task.report("the cat.")
    assert report["constraints"] == {"keyword:cat": True, "banned:dog": True}
    assert report["satisfied"] is True


def test_all_of_flattens_nested():
    inner = AllOf(Keywords(["cat"]), Keywords(["dog"]))
    assert len(AllOf(inner, BannedWords(["bird"])).tasks) == 3


@pytest.mark.parametrize(
    ("tasks", "message"),
    [
        ((Keywords(["Cat"]), BannedWords(["cat"])), "keyword 'cat' is also a banned word"),
        ((BannedWords(["dog"]), Keywords(["dog"])), "keyword 'dog' is also a banned word"),
        ((Length(min_words=5), Length(max_words=3)), "min_words=5 of one Length is greater"),
    ],
)
def test_all_of_contradictions(tasks, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        AllOf(*tasks)


def test_all_of_empty_and_wrong_type():
    with pytest.raises(ValueError, match="at least one task"):
        AllOf()
    with pytest.raises(TypeError, match="Task instances"):
        AllOf("cat")


def test_constraints_task_builds_all_of():
    task = constraints_task(keywords=["cat"], banned=["dog"], regex=r".*", max_words=5)
    assert [type(t).__name__ for t in task.tasks] == ["Keywords", "BannedWords", "Regex", "Length"]
    assert task.prompt is None


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({}, "no constraint"),
        ({"keywords": ["cat"], "banned": ["CAT"]}, "keyword 'cat' is also a banned word"),
        ({"min_words": 9, "max_words": 2}, "min_words=9 is greater than max_words=2"),
        ({"keywords": []}, "keywords is empty"),
        ({"banned": []}, "banned words is empty"),
        ({"max_words": -3}, "max_words must be >= 0, got -3"),
        ({"regex": "[a-"}, "regex pattern '[a-' is invalid"),
    ],
)
def test_constraints_task_errors(kwargs, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        constraints_task(**kwargs)
