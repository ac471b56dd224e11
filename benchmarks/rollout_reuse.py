"""Rollout reuse: forwards of the keyword MCTS with and without it, side by side.

Run `python -m benchmarks.rollout_reuse [--sets N] [--simulations S] [--out DIR]`.

A new node whose token is the first token of its parent's rollout takes the rest of that
rollout instead of running its own (`SearchStats.reused_rollouts`). With greedy rollouts the
rest is the rollout the node would have run, up to floating-point ties, so the search should
build the same tree with fewer forwards. For each of the first N keyword sets, the MCTS of
`benchmarks/keywords.py` (greedy rollouts to 32 tokens, keyword guide, whole budget) runs
twice in turn, as shipped and with reuse turned off. Reuse is turned off by replacing
`_MCTS._reused_rollout` with a function that returns None. The record gives forwards, seconds,
and whether the returned text and the node count are the same.
"""

from __future__ import annotations

import argparse
import logging
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

import torch

from benchmarks._common import machine_info, utc_now, write_record
from benchmarks.keywords import MAX_NEW_TOKENS, build_prompt, load_keyword_sets
from tempo_search.models import LoadedModel, load_model
from tempo_search.search import _MCTS, search
from tempo_search.tasks.constraints import constraints_task

logger = logging.getLogger(__name__)

DEFAULT_SETS = 8
DEFAULT_SIMULATIONS = 60
BATCH_SIZE = 4
"""Leaves per batch: 4, the batch size of the keyword benchmark when this one was recorded."""


def _search(
    loaded: LoadedModel, words: list[str], simulations: int, max_new_tokens: int, seed: int
):
    return search(
        loaded,
        build_prompt(words),
        task=constraints_task(keywords=words),
        chat=True,
        num_simulations=simulations,
        batch_size=BATCH_SIZE,
        max_new_tokens=max_new_tokens,
        rollout="greedy",
        rollout_depth=max_new_tokens,
        stop_when_solved=False,
        seed=seed,
    )


def run_reuse(
    loaded: LoadedModel,
    *,
    num_sets: int,
    simulations: int = DEFAULT_SIMULATIONS,
    max_new_tokens: int = MAX_NEW_TOKENS,
    on_progress: Callable[[], None] | None = None,
) -> dict[str, Any]:
    """Run the keyword MCTS with and without rollout reuse on `num_sets` sets; `on_progress`
    is called after each set."""
    rows = []
    shipped = _MCTS._reused_rollout
    for index, entry in enumerate(load_keyword_sets(num_sets)):
        words = entry["words"]
        began = time.perf_counter()
        with_reuse = _search(loaded, words, simulations, max_new_tokens, index)
        middle = time.perf_counter()
        _MCTS._reused_rollout = lambda self, child: None
        try:
            without = _search(loaded, words, simulations, max_new_tokens, index)
        finally:
            _MCTS._reused_rollout = shipped
        end = time.perf_counter()
        rows.append(
            {
                "set_id": entry["id"],
                "forwards_with_reuse": with_reuse.stats.forward_passes,
                "forwards_without_reuse": without.stats.forward_passes,
                "seconds_with_reuse": round(middle - began, 2),
                "seconds_without_reuse": round(end - middle, 2),
                "reused_rollouts": with_reuse.stats.reused_rollouts,
                "nodes": [with_reuse.stats.nodes, without.stats.nodes],
                "same_text": with_reuse.text == without.text,
            }
        )
        logger.info("%s: %s", entry["id"], rows[-1])
        if on_progress is not None:
            on_progress()
    ratio = statistics.fmean(r["forwards_without_reuse"] / r["forwards_with_reuse"] for r in rows)
    return {
        "settings": {
            "num_sets": num_sets,
            "simulations": simulations,
            "max_new_tokens": max_new_tokens,
            "model": loaded.name,
        },
        "sets": rows,
        "summary": {
            "forwards_with_reuse_mean": statistics.fmean(r["forwards_with_reuse"] for r in rows),
            "forwards_without_reuse_mean": statistics.fmean(
                r["forwards_without_reuse"] for r in rows
            ),
            "forwards_ratio_mean": ratio,
            "seconds_with_reuse_mean": statistics.fmean(r["seconds_with_reuse"] for r in rows),
            "seconds_without_reuse_mean": statistics.fmean(
                r["seconds_without_reuse"] for r in rows
            ),
            "same_text_sets": sum(r["same_text"] for r in rows),
            "same_nodes_sets": sum(r["nodes"][0] == r["nodes"][1] for r in rows),
        },
    }


def format_table(section: dict[str, Any]) -> str:
    s = section["summary"]
    n = section["settings"]["num_sets"]
    return "\n".join(
        [
            "| rollout reuse | forwards per set | seconds per set |",
            "|---|---:|---:|",
            f"| on | {s['forwards_with_reuse_mean']:.1f} | {s['seconds_with_reuse_mean']:.1f} |",
            f"| off | {s['forwards_without_reuse_mean']:.1f} "
            f"| {s['seconds_without_reuse_mean']:.1f} |",
            "",
            f"Forwards without reuse / with reuse: {s['forwards_ratio_mean']:.2f} (mean of the "
            f"per-set ratios); same text on {s['same_text_sets']} of {n} sets, same node count "
            f"on {s['same_nodes_sets']} of {n}.",
        ]
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.rollout_reuse",
        description="Forwards of the keyword MCTS with and without rollout reuse.",
    )
    parser.add_argument("--sets", type=int, default=DEFAULT_SETS, help="keyword sets (default 8)")
    parser.add_argument(
        "--simulations", type=int, default=DEFAULT_SIMULATIONS, help="simulations (default 60)"
    )
    parser.add_argument("--model", default=None, help="model path (default: embedded SmolLM2)")
    parser.add_argument("--out", default=None, help="folder for the JSON record")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    torch.set_num_threads(1)
    loaded = load_model(args.model)
    section = run_reuse(loaded, num_sets=args.sets, simulations=args.simulations)
    sys.stdout.write(format_table(section) + "\n")
    if args.out is not None:
        record = {
            "benchmark": "rollout_reuse",
            "command": "python -m benchmarks.rollout_reuse " + " ".join(sys.argv[1:]),
            "time": utc_now(),
            "machine": machine_info(),
            **section,
        }
        sys.stdout.write(f"record: {write_record('rollout_reuse', record, args.out)}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
