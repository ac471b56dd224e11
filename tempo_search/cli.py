"""The `tempo-search` command line.

Exit codes: 0 success, 1 a check or search that did not succeed, 2 invalid input,
130 interrupted (after printing what was finished).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

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


def _seed(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid seed {text!r}, pass an integer") from None
    if not 0 <= value < 2**63:
        raise argparse.ArgumentTypeError(f"seed {text} is out of range, pass 0 to 2**63 - 1")
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
        "--max-new-tokens",
        type=int,
        default=32,
        help="maximum number of logical steps (default: 32)",
    )
    parser.add_argument(
        "--max-width",
        type=int,
        default=8,
        help="maximum number of tokens in one parallel set (default: 8)",
    )
    parser.add_argument(
        "--mode",
        choices=("superposition", "tree"),
        default="superposition",
        help="superposition: one trunk, approximate; tree: each member branches, exact "
        "(default: superposition)",
    )
    parser.add_argument(
        "--max-paths",
        type=int,
        default=8,
        help="maximum number of live paths in tree mode (default: 8)",
    )
    parser.add_argument(
        "--visible",
        action="store_true",
        help="let members of a parallel set see the earlier members of their own set "
        "(by default they are hidden from each other)",
    )
    parser.add_argument("--chat", action="store_true", help="encode the prompt as a chat message")
    parser.add_argument("--seed", type=_seed, default=None, help="random seed")
    parser.add_argument(
        "--threshold-schedule",
        default=None,
        metavar="SPEC",
        help="selection threshold over generation progress ((step - 1) / max-new-tokens) in "
        "place of --threshold: 'bezier:P0,P1,P2,P3' (Bezier control points) or "
        "'flat:START,END,FLAT_FRACTION' (START until FLAT_FRACTION of the steps, then linear to "
        "END); thresholds are probabilities in [0, 1]",
    )
    pruning = parser.add_argument_group(
        "retroactive pruning",
        "remove parallel-set members that later tokens pay little attention to; any "
        "--prune-* option turns pruning on",
    )
    pruning.add_argument(
        "--prune",
        action="store_true",
        help="turn pruning on with the defaults below",
    )
    pruning.add_argument(
        "--prune-layers",
        default=None,
        metavar="SPEC",
        help="layers whose attention scores the members: 'last:K' (the last K layers), 'all', "
        "or layer indices such as 0,3,5 (default: last:4)",
    )
    pruning.add_argument(
        "--prune-cut",
        type=float,
        default=None,
        help="relative score (attention / the set's mean attention - 1) at which the keep "
        "weight is 0.5; -0.5 means half the mean attention (default: -0.5)",
    )
    pruning.add_argument(
        "--prune-steepness",
        type=float,
        default=None,
        help="slope of the keep-weight sigmoid per unit of relative score, > 0 (default: 10)",
    )
    pruning.add_argument(
        "--prune-floor",
        type=float,
        default=None,
        help="members whose keep weight (0 to 1) is below this are removed (default: 0.5)",
    )
    pruning.add_argument(
        "--prune-cut-schedule",
        default=None,
        metavar="SPEC",
        help="the cut over generation progress in place of --prune-cut, as for "
        "--threshold-schedule; a value v in [0, 1] is the fraction below the set's mean, "
        "cut = -v",
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    parser.set_defaults(handler=_run_generate)


def _run_generate(args: argparse.Namespace) -> int:
    from tempo_search.coherence import PruneConfig
    from tempo_search.generate import bracket_text, generate, parse_threshold_schedule

    # 1. Pruning and schedule flags, validated before the model loads.
    pruning = args.prune or any(
        getattr(args, name) is not None
        for name in (
            "prune_layers",
            "prune_cut",
            "prune_steepness",
            "prune_floor",
            "prune_cut_schedule",
        )
    )
    if pruning and args.visible:
        raise ValueError(
            "--visible cannot be combined with --prune: a kept token would have been computed "
            "while seeing a pruned sibling; drop --visible or the --prune flags."
        )
    schedule = None
    if args.threshold_schedule is not None:
        try:
            schedule = parse_threshold_schedule(args.threshold_schedule)
        except (TypeError, ValueError) as error:
            raise ValueError(f"--threshold-schedule: {error}") from None
    cut_schedule = None
    if args.prune_cut_schedule is not None:
        try:
            cut_schedule = parse_threshold_schedule(args.prune_cut_schedule)
        except (TypeError, ValueError) as error:
            raise ValueError(f"--prune-cut-schedule: {error}") from None
    flags = {
        "layers": ("--prune-layers", args.prune_layers),
        "cut": ("--prune-cut", args.prune_cut),
        "steepness": ("--prune-steepness", args.prune_steepness),
        "floor": ("--prune-floor", args.prune_floor),
    }
    prune = None
    if pruning:
        settings = {}
        for name, (flag, value) in flags.items():
            if value is None:
                continue
            try:
                PruneConfig(**{name: value})
            except (TypeError, ValueError) as error:
                raise ValueError(f"{flag} {value!r} is invalid: {error}") from None
            settings[name] = value
        prune = PruneConfig(**settings)

    # 2. Generation. The steps are collected as they come, so that Ctrl-C can print them.
    model = _load(args)
    collected = []

    def on_step(step) -> None:
        collected.append(step)
        bar.update(1)

    with _progress(args.max_new_tokens, "steps", _show_progress(args)) as bar:
        try:
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
                on_step=on_step,
                prune=prune,
                threshold_schedule=schedule,
                cut_schedule=cut_schedule,
            )
        except KeyboardInterrupt:
            partial = bracket_text([step.tokens for step in collected])
            if args.json:
                steps = [dataclasses.asdict(step) for step in collected]
                _print_json(
                    {"prompt": args.prompt, "text": partial, "steps": steps, "interrupted": True}
                )
            else:
                sys.stdout.write(f"{args.prompt}{partial}\n")
            sys.stderr.write(
                f"interrupted after {len(collected)} steps: printed the parallel sets so far\n"
            )
            return EXIT_INTERRUPTED
    if args.json:
        _print_json({"prompt": args.prompt, "model": model.name, **result.to_dict()})
        return EXIT_OK

    # 3. Text output; pruned tokens are written struck through as ~token~.
    stats = result.stats
    text = result.text
    if prune is not None:
        text = bracket_text([step.tokens for step in result.steps], show_pruned=True)
    sys.stdout.write(f"{args.prompt}{text}\n\n")
    sys.stdout.write(f"best path: {args.prompt}{result.best_text}\n")
    pruned = f", {stats.pruned_tokens} tokens pruned" if prune is not None else ""
    sys.stdout.write(
        f"[{result.mode}] {stats.generated_steps} steps, {stats.forward_passes} forward passes, "
        f"{stats.tokens_forwarded} tokens forwarded, cache {stats.cache_length} entries"
        f"{pruned}, {stats.seconds:.2f} s\n"
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
    parser.add_argument("--seed", type=_seed, default=0, help="seed of the random tree")
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


# ----------------------------------------------------------------------------- search


def _add_search(subparsers) -> None:
    parser = subparsers.add_parser(
        "search",
        help="Monte Carlo tree search over tokens",
        description="Search for a continuation with MCTS: PUCT selection with the LM prior, "
        "one parallel-token forward per expansion, Bezier progressive widening, optional "
        "rollouts that are rewound from the shared KV cache. Constraint flags turn the search "
        "into constrained generation: banned words and the regular expression are enforced at "
        "every node, keywords and lengths are rewarded.",
    )
    parser.add_argument("prompt", help="the prompt text (a user message with --chat)")
    _add_search_arguments(parser, max_new_tokens=32)
    constraints = parser.add_argument_group("constraints")
    constraints.add_argument(
        "--keywords",
        default=None,
        help="comma-separated words that must each appear as a whole word (case-insensitive)",
    )
    constraints.add_argument(
        "--inflections",
        action="store_true",
        help="let inflected forms count for --keywords (dog: dogs; run: running)",
    )
    constraints.add_argument(
        "--banned", default=None, help="comma-separated words that must never appear as words"
    )
    constraints.add_argument(
        "--regex", default=None, help="regular expression the whole generated text must match"
    )
    constraints.add_argument("--min-words", type=int, default=None, help="minimum number of words")
    constraints.add_argument("--max-words", type=int, default=None, help="maximum number of words")
    parser.set_defaults(handler=_run_search)


def _add_search_arguments(
    parser: argparse.ArgumentParser, *, max_new_tokens: int, moves: bool = False
) -> None:
    _add_model_arguments(parser)
    if moves:
        parser.add_argument(
            "--actions",
            choices=("moves", "tokens"),
            default="moves",
            help="moves: a tree node per legal line, ranked by the LM; tokens: a node per "
            "token under the legal-move mask (default: moves)",
        )
        parser.add_argument(
            "--rollouts",
            type=int,
            default=None,
            help="random rollouts per new node with --actions moves (default: 16)",
        )
    parser.add_argument(
        "--simulations",
        type=int,
        default=200,
        help="leaves selected and evaluated (per committed token with --commit step; default: 200)",
    )
    parser.add_argument(
        "--c-puct", type=float, default=1.25, help="PUCT exploration constant (default: 1.25)"
    )
    parser.add_argument(
        "--selection",
        choices=("puct", "uct", "gumbel"),
        default="puct",
        help="selection rule (default: puct)",
    )
    parser.add_argument(
        "--widening",
        default=None,
        metavar="P0,P1,P2,P3",
        help="Bezier control points of the prior a child needs to be admitted, from a new node "
        "to a node with 32 visits; probabilities in [0, 1] (default: 1.0,0.25,0.05,0.01; with "
        "--actions moves, 0.5,0.05,0,0 over 8 visits)",
    )
    parser.add_argument(
        "--root-widening",
        default=None,
        metavar="P0,P1,P2,P3",
        help="Bezier control points of the widening at the root only, in the same form as "
        "--widening; a lower floor, such as 1.0,0.25,0.05,0.002, lets the search try first "
        "tokens the model ranks low (default: the --widening schedule)",
    )
    parser.add_argument(
        "--max-width",
        type=int,
        default=None,
        help="maximum number of children of one node (default: 8; every legal line with "
        "--actions moves)",
    )
    parser.add_argument(
        "--batch-size",
        type=int,
        default=4,
        help="leaves expanded per forward pass (default: 4)",
    )
    parser.add_argument(
        "--rollout",
        choices=("none", "greedy", "sample", "random"),
        default=None,
        help="rollout policy from new nodes: none, greedy or sample tokens, or random legal "
        "lines with --actions moves (default: none; random with --actions moves)",
    )
    parser.add_argument(
        "--rollout-depth",
        type=int,
        default=8,
        help="tokens per greedy or sampled rollout; random move rollouts run to the end of the "
        "puzzle (default: 8)",
    )
    parser.add_argument(
        "--max-new-tokens",
        type=int,
        default=max_new_tokens,
        help=f"most generated tokens (default: {max_new_tokens})",
    )
    parser.add_argument(
        "--max-depth",
        type=int,
        default=None,
        help="deepest node below the current root in tokens (default: --max-new-tokens)",
    )
    parser.add_argument(
        "--commit",
        choices=("once", "step"),
        default="once",
        help="once: one deep search; step: commit the most visited token and search again "
        "(default: once)",
    )
    parser.add_argument(
        "--backup",
        choices=("mean", "max"),
        default="mean",
        help="mean: a token's value is the mean of the simulations through it; max: the best "
        "text found below it, for keeping the most likely text that meets constraints, and "
        "finished texts are not visited again (default: mean)",
    )
    parser.add_argument(
        "--time-limit", type=float, default=None, help="stop after this many seconds"
    )
    parser.add_argument(
        "--max-nodes",
        type=int,
        default=None,
        help="maximum number of tree nodes in the KV cache at once; cold subtrees are evicted (default: none)",
    )
    parser.add_argument(
        "--temperature", type=float, default=1.0, help="temperature of the prior (default: 1.0)"
    )
    parser.add_argument(
        "--chat",
        action="store_true",
        help="encode the prompt as a chat message (puzzles always use their own chat prompt)",
    )
    parser.add_argument("--seed", type=_seed, default=0, help="random seed (default: 0)")
    parser.add_argument(
        "--tree",
        metavar="FILE",
        default=None,
        help="write the search tree to FILE (.json, or .dot/.gv for Graphviz)",
    )
    parser.add_argument(
        "--prior",
        choices=("lm", "uniform"),
        default="lm",
        help="lm: the model's probabilities; uniform: equal priors over the allowed tokens, or "
        "over the legal lines with --actions moves (default: lm)",
    )
    parser.add_argument(
        "--stop-when-solved",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="with a task, stop at the first text that satisfies it; --no-stop-when-solved "
        "spends the whole budget and returns the most likely satisfying text (default: stop)",
    )
    parser.add_argument(
        "--guide",
        type=float,
        default=0.2,
        help="share of each node's prior moved onto the tokens that start a missing keyword "
        "(--keywords); 0 turns it off (default: 0.2)",
    )
    defaults = "0.1 and 1" if moves else "1 and 1"
    parser.add_argument(
        "--likelihood-weight",
        type=float,
        default=None,
        help="weight of the path's likelihood (1 / perplexity) in a node's value; with "
        f"--reward-weight, the defaults are {defaults}. A higher weight ranks texts that "
        "satisfy the task by likelihood more sharply",
    )
    parser.add_argument(
        "--reward-weight",
        type=float,
        default=None,
        help="weight of the task's reward (keyword coverage, a verified answer) in a node's "
        f"value; with --likelihood-weight, the defaults are {defaults}",
    )
    parser.add_argument(
        "--coherence-weight",
        type=float,
        default=0.0,
        help="weight of the attention-derived coherence in a node's value, next to likelihood "
        "and reward; 0 leaves it out and captures no attention (default: 0)",
    )
    parser.add_argument(
        "--prune-children",
        "--prune",
        dest="prune_children",
        action="store_true",
        help="prune children whose coherence falls below --prune-floor",
    )
    parser.add_argument(
        "--coherence-layers",
        "--prune-layers",
        dest="coherence_layers",
        default="last:4",
        metavar="LAYERS",
        help="layers whose attention scores coherence: all, last:K or indices such as 0,3,5 "
        "(default: last:4)",
    )
    parser.add_argument(
        "--prune-floor",
        type=float,
        default=0.5,
        help="coherence in [0, 1] below which --prune-children prunes a child (default: 0.5)",
    )
    parser.add_argument(
        "--prune-cut",
        type=float,
        default=-0.5,
        help="relative score (attention / the siblings' mean attention - 1) at which a child's "
        "coherence is 0.5 (default: -0.5)",
    )
    parser.add_argument(
        "--prune-steepness",
        type=float,
        default=10.0,
        help="slope of the coherence sigmoid per unit of relative score, > 0 (default: 10)",
    )
    parser.add_argument(
        "--threshold-schedule",
        default=None,
        metavar="SPEC",
        help="the selection (progressive-widening) threshold over a node's visits (0 to 32, or "
        "0 to 8 with --actions moves), in "
        "place of --widening: 'bezier:P0,P1,P2,P3' or 'flat:START,END,FLAT_FRACTION'; "
        "probabilities in [0, 1]",
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object on stdout")


def _split_words(text: str | None) -> list[str] | None:
    if text is None:
        return None
    words = [w.strip() for w in text.split(",") if w.strip()]
    if not words:
        raise ValueError(f"word list {text!r} is empty; pass comma-separated words like dog,park")
    return words


def _constraints_from_args(args: argparse.Namespace):
    from tempo_search.tasks import constraints_task

    if all(
        getattr(args, name) is None
        for name in ("keywords", "banned", "regex", "min_words", "max_words")
    ):
        return None
    return constraints_task(
        keywords=_split_words(args.keywords),
        banned=_split_words(args.banned),
        regex=args.regex,
        min_words=args.min_words,
        max_words=args.max_words,
        inflections=args.inflections,
    )


def _search_from_args(args: argparse.Namespace, *, task=None, prompt=None, model=None):
    """Run `search` with the shared search flags; returns the result (or raises)."""
    from tempo_search.search import search

    if args.tree is not None:
        tree_path = Path(args.tree)
        if tree_path.suffix.lower() not in (".json", ".dot", ".gv"):
            raise ValueError(
                f"--tree {args.tree!r} has an unknown suffix; pass a .json, .dot or .gv file name."
            )
        if not tree_path.parent.is_dir():
            raise ValueError(
                f"--tree {args.tree!r}: folder {str(tree_path.parent)!r} does not exist; create "
                "it or pass a path in an existing folder."
            )
    value = _value_from_args(args)  # checked before the model loads
    model = model if model is not None else _load(args)
    total = args.simulations
    with _progress(total, "simulations", _show_progress(args)) as bar:

        def advance(done: int) -> None:
            bar.total = max(bar.total, done)
            bar.n = done
            bar.refresh()

        result = search(
            model,
            prompt if prompt is not None else args.prompt,
            task=task,
            num_simulations=args.simulations,
            c_puct=args.c_puct,
            selection=args.selection,
            widening=_widening_from_args(args),
            root_widening=args.root_widening,
            max_width=args.max_width,
            batch_size=args.batch_size,
            rollout=args.rollout,
            rollout_depth=args.rollout_depth,
            num_rollouts=getattr(args, "rollouts", None),
            actions=getattr(args, "actions", "tokens"),
            max_depth=args.max_depth,
            max_new_tokens=args.max_new_tokens,
            commit=args.commit,
            backup=args.backup,
            time_limit=args.time_limit,
            max_nodes=args.max_nodes,
            temperature=args.temperature,
            prior=args.prior,
            guide=args.guide,
            stop_when_solved=args.stop_when_solved,
            chat=args.chat,
            seed=args.seed,
            on_simulation=advance,
            value=value,
            **_coherence_from_args(args),
        )
    if args.tree is not None:
        from tempo_search.tree import save_tree

        save_tree(result.tree, args.tree)
    return model, result


def _widening_from_args(args: argparse.Namespace):
    """Return the widening schedule: --threshold-schedule when given, else --widening."""
    if args.threshold_schedule is None:
        return args.widening
    from tempo_search.generate import parse_threshold_schedule

    try:
        return parse_threshold_schedule(args.threshold_schedule)
    except (TypeError, ValueError) as error:
        raise ValueError(f"--threshold-schedule: {error}") from None


def _value_from_args(args: argparse.Namespace):
    """Return the `value` argument of `search`: None (the search's default weights) unless a
    weight flag was given, else `ValueWeights` with the given weights and the defaults of the
    action space for the others."""
    likelihood, reward = args.likelihood_weight, args.reward_weight
    coherence = args.coherence_weight
    if likelihood is None and reward is None and coherence == 0:
        return None
    from tempo_search.policies.values import ValueWeights

    if getattr(args, "actions", "tokens") == "moves":
        from tempo_search.move_search import DEFAULT_MOVE_VALUE as defaults
    else:
        defaults = ValueWeights()
    try:
        return ValueWeights(
            likelihood=defaults.likelihood if likelihood is None else likelihood,
            coherence=coherence,
            reward=defaults.reward if reward is None else reward,
        )
    except ValueError as error:
        flags = (
            ("--likelihood-weight", likelihood),
            ("--coherence-weight", coherence or None),
            ("--reward-weight", reward),
        )
        given_flags = ", ".join(f"{flag} {weight}" for flag, weight in flags if weight is not None)
        raise ValueError(f"{given_flags}: {error}") from None


def _coherence_from_args(args: argparse.Namespace) -> dict:
    """Return the `coherence` and `prune_children` arguments of `search`."""
    if args.coherence_weight == 0 and not args.prune_children:
        if args.prune_cut != -0.5 or args.prune_steepness != 10.0:
            raise ValueError(
                "--prune-cut and --prune-steepness need --prune or --coherence-weight; add one."
            )
        return {}
    from tempo_search.coherence import PruneConfig

    return {
        "coherence": PruneConfig(
            layers=args.coherence_layers,
            floor=args.prune_floor,
            cut=args.prune_cut,
            steepness=args.prune_steepness,
        ),
        "prune_children": args.prune_children,
    }


def _run_search(args: argparse.Namespace) -> int:
    task = _constraints_from_args(args)
    model, result = _search_from_args(args, task=task)
    _print_search(args, model, result, prompt_text=args.prompt)
    if result.interrupted:
        return EXIT_INTERRUPTED
    if task is not None and not result.solved:
        return EXIT_FAILED
    return EXIT_OK


def _print_search(args, model, result, *, prompt_text: str, extra: dict | None = None) -> None:
    if result.interrupted:
        sys.stderr.write("interrupted: printing the best result found so far\n")
    if args.json:
        _print_json(
            {"prompt": prompt_text, "model": model.name, **result.to_dict(), **(extra or {})}
        )
        return
    stats = result.stats
    sys.stdout.write(f"{prompt_text}{result.text}\n\n")
    for rank, completion in enumerate(result.completions, start=1):
        sys.stdout.write(
            f"{rank}. score={completion.score:.3f} visits={completion.visits}: "
            f"{completion.text!r}\n"
        )
    sys.stdout.write(
        f"\n{stats.simulations} simulations, {stats.nodes} nodes, {stats.forward_passes} forward "
        f"passes, {stats.tokens_forwarded} tokens forwarded ({stats.rollout_tokens} in rollouts), "
        f"{stats.seconds:.2f} s, stopped by {stats.stopped_by}\n"
    )
    for key, value in (extra or {}).items():
        sys.stdout.write(f"{key}: {value}\n")
    if result.task_report is not None:
        sys.stdout.write(f"task: {json.dumps(result.task_report, ensure_ascii=False)}\n")


# ----------------------------------------------------------------------------- solve


def _add_solve(subparsers) -> None:
    parser = subparsers.add_parser(
        "solve",
        help="solve a puzzle (Game of 24, Countdown, Blocksworld) with the search",
        description="Solve a puzzle: the task proposes the legal moves at every node, the LM "
        "ranks them, random legal moves played to the end estimate each node's value, and an "
        "exact verifier checks the answer. Exit code 1 when no solution was found within the "
        "budget.",
    )
    puzzles = parser.add_subparsers(dest="puzzle", required=True, parser_class=_Parser)

    game24 = puzzles.add_parser("game24", help="reach 24 with four numbers from 1 to 13")
    game24.add_argument("numbers", help='four numbers from 1 to 13, such as "4 9 10 13"')
    _add_search_arguments(game24, max_new_tokens=96, moves=True)

    countdown = puzzles.add_parser("countdown", help="reach a target from a set of numbers")
    countdown.add_argument(
        "--numbers", required=True, help='the numbers, such as "25 50 75 100 3 6"'
    )
    countdown.add_argument("--target", required=True, type=int, help="the number to reach")
    _add_search_arguments(countdown, max_new_tokens=160, moves=True)

    blocks = puzzles.add_parser("blocksworld", help="find a plan that stacks blocks as asked")
    blocks.add_argument("file", nargs="?", default=None, help="instance JSON file")
    blocks.add_argument(
        "--generate", type=int, default=None, metavar="N", help="solve N generated instances"
    )
    blocks.add_argument(
        "--steps",
        type=int,
        default=4,
        help="optimal plan length of generated instances, an even number (default: 4)",
    )
    _add_search_arguments(blocks, max_new_tokens=160, moves=True)
    parser.set_defaults(handler=_run_solve)


def _puzzle_tasks(args: argparse.Namespace) -> list[tuple[str, object]]:
    from tempo_search import tasks

    if args.puzzle == "game24":
        numbers = tasks.parse_numbers(args.numbers)
        return [(" ".join(map(str, numbers)), tasks.Game24Task(numbers))]
    if args.puzzle == "countdown":
        numbers = tasks.parse_numbers(args.numbers)
        label = f"{' '.join(map(str, numbers))} -> {args.target}"
        return [(label, tasks.CountdownTask(numbers, args.target))]
    if args.file is None and args.generate is None:
        raise ValueError("neither an instance FILE nor --generate N was given; pass one of them")
    if args.file is not None and args.generate is not None:
        raise ValueError("pass either an instance FILE or --generate N (with --steps K), not both")
    if args.generate is not None and args.generate < 1:
        raise ValueError(f"--generate {args.generate} must be at least 1, the number of instances")
    if args.file is not None:
        instance = tasks.load_instance(args.file)
        return [(instance.name or str(args.file), tasks.BlocksworldTask(instance))]
    instances = tasks.generate_instances(args.generate, args.steps, args.seed)
    return [
        (inst.name or f"instance {i}", tasks.BlocksworldTask(inst))
        for i, inst in enumerate(instances)
    ]


def _run_solve(args: argparse.Namespace) -> int:
    puzzle_tasks = _puzzle_tasks(args)
    model = _load(args)
    all_solved = True
    records = []
    for label, task in puzzle_tasks:
        _, result = _search_from_args(args, task=task, prompt=task.prompt, model=model)
        report = result.task_report or {}
        solved = bool(result.solved)
        all_solved = all_solved and solved
        record = {
            "puzzle": label,
            "solved": solved,
            "answer": report.get("answer"),
            "verified": bool(report.get("verified", False)),
            **result.to_dict(),
        }
        records.append(record)
        if not args.json:
            stats = result.stats
            verdict = "solved" if solved else "no solution found"
            searched_all = (
                getattr(args, "actions", "tokens") == "moves"
                and args.max_width is None
                and args.max_depth is None
            )
            if not solved and stats.stopped_by == "exhausted" and searched_all:
                verdict = "no solution exists: every legal line was searched"
            sys.stdout.write(f"{label}: {verdict}\n{result.text.strip()}\n")
            if report.get("num_actions") is not None:
                # A Blocksworld plan: its lines are printed above, so give its length instead.
                summary = f"{report['num_actions']} actions (optimal {report['optimal_length']})"
            else:
                summary = f"answer={record['answer']!r}"
            sys.stdout.write(
                f"verified={record['verified']} {summary}; {stats.simulations} simulations, "
                f"{stats.forward_passes} forward passes, {stats.seconds:.1f} s\n\n"
            )
        if result.interrupted:
            break
    if args.json:
        _print_json(records[0] if len(records) == 1 else {"puzzles": records})
    if any(r["interrupted"] for r in records):
        return EXIT_INTERRUPTED
    return EXIT_OK if all_solved else EXIT_FAILED


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
    _add_search(subparsers)
    _add_solve(subparsers)
    from tempo_search.sweep_cli import add_sweep_command

    add_sweep_command(subparsers)
    from tempo_search.bench_cli import add_bench_command

    add_bench_command(subparsers)
    for register in _EXTRA_COMMANDS:
        register(subparsers)
    return parser


_EXTRA_COMMANDS: list = []
"""Functions `register(subparsers)` of the commands defined in other modules."""


def main(argv: Sequence[str] | None = None) -> int:
    from transformers.utils import logging as transformers_logging

    # The loading bars of transformers would mix with this command's own output.
    transformers_logging.disable_progress_bar()
    parser = build_parser()
    args = parser.parse_args(argv)
    level = logging.WARNING - 10 * min(args.verbose, 2)
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
    try:
        return int(args.handler(args))
    except (ValueError, TypeError, FileNotFoundError) as error:
        logger.debug("invalid input", exc_info=True)
        # One line: transformers' errors span several lines with the hint at the end.
        lines = [line.strip() for line in str(error).splitlines() if line.strip()]
        message = " ".join(lines) or type(error).__name__
        sys.stderr.write(f"tempo-search {args.command}: error: {message}\n")
        return EXIT_INVALID
    except KeyboardInterrupt:
        sys.stderr.write(f"tempo-search {args.command}: interrupted\n")
        return EXIT_INTERRUPTED


if __name__ == "__main__":
    sys.exit(main())
