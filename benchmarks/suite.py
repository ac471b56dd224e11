"""The benchmark suite: runs the benchmarks, writes one JSON record, refreshes the doc's tables.

`python -m benchmarks [--quick] [--only NAME[,NAME]] [--out DIR] [--threads N] [--doc FILE]`,
or `tempo-search bench` with the same flags. The benchmarks, in the order they run
(`BENCHMARKS`), roughly cheapest first at the full sizes:

- engine: parallel-token step, tokens per generated step, attention capture (`benchmarks.engine`);
- coherence: keyword searches with and without the coherence value (`benchmarks.coherence`);
- engine_extra: exactness per architecture, rewind and compaction cost, KV cache memory
  (`benchmarks.engine_extra`);
- budget: one long search under `max_nodes` (`benchmarks.budget`);
- pruning: superposition with and without retroactive pruning (`benchmarks.pruning`);
- keywords: keyword coverage of MCTS, sampling with rejection and beam reranking
  (`benchmarks.keywords`);
- quality: diversity and perplexity against standard decoders (`benchmarks.quality`);
- mcts: the shared tree state against naive re-running MCTS, time outside the model
  (`benchmarks.mcts`);
- tasks: Game of 24, Blocksworld and Countdown solved by the move search, against a uniform
  prior, no rollouts and best-of-N sampling (`benchmarks.tasks`);
- rollout_reuse: forwards of the keyword MCTS with and without rollout reuse
  (`benchmarks.rollout_reuse`).

Each runs with the sizes of `FULL` (each module's own defaults, the settings behind
docs/benchmarks.md) or `QUICK` (`--quick`, a smoke run whose figures are not for conclusions).
The model is loaded once and shared by every benchmark. The engine benchmarks that compare
with eager attention share one more copy, loaded with `attn_implementation="eager"`.

Outputs:
- one record `<out>/suite-<UTC time>.json`: command, commit, machine, library versions, wall
  time of each benchmark and every figure each benchmark returned;
- in the doc (default `docs/benchmarks.md`), the Markdown between `<!-- bench:BLOCK:start -->`
  and `<!-- bench:BLOCK:end -->` is replaced by the new tables, with one line naming the run.
  A benchmark writes the block named after it and, where its tables sit in several places of
  the doc, blocks named `NAME.PART` (`engine.capture`, for example; see `block_names`). A doc
  without the markers of a block gets that block appended at its end;
- PNG plots in the image folder (default: `img/` next to the doc, so `docs/img/`):
  `quality_pareto.png` and `engine_parallel_step.png`.

Adding a benchmark takes three edits in this file:
1. its sizes as `Budget` fields, with the module's defaults as the field defaults and small
   values in `QUICK`;
2. a function `_run_NAME(context: RunContext) -> tuple[dict, str | dict[str, str]]` that calls
   the module with `context.model` and `context.budget`, calls `context.progress(1)` after
   each step, and returns its record and its Markdown (one string, or block name -> Markdown);
3. one entry `"NAME": Benchmark(_run_NAME, ...)` in `REGISTRY`, at its place by cost.
Then put the block markers around the tables in docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib.metadata
import logging
import os
import re
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

REPOSITORY = Path(__file__).resolve().parent.parent
DEFAULT_DOC = REPOSITORY / "docs" / "benchmarks.md"
DEFAULT_IMAGE_DIR = REPOSITORY / "docs" / "img"
_VERSIONED = ("torch", "transformers", "numpy", "sacrebleu", "matplotlib", "tqdm", "tempo_search")


@dataclass(frozen=True)
class Budget:
    """Sizes of every benchmark in one suite run, one field prefix per benchmark.

    The defaults (`FULL`) are each module's own defaults, the settings behind
    docs/benchmarks.md, and `tests/test_benchmarks_suite.py` checks them against the modules.
    `QUICK` is a smoke run: the whole suite took 157 s of benchmarks on 2 AMD EPYC cores at
    load average 1.3 (one torch thread), so expect up to about five minutes on a busier machine.

    Fields whose names do not say it all:
        engine_eager, engine_extra_eager: also run the model loaded with eager attention
            (the `output_attentions` variant, the exactness row of eager attention).
        mcts_rollout_depth: depth of the greedy-rollout comparison; None skips it.
        pruning_variants: how many of `benchmarks.pruning.VARIANTS` run, in their order.
        engine_extra_max_nodes: `max_nodes` of the memory searches that have a node budget;
            the same searches also run without one.
    """

    engine_repetitions: int = 20
    engine_warmup: int = 3
    engine_max_new_tokens: int = 32
    engine_eager: bool = True
    mcts_simulations: int = 200
    mcts_max_new_tokens: int = 24
    mcts_rollout_depth: int | None = 4
    mcts_profile_simulations: int = 1100
    mcts_profile_max_new_tokens: int = 48
    pruning_prompts: int = 20
    pruning_max_new_tokens: int = 32
    pruning_variants: int = 3
    quality_prompts: int = 50
    quality_mcts_simulations: int = 128
    engine_extra_eager: bool = True
    engine_extra_tree_sizes: tuple[int, ...] = (100, 500, 1000)
    engine_extra_repetitions: int = 20
    engine_extra_warmup: int = 3
    engine_extra_simulations: tuple[int, ...] = (50, 200, 800)
    engine_extra_max_nodes: int = 200
    engine_extra_max_new_tokens: int = 32
    budget_simulations: int = 10_000
    budget_max_nodes: int = 2_000
    budget_max_new_tokens: int = 64
    coherence_sets: int = 10
    coherence_simulations: int = 60
    coherence_max_new_tokens: int = 32
    keywords_sets: int = 100
    keywords_simulations: int = 340
    keywords_max_new_tokens: int = 32
    tasks_puzzles: int = 100
    tasks_simulations: int = 200
    tasks_no_rollout_puzzles: int = 10
    tasks_blocksworld_instances: int = 30
    tasks_countdown_puzzles: int = 20
    rollout_reuse_sets: int = 8
    rollout_reuse_simulations: int = 60
    rollout_reuse_max_new_tokens: int = 32

    def __post_init__(self) -> None:
        for spec in dataclasses.fields(self):
            name, value = spec.name, getattr(self, spec.name)
            if name in _BOOLEAN_FIELDS:
                if not isinstance(value, bool):
                    raise TypeError(f"{name}={value!r} must be True or False.")
            elif name in _SIZE_TUPLE_FIELDS:
                minimum = _SIZE_TUPLE_FIELDS[name]
                if (
                    not isinstance(value, tuple)
                    or not value
                    or not all(_is_integer(item, minimum) for item in value)
                ):
                    raise ValueError(
                        f"{name}={value!r} must be a non-empty tuple of integers >= {minimum}, "
                        f"such as {spec.default!r}."
                    )
            elif name == "mcts_rollout_depth" and value is None:
                continue
            else:
                minimum = (
                    0
                    if name.endswith(("_warmup", "_no_rollout_puzzles", "_countdown_puzzles"))
                    else 1
                )
                if not _is_integer(value, minimum):
                    raise ValueError(
                        f"{name}={value!r} must be an integer >= {minimum}, such as "
                        f"{spec.default!r}."
                    )


_BOOLEAN_FIELDS = ("engine_eager", "engine_extra_eager")
_SIZE_TUPLE_FIELDS = {"engine_extra_tree_sizes": 2, "engine_extra_simulations": 1}
"""Tuple fields and the minimum of each item (a tree to rewind and compact needs 2 nodes)."""


def _is_integer(value: Any, minimum: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= minimum


FULL = Budget()
QUICK = Budget(
    engine_repetitions=3,
    engine_warmup=1,
    engine_max_new_tokens=8,
    mcts_simulations=16,
    mcts_max_new_tokens=8,
    mcts_rollout_depth=None,
    mcts_profile_simulations=40,
    mcts_profile_max_new_tokens=16,
    pruning_prompts=2,
    pruning_max_new_tokens=16,
    pruning_variants=2,
    quality_prompts=4,
    engine_extra_tree_sizes=(100,),
    engine_extra_repetitions=3,
    engine_extra_warmup=1,
    engine_extra_simulations=(20,),
    engine_extra_max_nodes=10,
    engine_extra_max_new_tokens=16,
    budget_simulations=200,
    budget_max_nodes=50,
    budget_max_new_tokens=16,
    coherence_sets=2,
    coherence_simulations=20,
    coherence_max_new_tokens=16,
    keywords_sets=3,
    keywords_simulations=20,
    keywords_max_new_tokens=16,
    tasks_puzzles=2,
    tasks_simulations=60,
    tasks_no_rollout_puzzles=0,
    tasks_blocksworld_instances=3,
    tasks_countdown_puzzles=1,
    rollout_reuse_sets=1,
    rollout_reuse_simulations=8,
    rollout_reuse_max_new_tokens=16,
)


@dataclass
class RunContext:
    """Inputs of a benchmark runner, passed by `run_suite`.

    Attributes:
        model: the `LoadedModel` shared by every benchmark of the run.
        model_arg: what the caller passed as `model` (None, a path or hub id, or a
            `LoadedModel`), so that a runner can load the same weights again.
        budget: the sizes of this run.
        image_dir: folder of the PNG plots.
        progress: call with a step count after each step, for the progress bar.
    """

    model: Any
    model_arg: Any
    budget: Budget
    image_dir: Path
    progress: Callable[[int], None]
    _eager_model: Any = dataclasses.field(default=None, repr=False)

    def eager_model(self) -> Any:
        """Return the model loaded again with eager attention, once per run, or None.

        None when `model_arg` is an already loaded model, because its weights cannot be
        loaded again from a name.
        """
        if not (self.model_arg is None or isinstance(self.model_arg, (str, os.PathLike))):
            return None
        if self._eager_model is None:
            from tempo_search.models import load_model

            self._eager_model = load_model(self.model_arg, attn_implementation="eager")
        return self._eager_model


Tables = str | dict[str, str]
"""Markdown of one benchmark: one string for the block NAME, or block name -> Markdown."""


# --------------------------------------------------------------------------- benchmarks


def _captioned_tables(markdown: str) -> list[str]:
    """Split generated Markdown into chunks, each the caption paragraphs and the tables after them.

    A new chunk starts at each non-table paragraph that follows a table. A `### Heading`
    paragraph becomes the caption "Heading:", so that the doc's own headings stay the only
    headings of its sections.
    """
    chunks: list[list[str]] = []
    previous_is_table = True
    for paragraph in re.split(r"\n\s*\n", markdown.strip()):
        paragraph = paragraph.strip()
        if not paragraph:
            continue
        is_table = paragraph.startswith("|")
        if paragraph.startswith("#"):
            paragraph = paragraph.lstrip("#").strip().rstrip(":") + ":"
        if not chunks or (previous_is_table and not is_table):
            chunks.append([])
        chunks[-1].append(paragraph)
        previous_is_table = is_table
    return ["\n\n".join(chunk) for chunk in chunks]


def _run_engine(context: RunContext) -> tuple[dict, Tables]:
    from benchmarks import engine

    budget = context.budget
    record = engine.run_benchmarks(
        context.model,
        eager_model=context.eager_model() if budget.engine_eager else None,
        repetitions=budget.engine_repetitions,
        warmup=budget.engine_warmup,
        max_new_tokens=budget.engine_max_new_tokens,
    )
    context.progress(1)
    context.image_dir.mkdir(parents=True, exist_ok=True)
    _engine_plot(record, context.image_dir / "engine_parallel_step.png")

    # The three tables sit in two sections of the doc, with text between them.
    step, generation, capture = _captioned_tables(engine.format_tables(record))
    return record, {"engine": step, "engine.generation": generation, "engine.capture": capture}


def _run_coherence(context: RunContext) -> tuple[dict, Tables]:
    from benchmarks import coherence

    budget = context.budget
    section = coherence.run_coherence(
        context.model,
        num_sets=budget.coherence_sets,
        simulations=budget.coherence_simulations,
        max_new_tokens=budget.coherence_max_new_tokens,
        on_progress=lambda: context.progress(1),
    )
    caption = (
        f"{budget.coherence_sets} keyword sets, {budget.coherence_simulations} simulations, "
        f"max_new_tokens {budget.coherence_max_new_tokens}, seed {section['seed']}:"
    )
    return section, f"{caption}\n\n{coherence.format_table(section['summary'])}"


def _run_engine_extra(context: RunContext) -> tuple[dict, Tables]:
    from benchmarks import engine_extra

    budget = context.budget
    exactness_models = [*engine_extra.tiny_models(), (context.model.name, context.model)]
    eager = context.eager_model() if budget.engine_extra_eager else None
    if eager is not None:
        exactness_models.append((eager.name, eager))
    record = engine_extra.run_benchmarks(
        context.model,
        exactness_models=exactness_models,
        tree_sizes=budget.engine_extra_tree_sizes,
        repetitions=budget.engine_extra_repetitions,
        warmup=budget.engine_extra_warmup,
        simulations=budget.engine_extra_simulations,
        max_nodes_values=(None, budget.engine_extra_max_nodes),
        max_new_tokens=budget.engine_extra_max_new_tokens,
        on_progress=lambda: context.progress(1),
    )
    exactness, rewind, memory = _captioned_tables(engine_extra.format_tables(record))
    return record, {
        "engine_extra": exactness,
        "engine_extra.rewind": rewind,
        "engine_extra.memory": memory,
    }


def _run_budget(context: RunContext) -> tuple[dict, Tables]:
    from benchmarks import budget as node_budget

    budget = context.budget
    done = 0

    def advance(simulations: int) -> None:
        nonlocal done
        context.progress(simulations - done)
        done = simulations

    figures = node_budget.run_budget_check(
        context.model,
        num_simulations=budget.budget_simulations,
        max_nodes=budget.budget_max_nodes,
        max_new_tokens=budget.budget_max_new_tokens,
        on_simulation=advance,
    )
    caption = (
        f"One search of {budget.budget_simulations:,} simulations, max_nodes "
        f"{budget.budget_max_nodes:,}, max_new_tokens {budget.budget_max_new_tokens}:"
    )
    return figures, f"{caption}\n\n{node_budget.format_table(figures)}"


def _run_pruning(context: RunContext) -> tuple[dict, Tables]:
    from benchmarks import pruning

    budget, model = context.budget, context.model
    prompts = pruning.load_prompts(budget.pruning_prompts)
    variants = dict(list(pruning.VARIANTS.items())[: budget.pruning_variants])
    results = {}
    for name, prune in variants.items():
        results[name] = pruning.run_variant(model, prompts, prune, budget.pruning_max_new_tokens)
        context.progress(1)
    record = {
        "model": model.name,
        "threshold": pruning.THRESHOLD,
        "num_prompts": len(prompts),
        "max_new_tokens": budget.pruning_max_new_tokens,
        "variants": {name: repr(prune) for name, prune in variants.items()},
        "results": results,
    }
    header = (
        f"{len(prompts)} prompts, {budget.pruning_max_new_tokens} tokens, threshold "
        f"{pruning.THRESHOLD}, model {model.name}:\n\n"
    )
    return record, header + pruning.markdown_table(results)


def _run_keywords(context: RunContext) -> tuple[dict, Tables]:
    from benchmarks import keywords

    budget = context.budget
    section = keywords.run_keywords(
        context.model,
        num_sets=budget.keywords_sets,
        simulations=budget.keywords_simulations,
        max_new_tokens=budget.keywords_max_new_tokens,
        on_progress=lambda: context.progress(1),
    )
    section["goal_met"] = keywords.goal_met(section)
    settings = section["settings"]
    caption = (
        f"{settings['num_sets_done']} keyword sets, MCTS with {settings['mcts_simulations']} "
        f"simulations, max_new_tokens {settings['max_new_tokens']}:"
    )
    # NOTE: the paired table (`keywords.format_paired_table`) stays out of the doc block,
    # which holds one table; docs/benchmarks.md shows it below the block.
    return section, f"{caption}\n\n{keywords.format_table(section)}"


def _run_rollout_reuse(context: RunContext) -> tuple[dict, Tables]:
    from benchmarks import rollout_reuse

    budget = context.budget
    section = rollout_reuse.run_reuse(
        context.model,
        num_sets=budget.rollout_reuse_sets,
        simulations=budget.rollout_reuse_simulations,
        max_new_tokens=budget.rollout_reuse_max_new_tokens,
        on_progress=lambda: context.progress(1),
    )
    caption = (
        f"{budget.rollout_reuse_sets} keyword sets, {budget.rollout_reuse_simulations} "
        f"simulations, max_new_tokens {budget.rollout_reuse_max_new_tokens}:"
    )
    return section, f"{caption}\n\n{rollout_reuse.format_table(section)}"


def _run_tasks(context: RunContext) -> tuple[dict, Tables]:
    from benchmarks import tasks

    budget = context.budget
    record = tasks.run(
        context.model,
        puzzles=budget.tasks_puzzles,
        simulations=budget.tasks_simulations,
        no_rollout_puzzles=budget.tasks_no_rollout_puzzles,
        blocksworld_limit=budget.tasks_blocksworld_instances,
        countdown_puzzles=budget.tasks_countdown_puzzles,
        on_puzzle=lambda: context.progress(1),
    )
    return record, tasks.markdown_blocks(record)


def _tasks_steps(budget: Budget) -> int:
    from tempo_search.tasks.blocksworld import load_instances

    instances = min(budget.tasks_blocksworld_instances, len(load_instances()))
    return budget.tasks_puzzles + instances + budget.tasks_countdown_puzzles


def _run_quality(context: RunContext) -> tuple[dict, Tables]:
    from benchmarks import quality

    section = quality.run_quality(
        context.model,
        num_prompts=context.budget.quality_prompts,
        mcts_simulations=context.budget.quality_mcts_simulations,
        on_progress=lambda _method: context.progress(1),
    )
    context.image_dir.mkdir(parents=True, exist_ok=True)
    plot = context.image_dir / "quality_pareto.png"
    quality.pareto_plot(section, plot)
    section["plot"] = str(plot)
    return section, quality.format_table(section)


def _run_mcts(context: RunContext) -> tuple[dict, Tables]:
    from benchmarks import mcts

    budget = context.budget
    record = mcts.run_benchmarks(
        context.model,
        num_simulations=budget.mcts_simulations,
        max_new_tokens=budget.mcts_max_new_tokens,
        rollout_depth=budget.mcts_rollout_depth,
        profile_simulations=budget.mcts_profile_simulations,
        profile_max_new_tokens=budget.mcts_profile_max_new_tokens,
    )
    context.progress(1)

    # One chunk per comparison (without rollouts, then with them when they ran), then the
    # time outside the model with its profile table.
    chunks = _captioned_tables(mcts.format_tables(record))
    names = [
        "mcts" if comparison["settings"]["rollout"] == "none" else "mcts.rollout"
        for comparison in record["comparisons"]
    ]
    tables = dict(zip(names, chunks[: len(names)], strict=True))
    tables["mcts.outside"] = "\n\n".join(chunks[len(names) :])
    return record, tables


def _coherence_steps(budget: Budget) -> int:
    from benchmarks.coherence import VARIANTS

    return len(VARIANTS) * budget.coherence_sets


def _quality_steps(budget: Budget) -> int:
    from benchmarks.quality import METHODS

    return len(METHODS) * budget.quality_prompts


def _one_step(budget: Budget) -> int:
    return 1


@dataclass(frozen=True)
class Benchmark:
    """One entry of `REGISTRY`.

    Attributes:
        run: the runner, which returns the benchmark's record and its Markdown.
        summary: one line for `--help`.
        steps: the total that the runner's `context.progress` calls add up to.
        parts: the names of its blocks besides NAME. Each part writes block `NAME.PART`.
    """

    run: Callable[[RunContext], tuple[dict, Tables]]
    summary: str
    steps: Callable[[Budget], int] = _one_step
    parts: tuple[str, ...] = ()


REGISTRY: dict[str, Benchmark] = {
    "engine": Benchmark(
        _run_engine,
        "parallel-token step, tokens per generated step, attention capture",
        parts=("generation", "capture"),
    ),
    "coherence": Benchmark(
        _run_coherence,
        "keyword searches with and without the coherence value",
        steps=_coherence_steps,
    ),
    "engine_extra": Benchmark(
        _run_engine_extra,
        "exactness per architecture, rewind and compaction cost, KV cache memory",
        steps=lambda budget: 3,
        parts=("rewind", "memory"),
    ),
    "budget": Benchmark(
        _run_budget,
        "one long search that must keep the KV cache under max_nodes",
        steps=lambda budget: budget.budget_simulations,
    ),
    "pruning": Benchmark(
        _run_pruning,
        "superposition generation with and without retroactive pruning",
        steps=lambda budget: budget.pruning_variants,
    ),
    "keywords": Benchmark(
        _run_keywords,
        "keyword coverage: MCTS, sampling with rejection, beam search with reranking",
        steps=lambda budget: budget.keywords_sets,
    ),
    "quality": Benchmark(
        _run_quality,
        "diversity and perplexity of TEMPO and MCTS against standard decoders",
        steps=_quality_steps,
    ),
    "mcts": Benchmark(
        _run_mcts,
        "shared tree state against naive re-running MCTS, time outside the model",
        parts=("rollout", "outside"),
    ),
    "tasks": Benchmark(
        _run_tasks,
        "Game of 24, Blocksworld and Countdown: move search (LM and uniform prior) against best-of-N",
        steps=_tasks_steps,
        parts=("blocksworld", "countdown"),
    ),
    "rollout_reuse": Benchmark(
        _run_rollout_reuse,
        "keyword MCTS forwards with and without rollout reuse",
        steps=lambda budget: budget.rollout_reuse_sets,
    ),
}
"""The benchmarks of the suite, name -> runner and metadata, roughly cheapest first at full sizes."""

BENCHMARKS = tuple(REGISTRY)


def block_names(name: str) -> tuple[str, ...]:
    """Return the names of the doc blocks that benchmark `name` writes: NAME, then NAME.PART."""
    return (name, *(f"{name}.{part}" for part in REGISTRY[name].parts))


def _engine_plot(record: dict[str, Any], path: Path) -> None:
    """Save one parallel step against K single forwards, in ms, to `path`."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = record["parallel_step"]["rows"]
    widths = [row["width"] for row in rows]
    figure, axes = plt.subplots(figsize=(5.6, 3.8))
    axes.plot(widths, [row["parallel_ms"] for row in rows], "o-", label="one parallel step")
    axes.plot(widths, [row["singles_total_ms"] for row in rows], "s--", label="K single forwards")
    axes.set_xlabel("K (tokens at one logical position)")
    axes.set_ylabel("median time (ms)")
    axes.set_xticks(widths)
    axes.grid(alpha=0.3)
    axes.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


# --------------------------------------------------------------------------- the doc


def marker_pair(name: str) -> tuple[str, str]:
    """Return the start and end comments around the generated Markdown of block `name`."""
    return f"<!-- bench:{name}:start -->", f"<!-- bench:{name}:end -->"


def replace_block(text: str, name: str, body: str) -> str:
    """Return `text` with the block of `name` replaced by `body`, or appended when absent."""
    start, end = marker_pair(name)
    block = f"{start}\n{body.strip()}\n{end}"
    pattern = re.compile(re.escape(start) + r".*?" + re.escape(end), flags=re.DOTALL)
    if pattern.search(text):
        return pattern.sub(lambda _match: block, text, count=1)
    logger.warning("The doc has no %s markers, so the tables are appended at its end.", name)
    return f"{text.rstrip()}\n\n## Suite tables: {name}\n\n{block}\n"


def _provenance(record: dict[str, Any], seconds: float, path: Path) -> str:
    """Return the line that names the run, machine and software behind a generated block."""
    kind = "quick run (`--quick`), small budgets" if record["quick"] else "full run"
    machine = record["machine"]
    return (
        f"Generated by `{record['command']}`, {kind}, {record['started']}, record "
        f"`{path.name}`, {seconds:.0f} s. Commit {machine['git_commit']}"
        f"{' with uncommitted changes' if machine['git_dirty'] else ''}; {machine['cpu_model']}, "
        f"{machine['cpu_cores']} cores, {record['threads']} torch thread(s), torch "
        f"{machine['torch']}, transformers {machine['transformers']}."
    )


def update_doc(doc: Path, tables: dict[str, str]) -> None:
    """Replace the marked block of each block name in `tables` in the Markdown file `doc`."""
    text = doc.read_text(encoding="utf-8")
    for name, body in tables.items():
        text = replace_block(text, name, body)
    doc.write_text(text, encoding="utf-8")


# --------------------------------------------------------------------------- driver


def _versions() -> dict[str, str | None]:
    versions: dict[str, str | None] = {"python": sys.version.split()[0]}
    for package in _VERSIONED:
        try:
            versions[package] = importlib.metadata.version(package.replace("_", "-"))
        except importlib.metadata.PackageNotFoundError:
            versions[package] = None
    return versions


def parse_only(text: str | None) -> list[str]:
    """Parse `--only engine,quality` into benchmark names, in the suite's order."""
    if text is None:
        return list(BENCHMARKS)
    names = [part.strip() for part in text.split(",") if part.strip()]
    unknown = [n for n in names if n not in BENCHMARKS]
    if not names or unknown:
        raise ValueError(
            f"--only={text!r} names {unknown or 'no benchmark'}; pass a comma-separated subset "
            f"of {','.join(BENCHMARKS)}."
        )
    return [n for n in BENCHMARKS if n in names]


def run_suite(
    *,
    only: Sequence[str] = BENCHMARKS,
    quick: bool = False,
    out: str | Path = "bench-out",
    threads: int = 1,
    model: Any = None,
    budget: Budget | None = None,
    doc: str | Path | None = DEFAULT_DOC,
    image_dir: str | Path | None = None,
    command: str = "python -m benchmarks",
    show_progress: bool = True,
) -> Path:
    """Run the benchmarks in `only`, write the record, refresh `doc`; return the record's path.

    Args:
        only: benchmark names from `BENCHMARKS`.
        quick: use `QUICK` instead of `FULL` (ignored when `budget` is given).
        out: folder of the JSON record.
        threads: torch intra-op threads; 1 suits a loaded machine (see docs/benchmarks.md).
        model: None for the embedded SmolLM2, a path, or a `LoadedModel`.
        budget: explicit sizes, for example a minimal one in tests.
        doc: Markdown file whose marked tables are refreshed; None leaves every doc alone.
        image_dir: folder of the PNG plots; None means `img/` next to `doc` (the folder that
            the doc's image links point to), or `DEFAULT_IMAGE_DIR` when `doc` is None.
        command: the command line stored in the record and the doc.
        show_progress: show tqdm bars on stderr: one over the benchmarks, one inside each.
    """
    import torch
    from tqdm.auto import tqdm

    from benchmarks._common import machine_info, utc_now, write_record
    from tempo_search.models import load_model

    only = list(only)
    unknown = [n for n in only if n not in BENCHMARKS]
    if not only or unknown:
        raise ValueError(f"only={only!r} must be a non-empty subset of {BENCHMARKS}.")
    if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
        raise ValueError(f"threads={threads!r} must be an integer of at least 1, such as 1.")
    budget = budget or (QUICK if quick else FULL)
    torch.set_num_threads(threads)
    if image_dir is None:
        image_dir = DEFAULT_IMAGE_DIR if doc is None else Path(doc).parent / "img"
    image_dir = Path(image_dir)
    loaded = load_model(model)

    record: dict[str, Any] = {
        "benchmark": "suite",
        "command": command,
        "commit": None,
        "started": utc_now(),
        "quick": bool(quick),
        "threads": threads,
        "only": only,
        "model": loaded.name,
        "budget": dataclasses.asdict(budget),
        "machine": machine_info(),
        "versions": _versions(),
        "wall_seconds": {},
        "results": {},
    }
    record["commit"] = record["machine"]["git_commit"]

    # Block name -> (benchmark name, Markdown) of every benchmark that finished.
    blocks: dict[str, tuple[str, str]] = {}
    interrupted = False
    context = RunContext(
        model=loaded, model_arg=model, budget=budget, image_dir=image_dir, progress=lambda n: None
    )
    with tqdm(
        total=len(only), file=sys.stderr, disable=not show_progress, desc="bench", unit="benchmark"
    ) as overall:
        for name in only:
            entry = REGISTRY[name]
            overall.set_postfix_str(name)
            start = time.perf_counter()
            try:
                with tqdm(
                    total=entry.steps(budget),
                    file=sys.stderr,
                    disable=not show_progress,
                    desc=name,
                    leave=False,
                ) as bar:
                    context.progress = bar.update
                    result, tables = entry.run(context)
            except KeyboardInterrupt:
                # Keep the benchmarks that finished: their figures go into the record below.
                interrupted = True
                break
            record["wall_seconds"][name] = round(time.perf_counter() - start, 2)
            record["results"][name] = result
            if isinstance(tables, str):
                tables = {name: tables}
            unexpected = set(tables) - set(block_names(name))
            assert not unexpected, f"{name} wrote blocks {unexpected} missing from its parts"
            for block, markdown in tables.items():
                blocks[block] = (name, markdown)
            overall.update(1)

    record["finished"] = utc_now()
    record["interrupted"] = interrupted
    path = write_record("suite", record, out)
    if interrupted:
        logger.warning("interrupted: the record %s holds the finished benchmarks only", path)
        raise KeyboardInterrupt
    if doc is not None:
        update_doc(
            Path(doc),
            {
                block: f"{_provenance(record, record['wall_seconds'][name], path)}\n\n{markdown}"
                for block, (name, markdown) in blocks.items()
            },
        )
    return path


def build_parser(prog: str = "python -m benchmarks") -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=prog,
        description=__doc__.splitlines()[0],
        epilog=benchmarks_epilog(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_arguments(parser)
    return parser


def benchmarks_epilog() -> str:
    """Return the list of benchmarks for `--help`, one line each, in the suite's order."""
    width = max(len(name) for name in BENCHMARKS)
    lines = ["benchmarks, in the order they run:"]
    lines += [f"  {name:<{width}}  {REGISTRY[name].summary}" for name in BENCHMARKS]
    return "\n".join(lines)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the suite's flags to `parser` (shared with `tempo-search bench`)."""
    parser.add_argument(
        "--quick",
        action="store_true",
        help="small budgets, about five minutes on 2 cores; a smoke run, not for conclusions",
    )
    parser.add_argument(
        "--only",
        default=None,
        metavar="NAME[,NAME]",
        help=f"run only these benchmarks, a comma-separated subset of {', '.join(BENCHMARKS)} "
        "(default: all)",
    )
    parser.add_argument(
        "--out", default="bench-out", help="folder of the JSON record (default: bench-out)"
    )
    parser.add_argument(
        "--threads", type=int, default=1, help="torch intra-op threads (default: 1)"
    )
    parser.add_argument(
        "--model", default=None, help="model folder or hub id (default: embedded SmolLM2)"
    )
    parser.add_argument(
        "--doc",
        default=str(DEFAULT_DOC),
        help="Markdown file whose marked tables are refreshed (default: docs/benchmarks.md)",
    )
    parser.add_argument("--no-doc", action="store_true", help="leave the doc unchanged")
    parser.add_argument(
        "--img-dir",
        default=None,
        help="folder of the PNG plots (default: img/ next to the doc, docs/img with --no-doc)",
    )


def run_from_args(args: argparse.Namespace, command: str) -> int:
    """Run the suite from parsed flags; print the record's path; return an exit code."""
    only = parse_only(args.only)
    path = run_suite(
        only=only,
        quick=args.quick,
        out=args.out,
        threads=args.threads,
        model=args.model,
        doc=None if args.no_doc else args.doc,
        image_dir=args.img_dir,
        command=command,
        show_progress=True,
    )
    sys.stdout.write(f"record: {path}\n")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    arguments = sys.argv[1:] if argv is None else list(argv)
    args = build_parser().parse_args(arguments)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        return run_from_args(args, " ".join(["python -m benchmarks", *arguments]))
    except ValueError as error:
        sys.stderr.write(f"python -m benchmarks: error: {error}\n")
        return 2
