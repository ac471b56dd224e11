"""Long-run check of the node budget: a long search must keep the KV cache under `max_nodes`.

Run `python -m benchmarks.budget [--quick] [--simulations N] [--max-nodes N] [--out DIR]`.
It runs one search on the embedded SmolLM2-135M-Instruct (or `--model`) with a node budget,
records the cache length after every forward pass through a thin engine wrapper, and reports
the peak against the budget together with the search statistics.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable, Sequence
from typing import Any

import torch

from benchmarks._common import machine_info, utc_now, write_record
from tempo_search.models import load_model
from tempo_search.search import search
from tempo_search.tree_state import TreeState

PROMPT = "The old lighthouse keeper opened the door and"
DEFAULT_SIMULATIONS = 10_000
DEFAULT_MAX_NODES = 2_000
DEFAULT_MAX_NEW_TOKENS = 64
"""The settings of the recorded run in docs/benchmarks.md."""


class _RecordingState(TreeState):
    """TreeState that remembers the largest node count seen after any expand."""

    peak_nodes = 0

    def expand(self, parents, token_ids, **kwargs):
        output = super().expand(parents, token_ids, **kwargs)
        type(self).peak_nodes = max(type(self).peak_nodes, self.num_nodes)
        return output


def run_budget_check(
    model,
    *,
    num_simulations: int,
    max_nodes: int,
    max_new_tokens: int,
    seed: int = 0,
    on_simulation: Callable[[int], None] | None = None,
) -> dict[str, Any]:
    """Run one budgeted search and return its figures.

    `on_simulation` is passed to `search`: it is called with the number of simulations done.
    """
    _RecordingState.peak_nodes = 0
    result = search(
        model,
        PROMPT,
        num_simulations=num_simulations,
        max_nodes=max_nodes,
        max_new_tokens=max_new_tokens,
        batch_size=4,
        seed=seed,
        on_simulation=on_simulation,
        _engine_factory=_RecordingState,
    )
    stats = result.stats
    return {
        "num_simulations": num_simulations,
        "max_nodes": max_nodes,
        "max_new_tokens": max_new_tokens,
        "simulations_done": stats.simulations,
        "stopped_by": stats.stopped_by,
        "nodes_forwarded": stats.nodes,
        "evicted_nodes": stats.evicted_nodes,
        "peak_tree_nodes": _RecordingState.peak_nodes,
        "prompt_tokens": stats.prompt_tokens,
        "peak_cache_length": stats.peak_cache_length,
        "budget_held": stats.peak_cache_length <= max_nodes + stats.prompt_tokens,
        "seconds": stats.seconds,
        "text": result.text,
    }


def format_table(figures: dict[str, Any]) -> str:
    """Return the Markdown table of one `run_budget_check` result."""
    budget_held = "yes" if figures["budget_held"] else "NO"
    return "\n".join(
        [
            "| simulations | nodes forwarded | nodes evicted | peak tree nodes | prompt tokens "
            "| peak cache length | budget held | seconds |",
            "|---|---|---|---|---|---|---|---|",
            f"| {figures['simulations_done']:,} of {figures['num_simulations']:,} "
            f"| {figures['nodes_forwarded']:,} | {figures['evicted_nodes']:,} "
            f"| {figures['peak_tree_nodes']:,} | {figures['prompt_tokens']:,} "
            f"| {figures['peak_cache_length']:,} | {budget_held} | {figures['seconds']:.1f} |",
        ]
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.budget",
        description="Check that a long search keeps the KV cache under max_nodes.",
    )
    parser.add_argument("--quick", action="store_true", help="500 simulations, max_nodes 200")
    parser.add_argument(
        "--simulations", type=int, default=None, help=f"default {DEFAULT_SIMULATIONS:,}"
    )
    parser.add_argument(
        "--max-nodes", type=int, default=None, help=f"default {DEFAULT_MAX_NODES:,}"
    )
    parser.add_argument(
        "--max-new-tokens",
        type=int,
        default=DEFAULT_MAX_NEW_TOKENS,
        help=f"default {DEFAULT_MAX_NEW_TOKENS}",
    )
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    parser.add_argument("--model", default=None, help="model path (default: embedded SmolLM2)")
    parser.add_argument("--out", default="bench-out", help="folder of the JSON record")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    torch.set_num_threads(args.threads)
    simulations = args.simulations or (500 if args.quick else DEFAULT_SIMULATIONS)
    max_nodes = args.max_nodes or (200 if args.quick else DEFAULT_MAX_NODES)

    model = load_model(args.model)
    figures = run_budget_check(
        model,
        num_simulations=simulations,
        max_nodes=max_nodes,
        max_new_tokens=args.max_new_tokens,
    )
    arguments = sys.argv[1:] if argv is None else list(argv)
    record = {
        "benchmark": "budget",
        "time": utc_now(),
        "command": " ".join(["python -m benchmarks.budget", *arguments]),
        "machine": machine_info(),
        "model": model.name,
        "figures": figures,
    }
    path = write_record("budget", record, args.out)
    for key, value in figures.items():
        sys.stdout.write(f"{key}: {value}\n")
    sys.stdout.write(f"record: {path}\n")
    return 0 if figures["budget_held"] else 1


if __name__ == "__main__":
    sys.exit(main())
