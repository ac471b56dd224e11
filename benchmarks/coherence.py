"""Keyword-constraint searches on SmolLM2 with and without the coherence value, side by side.

Each keyword set from `tempo_search/data/keyword_sets.json` becomes one constraints task
("Write one sentence that uses the words: ..."), searched three ways with one seed: the plain
value (likelihood and reward), the value with coherence weighted 1, and that value with
low-coherence children pruned. The table reports keyword coverage (the task reward), the
perplexity of the chosen text given the prompt, forward passes, pruned nodes and seconds.

Run: `python -m benchmarks.coherence` (10 sets) or `--quick` (3 sets).
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
from collections.abc import Callable, Sequence
from importlib import resources
from typing import Any

import torch

from benchmarks._common import machine_info, timed, utc_now, write_record
from tempo_search.coherence import PruneConfig
from tempo_search.metrics import perplexity
from tempo_search.models import LoadedModel, load_model
from tempo_search.policies.values import ValueWeights
from tempo_search.search import search
from tempo_search.tasks import constraints_task

logger = logging.getLogger(__name__)

DEFAULT_SETS = 10
DEFAULT_SIMULATIONS = 60
MAX_NEW_TOKENS = 32

VARIANTS: dict[str, dict[str, Any]] = {
    "plain": {},
    "coherence": {"coherence": PruneConfig(), "value": ValueWeights(coherence=1.0)},
    "coherence+prune": {
        "coherence": PruneConfig(),
        "value": ValueWeights(coherence=1.0),
        "prune_children": True,
    },
}
"""Search settings compared; the coherence weight 1 matches the likelihood and reward weights."""


def keyword_sets(count: int) -> list[dict[str, Any]]:
    """Load the first `count` keyword sets of the project's data file."""
    text = resources.files("tempo_search.data").joinpath("keyword_sets.json").read_text()
    return json.loads(text)[:count]


def run_one(
    model: LoadedModel,
    words: list[str],
    variant: str,
    *,
    simulations: int,
    seed: int,
    max_new_tokens: int = MAX_NEW_TOKENS,
) -> dict[str, Any]:
    """Search one keyword set with one variant; return its figures."""
    task = constraints_task(keywords=words)
    prompt = "Write one sentence that uses the words: " + ", ".join(words) + "."
    seconds, result = timed(
        lambda: search(
            model,
            prompt,
            task=task,
            chat=True,
            num_simulations=simulations,
            max_new_tokens=max_new_tokens,
            seed=seed,
            **VARIANTS[variant],
        )
    )
    prompt_text = model.tokenizer.decode(model.encode_prompt(prompt, chat=True))
    text_perplexity = None
    if result.text.strip():
        text_perplexity = perplexity(model, prompts=[prompt_text], texts=[result.text])[0]
    return {
        "variant": variant,
        "words": words,
        "text": result.text,
        "coverage": float(task.reward(result.text)),
        "solved": result.solved,
        "perplexity": text_perplexity,
        "forward_passes": result.stats.forward_passes,
        "pruned_nodes": result.stats.pruned_nodes,
        "seconds": seconds,
    }


def summarise(runs: list[dict[str, Any]]) -> dict[str, dict[str, float]]:
    """Mean figures per variant (median perplexity, which long tails dominate otherwise)."""
    summary = {}
    for variant in VARIANTS:
        rows = [r for r in runs if r["variant"] == variant]
        perplexities = [r["perplexity"] for r in rows if r["perplexity"] is not None]
        summary[variant] = {
            "coverage": statistics.fmean(r["coverage"] for r in rows),
            "solved": sum(r["solved"] for r in rows),
            "median_perplexity": statistics.median(perplexities) if perplexities else float("nan"),
            "forward_passes": statistics.fmean(r["forward_passes"] for r in rows),
            "pruned_nodes": statistics.fmean(r["pruned_nodes"] for r in rows),
            "seconds": statistics.fmean(r["seconds"] for r in rows),
            "sets": len(rows),
        }
    return summary


def run_coherence(
    model: LoadedModel,
    *,
    num_sets: int = DEFAULT_SETS,
    simulations: int = DEFAULT_SIMULATIONS,
    max_new_tokens: int = MAX_NEW_TOKENS,
    seed: int = 0,
    on_progress: Callable[[], None] | None = None,
) -> dict[str, Any]:
    """Search the first `num_sets` keyword sets with every variant and return the section.

    `on_progress` is called after each search (`num_sets * len(VARIANTS)` calls). The section
    has `simulations`, `max_new_tokens`, `seed`, `summary` (see `summarise`) and `runs` (one
    dict per search, see `run_one`, with the set's `set` id).
    """
    runs = []
    for entry in keyword_sets(num_sets):
        for variant in VARIANTS:
            run = run_one(
                model,
                entry["words"],
                variant,
                simulations=simulations,
                seed=seed,
                max_new_tokens=max_new_tokens,
            )
            run["set"] = entry["id"]
            logger.info(
                "%s %s: coverage %.2f, %.1f s: %r",
                entry["id"],
                variant,
                run["coverage"],
                run["seconds"],
                run["text"],
            )
            runs.append(run)
            if on_progress is not None:
                on_progress()
    return {
        "simulations": simulations,
        "max_new_tokens": max_new_tokens,
        "seed": seed,
        "summary": summarise(runs),
        "runs": runs,
    }


def format_table(summary: dict[str, dict[str, float]]) -> str:
    lines = [
        "| variant | keyword coverage | solved | median perplexity | forwards | pruned | s / search |",
        "|---|---|---|---|---|---|---|",
    ]
    for variant, row in summary.items():
        lines.append(
            f"| {variant} | {row['coverage']:.3f} | {row['solved']}/{row['sets']} | "
            f"{row['median_perplexity']:.2f} | {row['forward_passes']:.1f} | "
            f"{row['pruned_nodes']:.1f} | {row['seconds']:.2f} |"
        )
    return "\n".join(lines)


def _parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.coherence",
        description="Keyword-constraint searches with and without the coherence value.",
    )
    parser.add_argument("--quick", action="store_true", help="3 keyword sets instead of 10")
    parser.add_argument(
        "--simulations",
        type=int,
        default=DEFAULT_SIMULATIONS,
        help=f"simulations per search (default {DEFAULT_SIMULATIONS})",
    )
    parser.add_argument("--seed", type=int, default=0, help="search seed (default 0)")
    parser.add_argument(
        "--out", default="bench-out", help="folder of the JSON record (default bench-out/)"
    )
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = _parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    # One intra-op thread: the benchmark machine is shared with other jobs.
    torch.set_num_threads(1)
    model = load_model()
    section = run_coherence(
        model,
        num_sets=3 if args.quick else DEFAULT_SETS,
        simulations=args.simulations,
        seed=args.seed,
    )
    record = {
        "benchmark": "coherence",
        "time": utc_now(),
        "machine": machine_info(),
        **section,
    }
    path = write_record("coherence", record, args.out)
    print(format_table(section["summary"]))
    print(f"record: {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
