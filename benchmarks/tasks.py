"""Puzzle benchmarks: Game of 24 and Blocksworld solved by `search` on the embedded model.

Game of 24 compares three methods on the same puzzles, interleaved per puzzle:

- `search` with the LM prior,
- the same search with `prior="uniform"` (what the LM prior adds),
- best-of-N sampling at the same forward budget: N masked samples from the prompt, advanced
  together (one forward per step), until the forward count reaches that of the LM-prior search
  on the same puzzle. A puzzle counts as solved when any sample satisfies the task.

Blocksworld runs the search on the 30 packaged instances and reports success per optimal plan
length (2, 4, 6).

Run `python -m benchmarks.tasks [--quick] [--puzzles N] [--simulations S] [--out DIR]`.
"""

from __future__ import annotations

import argparse
import json
import logging
import random
import statistics
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from benchmarks._common import machine_info, utc_now, write_record

logger = logging.getLogger(__name__)

METHODS = ("search_lm", "search_uniform", "best_of_n")
"""Game of 24 methods, in the order they run on each puzzle."""

GAME24_GOAL = 0.90
"""Target share of Game of 24 puzzles solved by the LM-prior search."""

# Budgets. 60 simulations, batch 4, 96 new tokens and no rollout are the settings the project
# chose for these puzzles, not tuned. 8 samples is the search's `max_width` default, so one
# sampling step forwards about as many tokens as one expansion of one leaf.
# NOTE: a Game of 24 answer in the task's step format is about 74 SmolLM2 tokens, and without
# rollouts each simulation deepens the tree by at most one token, so 60 simulations (and the
# sampling at the same forward count) cannot write a whole answer. Pass --simulations for more.
DEFAULT_SIMULATIONS = 60
DEFAULT_BATCH_SIZE = 4
DEFAULT_MAX_NEW_TOKENS = 96
DEFAULT_NUM_SAMPLES = 8
DEFAULT_PUZZLES = 100
QUICK_PUZZLES = 5


@dataclass(frozen=True)
class SamplingResult:
    """Outcome of `best_of_n` on one task.

    Attributes:
        solved: some sample satisfied the task.
        samples: samples finished (end-of-sequence, task finished, dead end or length limit).
        forward_passes: model forwards, prefill included.
        seconds: wall time.
        text: the first satisfying sample, or "".
    """

    solved: bool
    samples: int
    forward_passes: int
    seconds: float
    text: str


def best_of_n(
    model,
    task,
    *,
    num_samples: int = DEFAULT_NUM_SAMPLES,
    forward_budget: int,
    max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS,
    temperature: float = 1.0,
    seed: int = 0,
) -> SamplingResult:
    """Sample `num_samples` masked completions of `task.prompt` in parallel until
    `forward_budget` forwards (prefill included) are spent or a sample satisfies the task.

    Every step applies `task.allowed_tokens` to each row and samples at `temperature`; the
    active rows are forwarded together in one `TreeState.expand`. A row whose sample finishes
    starts a new sample from the prompt, so the whole budget is used.
    """
    from tempo_search.models import load_model
    from tempo_search.tree_state import ROOT, TreeState

    if isinstance(num_samples, bool) or not isinstance(num_samples, int) or num_samples < 1:
        raise ValueError(
            f"num_samples={num_samples!r} must be an integer of at least 1, such as 8."
        )
    if (
        isinstance(forward_budget, bool)
        or not isinstance(forward_budget, int)
        or forward_budget < 1
    ):
        raise ValueError(
            f"forward_budget={forward_budget!r} must be an integer of at least 1, such as the "
            "search's stats.forward_passes."
        )
    if not temperature > 0:
        raise ValueError(f"temperature={temperature!r} must be above 0, such as 1.0.")
    model = load_model(model)
    tokenizer = model.tokenizer
    eos = set(model.eos_token_ids)

    def decode(ids: list[int]) -> str:
        # The decoding `search` uses, so that masks and texts agree.
        return tokenizer.decode(ids, skip_special_tokens=True, clean_up_tokenization_spaces=False)

    start = time.perf_counter()
    task.bind(tokenizer, model.vocab_size)
    prompt_ids = model.encode_prompt(task.prompt)
    model.check_context(len(prompt_ids), max_new_tokens)
    state = TreeState(model.model, prompt_ids)
    generator = torch.Generator().manual_seed(seed)
    tails = [ROOT] * num_samples
    tokens: list[list[int]] = [[] for _ in range(num_samples)]
    logits: list[torch.Tensor] = [state.prompt_logits] * num_samples
    samples = 0
    solution = ""
    idle_steps = 0
    while state.forward_passes < forward_budget and not solution:
        rows, parents, picks = [], [], []
        for row in range(num_samples):
            generated = tokens[row]
            mask = task.allowed_tokens(generated, decode(generated))
            scores = logits[row].float()
            if mask is not None:
                scores = scores.masked_fill(~mask, float("-inf"))
            if not bool(torch.isfinite(scores).any()):
                token = None
            else:
                probs = torch.softmax(scores / temperature, dim=-1)
                token = int(torch.multinomial(probs, 1, generator=generator))
            done = token is None
            if token is not None:
                generated.append(token)
                text = decode(generated)
                done = token in eos or len(generated) >= max_new_tokens or task.is_finished(text)
                if done and task.is_satisfied(text):
                    solution = text
            if done:
                samples += 1
                tails[row], tokens[row], logits[row] = ROOT, [], state.prompt_logits
                continue
            rows.append(row)
            parents.append(tails[row])
            picks.append(token)
        if solution:
            break
        if not rows:
            idle_steps += 1
            # Every row finished without a forward; give up if that keeps happening.
            if idle_steps > max_new_tokens:
                break
            continue
        output = state.expand(parents, picks)
        for row, node_id, row_logits in zip(rows, output.node_ids, output.logits, strict=True):
            tails[row] = node_id
            logits[row] = row_logits
    return SamplingResult(
        solved=bool(solution),
        samples=samples,
        forward_passes=state.forward_passes,
        seconds=time.perf_counter() - start,
        text=solution,
    )


def game24_sample(count: int, *, seed: int = 0) -> list[tuple[int, ...]]:
    """`count` solvable Game of 24 puzzles drawn with `random.Random(seed).sample`."""
    from tempo_search.tasks.game24 import all_game24_puzzles

    solvable = [puzzle for puzzle in all_game24_puzzles() if puzzle.solvable]
    if not 1 <= count <= len(solvable):
        raise ValueError(f"count={count!r} must be from 1 to {len(solvable)} (solvable puzzles).")
    return [tuple(puzzle.numbers) for puzzle in random.Random(seed).sample(solvable, count)]


def _search_row(model, task, budget: dict[str, Any], prior: str) -> dict[str, Any]:
    from tempo_search.search import search

    result = search(model, task=task, prior=prior, **budget)
    return {
        "solved": bool(result.solved),
        "seconds": result.stats.seconds,
        "forward_passes": result.stats.forward_passes,
        "stopped_by": result.stats.stopped_by,
        "text": result.text,
    }


def run_game24(
    model,
    puzzles: Sequence[tuple[int, ...]],
    budget: dict[str, Any],
    *,
    num_samples: int = DEFAULT_NUM_SAMPLES,
    deadline: float | None = None,
) -> list[dict[str, Any]]:
    """Run the three methods on each puzzle, interleaved; stop before a puzzle that would
    start after `deadline` (a `time.perf_counter` value). Returns one row per puzzle."""
    from tempo_search.tasks.game24 import Game24Task

    rows = []
    for index, numbers in enumerate(puzzles):
        if deadline is not None and time.perf_counter() >= deadline:
            logger.warning("time is up after %d of %d puzzles", index, len(puzzles))
            break
        lm = _search_row(model, Game24Task(numbers), budget, "lm")
        uniform = _search_row(model, Game24Task(numbers), budget, "uniform")
        sampled = best_of_n(
            model,
            Game24Task(numbers),
            num_samples=num_samples,
            forward_budget=lm["forward_passes"],
            max_new_tokens=budget["max_new_tokens"],
            seed=budget["seed"],
        )
        rows.append(
            {
                "numbers": list(numbers),
                "search_lm": lm,
                "search_uniform": uniform,
                "best_of_n": {
                    "solved": sampled.solved,
                    "seconds": sampled.seconds,
                    "forward_passes": sampled.forward_passes,
                    "samples": sampled.samples,
                    "text": sampled.text,
                },
            }
        )
        logger.info(
            "24 %s: lm %s, uniform %s, best-of-%d %s",
            numbers,
            lm["solved"],
            uniform["solved"],
            num_samples,
            sampled.solved,
        )
    return rows


def run_blocksworld(
    model, budget: dict[str, Any], priors: Sequence[str], *, limit: int | None = None
) -> list[dict[str, Any]]:
    """Search each packaged instance (the first `limit`, all when None) with each prior."""
    from tempo_search.tasks.blocksworld import BlocksworldTask, load_instances

    rows = []
    for instance in load_instances()[:limit]:
        row: dict[str, Any] = {"name": instance.name, "optimal_length": instance.optimal_length}
        for prior in priors:
            row[prior] = _search_row(model, BlocksworldTask(instance), budget, prior)
        rows.append(row)
    return rows


def summarize_game24(rows: Sequence[dict[str, Any]]) -> dict[str, dict[str, float]]:
    """Solve rate, mean seconds and mean forward passes per method."""
    summary = {}
    for method in METHODS:
        cells = [row[method] for row in rows]
        summary[method] = {
            "puzzles": len(cells),
            "solved": sum(cell["solved"] for cell in cells),
            "solve_rate": _mean([float(cell["solved"]) for cell in cells]),
            "mean_seconds": _mean([cell["seconds"] for cell in cells]),
            "mean_forward_passes": _mean([cell["forward_passes"] for cell in cells]),
        }
    return summary


def summarize_blocksworld(
    rows: Sequence[dict[str, Any]], priors: Sequence[str]
) -> dict[str, dict[str, dict[str, float]]]:
    """Per prior and optimal length: instances, solved, success rate, mean seconds and forwards."""
    summary: dict[str, dict[str, dict[str, float]]] = {}
    for prior in priors:
        summary[prior] = {}
        for length in sorted({row["optimal_length"] for row in rows}):
            cells = [row[prior] for row in rows if row["optimal_length"] == length]
            summary[prior][str(length)] = {
                "instances": len(cells),
                "solved": sum(cell["solved"] for cell in cells),
                "success_rate": _mean([float(cell["solved"]) for cell in cells]),
                "mean_seconds": _mean([cell["seconds"] for cell in cells]),
                "mean_forward_passes": _mean([cell["forward_passes"] for cell in cells]),
            }
    return summary


def _mean(values: Sequence[float]) -> float:
    return float(statistics.fmean(values)) if values else 0.0


_LABELS = {
    "search_lm": "search, LM prior",
    "search_uniform": "search, uniform prior",
    "best_of_n": "best-of-{n} sampling, same forwards",
}


def markdown_tables(record: dict[str, Any]) -> str:
    """Format the Game of 24 and Blocksworld tables of `record` as Markdown."""
    n = record["budget"]["num_samples"]
    game = record["game24"]["summary"]
    count = game["search_lm"]["puzzles"]
    lines = [
        f"Game of 24, {count} solvable puzzles:",
        "",
        "| method | solved | solve rate | mean seconds | mean forward passes |",
        "|---|---:|---:|---:|---:|",
    ]
    for method in METHODS:
        cell = game[method]
        lines.append(
            f"| {_LABELS[method].format(n=n)} | {cell['solved']}/{cell['puzzles']} "
            f"| {100 * cell['solve_rate']:.0f} % | {cell['mean_seconds']:.2f} "
            f"| {cell['mean_forward_passes']:.1f} |"
        )
    blocks = record["blocksworld"]["summary"]
    lines += [
        "",
        "Blocksworld, packaged instances by optimal plan length:",
        "",
        "| prior | optimal length | solved | success rate | mean seconds | mean forward passes |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for prior, by_length in blocks.items():
        for length, cell in by_length.items():
            lines.append(
                f"| {prior} | {length} | {cell['solved']}/{cell['instances']} "
                f"| {100 * cell['success_rate']:.0f} % | {cell['mean_seconds']:.2f} "
                f"| {cell['mean_forward_passes']:.1f} |"
            )
    return "\n".join(lines) + "\n"


def run(
    model,
    *,
    puzzles: int,
    simulations: int,
    batch_size: int = DEFAULT_BATCH_SIZE,
    max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS,
    num_samples: int = DEFAULT_NUM_SAMPLES,
    blocksworld_priors: Sequence[str] = ("lm", "uniform"),
    blocksworld_limit: int | None = None,
    max_seconds: float | None = None,
    seed: int = 0,
) -> dict[str, Any]:
    """Run both benchmarks and return the JSON record (without the machine description)."""
    budget = {
        "num_simulations": simulations,
        "batch_size": batch_size,
        "max_new_tokens": max_new_tokens,
        "rollout": "none",
        "seed": seed,
    }
    deadline = None if max_seconds is None else time.perf_counter() + max_seconds
    sample = game24_sample(puzzles, seed=seed)
    game_rows = run_game24(model, sample, budget, num_samples=num_samples, deadline=deadline)
    block_rows = run_blocksworld(model, budget, blocksworld_priors, limit=blocksworld_limit)
    game_summary = summarize_game24(game_rows)
    return {
        "budget": {**budget, "num_samples": num_samples},
        "game24": {
            "puzzles_requested": puzzles,
            "puzzles_run": len(game_rows),
            "goal_solve_rate": GAME24_GOAL,
            "goal_met": game_summary["search_lm"]["solve_rate"] >= GAME24_GOAL,
            "summary": game_summary,
            "rows": game_rows,
        },
        "blocksworld": {
            "summary": summarize_blocksworld(block_rows, blocksworld_priors),
            "rows": block_rows,
        },
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.tasks", description="Game of 24 and Blocksworld benchmarks."
    )
    parser.add_argument("--quick", action="store_true", help="5 puzzles, 6 Blocksworld instances")
    parser.add_argument("--puzzles", type=int, default=None, help="Game of 24 puzzles (100)")
    parser.add_argument("--simulations", type=int, default=DEFAULT_SIMULATIONS)
    parser.add_argument("--samples", type=int, default=DEFAULT_NUM_SAMPLES, help="best-of-N rows")
    parser.add_argument(
        "--blocksworld-priors", default="lm,uniform", help="comma-separated priors (lm,uniform)"
    )
    parser.add_argument(
        "--max-seconds",
        type=float,
        default=None,
        help="start no new Game of 24 puzzle after this many seconds",
    )
    parser.add_argument("--model", default=None, help="model path; default the embedded SmolLM2")
    parser.add_argument("--out", default="bench-out", help="folder of the JSON record")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    torch.set_num_threads(1)

    from tempo_search.models import load_model

    puzzles = args.puzzles or (QUICK_PUZZLES if args.quick else DEFAULT_PUZZLES)
    priors = [p for p in args.blocksworld_priors.split(",") if p]
    model = load_model(args.model)
    started = utc_now()
    record = run(
        model,
        puzzles=puzzles,
        simulations=args.simulations,
        num_samples=args.samples,
        blocksworld_priors=priors,
        blocksworld_limit=6 if args.quick else None,
        max_seconds=args.max_seconds,
    )
    record = {
        "benchmark": "tasks",
        "started": started,
        "finished": utc_now(),
        "command": "python -m benchmarks.tasks " + " ".join(argv if argv is not None else []),
        "model": getattr(model, "name", None),
        "machine": machine_info(),
        **record,
    }
    path = write_record("tasks", record, args.out)
    print(markdown_tables(record))
    game = record["game24"]
    print(
        f"goal: >= {100 * GAME24_GOAL:.0f} % of Game of 24 solved by the LM-prior search; "
        f"{'met' if game['goal_met'] else 'not met'} "
        f"({100 * game['summary']['search_lm']['solve_rate']:.0f} % of {game['puzzles_run']})"
    )
    print(f"record: {path}")
    print(json.dumps(record["budget"]))
    return 0


if __name__ == "__main__":
    import sys

    sys.exit(main(sys.argv[1:]))
