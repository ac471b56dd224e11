"""Engine benchmarks: exactness per architecture, rewind and compaction cost, KV cache memory.

Run `python -m benchmarks.engine_extra [--quick] [--threads N] [--out DIR]`. It prints Markdown
tables and, with `--out`, writes a JSON record with the raw samples and the machine description.
Torch runs with one intra-op thread unless `--threads` sets another count.

1. Exactness: `check_model` on the tiny models of `tempo_search.testing.ARCHITECTURES` (sdpa
   and eager; Gemma 2 has eager only) and on the embedded SmolLM2-135M-Instruct.
2. Rewind and compaction: on one `TreeState` of N random nodes, `rewind(k)` of k tail nodes and
   `compact` to half the nodes, each timed side by side with one expand of 8 nodes.
3. Memory: KV cache bytes of `search` with and without `max_nodes`.
"""

from __future__ import annotations

import argparse
import functools
import logging
import random
import sys
from collections.abc import Callable, Sequence
from typing import Any

import torch

from benchmarks._common import (
    describe_machine,
    load_average,
    machine_info,
    median,
    milliseconds,
    timed,
    utc_now,
    write_record,
)
from benchmarks.engine import PARALLEL_STEP_PROMPT, _check_budget, _ordered, _quartiles
from tempo_search.check import check_model
from tempo_search.models import LoadedModel, load_model
from tempo_search.search import search
from tempo_search.testing import ARCHITECTURES, tiny_model
from tempo_search.tree_state import ROOT, TreeState

logger = logging.getLogger(__name__)

DEFAULT_TREE_SIZES = (100, 500, 1000)
DEFAULT_REWIND_LENGTHS = (8, 32)
DEFAULT_GROW_BATCH = 16
"""Children per expand while the random tree is grown."""
DEFAULT_EXPAND_WIDTH = 8
"""Nodes of the reference expand that rewind and compaction are compared with."""
DEFAULT_SIMULATIONS = (50, 200, 800)
DEFAULT_MAX_NODES = (None, 200)
MEMORY_PROMPT = "Once upon a time, in a small village at the edge of a dark forest, there lived"
"""Prompt of the memory benchmark (the story prompt of `benchmarks.engine`)."""
DEFAULT_REPETITIONS = 20
DEFAULT_WARMUP = 3


# --------------------------------------------------------------------------- exactness


def exactness(
    models: Sequence[tuple[str, LoadedModel]] | None = None, *, seed: int = 0
) -> dict[str, Any]:
    """Run `check_model` on each `(label, model)`; None means every tiny architecture.

    The tiny models are built with sdpa and with eager attention (Gemma 2 with eager only,
    because transformers 5.x has no sdpa path for it). Returns `rows`: one dict per model with
    `model`, `architecture`, `attn_implementation`, `max_abs_diff`, `tolerance`, `passed`,
    `num_nodes_checked` and `max_depth`.
    """
    if models is None:
        models = tiny_models()
    rows = []
    for label, model in models:
        report = check_model(model, seed=seed)
        rows.append(
            {
                "model": label,
                "architecture": report.architecture,
                "attn_implementation": report.attn_implementation,
                "max_abs_diff": report.max_abs_diff,
                "tolerance": report.tolerance,
                "passed": report.passed,
                "num_nodes_checked": report.num_nodes_checked,
                "max_depth": report.max_depth,
            }
        )
    return {"seed": seed, "rows": rows}


def tiny_models(architectures: Sequence[str] = ARCHITECTURES) -> list[tuple[str, LoadedModel]]:
    """Build `(label, tiny model)` pairs: sdpa and eager per architecture, eager only for gemma2."""
    pairs = []
    for arch in architectures:
        implementations = ("eager",) if arch == "gemma2" else ("sdpa", "eager")
        for implementation in implementations:
            pairs.append((f"tiny-{arch}", tiny_model(arch, attn_implementation=implementation)))
    return pairs


# --------------------------------------------------------------------------- rewind and compact


def _random_children(
    state: TreeState, count: int, rng: random.Random, vocab_size: int
) -> tuple[list[int], list[int]]:
    """Draw `count` parents uniformly among ROOT and the live nodes, and one random token each."""
    candidates = [ROOT, *state.node_ids()]
    parents = [rng.choice(candidates) for _ in range(count)]
    tokens = [rng.randrange(vocab_size) for _ in range(count)]
    return parents, tokens


def _grow_tree(
    state: TreeState, num_nodes: int, batch: int, rng: random.Random, vocab_size: int
) -> None:
    """Expand random children in batches of `batch` until the tree contains `num_nodes` nodes."""
    while state.num_nodes < num_nodes:
        count = min(batch, num_nodes - state.num_nodes)
        state.expand(*_random_children(state, count, rng, vocab_size))


def _half_keep(state: TreeState, rng: random.Random) -> set[int]:
    """Return an ancestor-closed set of about half the nodes: paths of leaves in random order.

    Leaves are taken one at a time until the kept paths hold at least half the nodes.
    """
    parents = {state.parent(n) for n in state.node_ids()}
    leaves = [n for n in state.node_ids() if n not in parents]
    rng.shuffle(leaves)
    keep: set[int] = set()
    for leaf in leaves:
        if len(keep) >= state.num_nodes // 2:
            break
        keep.update(state.path(leaf))
    return keep


class _Snapshot:
    """The cache tensors and node tables of a `TreeState`, to undo a `compact`.

    `compact` replaces each layer's keys and values with new tensors (`index_select`), so
    holding references to the old ones is enough to restore them.
    NOTE: this reads private attributes of `TreeState`; update it when those change.
    """

    _TABLES = ("_parent", "_depth", "_token", "_slot")

    def __init__(self, state: TreeState) -> None:
        self.layers = [(layer.keys, layer.values) for layer in state.cache.layers]
        self.tables = {name: dict(getattr(state, name)) for name in self._TABLES}
        self.slot_nodes = list(state._slot_nodes)

    def restore(self, state: TreeState) -> None:
        for layer, (keys, values) in zip(state.cache.layers, self.layers, strict=True):
            layer.keys, layer.values = keys, values
        for name, table in self.tables.items():
            setattr(state, name, dict(table))
        state._slot_nodes = list(self.slot_nodes)


def rewind_and_compact(
    model: LoadedModel,
    *,
    prompt: str = PARALLEL_STEP_PROMPT,
    tree_sizes: Sequence[int] = DEFAULT_TREE_SIZES,
    rewind_lengths: Sequence[int] = DEFAULT_REWIND_LENGTHS,
    expand_width: int = DEFAULT_EXPAND_WIDTH,
    grow_batch: int = DEFAULT_GROW_BATCH,
    repetitions: int = DEFAULT_REPETITIONS,
    warmup: int = DEFAULT_WARMUP,
    seed: int = 0,
) -> dict[str, Any]:
    """Time `rewind(k)` and `compact` to half the nodes against one expand, per tree size N.

    For each N a fresh `TreeState` of `prompt` grows N random nodes (batches of `grow_batch`
    children under uniformly drawn parents). Each repetition then runs, in rotating order:
        "expand": one expand of `expand_width` random children, rewound afterwards (not timed);
        "rewind_k": k tail nodes are appended (not timed). Then `rewind(k)` is timed.
        "compact": `compact` to an ancestor-closed half of the tree (`_half_keep`) is timed.
            A snapshot then undoes it (not timed).
    The tree is the same N nodes at the start of every timed call.

    Returns `prompt_tokens`, `repetitions`, `warmup`, `expand_width` and `rows`: one dict per
    (N, operation) with `tree_nodes`, `operation`, `median_ms`, `ratio_to_expand` (median of the
    per-repetition ratio to the expand of the same repetition), `ratio_quartiles`, `kept_nodes`
    (compact only) and the raw `samples_ms`.
    """
    _check_budget(repetitions, warmup)
    sizes = [int(n) for n in tree_sizes]
    lengths = [int(k) for k in rewind_lengths]
    if not sizes or min(sizes) < 2:
        raise ValueError(f"tree_sizes={tree_sizes!r} must be non-empty, each at least 2.")
    if not lengths or min(lengths) < 1:
        raise ValueError(f"rewind_lengths={rewind_lengths!r} must be positive integers.")
    loaded = load_model(model)
    vocab_size = loaded.model.config.vocab_size
    prompt_ids = loaded.encode_prompt(prompt)
    rng = random.Random(seed)
    variants = ["expand", *(f"rewind_{k}" for k in lengths), "compact"]

    rows = []
    for size in sizes:
        logger.info("Rewind and compaction: tree of %d nodes", size)
        state = TreeState(loaded.model, prompt_ids)
        _grow_tree(state, size, grow_batch, rng, vocab_size)
        keep = _half_keep(state, rng)
        samples: dict[str, list[float]] = {name: [] for name in variants}
        for repetition in range(warmup + repetitions):
            for name in _ordered(variants, repetition):
                if name == "expand":
                    children = _random_children(state, expand_width, rng, vocab_size)
                    seconds, _ = timed(functools.partial(state.expand, *children))
                    state.rewind(expand_width)
                elif name == "compact":
                    snapshot = _Snapshot(state)
                    seconds, _ = timed(functools.partial(state.compact, keep))
                    assert state.num_nodes == len(keep)
                    snapshot.restore(state)
                else:
                    length = int(name.removeprefix("rewind_"))
                    state.expand(*_random_children(state, length, rng, vocab_size))
                    seconds, _ = timed(functools.partial(state.rewind, length))
                assert state.num_nodes == size
                if repetition >= warmup:
                    samples[name].append(seconds)

        for name in variants:
            ratios = [s / e for s, e in zip(samples[name], samples["expand"], strict=True)]
            row = {
                "tree_nodes": size,
                "operation": name,
                "median_ms": milliseconds(median(samples[name])),
                "ratio_to_expand": round(median(ratios), 4),
                "ratio_quartiles": _quartiles(ratios),
                "samples_ms": [milliseconds(s) for s in samples[name]],
            }
            if name == "compact":
                row["kept_nodes"] = len(keep)
            rows.append(row)
    return {
        "model": loaded.name,
        "prompt_tokens": len(prompt_ids),
        "expand_width": expand_width,
        "grow_batch": grow_batch,
        "repetitions": repetitions,
        "warmup": warmup,
        "seed": seed,
        "rows": rows,
    }


# --------------------------------------------------------------------------- memory


def cache_bytes(state: TreeState) -> int:
    """Sum of `nbytes` of the keys and values tensors of every cache layer of `state`."""
    total = 0
    for layer in state.cache.layers:
        for tensor in (getattr(layer, "keys", None), getattr(layer, "values", None)):
            if tensor is not None:
                total += tensor.nbytes
    return total


class _MeasuredTreeState(TreeState):
    """A `TreeState` that records the largest `cache_bytes` seen after any expand."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.peak_cache_bytes = cache_bytes(self)

    def expand(self, *args, **kwargs):
        output = super().expand(*args, **kwargs)
        self.peak_cache_bytes = max(self.peak_cache_bytes, cache_bytes(self))
        return output


def memory(
    model: LoadedModel,
    *,
    prompt: str = MEMORY_PROMPT,
    simulations: Sequence[int] = DEFAULT_SIMULATIONS,
    max_nodes_values: Sequence[int | None] = DEFAULT_MAX_NODES,
    max_new_tokens: int = 32,
    seed: int = 0,
) -> dict[str, Any]:
    """Measure KV cache size after `search` runs of several sizes, with and without `max_nodes`.

    Each search runs on a `_MeasuredTreeState` (passed through `search`'s private
    `_engine_factory`). `peak_cache_bytes` is the largest `cache_bytes` after any expand and
    `final_cache_bytes` the size when the search returns. Both count tensor sizes, not
    allocator peaks: a `torch.cat` or `index_select` briefly keeps old and new tensors alive together.

    Returns `max_new_tokens` and `rows`: one dict per (simulations, max_nodes) with
    `simulations` (requested), `simulations_run`, `max_nodes`, `nodes_created`,
    `evicted_nodes`, `peak_cache_length`, `peak_cache_bytes`, `final_cache_bytes`,
    `bytes_per_entry` and `stopped_by`.
    """
    loaded = load_model(model)
    rows = []
    for max_nodes in max_nodes_values:
        for count in simulations:
            logger.info("Memory: %d simulations, max_nodes=%s", count, max_nodes)
            engines: list[_MeasuredTreeState] = []

            def factory(net, prompt_ids, engines=engines):
                engines.append(_MeasuredTreeState(net, prompt_ids))
                return engines[-1]

            result = search(
                loaded,
                prompt,
                num_simulations=count,
                max_new_tokens=max_new_tokens,
                max_nodes=max_nodes,
                seed=seed,
                _engine_factory=factory,
            )
            engine = engines[-1]
            stats = result.stats
            assert engine.peak_cache_length == stats.peak_cache_length
            rows.append(
                {
                    "simulations": count,
                    "simulations_run": stats.simulations,
                    "max_nodes": max_nodes,
                    "nodes_created": stats.nodes,
                    "evicted_nodes": stats.evicted_nodes,
                    "prompt_tokens": stats.prompt_tokens,
                    "peak_cache_length": stats.peak_cache_length,
                    "peak_cache_bytes": engine.peak_cache_bytes,
                    "final_cache_length": engine.cache_length,
                    "final_cache_bytes": cache_bytes(engine),
                    "bytes_per_entry": cache_bytes(engine) // engine.cache_length,
                    "stopped_by": stats.stopped_by,
                }
            )
    return {"model": loaded.name, "max_new_tokens": max_new_tokens, "seed": seed, "rows": rows}


# --------------------------------------------------------------------------- report


def _mib(num_bytes: int) -> str:
    return f"{num_bytes / 2**20:.1f}"


def format_tables(record: dict[str, Any]) -> str:
    """Render a record of `run_benchmarks` as Markdown tables."""
    lines = [
        "Exactness (`check_model`, float32, tolerance 1e-4):",
        "",
        "| model | architecture | attention | nodes checked | max_abs_diff | passed |",
        "|---|---|---|---:|---:|---|",
    ]
    for row in record["exactness"]["rows"]:
        lines.append(
            f"| {row['model']} | {row['architecture']} | {row['attn_implementation']} | "
            f"{row['num_nodes_checked']} | {row['max_abs_diff']:.2e} | "
            f"{'yes' if row['passed'] else 'NO'} |"
        )

    costs = record["rewind_compact"]
    lines += [
        "",
        f"Rewind and compaction, prompt of {costs['prompt_tokens']} tokens, ratio to one expand "
        f"of {costs['expand_width']} nodes, median of {costs['repetitions']} repetitions:",
        "",
        "| tree nodes | operation | time (ms) | ratio to expand | quartiles |",
        "|---:|---|---:|---:|---:|",
    ]
    for row in costs["rows"]:
        if row["operation"] == "compact":
            operation = f"compact to {row['kept_nodes']} nodes"
        elif row["operation"] == "expand":
            operation = f"expand {costs['expand_width']}"
        else:
            operation = row["operation"].replace("_", " ")
        first, third = row["ratio_quartiles"]
        lines.append(
            f"| {row['tree_nodes']} | {operation} | {row['median_ms']:.3f} | "
            f"{row['ratio_to_expand']:.3f} | {first:.3f} to {third:.3f} |"
        )

    usage = record["memory"]
    lines += [
        "",
        f"KV cache after `search`, max_new_tokens {usage['max_new_tokens']}:",
        "",
        "| simulations | max_nodes | nodes created | evicted | peak cache length | "
        "peak cache (MiB) | final cache (MiB) |",
        "|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for row in usage["rows"]:
        limit = "none" if row["max_nodes"] is None else row["max_nodes"]
        lines.append(
            f"| {row['simulations_run']} | {limit} | {row['nodes_created']} | "
            f"{row['evicted_nodes']} | {row['peak_cache_length']} | "
            f"{_mib(row['peak_cache_bytes'])} | {_mib(row['final_cache_bytes'])} |"
        )
    return "\n".join(lines)


def run_benchmarks(
    model: LoadedModel,
    *,
    exactness_models: Sequence[tuple[str, LoadedModel]] | None = None,
    tree_sizes: Sequence[int] = DEFAULT_TREE_SIZES,
    rewind_lengths: Sequence[int] = DEFAULT_REWIND_LENGTHS,
    expand_width: int = DEFAULT_EXPAND_WIDTH,
    repetitions: int = DEFAULT_REPETITIONS,
    warmup: int = DEFAULT_WARMUP,
    simulations: Sequence[int] = DEFAULT_SIMULATIONS,
    max_nodes_values: Sequence[int | None] = DEFAULT_MAX_NODES,
    max_new_tokens: int = 32,
    on_progress: Callable[[], None] | None = None,
) -> dict[str, Any]:
    """Run the three benchmarks on `model` and return one record with the machine description.

    `exactness_models` defaults to the tiny models of every architecture plus `model`.
    `on_progress` is called after each of the three benchmarks.
    """
    progress = on_progress or (lambda: None)
    loaded = load_model(model)
    record: dict[str, Any] = {
        "benchmark": "engine_extra",
        "started": utc_now(),
        "machine": machine_info(),
        "model": loaded.name,
    }
    if exactness_models is None:
        exactness_models = [*tiny_models(), (loaded.name, loaded)]
    logger.info("Exactness: %d models", len(exactness_models))
    record["exactness"] = exactness(exactness_models)
    progress()
    record["rewind_compact"] = rewind_and_compact(
        loaded,
        tree_sizes=tree_sizes,
        rewind_lengths=rewind_lengths,
        expand_width=expand_width,
        repetitions=repetitions,
        warmup=warmup,
    )
    progress()
    record["memory"] = memory(
        loaded,
        simulations=simulations,
        max_nodes_values=max_nodes_values,
        max_new_tokens=max_new_tokens,
    )
    progress()
    record["finished"] = utc_now()
    record["load_average_at_end"] = load_average()
    return record


def _parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.engine_extra",
        description="Check exactness per architecture and measure rewind, compaction and "
        "KV cache memory of tempo_search.",
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="3 repetitions after 1 warm-up, trees of 100 and 500 nodes, searches of 20 and "
        "50 simulations, for a smoke run",
    )
    parser.add_argument("--out", help="folder for the JSON record (default: none written)")
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads (default 1)")
    parser.add_argument(
        "--no-eager-default",
        action="store_true",
        help="skip the eager-attention copy of SmolLM2 in the exactness table",
    )
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = _parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if args.threads < 1:
        raise SystemExit(f"--threads={args.threads} is invalid; pass 1 or more threads.")
    torch.set_num_threads(args.threads)

    model = load_model()
    exactness_models = [*tiny_models(), (model.name, model)]
    if not args.no_eager_default:
        exactness_models.append((model.name, load_model(attn_implementation="eager")))
    quick = {
        "tree_sizes": (100, 500),
        "repetitions": 3,
        "warmup": 1,
        "simulations": (20, 50),
    }
    record = run_benchmarks(
        model, exactness_models=exactness_models, **(quick if args.quick else {})
    )
    arguments = sys.argv[1:] if argv is None else list(argv)
    record["command"] = " ".join(["python -m benchmarks.engine_extra", *arguments])
    print(format_tables(record))
    print(f"\n{describe_machine(record['machine'])}")
    if args.out:
        path = write_record("engine_extra", record, args.out)
        print(f"Record written to {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
