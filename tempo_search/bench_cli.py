"""`tempo-search bench`: the benchmark suite of a source checkout, from the command line.

The suite lives in the `benchmarks` package at the root of the repository, next to the
`tempo_search` source folder; it is not part of a wheel. The command finds it there, imports
it and runs `benchmarks.suite` with the same flags as `python -m benchmarks`.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from pathlib import Path

EXIT_INVALID = 2


def suite_root() -> Path | None:
    """Return the folder that contains `benchmarks/suite.py` next to `tempo_search`, or None without one."""
    root = Path(__file__).resolve().parent.parent
    return root if (root / "benchmarks" / "suite.py").is_file() else None


def _import_suite():
    root = suite_root()
    if root is None:
        return None
    if str(root) not in sys.path:
        sys.path.insert(0, str(root))
    return importlib.import_module("benchmarks.suite")


def add_bench_command(subparsers) -> None:
    """Register `bench` on the `tempo-search` subparsers."""
    suite = _import_suite()
    parser = subparsers.add_parser(
        "bench",
        help="run the benchmark suite (needs a source checkout)",
        description="Run the benchmark suite. Writes one JSON record, refreshes the tables\n"
        "of docs/benchmarks.md and the PNG plots.",
        epilog=None if suite is None else suite.benchmarks_epilog(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    if suite is not None:
        suite.add_arguments(parser)
    else:
        # Accept the flags anyway, so that the error below is the one printed.
        parser.add_argument("--quick", action="store_true")
        parser.add_argument("--no-doc", action="store_true")
        for flag in ("--only", "--out", "--threads", "--model", "--doc", "--img-dir"):
            parser.add_argument(flag)
    parser.set_defaults(handler=_run_bench)


def _run_bench(args: argparse.Namespace) -> int:
    suite = _import_suite()
    if suite is None:
        sys.stderr.write(
            "tempo-search bench: error: the benchmark suite needs a source checkout (the "
            "benchmarks/ folder next to tempo_search/); clone the repository and install it "
            "with `pip install -e .`.\n"
        )
        return EXIT_INVALID
    command = " ".join(["tempo-search", *sys.argv[1:]]) if sys.argv[1:] else "tempo-search bench"
    return suite.run_from_args(args, command)
