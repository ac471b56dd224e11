"""Helpers shared by the benchmarks: timing, machine description and the JSON record."""

from __future__ import annotations

import datetime
import json
import os
import platform
import statistics
import subprocess
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch

_REPOSITORY = Path(__file__).resolve().parent.parent


def timed(call: Callable[[], Any]) -> tuple[float, Any]:
    """Run `call` once and return `(seconds, result)` measured with `time.perf_counter`."""
    start = time.perf_counter()
    result = call()
    return time.perf_counter() - start, result


def median(values: Sequence[float]) -> float:
    """Return the median of `values`. Raises ValueError on an empty sequence."""
    if not values:
        raise ValueError("median() needs at least one value; run at least one repetition.")
    return float(statistics.median(values))


def milliseconds(seconds: float) -> float:
    return round(seconds * 1000.0, 3)


def cpu_model() -> str:
    """Return the CPU model name from /proc/cpuinfo, else `platform.processor()`, else "unknown"."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as cpuinfo:
            for line in cpuinfo:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def git_commit() -> str | None:
    """Return `git rev-parse HEAD` of the repository that contains the benchmarks, or None without git."""
    try:
        completed = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=_REPOSITORY,
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return completed.stdout.strip() or None


def git_is_dirty() -> bool | None:
    """Return whether tracked files differ from HEAD (`git status --porcelain`), or None without git."""
    try:
        completed = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=_REPOSITORY,
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return bool(completed.stdout.strip())


def load_average() -> list[float] | None:
    """Return the 1, 5 and 15 minute load averages, or None where the platform has none."""
    try:
        return [round(value, 2) for value in os.getloadavg()]
    except (AttributeError, OSError):
        return None


def machine_info() -> dict[str, Any]:
    """Describe the machine and software a benchmark ran on, for the JSON record."""
    import transformers

    return {
        "cpu_model": cpu_model(),
        "cpu_cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "git_commit": git_commit(),
        "git_dirty": git_is_dirty(),
        "load_average": load_average(),
    }


def write_record(name: str, record: dict[str, Any], out_dir: str | os.PathLike) -> Path:
    """Write `record` as `<out_dir>/<name>-<UTC time>.json` and return the path."""
    folder = Path(out_dir)
    folder.mkdir(parents=True, exist_ok=True)
    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    path = folder / f"{name}-{stamp}.json"
    path.write_text(json.dumps(record, indent=2, sort_keys=False) + "\n", encoding="utf-8")
    return path


def utc_now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


def describe_machine(machine: dict[str, Any]) -> str:
    """Return one line naming the CPU, cores, torch threads, library versions and commit."""
    return (
        f"Machine: {machine['cpu_model']}, {machine['cpu_cores']} cores, torch "
        f"{machine['torch']} ({machine['torch_threads']} threads), transformers "
        f"{machine['transformers']}, commit {machine['git_commit']}"
    )
