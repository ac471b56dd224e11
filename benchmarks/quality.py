"""Quality benchmark: diversity and perplexity of tempo_search against standard decoders.

Run `python -m benchmarks.quality [--quick] [--out DIR]`, or through the suite
(`python -m benchmarks --only quality`). On open-ended prompts of
`tempo_search/data/prompts_open_ended.json` it returns k = 4 texts per prompt from each method
(greedy returns one), with 32 new tokens and about 32 forward passes per prompt:

- "greedy": `model.generate(do_sample=False)`, one text (k = 1).
- "beam search": `model.generate(num_beams=4, num_return_sequences=4)`.
- "nucleus (top-p 0.9)": four samples, `do_sample=True, top_p=0.9, top_k=0`.
- "top-k 40": four samples, `do_sample=True, top_k=40`.
- "TEMPO superposition": `generate(mode="superposition")`; text j (j = 1..4) takes, at each
  step, the j-th most likely member of the parallel set, or the top member where the set has
  fewer than j members. Text 1 is `best_text`.
- "TEMPO tree": the 4 most likely paths of `generate(mode="tree", max_paths=4)`, ranked by
  length-normalised log-probability as `generate` ranks its best path. `GenerationResult`
  returns only the best path, so the paths come from `tree_paths`, which follows the same
  rule on the shared tree state; its first path is checked against `best_token_ids`.
- "MCTS": the top 4 `completions` of `search` with 128 simulations in batches of 4, that is
  about 32 expansion forwards.

Metrics per method, per prompt over its k texts and then averaged over prompts: distinct-1,
distinct-2, self-BLEU (needs two texts, so none for greedy) and the 4-gram repetition rate;
perplexity of each text given its prompt under the same model (`metrics.perplexity`), averaged
over every text; forward passes and tokens forwarded per prompt (prompt included). For the
`model.generate` methods these two counts are computed, not measured: one prefill of all rows,
then one forward per further token, `rows * P + rows * (new_tokens - 1)` tokens.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import statistics
import sys
from collections.abc import Callable, Sequence
from importlib import resources
from typing import Any

import torch

from benchmarks._common import machine_info, utc_now, write_record
from tempo_search.generate import generate, select_parallel_set
from tempo_search.metrics import distinct_n, perplexity, repetition_rate, self_bleu
from tempo_search.models import LoadedModel, load_model
from tempo_search.search import search
from tempo_search.tree_state import ROOT, TreeState

logger = logging.getLogger(__name__)

NUM_TEXTS = 4
"""Texts returned per prompt by every method but greedy."""
MAX_NEW_TOKENS = 32
THRESHOLD = 0.1
"""Selection threshold of both TEMPO modes, the default of `generate`."""
MCTS_SIMULATIONS = 128
"""With `batch_size=4`, about 32 expansion forwards: the forward count of the decoders."""
MCTS_BATCH_SIZE = 4
TOP_P = 0.9
TOP_K = 40
SEED = 0
FULL_PROMPTS = 50
QUICK_PROMPTS = 4

METHODS = (
    "greedy",
    "beam search",
    "nucleus (top-p 0.9)",
    "top-k 40",
    "TEMPO superposition",
    "TEMPO tree",
    "MCTS",
)


def load_prompts(count: int) -> list[str]:
    """Return the texts of the first `count` open-ended prompts of the packaged data set."""
    path = resources.files("tempo_search") / "data" / "prompts_open_ended.json"
    entries = json.loads(path.read_text(encoding="utf-8"))
    if not isinstance(count, int) or not 1 <= count <= len(entries):
        raise ValueError(f"count={count!r} must be an integer from 1 to {len(entries)}.")
    return [entry["text"] for entry in entries[:count]]


# --------------------------------------------------------------------------- methods


def _hf_generate(
    loaded: LoadedModel, prompt_ids: list[int], *, rows: int, seed: int, **options: Any
) -> tuple[list[str], int, int]:
    """Run `model.generate` and return `(texts, forward_passes, tokens_forwarded)`."""
    net = loaded.model
    input_ids = torch.tensor([prompt_ids], device=loaded.device)
    eos = sorted(loaded.eos_token_ids)
    torch.manual_seed(seed)
    with torch.no_grad():
        output = net.generate(
            input_ids=input_ids,
            attention_mask=torch.ones_like(input_ids),
            max_new_tokens=MAX_NEW_TOKENS,
            min_new_tokens=1,
            num_return_sequences=rows if options.get("do_sample") or "num_beams" in options else 1,
            pad_token_id=eos[0] if eos else 0,
            eos_token_id=eos or None,
            **options,
        )
    new = output[:, len(prompt_ids) :]  # [rows, new_tokens]
    steps = int(new.shape[1])
    texts = [loaded.tokenizer.decode(row, skip_special_tokens=True) for row in new.tolist()]
    forwards = steps  # the prefill gives the first token, each later token one forward
    tokens = rows * len(prompt_ids) + rows * max(0, steps - 1)
    return texts, forwards, tokens


def _superposition_texts(loaded: LoadedModel, prompt: str) -> tuple[list[str], int, int]:
    result = generate(loaded, prompt, threshold=THRESHOLD, max_new_tokens=MAX_NEW_TOKENS)
    texts = []
    for rank in range(NUM_TEXTS):
        ids = [s.tokens[min(rank, len(s.tokens) - 1)].id for s in result.steps]
        texts.append(loaded.tokenizer.decode(ids, skip_special_tokens=True))
    assert texts[0] == result.best_text
    return texts, result.stats.forward_passes, result.stats.tokens_forwarded


def tree_paths(
    loaded: LoadedModel,
    prompt_ids: list[int],
    *,
    threshold: float = THRESHOLD,
    max_width: int = 8,
    max_paths: int = NUM_TEXTS,
    max_new_tokens: int = MAX_NEW_TOKENS,
) -> list[list[int]]:
    """Return the token ids of tree mode's paths, best first (end-of-sequence removed).

    Follows `generate(mode="tree")`: at each step every live path offers its parallel set,
    the `max_paths` best branches by path log-probability go on, a branch that selects
    end-of-sequence is finished. Paths are ranked by log-probability per token, the rule
    that picks `generate`'s `best_text`. Dead branches stay in the cache, hidden by the tree
    mask, so the logits are the same as with `generate`'s compaction.
    """
    # NOTE: this repeats the branch rule of `generate._generate_tree`, because
    # `GenerationResult` returns only the best path; a change there must be made here too.
    state = TreeState(loaded.model, prompt_ids, mode="tree")
    eos = loaded.eos_token_ids
    live: list[tuple[int, list[int], float]] = [(ROOT, [], 0.0)]  # (node, tokens, log-prob)
    log_probs = {ROOT: torch.log_softmax(state.prompt_logits, dim=-1)}
    finished: list[tuple[int, list[int], float]] = []
    for depth in range(1, max_new_tokens + 1):
        # 1. Each live path's parallel set, the best branches by path log-probability.
        candidates = []
        for node, tokens, score in live:
            ids, probs = select_parallel_set(
                log_probs[node].exp(), threshold=threshold, max_width=max_width
            )
            for token_id, prob in zip(ids, probs, strict=True):
                candidates.append((score + math.log(max(prob, 1e-45)), node, tokens, token_id))
        candidates.sort(key=lambda c: -c[0])

        # 2. End-of-sequence finishes a branch; the others are forwarded together.
        growing = []
        for score, node, tokens, token_id in candidates[:max_paths]:
            branch = (node, [*tokens, token_id], score)
            (finished if token_id in eos else growing).append(branch)
        if not growing or depth == max_new_tokens:
            live = growing
            break
        output = state.expand([b[0] for b in growing], [b[1][-1] for b in growing])
        log_probs = {
            node: torch.log_softmax(row, dim=-1)
            for node, row in zip(output.node_ids, output.logits, strict=True)
        }
        live = [(n, b[1], b[2]) for n, b in zip(output.node_ids, growing, strict=True)]

    ranked = sorted(finished + live, key=lambda b: -b[2] / max(1, len(b[1])))
    return [[t for t in tokens if t not in eos] for _, tokens, _ in ranked]


def _tree_texts(loaded: LoadedModel, prompt: str) -> tuple[list[str], int, int, bool]:
    result = generate(
        loaded,
        prompt,
        threshold=THRESHOLD,
        max_new_tokens=MAX_NEW_TOKENS,
        mode="tree",
        max_paths=NUM_TEXTS,
    )
    paths = tree_paths(loaded, result.prompt_token_ids)[:NUM_TEXTS]
    texts = [loaded.tokenizer.decode(ids, skip_special_tokens=True) for ids in paths]
    matches = paths[0] == result.best_token_ids
    return texts, result.stats.forward_passes, result.stats.tokens_forwarded, matches


def _mcts_texts(
    loaded: LoadedModel, prompt: str, *, simulations: int, seed: int
) -> tuple[list[str], int, int]:
    result = search(
        loaded,
        prompt,
        num_simulations=simulations,
        batch_size=MCTS_BATCH_SIZE,
        max_new_tokens=MAX_NEW_TOKENS,
        num_completions=NUM_TEXTS,
        seed=seed,
    )
    texts = [c.text for c in result.completions] or [result.text]
    return texts, result.stats.forward_passes, result.stats.tokens_forwarded


def run_method(
    loaded: LoadedModel, method: str, prompt: str, *, mcts_simulations: int, seed: int
) -> dict[str, Any]:
    """Return `{"texts", "forward_passes", "tokens_forwarded"}` of one method on one prompt."""
    prompt_ids = loaded.encode_prompt(prompt)
    extra: dict[str, Any] = {}
    if method == "greedy":
        texts, forwards, tokens = _hf_generate(loaded, prompt_ids, rows=1, seed=seed)
    elif method == "beam search":
        texts, forwards, tokens = _hf_generate(
            loaded,
            prompt_ids,
            rows=NUM_TEXTS,
            seed=seed,
            num_beams=NUM_TEXTS,
            do_sample=False,
            early_stopping=True,
        )
    elif method == "nucleus (top-p 0.9)":
        texts, forwards, tokens = _hf_generate(
            loaded, prompt_ids, rows=NUM_TEXTS, seed=seed, do_sample=True, top_p=TOP_P, top_k=0
        )
    elif method == "top-k 40":
        texts, forwards, tokens = _hf_generate(
            loaded, prompt_ids, rows=NUM_TEXTS, seed=seed, do_sample=True, top_k=TOP_K
        )
    elif method == "TEMPO superposition":
        texts, forwards, tokens = _superposition_texts(loaded, prompt)
    elif method == "TEMPO tree":
        texts, forwards, tokens, matches = _tree_texts(loaded, prompt)
        extra["best_path_matches_generate"] = matches
    elif method == "MCTS":
        texts, forwards, tokens = _mcts_texts(
            loaded, prompt, simulations=mcts_simulations, seed=seed
        )
    else:
        raise ValueError(f"method={method!r} is not one of {METHODS}.")
    return {"texts": texts, "forward_passes": forwards, "tokens_forwarded": tokens, **extra}


# --------------------------------------------------------------------------- metrics


def _mean(values: Sequence[float]) -> float | None:
    finite = [v for v in values if v is not None and math.isfinite(v)]
    return statistics.fmean(finite) if finite else None


def summarise(loaded: LoadedModel, prompts: list[str], rows: list[dict[str, Any]]) -> dict:
    """Add per-prompt metrics to `rows` and return the method's summary."""
    flat_prompts = [p for p, row in zip(prompts, rows, strict=True) for _ in row["texts"]]
    flat_texts = [t for row in rows for t in row["texts"]]
    values = perplexity(loaded, prompts=flat_prompts, texts=flat_texts)
    start = 0
    for row in rows:
        count = len(row["texts"])
        row["perplexity"] = values[start : start + count]
        start += count
        row["distinct_1"] = distinct_n(row["texts"], 1)
        row["distinct_2"] = distinct_n(row["texts"], 2)
        row["self_bleu"] = self_bleu(row["texts"]) if count >= 2 else None
        row["repetition_rate"] = repetition_rate(row["texts"])
    summary = {
        "texts_per_prompt": _mean([len(r["texts"]) for r in rows]),
        "words_per_text": _mean([len(t.split()) for t in flat_texts]),
        "distinct_1": _mean([r["distinct_1"] for r in rows]),
        "distinct_2": _mean([r["distinct_2"] for r in rows]),
        "self_bleu": _mean([r["self_bleu"] for r in rows if r["self_bleu"] is not None]),
        "repetition_rate": _mean([r["repetition_rate"] for r in rows]),
        "perplexity_mean": _mean(values),
        "perplexity_median": statistics.median(v for v in values if math.isfinite(v))
        if any(math.isfinite(v) for v in values)
        else None,
        "forward_passes": _mean([r["forward_passes"] for r in rows]),
        "tokens_forwarded": _mean([r["tokens_forwarded"] for r in rows]),
        "seconds": _mean([r["seconds"] for r in rows]),
    }
    if "best_path_matches_generate" in rows[0]:
        summary["best_path_matches_generate"] = all(r["best_path_matches_generate"] for r in rows)
    return summary


def run_quality(
    model: Any = None,
    *,
    num_prompts: int = FULL_PROMPTS,
    methods: Sequence[str] = METHODS,
    mcts_simulations: int = MCTS_SIMULATIONS,
    seed: int = SEED,
    on_progress: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Run every method on the first `num_prompts` prompts and return the record section.

    `on_progress` is called with the method name after each (method, prompt) pair.
    Returns `{"settings", "methods"}`; `methods[name]` contains `summary` and per-prompt `rows`.
    """
    import time

    loaded = load_model(model)
    prompts = load_prompts(num_prompts)
    unknown = [m for m in methods if m not in METHODS]
    if unknown:
        raise ValueError(f"methods {unknown!r} are unknown; pass names from {METHODS}.")
    results: dict[str, Any] = {}
    for method in methods:
        rows = []
        for prompt in prompts:
            start = time.perf_counter()
            row = run_method(loaded, method, prompt, mcts_simulations=mcts_simulations, seed=seed)
            row["seconds"] = time.perf_counter() - start
            rows.append({"prompt": prompt, **row})
            if on_progress is not None:
                on_progress(method)
        results[method] = {"summary": summarise(loaded, prompts, rows), "rows": rows}
    return {
        "settings": {
            "model": loaded.name,
            "num_prompts": len(prompts),
            "texts_per_prompt": NUM_TEXTS,
            "max_new_tokens": MAX_NEW_TOKENS,
            "tempo_threshold": THRESHOLD,
            "mcts_simulations": mcts_simulations,
            "mcts_batch_size": MCTS_BATCH_SIZE,
            "top_p": TOP_P,
            "top_k": TOP_K,
            "seed": seed,
            "perplexity_model": loaded.name,
        },
        "methods": results,
    }


# --------------------------------------------------------------------------- report


def _cell(value: float | None, digits: int) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def format_table(section: dict[str, Any]) -> str:
    """Render the section of `run_quality` as one Markdown table."""
    lines = [
        "| method | texts/prompt | words/text | distinct-1 | distinct-2 | self-BLEU | "
        "repetition (4-gram) | perplexity mean | perplexity median | forwards/prompt | "
        "tokens forwarded/prompt | seconds/prompt |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, result in section["methods"].items():
        s = result["summary"]
        lines.append(
            f"| {name} | {_cell(s['texts_per_prompt'], 1)} | {_cell(s['words_per_text'], 1)} | "
            f"{_cell(s['distinct_1'], 3)} | {_cell(s['distinct_2'], 3)} | "
            f"{_cell(s['self_bleu'], 1)} | {_cell(s['repetition_rate'], 3)} | "
            f"{_cell(s['perplexity_mean'], 2)} | {_cell(s['perplexity_median'], 2)} | "
            f"{_cell(s['forward_passes'], 1)} | {_cell(s['tokens_forwarded'], 1)} | "
            f"{_cell(s['seconds'], 2)} |"
        )
    return "\n".join(lines)


def pareto_plot(section: dict[str, Any], path) -> None:
    """Save a scatter of distinct-2 against mean perplexity, Pareto front joined, to `path`."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    points = [
        (name, r["summary"]["perplexity_mean"], r["summary"]["distinct_2"])
        for name, r in section["methods"].items()
        if r["summary"]["perplexity_mean"] is not None and r["summary"]["distinct_2"] is not None
    ]
    # A point is on the front when no other point has lower perplexity and higher distinct-2.
    front = sorted(
        (p for p in points if not any(q[1] <= p[1] and q[2] >= p[2] and q != p for q in points)),
        key=lambda p: p[1],
    )
    figure, axes = plt.subplots(figsize=(6.4, 4.4))
    for name, x, y in points:
        axes.scatter(x, y, s=36)
        axes.annotate(name, (x, y), textcoords="offset points", xytext=(5, 4), fontsize=8)
    if len(front) > 1:
        axes.plot([p[1] for p in front], [p[2] for p in front], "k--", linewidth=0.8)
    settings = section["settings"]
    axes.set_xlabel(f"mean perplexity under {settings['perplexity_model']} (lower is better)")
    axes.set_ylabel("distinct-2 per prompt (higher is more diverse)")
    axes.set_title(
        f"{settings['num_prompts']} prompts, {settings['max_new_tokens']} new tokens, "
        f"{settings['texts_per_prompt']} texts per prompt",
        fontsize=9,
    )
    axes.grid(alpha=0.3)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


def _parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.quality",
        description="Diversity and perplexity of TEMPO and MCTS against standard decoders.",
    )
    parser.add_argument(
        "--quick", action="store_true", help=f"{QUICK_PROMPTS} prompts instead of {FULL_PROMPTS}"
    )
    parser.add_argument("--model", default=None, help="model path (default: embedded SmolLM2)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    parser.add_argument("--out", default=None, help="folder for the JSON record")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = _parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    torch.set_num_threads(args.threads)
    section = run_quality(args.model, num_prompts=QUICK_PROMPTS if args.quick else FULL_PROMPTS)
    sys.stdout.write(format_table(section) + "\n")
    if args.out is not None:
        record = {"benchmark": "quality", "time": utc_now(), "machine": machine_info(), **section}
        sys.stdout.write(f"record: {write_record('quality', record, args.out)}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
