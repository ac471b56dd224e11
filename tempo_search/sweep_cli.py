"""The `tempo-search sweep` command: run a sweep config file and print or write its table.

`add_sweep_command(subparsers)` adds the command to the `tempo-search` parser. The command
reads the config with `load_sweep_config`, applies the command-line overrides and runs it with
`run_sweep_config`. Exit codes follow the rest of the CLI: 0 when every job succeeded, 1 when a
job failed (see the error column), 2 for an invalid config or option, 130 after Ctrl-C.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import sys
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_INVALID = 2
EXIT_INTERRUPTED = 130

# Maximum characters of a cell in the text table. Longer cells, such as prompts, are cut.
_MAX_CELL_CHARS = 40


def add_sweep_command(subparsers: Any) -> None:
    """Add the `sweep` command to the subparsers of the `tempo-search` parser."""
    parser = subparsers.add_parser(
        "sweep",
        help="run a parameter sweep from a YAML or JSON config file",
        description="Run every point of a sweep config over its items with a built-in runner "
        "(generate, search, game24) or one registered with register_runner, in parallel "
        "with joblib or on a Dask cluster. Finished jobs are cached, so a rerun of the same "
        "command, after Ctrl-C for example, runs only the jobs that are missing. Options "
        "override the keys of the file; their relative paths are relative to the current "
        "directory, while the file's own paths are relative to the file's folder.",
    )
    parser.add_argument("config", help="sweep config file (.yaml, .yml or .json)")
    parser.add_argument(
        "--n-jobs", type=int, default=None, help="parallel jobs; -1 is one per CPU (key n_jobs)"
    )
    parser.add_argument(
        "--backend",
        choices=("loky", "threading", "dask"),
        default=None,
        help="loky worker processes, threads, or a Dask cluster (key backend; default loky)",
    )
    parser.add_argument(
        "--scheduler",
        default=None,
        help="Dask scheduler address such as tcp://10.0.0.5:8786; needs --backend dask "
        "(default: a local cluster on 127.0.0.1)",
    )
    cache = parser.add_mutually_exclusive_group()
    cache.add_argument(
        "--cache-dir",
        default=None,
        help="folder of finished jobs (key cache_dir; default: CONFIG_STEM.cache next to the "
        "config file)",
    )
    cache.add_argument(
        "--no-cache",
        action="store_true",
        help="run every job and store none; Ctrl-C then loses the finished jobs",
    )
    parser.add_argument("--seed", type=int, default=None, help="base seed (key seed; default 0)")
    parser.add_argument(
        "--out", default=None, help="write the table to this .csv, .json or .parquet file (key out)"
    )
    parser.add_argument(
        "--json", action="store_true", help="print the table and a summary as one JSON object"
    )
    parser.set_defaults(handler=run_sweep_command)


def default_cache_dir(config_path: str | Path) -> Path:
    """Return the cache folder used when neither the file nor --cache-dir sets one."""
    path = Path(config_path)
    return path.parent / f"{path.stem}.cache"


def _effective_config(args: argparse.Namespace) -> Any:
    """Read the config file and apply the command-line overrides; raise ValueError if invalid."""
    import tempo_search.runners  # noqa: F401  (registers the built-in runners)
    from tempo_search.sweep import load_sweep_config

    config = load_sweep_config(args.config)
    changes: dict[str, Any] = {
        "n_jobs": args.n_jobs,
        "backend": args.backend,
        "scheduler": args.scheduler,
        "cache_dir": args.cache_dir,
        "seed": args.seed,
        "out": args.out,
    }
    changes = {name: value for name, value in changes.items() if value is not None}
    if changes.get("backend", config.backend) != "dask" and "scheduler" not in changes:
        changes["scheduler"] = None  # a scheduler in the file applies to backend dask only
    if args.no_cache:
        changes["cache_dir"] = None
    elif config.cache_dir is None and "cache_dir" not in changes:
        changes["cache_dir"] = str(default_cache_dir(args.config))
    try:
        return dataclasses.replace(config, **changes)
    except (ValueError, TypeError) as error:
        option = _option_for_message(str(error))
        raise type(error)(f"{option}{error}") from None


def _option_for_message(message: str) -> str:
    for name in ("n_jobs", "backend", "scheduler", "cache_dir", "seed", "out"):
        if message.startswith(name) or f"'{name}'" in message:
            return f"--{name.replace('_', '-')}: "
    return ""


def run_sweep_command(args: argparse.Namespace) -> int:
    """Run the sweep of `args.config` and print its table; return the exit code."""
    from tempo_search.sweep import run_sweep_config

    # 1. The config, with the overrides; errors here exit with code 2 through the CLI.
    config = _effective_config(args)
    cached_before = _cached_keys(config)

    # 2. The sweep. Ctrl-C keeps the finished jobs in the cache and prints them.
    try:
        table = run_sweep_config(config, progress=sys.stderr.isatty())
    except KeyboardInterrupt:
        partial, total = _partial_table(config, cached_before)
        _print_table(args, config, partial, total=total, written=None, interrupted=True)
        return EXIT_INTERRUPTED
    except ImportError as error:
        raise ValueError(str(error)) from None  # dask missing: one line and exit code 2

    # 3. The table and where it went.
    _print_table(args, config, table, total=len(table), written=config.out, interrupted=False)
    return EXIT_FAILED if table["error"].notna().any() else EXIT_OK


def _jobs_and_store(config: Any) -> tuple[list[Any], Any]:
    # The job list and the cache store of `sweep`, to read the cache without running anything.
    from tempo_search import sweep as sweep_module

    run = sweep_module.get_runner(config.task)
    points = sweep_module.expand_grid(config.grid_or_points)
    items = sweep_module.check_items(config.items)
    identity = sweep_module._run_identity(run)
    jobs = sweep_module._build_jobs(points, items, seed=config.seed, identity=identity)
    return jobs, sweep_module._ResultStore(Path(config.cache_dir))


def _cached_keys(config: Any) -> set[str]:
    """Return the cache keys of the config's jobs that are already stored."""
    if config.cache_dir is None:
        return set()
    jobs, store = _jobs_and_store(config)
    return {job.key for job in jobs if store.load(job.key) is not None}


def _partial_table(config: Any, cached_before: set[str]) -> tuple[Any, int]:
    """Return the table of the jobs stored in the cache after an interruption, and the job count."""
    import pandas as pd

    from tempo_search import sweep as sweep_module

    if config.cache_dir is None:
        return pd.DataFrame(columns=["point_index", "item_index"]), 0
    jobs, store = _jobs_and_store(config)
    finished, outcomes = [], {}
    for job in jobs:
        record = store.load(job.key)
        if record is not None:
            finished.append(job)
            outcomes[job.index] = {**record, "error": None, "cached": job.key in cached_before}
    return sweep_module._build_table(finished, outcomes), len(jobs)


def _print_table(
    args: argparse.Namespace,
    config: Any,
    table: Any,
    *,
    total: int,
    written: str | None,
    interrupted: bool,
) -> None:
    path = None
    if written is not None:
        path = str(Path(written))
    cached = int(table["cached"].sum()) if "cached" in table else 0
    failed = int(table["error"].notna().sum()) if "error" in table else 0

    if args.json:
        rows = json.loads(table.to_json(orient="records")) if len(table) else []
        summary = {
            "task": config.task,
            "jobs": total,
            "finished": len(table),
            "cached": cached,
            "failed": failed,
            "cache_dir": config.cache_dir,
            "out": path,
            "interrupted": interrupted,
            "rows": rows,
        }
        sys.stdout.write(json.dumps(summary, ensure_ascii=False, indent=2) + "\n")
    else:
        sys.stdout.write(_format_table(table) + "\n\n")
        sys.stdout.write(
            f"{config.task}: {len(table)} of {total} jobs finished, {cached} loaded from the "
            f"cache, {failed} failed\n"
        )
        if path is not None:
            sys.stdout.write(f"wrote {len(table)} rows to {path}\n")
        elif not interrupted:
            sys.stdout.write("table not written to a file; set out in the config or pass --out\n")

    if interrupted:
        if config.cache_dir is not None:
            note = (
                f"interrupted: {len(table)} finished jobs are stored in {config.cache_dir}; run "
                "the same command again to run the other jobs"
            )
        else:
            note = (
                "interrupted: no cache folder was set (--no-cache), so the finished jobs are lost"
            )
        sys.stderr.write(f"tempo-search sweep: {note}\n")
    if failed and not interrupted:
        sys.stderr.write(
            f"tempo-search sweep: {failed} of {total} jobs failed; see the error column and "
            "the logged tracebacks\n"
        )


def _format_table(table: Any) -> str:
    """Return the table as text, with long cells cut and floats at four significant digits."""
    if len(table) == 0:
        return "(no finished jobs)"
    shown = table.copy()
    for column in shown.columns:
        if shown[column].dtype == object:
            shown[column] = shown[column].map(_short_cell)
    return shown.to_string(index=False, float_format=lambda value: f"{value:.4g}")


def _short_cell(value: Any) -> Any:
    if value is None:
        return ""
    if isinstance(value, (list, dict)):
        value = json.dumps(value)
    if isinstance(value, str):
        value = value.replace("\n", " ")
        if len(value) > _MAX_CELL_CHARS:
            return value[: _MAX_CELL_CHARS - 3] + "..."
    return value
