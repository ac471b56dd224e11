"""Text-quality metrics for benchmarks, notebooks and sweeps.

Word-level metrics (`distinct_n`, `repetition_rate`) lowercase each text and split it on
whitespace (`str.lower().split()`), so punctuation stays attached to its word ("park." and
"park" are different words). n-grams never cross from one text into the next.
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from sacrebleu.metrics import BLEU

logger = logging.getLogger(__name__)


def _check_texts(name: str, texts: Any) -> list[str]:
    if isinstance(texts, str):
        raise TypeError(f"{name} must be a sequence of strings, got one string; wrap it: [{name}]")
    texts = list(texts)
    for index, text in enumerate(texts):
        if not isinstance(text, str):
            raise TypeError(f"{name}[{index}] must be a str, got {type(text).__name__}")
    return texts


def _check_n(n: Any) -> None:
    if isinstance(n, bool) or not isinstance(n, int):
        raise TypeError(f"n must be an int, got {n!r}")
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")


def _words(text: str) -> list[str]:
    return text.lower().split()


def _ngrams(words: list[str], n: int) -> list[tuple[str, ...]]:
    return [tuple(words[i : i + n]) for i in range(len(words) - n + 1)]


def distinct_n(texts: Sequence[str], n: int) -> float:
    """Return distinct-n: distinct n-grams divided by all n-grams, over all texts together.

    Words come from `text.lower().split()`; an n-gram is counted once per occurrence in the
    denominator and once per distinct word tuple in the numerator. Example: the 2-grams of
    "a b a b" are (a b), (b a), (a b), so distinct-2 is 2/3.

    Returns:
        A value in (0, 1], or 0.0 when the texts contain no n-gram at all.
    """
    texts = _check_texts("texts", texts)
    _check_n(n)
    distinct: set[tuple[str, ...]] = set()
    total = 0
    for text in texts:
        ngrams = _ngrams(_words(text), n)
        distinct.update(ngrams)
        total += len(ngrams)
    if total == 0:
        return 0.0
    return len(distinct) / total


def repetition_rate(texts: Sequence[str], n: int = 4) -> float:
    """Return the share of n-grams that repeat an earlier n-gram of the same text, averaged.

    For one text with n-grams g_1 .. g_m (words from `text.lower().split()`), the rate is
    |{i : g_i = g_j for some j < i}| / m, which equals 1 - (distinct n-grams) / m. The result
    is the unweighted mean of these rates over the texts that have at least one n-gram
    (texts shorter than n words are skipped). Unlike `distinct_n`, repeats across different
    texts do not count.

    Args:
        texts: the texts to score.
        n: n-gram length. The default of 4 counts repeated phrases: shorter n-grams such as
            "of the" recur in ordinary prose.

    Returns:
        A value in [0, 1); 0.0 when no text has n words.
    """
    texts = _check_texts("texts", texts)
    _check_n(n)
    rates = []
    for text in texts:
        ngrams = _ngrams(_words(text), n)
        if ngrams:
            rates.append(1.0 - len(set(ngrams)) / len(ngrams))
    if not rates:
        return 0.0
    return sum(rates) / len(rates)


def self_bleu(texts: Sequence[str]) -> float:
    """Return self-BLEU: the mean sentence BLEU of each text against all the others.

    Each text is the hypothesis once, with the other texts as its references. Scores come
    from sacrebleu's `BLEU(effective_order=True).sentence_score` with sacrebleu's defaults
    otherwise (13a tokenizer, case-sensitive, exponential smoothing, 4-gram order). A high
    value means the texts resemble each other, so lower is more diverse.

    Returns:
        A value in [0, 100] on sacrebleu's scale; 100 for identical texts.

    Raises:
        ValueError: fewer than two texts.
    """
    texts = _check_texts("texts", texts)
    if len(texts) < 2:
        raise ValueError(
            f"self_bleu needs at least 2 texts to compare, got {len(texts)}; "
            f"pass several completions of the same prompt"
        )
    bleu = BLEU(effective_order=True)
    scores = []
    for index, hypothesis in enumerate(texts):
        references = texts[:index] + texts[index + 1 :]
        scores.append(bleu.sentence_score(hypothesis, references).score)
    return sum(scores) / len(scores)


def keyword_coverage(text: str, keywords: Sequence[str]) -> float:
    """Return the share of `keywords` that occur in `text` as whole words, ignoring case.

    A keyword matches where it is not preceded or followed by a word character (`\\w`), so
    "cat" matches in "a cat." but not in "concatenate". Inflected forms do not match
    ("dogs" does not cover "dog"). A keyword of several words matches with any whitespace
    between them. Keywords that differ only in case count once.

    Raises:
        ValueError: `keywords` is empty or contains an empty or all-whitespace keyword.
    """
    if not isinstance(text, str):
        raise TypeError(f"text must be a str, got {type(text).__name__}")
    keywords = _check_texts("keywords", keywords)
    if not keywords:
        raise ValueError("keywords is empty; pass at least one keyword")
    unique = {}
    for index, keyword in enumerate(keywords):
        parts = keyword.split()
        if not parts:
            raise ValueError(f"keywords[{index}] is {keyword!r}; pass a non-empty keyword")
        unique[" ".join(parts).casefold()] = parts
    found = 0
    for parts in unique.values():
        pattern = r"(?<!\w)" + r"\s+".join(re.escape(part) for part in parts) + r"(?!\w)"
        if re.search(pattern, text, flags=re.IGNORECASE):
            found += 1
    return found / len(unique)


def _unwrap_model(model: Any, tokenizer: Any) -> tuple[torch.nn.Module, Any]:
    """Return (model, tokenizer) from either the pair itself or an object holding both."""
    if not isinstance(model, torch.nn.Module):
        if hasattr(model, "model") and hasattr(model, "tokenizer"):
            if tokenizer is None:
                tokenizer = model.tokenizer
            model = model.model
        else:
            raise TypeError(
                f"model must be a torch.nn.Module or an object with .model and .tokenizer, "
                f"got {type(model).__name__}"
            )
    if tokenizer is None:
        raise TypeError("tokenizer is None; pass the model's tokenizer")
    return model, tokenizer


def perplexity(
    model: Any,
    tokenizer: Any = None,
    prompts: Sequence[str] | None = None,
    texts: Sequence[str] | None = None,
    *,
    batch_size: int = 8,
) -> list[float]:
    """Return the perplexity of each continuation given its prompt under a causal LM.

    For pair i, the prompt is tokenized with the tokenizer's special tokens (a BOS token
    where the tokenizer adds one) and the continuation without them, and the two id lists
    are concatenated, the way a search extends a tokenized prompt. Only continuation tokens
    are scored: perplexity = exp(mean over continuation tokens of -log p(token | prefix)).

    Args:
        model: a transformers causal LM, or an object with `.model` and `.tokenizer`
            attributes (then `tokenizer` may be None).
        tokenizer: a transformers tokenizer (callable, returning "input_ids").
        prompts: [num_texts] prompt strings; each must tokenize to at least one token.
        texts: [num_texts] continuations of the prompts.
        batch_size: sequences per forward pass. With the default of 8, float32 logits for
            512 tokens and a 50k-token vocabulary take about 0.8 GB (8 x 512 x 50k x 4 bytes).

    Returns:
        [num_texts] perplexities; NaN for a continuation with no tokens.

    The model runs in eval mode under `torch.no_grad()` on its own device and is put back in
    its previous training mode afterwards.
    """
    # NOTE: a prompt plus continuation longer than the model's context window is not
    # truncated; the model raises or extrapolates positions, depending on its architecture.
    model, tokenizer = _unwrap_model(model, tokenizer)
    if prompts is None or texts is None:
        raise TypeError("perplexity needs prompts and texts, two sequences of strings")
    prompts = _check_texts("prompts", prompts)
    texts = _check_texts("texts", texts)
    if len(prompts) != len(texts):
        raise ValueError(
            f"prompts and texts must have the same length, got {len(prompts)} prompts and "
            f"{len(texts)} texts; pass one prompt per continuation"
        )
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")

    # 1. Tokenize every pair: prompt ids (with special tokens) + continuation ids (without).
    pairs: list[tuple[list[int], list[int]]] = []
    for index, (prompt, text) in enumerate(zip(prompts, texts, strict=True)):
        prompt_ids = list(tokenizer(prompt, add_special_tokens=True)["input_ids"])
        text_ids = list(tokenizer(text, add_special_tokens=False)["input_ids"])
        if not prompt_ids:
            raise ValueError(
                f"prompts[{index}] = {prompt!r} tokenizes to no tokens, so the first "
                f"continuation token has no context; pass a non-empty prompt"
            )
        pairs.append((prompt_ids, text_ids))

    # 2. Score in batches with right padding. Padding comes after every real token, so causal
    # attention hides it from them, and padded positions are never scored.
    device = next(model.parameters()).device
    pad_id = getattr(tokenizer, "pad_token_id", None)
    pad_id = 0 if pad_id is None else pad_id
    results: list[float] = []
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            for start in range(0, len(pairs), batch_size):
                batch = pairs[start : start + batch_size]
                results.extend(_score_batch(model, batch, pad_id, device))
    finally:
        model.train(was_training)
    return results


def _score_batch(
    model: torch.nn.Module,
    batch: list[tuple[list[int], list[int]]],
    pad_id: int,
    device: torch.device,
) -> list[float]:
    lengths = [len(prompt_ids) + len(text_ids) for prompt_ids, text_ids in batch]
    max_length = max(lengths)
    input_ids = torch.full((len(batch), max_length), pad_id, dtype=torch.long)
    attention_mask = torch.zeros((len(batch), max_length), dtype=torch.long)
    for row, (prompt_ids, text_ids) in enumerate(batch):
        input_ids[row, : lengths[row]] = torch.tensor(prompt_ids + text_ids, dtype=torch.long)
        attention_mask[row, : lengths[row]] = 1

    # logits: [batch, max_length, vocab]
    logits = model(input_ids=input_ids.to(device), attention_mask=attention_mask.to(device)).logits

    scores = []
    for row, (prompt_ids, text_ids) in enumerate(batch):
        if not text_ids:
            scores.append(math.nan)
            continue
        # The logits at position t predict token t + 1, so the continuation tokens at
        # positions P .. P + C - 1 are predicted by rows P - 1 .. P + C - 2.
        start = len(prompt_ids) - 1
        rows = logits[row, start : start + len(text_ids)].float()  # [C, vocab]
        targets = torch.tensor(text_ids, dtype=torch.long, device=rows.device)  # [C]
        mean_nll = F.cross_entropy(rows, targets, reduction="mean").item()
        scores.append(math.exp(mean_nll))
    return scores
