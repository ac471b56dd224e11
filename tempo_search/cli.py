"""The `tempo-search` command line.

Exit codes: 0 success, 1 a check or search that did not succeed, 2 invalid input,
130 interrupted (after printing what was finished).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Sequence

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_INVALID = 2
EXIT_INTERRUPTED = 130

logger = logging.getLogger("tempo_search.cli")


class _Parser(argparse.ArgumentParser):
    """ArgumentParser whose errors are one line with the fix, exit code 2."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(EXIT_INVALID, f"{self.prog}: error: {message}; see `{self.prog} --help`.\n")


def _probability(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid probability {text!r}, pass a number") from None
    return value


def _add_model_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--model",
        default=None,
        help="model folder, .gguf file or hub id with a local copy "
        "(default: the embedded SmolLM2-135M-Instruct)",
    )
    parser.add_argument(
        "--attn",
        choices=("sdpa", "eager"),
        default="sdpa",
        help="attention implementation (default: sdpa; eager returns attention weights)",
    )
    parser.add_argument(
        "--allow-pickle",
        action="store_true",
        help="also load pickle-based .bin checkpoints, which can run code; trust the source first",
    )
    parser.add_argument(
        "--trust-remote-code",
        action="store_true",
        help="run model code shipped with a hub model (off by default)",
    )


def _load(args: argparse.Namespace):
    from tempo_search.models import load_model

    return load_model(
        args.model,
        attn_implementation=args.attn,
        allow_pickle=args.allow_pickle,
        trust_remote_code=args.trust_remote_code,
    )


def _progress(total: int, description: str, enabled: bool):
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=description, disable=not enabled, leave=False, file=sys.stderr)


def _show_progress(args: argparse.Namespace) -> bool:
    return sys.stderr.isatty() and not getattr(args, "json", False)


def _print_json(data: dict) -> None:
    sys.stdout.write(json.dumps(data, ensure_ascii=False, indent=2) + "\n")


# ----------------------------------------------------------------------------- generate


def _add_generate(subparsers) -> None:
    parser = subparsers.add_parser(
        "generate",
        help="TEMPO parallel-token generation",
        description="Generate text with TEMPO parallel-token steps: every token whose "
        "probability reaches the threshold is forwarded in one pass at one logical position.",
    )
    parser.add_argument("prompt", help="the prompt text (a user message with --chat)")
    _add_model_arguments(parser)
    parser.add_argument(
        "--threshold",
        type=_probability,
        default=0.1,
        help="selection probability in (0, 1]; 1.0 is greedy decoding (default: 0.1)",
    )
    parser.add_argument(
        "--max-new-tokens", type=int, default=32, help="most logical steps (default: 32)"
    )
    parser.add_argument(
        "--max-width", type=int, default=8, help="most tokens in one parallel set (default: 8)"
    )
    parser.add_argument(
        "--mode",
        choices=("superposition", "tree"),
        default="superposition",
        help="superposition: one trunk, approximate; tree: each member branches, exact "
        "(default: superposition)",
    )
    parser.add_argument(
        "--max-paths", type=int, default=8, help="most live paths in tree mode (default: 8)"
    )
    parser.add_argument(
        "--visible",
        action="store_true",
        help="let members of a parallel set see the earlier members of their own set "
        "(by default they are hidden from each other)",
    )
    parser.add_argument("--chat", action="store_true", help="encode the prompt as a chat message")
    parser.add_argument("--seed", type=int, default=None, help="random seed")
    parser.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    parser.set_defaults(handler=_run_generate)


def _run_generate(args: argparse.Namespace) -> int:
    from tempo_search.generate import generate

    model = _load(args)
    with _progress(args.max_new_tokens, "steps", _show_progress(args)) as bar:
        result = generate(
            model,
            args.prompt,
            threshold=args.threshold,
            max_new_tokens=args.max_new_tokens,
            max_width=args.max_width,
            mode=args.mode,
            isolate=not args.visible,
            max_paths=args.max_paths,
            chat=args.chat,
            seed=args.seed,
            on_step=lambda _step: bar.update(1),
        )
    if args.json:
        _print_json({"prompt": args.prompt, "model": model.name, **result.to_dict()})
        return EXIT_OK
    stats = result.stats
    sys.stdout.write(f"{args.prompt}{result.text}\n\n")
    sys.stdout.write(f"best path: {args.prompt}{result.best_text}\n")
    sys.stdout.write(
        f"[{result.mode}] {stats.generated_steps} steps, {stats.forward_passes} forward passes, "
        f"{stats.tokens_forwarded} tokens forwarded, cache {stats.cache_length} entries, "
        f"{stats.seconds:.2f} s\n"
    )
    return EXIT_OK


# ----------------------------------------------------------------------------- check-model


def _add_check_model(subparsers) -> None:
    parser = subparsers.add_parser(
        "check-model",
        help="check that the shared tree cache reproduces plain decoding for a model",
        description="Build a random token tree in one shared KV cache (branchings, depth 7, "
        "rewinds, a compaction) and compare every node's logits with a plain forward pass. "
        "Exit code 1 when the largest difference passes the tolerance.",
    )
    _add_model_arguments(parser)
    parser.add_argument("--seed", type=int, default=0, help="seed of the random tree")
    parser.add_argument(
        "--tolerance",
        type=float,
        default=1e-4,
        help="largest absolute logit difference that passes (default: 1e-4, for float32)",
    )
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    parser.set_defaults(handler=_run_check_model)


def _run_check_model(args: argparse.Namespace) -> int:
    from tempo_search.check import check_model

    model = _load(args)
    report = check_model(model, seed=args.seed, tolerance=args.tolerance)
    if args.json:
        _print_json({"model": model.name, **report.to_dict()})
    else:
        verdict = "passed" if report.passed else "FAILED"
        sys.stdout.write(
            f"{model.name} ({report.architecture}, {report.attn_implementation}, {report.dtype}): "
            f"{verdict}, max_abs_diff={report.max_abs_diff:.3g} (tolerance {report.tolerance:g}) "
            f"over {report.num_nodes_checked} nodes, depth {report.max_depth}, "
            f"{report.rewinds} rewinds, {report.compactions} compaction\n"
        )
    return EXIT_OK if report.passed else EXIT_FAILED


# ----------------------------------------------------------------------------- main


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="tempo-search",
        description="Search-centric generation with language models: TEMPO parallel-token "
        "steps and Monte Carlo tree search in one shared KV cache.",
    )
    parser.add_argument(
        "-v", "--verbose", action="count", default=0, help="log INFO (-v) or DEBUG (-vv)"
    )
    subparsers = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    _add_generate(subparsers)
    _add_check_model(subparsers)
    for register in _EXTRA_COMMANDS:
        register(subparsers)
    return parser


_EXTRA_COMMANDS: list = []
"""Functions `register(subparsers)` of the commands defined in other modules."""


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    level = logging.WARNING - 10 * min(args.verbose, 2)
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
    try:
        return int(args.handler(args))
    except (ValueError, TypeError, FileNotFoundError) as error:
        logger.debug("invalid input", exc_info=True)
        message = str(error).splitlines()[0] if str(error) else type(error).__name__
        sys.stderr.write(f"tempo-search {args.command}: error: {message}\n")
        return EXIT_INVALID
    except KeyboardInterrupt:
        sys.stderr.write(f"tempo-search {args.command}: interrupted\n")
        return EXIT_INTERRUPTED


if __name__ == "__main__":
    sys.exit(main())
