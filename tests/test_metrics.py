import json
import math
from importlib import resources

import pytest
import torch
from tokenizers import Tokenizer
from tokenizers.models import WordLevel
from tokenizers.pre_tokenizers import Whitespace
from tokenizers.processors import TemplateProcessing
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

from tempo_search.metrics import (
    distinct_n,
    keyword_coverage,
    perplexity,
    repetition_rate,
    self_bleu,
)

WORDS = ["the", "a", "cat", "dog", "sat", "ran", "on", "mat", "park", "and", "with", "big"]
WORDS += ["small", "red", "green"]

# ----------------------------------------------------------------------------------------
# distinct_n


def test_distinct_n_hand_computed():
    # 2-grams of "a b a b": (a b), (b a), (a b) -> 2 distinct of 3.
    assert distinct_n(["a b a b"], 2) == pytest.approx(2 / 3)


def test_distinct_n_across_texts():
    # 1-grams: a b | a c -> {a, b, c} over 4.
    assert distinct_n(["a b", "a c"], 1) == pytest.approx(3 / 4)


def test_distinct_n_no_ngram_across_text_boundary():
    # "a" + "b" would form (a b) if texts were joined; they are not, so no 2-gram exists.
    assert distinct_n(["a", "b"], 2) == 0.0


def test_distinct_n_lowercases_and_splits_whitespace():
    assert distinct_n(["The  the\nTHE"], 1) == pytest.approx(1 / 3)


def test_distinct_n_empty_is_zero():
    assert distinct_n([], 1) == 0.0
    assert distinct_n(["", "   "], 1) == 0.0


def test_distinct_n_rejects_single_string():
    with pytest.raises(TypeError, match="wrap it"):
        distinct_n("a b c", 1)


def test_distinct_n_rejects_zero_n():
    with pytest.raises(ValueError, match="n must be >= 1"):
        distinct_n(["a b"], 0)


# ----------------------------------------------------------------------------------------
# repetition_rate


def test_repetition_rate_hand_computed():
    # 2-grams of "a b a b a": ab ba ab ba -> positions 3 and 4 repeat earlier ones: 2/4.
    assert repetition_rate(["a b a b a"], n=2) == pytest.approx(2 / 4)


def test_repetition_rate_mean_over_texts():
    # "a a a": 1-grams a a a -> 2/3 repeat. "x y": 0/2. Mean = 1/3.
    assert repetition_rate(["a a a", "x y"], n=1) == pytest.approx((2 / 3 + 0.0) / 2)


def test_repetition_rate_skips_short_texts():
    # "x" has no 2-gram and is skipped, so only "a b a b" (1 repeat of 3) counts.
    assert repetition_rate(["a b a b", "x"], n=2) == pytest.approx(1 / 3)


def test_repetition_rate_ignores_repeats_across_texts():
    assert repetition_rate(["a b c d", "a b c d"], n=4) == 0.0


def test_repetition_rate_no_ngrams_is_zero():
    assert repetition_rate(["a b"], n=4) == 0.0


# ----------------------------------------------------------------------------------------
# self_bleu


def test_self_bleu_identical_texts_is_100():
    texts = ["the cat sat on the mat today"] * 3
    assert self_bleu(texts) == pytest.approx(100.0)


def test_self_bleu_hand_computed():
    # Each text against the other: n-gram precisions 4/5, 3/4, 2/3, 1/2 for n = 1..4, no
    # brevity penalty (equal lengths), so BLEU = 100 * (4/5 * 3/4 * 2/3 * 1/2) ** (1/4).
    expected = 100 * (4 / 5 * 3 / 4 * 2 / 3 * 1 / 2) ** 0.25
    assert self_bleu(["a b c d e", "a b c d f"]) == pytest.approx(expected)


def test_self_bleu_disjoint_texts_near_zero():
    assert self_bleu(["a b c d", "w x y z"]) < 1.0


def test_self_bleu_needs_two_texts():
    with pytest.raises(ValueError, match="at least 2 texts"):
        self_bleu(["only one"])


# ----------------------------------------------------------------------------------------
# keyword_coverage


def test_keyword_coverage_whole_words():
    text = "The dog ran to the park to concatenate things."
    # "dog" and "park" match; "cat" appears only inside "concatenate".
    assert keyword_coverage(text, ["dog", "park", "cat"]) == pytest.approx(2 / 3)


def test_keyword_coverage_case_insensitive():
    assert keyword_coverage("A FRISBEE flew.", ["frisbee"]) == 1.0


def test_keyword_coverage_no_inflection():
    assert keyword_coverage("Two dogs played.", ["dog"]) == 0.0


def test_keyword_coverage_phrase_and_punctuation():
    text = "They ate ice\ncream, then left."
    assert keyword_coverage(text, ["ice cream", "left"]) == 1.0


def test_keyword_coverage_case_duplicates_count_once():
    assert keyword_coverage("a dog", ["dog", "Dog", "cat"]) == pytest.approx(1 / 2)


def test_keyword_coverage_rejects_empty_keywords():
    with pytest.raises(ValueError, match="keywords is empty"):
        keyword_coverage("text", [])


def test_keyword_coverage_rejects_blank_keyword():
    with pytest.raises(ValueError, match=r"keywords\[1\]"):
        keyword_coverage("text", ["ok", "  "])


# ----------------------------------------------------------------------------------------
# perplexity


@pytest.fixture(scope="module")
def tiny_lm():
    """A random 2-layer Llama and a word-level tokenizer that adds a BOS token."""
    vocab = {"<pad>": 0, "<s>": 1, "<unk>": 2}
    for word in WORDS:
        vocab[word] = len(vocab)
    backend = Tokenizer(WordLevel(vocab, unk_token="<unk>"))
    backend.pre_tokenizer = Whitespace()
    backend.post_processor = TemplateProcessing(
        single="<s> $A", pair="<s> $A $B", special_tokens=[("<s>", 1)]
    )
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend, bos_token="<s>", unk_token="<unk>", pad_token="<pad>"
    )

    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=len(vocab),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=64,
    )
    model = LlamaForCausalLM(config)
    return model, tokenizer


def reference_perplexity(model, tokenizer, prompt: str, text: str) -> float:
    """Return exp(mean NLL) of `text` after `prompt`, from one unpadded forward pass."""
    prompt_ids = tokenizer(prompt)["input_ids"]
    text_ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    input_ids = torch.tensor([prompt_ids + text_ids])
    with torch.no_grad():
        log_probs = torch.log_softmax(model(input_ids=input_ids).logits[0].double(), dim=-1)
    nll = [
        -log_probs[len(prompt_ids) + offset - 1, token].item()
        for offset, token in enumerate(text_ids)
    ]
    return math.exp(sum(nll) / len(nll))


PROMPTS = ["the cat", "a dog ran", "the big red", "small"]
TEXTS = ["sat on the mat", "to the park", "dog", "green cat and a small dog sat"]


def test_perplexity_matches_plain_forward(tiny_lm):
    model, tokenizer = tiny_lm
    # batch_size=3 mixes lengths in one padded batch and leaves a last batch of one.
    results = perplexity(model, tokenizer, PROMPTS, TEXTS, batch_size=3)
    for prompt, text, result in zip(PROMPTS, TEXTS, results, strict=True):
        expected = reference_perplexity(model, tokenizer, prompt, text)
        assert result == pytest.approx(expected, rel=1e-4)


def test_perplexity_scores_only_continuation(tiny_lm):
    model, tokenizer = tiny_lm
    # The same continuation after different prompts gets different scores.
    first, second = perplexity(model, tokenizer, ["the cat", "green dog"], ["sat", "sat"])
    assert first != pytest.approx(second, rel=1e-6)


def test_perplexity_accepts_wrapper(tiny_lm):
    model, tokenizer = tiny_lm

    class Wrapper:
        def __init__(self):
            self.model = model
            self.tokenizer = tokenizer

    direct = perplexity(model, tokenizer, PROMPTS, TEXTS)
    wrapped = perplexity(Wrapper(), prompts=PROMPTS, texts=TEXTS)
    assert wrapped == pytest.approx(direct)


def test_perplexity_restores_training_mode(tiny_lm):
    model, tokenizer = tiny_lm
    model.train()
    perplexity(model, tokenizer, PROMPTS[:1], TEXTS[:1])
    assert model.training
    model.eval()


def test_perplexity_empty_continuation_is_nan(tiny_lm):
    model, tokenizer = tiny_lm
    results = perplexity(model, tokenizer, ["the cat", "the dog"], ["", "sat"])
    assert math.isnan(results[0])
    assert math.isfinite(results[1])


def test_perplexity_rejects_length_mismatch(tiny_lm):
    model, tokenizer = tiny_lm
    with pytest.raises(ValueError, match="same length"):
        perplexity(model, tokenizer, ["a"], ["b", "c"])


def test_perplexity_rejects_missing_tokenizer(tiny_lm):
    model, _ = tiny_lm
    with pytest.raises(TypeError, match="tokenizer is None"):
        perplexity(model, None, ["a"], ["b"])


# ----------------------------------------------------------------------------------------
# Data files shipped with the package


def load_data(name: str):
    text = resources.files("tempo_search").joinpath("data", name).read_text(encoding="utf-8")
    return json.loads(text)


def test_prompts_file_size_and_fields():
    prompts = load_data("prompts_open_ended.json")
    assert len(prompts) >= 60
    for prompt in prompts:
        assert set(prompt) == {"id", "kind", "text"}
        assert prompt["kind"] in {"story", "description", "instruction"}
        assert prompt["text"].strip() == prompt["text"]
        assert prompt["text"]


def test_prompts_file_all_kinds_present():
    kinds = {prompt["kind"] for prompt in load_data("prompts_open_ended.json")}
    assert kinds == {"story", "description", "instruction"}


def test_prompts_file_unique():
    prompts = load_data("prompts_open_ended.json")
    assert len({prompt["id"] for prompt in prompts}) == len(prompts)
    assert len({prompt["text"].lower() for prompt in prompts}) == len(prompts)


def test_keyword_sets_file_size_and_shape():
    sets = load_data("keyword_sets.json")
    assert len(sets) == 100
    for entry in sets:
        assert set(entry) == {"id", "words"}
        assert 3 <= len(entry["words"]) <= 4
        assert all(word.isalpha() and word.islower() for word in entry["words"])


def test_keyword_sets_no_repeated_word_in_set():
    for entry in load_data("keyword_sets.json"):
        assert len(set(entry["words"])) == len(entry["words"]), entry["id"]


def test_keyword_sets_unique():
    sets = load_data("keyword_sets.json")
    assert len({entry["id"] for entry in sets}) == len(sets)
    assert len({frozenset(entry["words"]) for entry in sets}) == len(sets)
