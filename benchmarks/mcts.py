"""MCTS benchmark: tempo_search's shared-cache search against a naive re-running MCTS.

Run `python -m benchmarks.mcts [--quick] [--simulations 200] [--out DIR]`. It loads the embedded
SmolLM2-135M-Instruct (or `--model`) and measures two things.

1. For each prompt, the same search (same seed, same settings) on the shared tree state and on
   `benchmarks.naive_mcts.NaiveEngine`, which re-runs the whole prefix of every new node. It
   reports tokens forwarded per tree node, the naive/tempo ratios of tokens forwarded and of
   wall time, and whether both engines built the same tree. The two searches of a prompt run
   back to back, in an order that alternates between prompts, so that a load change on the
   machine hits both sides of a ratio alike.
2. One larger search (about 1,000 nodes) and the share of its wall time spent outside model
   forwards, `1 - model_seconds / seconds`. Two cProfile runs locate that time. The first
   profiles the search itself. The second profiles a replay of the same search in which the
   recorded logits of the first stand in for the model, so that all of its time is outside
   the model.

The JSON record written to `--out` holds the command, the commit, the machine, every figure and
both profiles.
"""

from __future__ import annotations

import argparse
import cProfile
import functools
import logging
import os
import pstats
import sys
from collections.abc import Sequence
from dataclasses import asdict
from typing import Any

import torch

from benchmarks._common import (
    describe_machine,
    load_average,
    machine_info,
    timed,
    utc_now,
    write_record,
)
from benchmarks.naive_mcts import NaiveEngine, tree_differences
from tempo_search.models import LoadedModel, load_model
from tempo_search.search import SearchResult, search
from tempo_search.tree_state import TreeState

logger = logging.getLogger(__name__)

PROMPTS: tuple[dict[str, Any], ...] = (
    {
        "name": "story",
        "prompt": "Once upon a time, in a small village at the edge of a dark forest, there lived",
        "chat": False,
    },
    {"name": "factual", "prompt": "Q: Why is the sky blue?\nA:", "chat": False},
    {
        "name": "chat",
        "prompt": "Give me three tips for writing clear and polite emails to a colleague.",
        "chat": True,
    },
)
"""Prompts of the comparison: a story opening, a factual question, an instruction via chat."""

PROFILE_PROMPT = PROMPTS[0]
"""Prompt of the outside-model measurement."""

GOALS: dict[str, tuple[str, float]] = {
    "tokens_forwarded_per_node": ("<=", 1.05),
    "token_ratio": (">=", 20.0),
    "wall_ratio": (">=", 5.0),
    "outside_model_share": ("<=", 0.10),
}
"""Project goals: each tree token forwarded about once, 20x fewer tokens and 5x less wall time
than the naive baseline, and at most 10 % of the search's wall time outside the model."""

DEFAULT_SIMULATIONS = 200
DEFAULT_BATCH_SIZE = 4
DEFAULT_MAX_NEW_TOKENS = 24
DEFAULT_ROLLOUT_DEPTH = 4
DEFAULT_PROFILE_SIMULATIONS = 1100
"""About one node per simulation at 200 simulations on SmolLM2, so 1,100 reach 1,000 nodes."""
DEFAULT_PROFILE_MAX_NEW_TOKENS = 48
DEFAULT_PROFILE_TOP = 15
DEFAULT_SEED = 0


# --------------------------------------------------------------------------- helpers


def goal(name: str, value: float) -> dict[str, Any]:
    """Return `{"value", "goal", "met"}` for the figure `name` of `GOALS`."""
    operator, target = GOALS[name]
    met = value <= target if operator == "<=" else value >= target
    return {"value": value, "goal": f"{operator} {target:g}", "met": bool(met)}


def _ratio(numerator: float, denominator: float) -> float:
    return numerator / denominator if denominator > 0 else float("inf")


def _run_search(model: LoadedModel, spec: dict[str, Any], settings: dict[str, Any], engine):
    """Run one search and return `(wall_seconds, result)`; `engine` is None for TreeState."""
    return timed(
        lambda: search(
            model,
            spec["prompt"],
            chat=spec["chat"],
            _engine_factory=engine,
            **settings,
        )
    )


def _side(result: SearchResult, wall_seconds: float) -> dict[str, Any]:
    return {"wall_seconds": wall_seconds, "text": result.text, **asdict(result.stats)}


# --------------------------------------------------------------------------- comparison


def compare_prompt(
    model: LoadedModel,
    spec: dict[str, Any],
    settings: dict[str, Any],
    *,
    naive_first: bool = False,
) -> dict[str, Any]:
    """Search `spec` on the shared tree state and on the naive engine, back to back.

    Args:
        model: the loaded model.
        spec: `{"name", "prompt", "chat"}`, as in `PROMPTS`.
        settings: keyword arguments of `search` shared by both runs (seed included).
        naive_first: run the naive search first.
    """
    runs: dict[str, tuple[float, SearchResult]] = {}
    order = [("naive", NaiveEngine), ("tempo", None)]
    if not naive_first:
        order.reverse()
    for name, engine in order:
        runs[name] = _run_search(model, spec, settings, engine)
        logger.info("%s / %s: %.2f s", spec["name"], name, runs[name][0])
    tempo_seconds, tempo = runs["tempo"]
    naive_seconds, naive = runs["naive"]
    differences = tree_differences(tempo.tree, naive.tree)
    return {
        "name": spec["name"],
        "chat": spec["chat"],
        "prompt_tokens": tempo.stats.prompt_tokens,
        "tempo": _side(tempo, tempo_seconds),
        "naive": _side(naive, naive_seconds),
        "tokens_forwarded_per_node": goal(
            "tokens_forwarded_per_node", tempo.stats.tokens_forwarded_per_node
        ),
        "token_ratio": goal(
            "token_ratio", _ratio(naive.stats.tokens_forwarded, tempo.stats.tokens_forwarded)
        ),
        "wall_ratio": goal("wall_ratio", _ratio(naive_seconds, tempo_seconds)),
        "identical_trees": not differences,
        "tree_differences": differences,
    }


def compare_engines(
    model: LoadedModel,
    prompts: Sequence[dict[str, Any]] = PROMPTS,
    *,
    num_simulations: int = DEFAULT_SIMULATIONS,
    batch_size: int = DEFAULT_BATCH_SIZE,
    max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS,
    rollout: str = "none",
    rollout_depth: int = DEFAULT_ROLLOUT_DEPTH,
    seed: int = DEFAULT_SEED,
) -> dict[str, Any]:
    """Compare the shared-cache search with the naive one on every prompt.

    Returns `{"settings", "prompts", "overall"}`. The overall figures are totals over the
    prompts: tree tokens per node, naive/tempo tokens forwarded and naive/tempo wall time.
    """
    settings = {
        "num_simulations": num_simulations,
        "batch_size": batch_size,
        "max_new_tokens": max_new_tokens,
        "rollout": rollout,
        "rollout_depth": rollout_depth,
        "seed": seed,
    }
    rows = [
        compare_prompt(model, spec, settings, naive_first=index % 2 == 1)
        for index, spec in enumerate(prompts)
    ]
    tree_tokens = sum(
        r["tempo"]["tokens_forwarded"] - r["tempo"]["prompt_tokens"] - r["tempo"]["rollout_tokens"]
        for r in rows
    )
    nodes = sum(r["tempo"]["nodes"] for r in rows)
    overall = {
        "tokens_forwarded_per_node": goal("tokens_forwarded_per_node", tree_tokens / max(1, nodes)),
        "token_ratio": goal(
            "token_ratio",
            _ratio(
                sum(r["naive"]["tokens_forwarded"] for r in rows),
                sum(r["tempo"]["tokens_forwarded"] for r in rows),
            ),
        ),
        "wall_ratio": goal(
            "wall_ratio",
            _ratio(
                sum(r["naive"]["wall_seconds"] for r in rows),
                sum(r["tempo"]["wall_seconds"] for r in rows),
            ),
        ),
        "identical_trees": all(r["identical_trees"] for r in rows),
        "nodes": nodes,
    }
    return {"settings": settings, "prompts": rows, "overall": overall}


# --------------------------------------------------------------------------- outside the model


class _RecordingTreeState(TreeState):
    """A `TreeState` that keeps the logits of every `expand`, for a replay without the model."""

    def __init__(self, model, prompt_ids) -> None:
        super().__init__(model, prompt_ids)
        self.recorded: list[torch.Tensor] = []

    def expand(self, parents, token_ids, **kwargs):
        output = super().expand(parents, token_ids, **kwargs)
        self.recorded.append(output.logits)
        return output


class _ReplayEngine(NaiveEngine):
    """The bookkeeping of `NaiveEngine` with recorded logits in place of model forwards."""

    def __init__(self, model, prompt_ids, *, recording: _RecordingTreeState) -> None:
        self._prompt_row = recording.prompt_logits
        self._outputs = iter(recording.recorded)
        super().__init__(model, prompt_ids)

    def _run_prompt(self) -> torch.Tensor:
        return self._prompt_row

    def _run_nodes(self, new_ids: list[int]) -> torch.Tensor:
        logits = next(self._outputs)
        assert logits.shape[0] == len(new_ids), "the replay diverged from the recorded search"
        return logits


def profile_entries(profiler: cProfile.Profile, *, top: int, sort: str) -> list[dict[str, Any]]:
    """Return the `top` functions of `profiler` sorted by `sort` ("cumulative" or "tottime").

    The benchmark's own wrappers around `search` are left out.
    """
    stats = pstats.Stats(profiler)
    stats.sort_stats(sort)
    entries = []
    for function in stats.fcn_list:
        if len(entries) == top:
            break
        if _is_harness(function):
            continue
        primitive_calls, calls, own_seconds, cumulative_seconds, _ = stats.stats[function]
        entries.append(
            {
                "function": _function_name(function),
                "calls": calls,
                "primitive_calls": primitive_calls,
                "tottime": round(own_seconds, 4),
                "cumtime": round(cumulative_seconds, 4),
            }
        )
    return entries


def _is_harness(function: tuple[str, int, str]) -> bool:
    """Whether `function` is one of this benchmark's wrappers around `search`."""
    path, _, name = function
    return f"{os.sep}benchmarks{os.sep}" in path and name in {"<lambda>", "_run_search", "timed"}


def _function_name(function: tuple[str, int, str]) -> str:
    """`file:line(name)` with the file shortened to its package path."""
    path, line, name = function
    if path == "~":
        return name
    for marker in ("site-packages" + os.sep, "lib" + os.sep + "python"):
        if marker in path:
            path = path.split(marker, 1)[1]
            break
    else:
        path = os.path.relpath(path) if os.path.isabs(path) else path
    return f"{path}:{line}({name})"


def _profiled(call) -> tuple[cProfile.Profile, Any]:
    profiler = cProfile.Profile()
    profiler.enable()
    try:
        result = call()
    finally:
        profiler.disable()
    return profiler, result


def outside_model_time(
    model: LoadedModel,
    spec: dict[str, Any] = PROFILE_PROMPT,
    *,
    num_simulations: int = DEFAULT_PROFILE_SIMULATIONS,
    batch_size: int = DEFAULT_BATCH_SIZE,
    max_new_tokens: int = DEFAULT_PROFILE_MAX_NEW_TOKENS,
    seed: int = DEFAULT_SEED,
    profile_top: int = DEFAULT_PROFILE_TOP,
) -> dict[str, Any]:
    """Measure the share of a search's wall time spent outside model forwards, and profile it.

    Steps:
    1. One search without a profiler gives the figure, `1 - model_seconds / seconds`.
    2. The same search under cProfile, with its logits recorded, gives the top functions by
       cumulative time.
    3. A replay of that search on the recorded logits runs only the code outside the model.
       Timed, it cross-checks the figure. Under cProfile, it gives the top functions of the
       outside time, by cumulative and by own time.
    """
    settings = {
        "num_simulations": num_simulations,
        "batch_size": batch_size,
        "max_new_tokens": max_new_tokens,
        "seed": seed,
    }

    # 1. The figure, without a profiler.
    wall_seconds, measured = _run_search(model, spec, settings, None)
    stats = measured.stats
    share = 1.0 - stats.model_seconds / stats.seconds if stats.seconds > 0 else 0.0
    logger.info("outside-model search: %d nodes, %.2f s", stats.nodes, stats.seconds)

    # 2. The same search under cProfile, recording the logits of every expand.
    recordings: list[_RecordingTreeState] = []

    def recording_factory(net, prompt_ids):
        recordings.append(_RecordingTreeState(net, prompt_ids))
        return recordings[-1]

    profiler, profiled = _profiled(lambda: _run_search(model, spec, settings, recording_factory)[1])
    search_profile = profile_entries(profiler, top=profile_top, sort="cumulative")

    # 3. A replay on the recorded logits, timed, then profiled: it runs only the code
    # outside the model, so its time estimates the outside time without a profiler's overhead.
    replay_factory = functools.partial(_ReplayEngine, recording=recordings[0])
    _, replayed = _run_search(model, spec, settings, replay_factory)
    replay_seconds = replayed.stats.seconds
    replay_profiler, _ = _profiled(lambda: _run_search(model, spec, settings, replay_factory))
    return {
        "prompt": spec["name"],
        "settings": settings,
        "nodes": stats.nodes,
        "simulations": stats.simulations,
        "seconds": stats.seconds,
        "model_seconds": stats.model_seconds,
        "wall_seconds": wall_seconds,
        "outside_model_share": goal("outside_model_share", share),
        "profiled_seconds": profiled.stats.seconds,
        "profiled_outside_model_share": 1.0
        - profiled.stats.model_seconds / max(profiled.stats.seconds, 1e-12),
        "replay_seconds": replay_seconds,
        "replay_outside_model_share": replay_seconds / stats.seconds if stats.seconds > 0 else 0.0,
        "replay_identical_tree": not tree_differences(measured.tree, replayed.tree),
        "profile_top_cumulative": search_profile,
        "outside_profile_top_cumulative": profile_entries(
            replay_profiler, top=profile_top, sort="cumulative"
        ),
        "outside_profile_top_tottime": profile_entries(
            replay_profiler, top=profile_top, sort="tottime"
        ),
    }


# --------------------------------------------------------------------------- driver


def _warm_up(model: LoadedModel) -> None:
    """Run a small search on both engines so that first-call costs stay out of the figures."""
    spec = PROMPTS[0]
    settings = {"num_simulations": 8, "max_new_tokens": 4, "batch_size": DEFAULT_BATCH_SIZE}
    for engine in (None, NaiveEngine):
        _run_search(model, spec, settings, engine)


def run_benchmarks(
    model: LoadedModel,
    *,
    num_simulations: int = DEFAULT_SIMULATIONS,
    max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS,
    rollout_depth: int | None = DEFAULT_ROLLOUT_DEPTH,
    profile_simulations: int = DEFAULT_PROFILE_SIMULATIONS,
    profile_max_new_tokens: int = DEFAULT_PROFILE_MAX_NEW_TOKENS,
    prompts: Sequence[dict[str, Any]] = PROMPTS,
    seed: int = DEFAULT_SEED,
) -> dict[str, Any]:
    """Run the comparisons and the outside-model measurement; return the JSON record.

    `rollout_depth=None` skips the comparison with greedy rollouts. The record has the keys
    `benchmark`, `started`, `machine`, `model`, `goals`, `comparisons` (one per rollout
    setting), `outside_model` and `load_average_after`.
    """
    record: dict[str, Any] = {
        "benchmark": "mcts",
        "started": utc_now(),
        "machine": machine_info(),
        "model": model.name,
        "goals": {name: f"{op} {target:g}" for name, (op, target) in GOALS.items()},
    }
    _warm_up(model)
    comparisons = [
        compare_engines(
            model,
            prompts,
            num_simulations=num_simulations,
            max_new_tokens=max_new_tokens,
            seed=seed,
        )
    ]
    if rollout_depth is not None:
        comparisons.append(
            compare_engines(
                model,
                prompts,
                num_simulations=num_simulations,
                max_new_tokens=max_new_tokens,
                rollout="greedy",
                rollout_depth=rollout_depth,
                seed=seed,
            )
        )
    record["comparisons"] = comparisons
    record["outside_model"] = outside_model_time(
        model,
        prompts[0],
        num_simulations=profile_simulations,
        max_new_tokens=profile_max_new_tokens,
        seed=seed,
    )
    record["load_average_after"] = load_average()
    return record


def _mark(figure: dict[str, Any], digits: int = 2) -> str:
    return f"{figure['value']:.{digits}f} ({'met' if figure['met'] else 'missed'})"


def format_tables(record: dict[str, Any]) -> str:
    """Render the record as Markdown tables."""
    lines = []
    for comparison in record["comparisons"]:
        settings = comparison["settings"]
        rollout = settings["rollout"]
        if rollout != "none":
            rollout = f"{rollout}, depth {settings['rollout_depth']}"
        lines += [
            f"\n### {settings['num_simulations']} simulations, batch {settings['batch_size']}, "
            f"max_new_tokens {settings['max_new_tokens']}, rollout {rollout}\n",
            "| prompt | nodes | tokens/node (<= 1.05) | tokens tempo | tokens naive | "
            "tokens naive/tempo (>= 20) | wall tempo (s) | wall naive (s) | "
            "wall naive/tempo (>= 5) | same tree |",
            "|---|---|---|---|---|---|---|---|---|---|",
        ]
        for row in comparison["prompts"]:
            lines.append(
                f"| {row['name']} | {row['tempo']['nodes']} | "
                f"{_mark(row['tokens_forwarded_per_node'], 3)} | "
                f"{row['tempo']['tokens_forwarded']} | {row['naive']['tokens_forwarded']} | "
                f"{_mark(row['token_ratio'], 1)} | {row['tempo']['wall_seconds']:.2f} | "
                f"{row['naive']['wall_seconds']:.2f} | {_mark(row['wall_ratio'], 1)} | "
                f"{'yes' if row['identical_trees'] else 'no'} |"
            )
        overall = comparison["overall"]
        lines.append(
            f"| **overall** | {overall['nodes']} | "
            f"{_mark(overall['tokens_forwarded_per_node'], 3)} | | | "
            f"{_mark(overall['token_ratio'], 1)} | | | {_mark(overall['wall_ratio'], 1)} | "
            f"{'yes' if overall['identical_trees'] else 'no'} |"
        )
    outside = record["outside_model"]
    settings = outside["settings"]
    lines += [
        f"\n### Time outside the model: {settings['num_simulations']} simulations, "
        f"max_new_tokens {settings['max_new_tokens']}, prompt {outside['prompt']!r}\n",
        "| nodes | search (s) | model (s) | outside share (<= 10 %) |",
        "|---|---|---|---|",
        f"| {outside['nodes']} | {outside['seconds']:.2f} | {outside['model_seconds']:.2f} | "
        f"{outside['outside_model_share']['value']:.1%} "
        f"({'met' if outside['outside_model_share']['met'] else 'missed'}) |",
        "\nTop functions outside the model (replay without the model, by cumulative time):\n",
        "| function | calls | own (s) | cumulative (s) |",
        "|---|---|---|---|",
    ]
    for entry in outside["outside_profile_top_cumulative"]:
        lines.append(
            f"| `{entry['function']}` | {entry['calls']} | {entry['tottime']:.3f} | "
            f"{entry['cumtime']:.3f} |"
        )
    return "\n".join(lines)


def _parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.mcts",
        description="Compare tempo_search's MCTS with a naive MCTS that re-runs every prefix.",
    )
    parser.add_argument(
        "--quick", action="store_true", help="small budgets, to check that the benchmark runs"
    )
    parser.add_argument(
        "--simulations",
        type=int,
        default=None,
        help=f"simulations per comparison search (default {DEFAULT_SIMULATIONS}, 16 with --quick)",
    )
    parser.add_argument(
        "--profile-simulations",
        type=int,
        default=None,
        help="simulations of the outside-model search (default "
        f"{DEFAULT_PROFILE_SIMULATIONS}, 40 with --quick)",
    )
    parser.add_argument(
        "--no-rollout", action="store_true", help="skip the comparison with greedy rollouts"
    )
    parser.add_argument(
        "--threads",
        type=int,
        default=None,
        help="torch intra-op threads (default: torch's own choice); 1 suits a loaded machine",
    )
    parser.add_argument("--model", default=None, help="model path or hub id (default SmolLM2)")
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED, help="search seed (default 0)")
    parser.add_argument(
        "--out", default="bench-out", help="folder of the JSON record (default bench-out/)"
    )
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = _parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    simulations = args.simulations or (16 if args.quick else DEFAULT_SIMULATIONS)
    profile_simulations = args.profile_simulations or (
        40 if args.quick else DEFAULT_PROFILE_SIMULATIONS
    )
    if args.threads is not None:
        if args.threads < 1:
            raise SystemExit(f"--threads={args.threads} is invalid; pass 1 or more threads.")
        torch.set_num_threads(args.threads)
    model = load_model(args.model)
    record = run_benchmarks(
        model,
        num_simulations=simulations,
        max_new_tokens=8 if args.quick else DEFAULT_MAX_NEW_TOKENS,
        rollout_depth=None if args.no_rollout else DEFAULT_ROLLOUT_DEPTH,
        profile_simulations=profile_simulations,
        profile_max_new_tokens=16 if args.quick else DEFAULT_PROFILE_MAX_NEW_TOKENS,
        seed=args.seed,
    )
    arguments = sys.argv[1:] if argv is None else list(argv)
    record["command"] = " ".join(["python -m benchmarks.mcts", *arguments])
    print(format_tables(record))
    print(f"\n{describe_machine(record['machine'])}")
    path = write_record("mcts", record, args.out)
    print(f"Record written to {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
