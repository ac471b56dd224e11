"""The benchmark suite: runs the benchmarks, writes one JSON record, refreshes the doc's tables.

`python -m benchmarks [--quick] [--only NAME[,NAME]] [--out DIR] [--threads N]`, or
`tempo-search bench` with the same flags. Benchmarks: engine, mcts, pruning, quality (the
functions of `benchmarks.engine`, `benchmarks.mcts`, `benchmarks.pruning` and
`benchmarks.quality`, called with the budgets of `FULL` or `QUICK`).

Outputs:
- one record `<out>/suite-<UTC time>.json`: command, commit, machine, library versions, wall
  time of each benchmark and every figure each benchmark returned;
- in the doc (default `docs/benchmarks.md`), for each benchmark that ran, the Markdown between
  `<!-- bench:NAME:start -->` and `<!-- bench:NAME:end -->` is replaced by the new tables. A doc
  without those markers for NAME gets a marked block appended at its end;
- PNG plots in the image folder (default `docs/img/`): `quality_pareto.png` and
  `engine_parallel_step.png`.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib.metadata
import logging
import re
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

BENCHMARKS = ("engine", "mcts", "pruning", "quality")
REPOSITORY = Path(__file__).resolve().parent.parent
DEFAULT_DOC = REPOSITORY / "docs" / "benchmarks.md"
DEFAULT_IMAGE_DIR = REPOSITORY / "docs" / "img"
_VERSIONED = ("torch", "transformers", "numpy", "sacrebleu", "matplotlib", "tqdm", "tempo_search")


@dataclass(frozen=True)
class Budget:
    """Sizes of every benchmark in one suite run.

    `FULL` holds each module's own defaults (the settings behind docs/benchmarks.md);
    `QUICK` is sized to finish in about five minutes on a 2-core machine.
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

    def __post_init__(self) -> None:
        for spec in dataclasses.fields(self):
            value = getattr(self, spec.name)
            if spec.name in ("engine_eager", "mcts_rollout_depth"):
                continue
            minimum = 0 if spec.name == "engine_warmup" else 1
            if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
                raise ValueError(f"{spec.name}={value!r} must be an integer >= {minimum}.")


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
)


# --------------------------------------------------------------------------- benchmarks


def _run_engine(model, budget: Budget, model_arg, progress) -> tuple[dict, str]:
    from benchmarks import engine
    from tempo_search.models import load_model

    eager = None
    if budget.engine_eager and (model_arg is None or isinstance(model_arg, str)):
        eager = load_model(model_arg, attn_implementation="eager")
    record = engine.run_benchmarks(
        model,
        eager_model=eager,
        repetitions=budget.engine_repetitions,
        warmup=budget.engine_warmup,
        max_new_tokens=budget.engine_max_new_tokens,
    )
    progress()
    return record, engine.format_tables(record)


def _run_mcts(model, budget: Budget, model_arg, progress) -> tuple[dict, str]:
    from benchmarks import mcts

    record = mcts.run_benchmarks(
        model,
        num_simulations=budget.mcts_simulations,
        max_new_tokens=budget.mcts_max_new_tokens,
        rollout_depth=budget.mcts_rollout_depth,
        profile_simulations=budget.mcts_profile_simulations,
        profile_max_new_tokens=budget.mcts_profile_max_new_tokens,
    )
    progress()
    return record, mcts.format_tables(record).strip()


def _run_pruning(model, budget: Budget, model_arg, progress) -> tuple[dict, str]:
    from benchmarks import pruning

    prompts = pruning.load_prompts(budget.pruning_prompts)
    variants = dict(list(pruning.VARIANTS.items())[: budget.pruning_variants])
    results = {}
    for name, prune in variants.items():
        results[name] = pruning.run_variant(model, prompts, prune, budget.pruning_max_new_tokens)
        progress()
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


def _run_quality(model, budget: Budget, model_arg, progress, image_dir: Path) -> tuple[dict, str]:
    from benchmarks import quality

    section = quality.run_quality(
        model,
        num_prompts=budget.quality_prompts,
        mcts_simulations=budget.quality_mcts_simulations,
        on_progress=lambda _method: progress(),
    )
    image_dir.mkdir(parents=True, exist_ok=True)
    plot = image_dir / "quality_pareto.png"
    quality.pareto_plot(section, plot)
    section["plot"] = str(plot)
    return section, quality.format_table(section)


def _steps(name: str, budget: Budget) -> int:
    """Progress steps of one benchmark, for the tqdm bar."""
    if name == "pruning":
        return budget.pruning_variants
    if name == "quality":
        from benchmarks.quality import METHODS

        return len(METHODS) * budget.quality_prompts
    return 1


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
    """Return the start and end comments around the generated Markdown of benchmark `name`."""
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


def _provenance(name: str, record: dict[str, Any], seconds: float, path: Path) -> str:
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
    """Replace the marked block of each benchmark in `tables` in the Markdown file `doc`."""
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
    image_dir: str | Path = DEFAULT_IMAGE_DIR,
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
        image_dir: folder of the PNG plots.
        command: the command line stored in the record and the doc.
        show_progress: show a tqdm bar on stderr.
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

    runners: dict[str, Callable[..., tuple[dict, str]]] = {
        "engine": _run_engine,
        "mcts": _run_mcts,
        "pruning": _run_pruning,
        "quality": lambda *a: _run_quality(*a, image_dir),
    }
    tables: dict[str, str] = {}
    total = sum(_steps(name, budget) for name in only)
    interrupted = False
    with tqdm(total=total, file=sys.stderr, disable=not show_progress, desc="bench") as bar:
        for name in only:
            bar.set_postfix_str(name)
            start = time.perf_counter()
            try:
                result, table = runners[name](loaded, budget, model, lambda: bar.update(1))
            except KeyboardInterrupt:
                # Keep the benchmarks that finished: their figures go into the record below.
                interrupted = True
                break
            record["wall_seconds"][name] = round(time.perf_counter() - start, 2)
            record["results"][name] = result
            tables[name] = table
            if name == "engine":
                image_dir.mkdir(parents=True, exist_ok=True)
                _engine_plot(result, image_dir / "engine_parallel_step.png")

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
                name: f"{_provenance(name, record, record['wall_seconds'][name], path)}\n\n{table}"
                for name, table in tables.items()
            },
        )
    return path


def build_parser(prog: str = "python -m benchmarks") -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=prog, description=__doc__.splitlines()[0])
    add_arguments(parser)
    return parser


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the suite's flags to `parser` (shared with `tempo-search bench`)."""
    parser.add_argument(
        "--quick", action="store_true", help="small budgets, about five minutes on 2 cores"
    )
    parser.add_argument(
        "--only",
        default=None,
        metavar="NAME[,NAME]",
        help=f"run only these benchmarks, from {','.join(BENCHMARKS)} (default: all)",
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
    parser.add_argument("--img-dir", default=str(DEFAULT_IMAGE_DIR), help="folder of the PNG plots")


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
