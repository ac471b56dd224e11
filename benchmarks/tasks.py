"""Puzzle benchmarks: Game of 24, Blocksworld and Countdown solved by `search` on the embedded
model.

Both run the move search (`search(..., actions="moves")`: a node per legal line, the LM's
masked-sampling probability of each line as the prior, random legal lines from the task's
simulator as rollouts).

Game of 24 compares four methods on the same puzzles, interleaved per puzzle:

- the move search with the LM prior,
- the same search with `prior="uniform"` (what the LM prior adds),
- the LM-prior search without rollouts, on the first `--no-rollout-puzzles` puzzles only
  (what the simulator's rollouts add; it is the slowest method),
- best-of-N sampling at the same token budget: N masked samples from the prompt (the task's
  legal-line mask, token by token, no simulator), advanced together (one forward per step),
  until they have forwarded as many tokens as the LM-prior search did on the same puzzle. A
  puzzle counts as solved when any sample satisfies the task.

Blocksworld runs the search on the 30 packaged instances and reports success per optimal plan
length (2, 4, 6). Countdown searches `--countdown` six-number puzzles dealt as in the TV game
(`countdown_sample`) with the LM prior and the uniform prior.

Run `python -m benchmarks.tasks [--quick] [--puzzles N] [--countdown N] [--simulations S]
[--out DIR]`.
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

METHODS = ("search_lm", "search_uniform", "search_lm_no_rollout", "best_of_n")
"""Game of 24 methods, in the order they run on each puzzle."""

GAME24_GOAL = 0.90
"""Target share of Game of 24 puzzles solved by the LM-prior search."""

# Budgets, chosen by hand on 12 puzzles and not tuned: 200 simulations in batches of 4 with the
# move search's defaults (16 random rollouts per new node, widening open by the 8th visit).
# 8 samples advance together in best-of-N. 96 new tokens bound a sample (a worked Game of 24
# solution in the step format is about 74 SmolLM2 tokens).
DEFAULT_SIMULATIONS = 200
DEFAULT_BATCH_SIZE = 4
DEFAULT_MAX_NEW_TOKENS = 96
DEFAULT_NUM_SAMPLES = 8
DEFAULT_PUZZLES = 100
DEFAULT_NO_ROLLOUT_PUZZLES = 10
QUICK_PUZZLES = 5
DEFAULT_COUNTDOWN_PUZZLES = 20
QUICK_COUNTDOWN_PUZZLES = 1
COUNTDOWN_LARGE = (25, 50, 75, 100)
COUNTDOWN_SMALL = tuple(range(1, 11)) * 2
"""Cards of the TV numbers game: the four large numbers and two of each small one."""
COUNTDOWN_PRIORS = ("lm", "uniform")


@dataclass(frozen=True)
class SamplingResult:
    """Outcome of `best_of_n` on one task.

    Attributes:
        solved: some sample satisfied the task.
        samples: samples finished (end-of-sequence, task finished, dead end or length limit).
        forward_passes: model forwards, prefill included.
        tokens_forwarded: tokens forwarded after the prefill.
        seconds: wall time.
        text: the first satisfying sample, or "".
    """

    solved: bool
    samples: int
    forward_passes: int
    tokens_forwarded: int
    seconds: float
    text: str


def best_of_n(
    model,
    task,
    *,
    num_samples: int = DEFAULT_NUM_SAMPLES,
    forward_budget: int | None = None,
    token_budget: int | None = None,
    max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS,
    temperature: float = 1.0,
    seed: int = 0,
) -> SamplingResult:
    """Sample `num_samples` masked completions of `task.prompt` in parallel until
    `forward_budget` forwards (prefill included) or `token_budget` tokens (prefill excluded)
    are spent, or a sample satisfies the task. Give at least one budget.

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
    for name, budget in (("forward_budget", forward_budget), ("token_budget", token_budget)):
        if budget is not None and (
            isinstance(budget, bool) or not isinstance(budget, int) or budget < 1
        ):
            raise ValueError(
                f"{name}={budget!r} must be an integer of at least 1, such as the search's "
                f"stats.{'forward_passes' if name == 'forward_budget' else 'tokens_forwarded'}."
            )
    if forward_budget is None and token_budget is None:
        raise ValueError("best_of_n needs a budget; pass forward_budget or token_budget.")
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
    prefill = state.tokens_forwarded

    def within_budget() -> bool:
        if forward_budget is not None and state.forward_passes >= forward_budget:
            return False
        return token_budget is None or state.tokens_forwarded - prefill < token_budget

    while within_budget() and not solution:
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
        tokens_forwarded=state.tokens_forwarded - prefill,
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


def _search_row(model, task, budget: dict[str, Any], prior: str, **options) -> dict[str, Any]:
    from tempo_search.search import search

    settings = {k: v for k, v in budget.items() if k != "max_new_tokens"}
    result = search(model, task=task, prior=prior, actions="moves", **{**settings, **options})
    return {
        "solved": bool(result.solved),
        "seconds": result.stats.seconds,
        "forward_passes": result.stats.forward_passes,
        "tokens_forwarded": result.stats.tokens_forwarded - result.stats.prompt_tokens,
        "simulations": result.stats.simulations,
        "stopped_by": result.stats.stopped_by,
        "text": result.text,
    }


def run_game24(
    model,
    puzzles: Sequence[tuple[int, ...]],
    budget: dict[str, Any],
    *,
    num_samples: int = DEFAULT_NUM_SAMPLES,
    no_rollout_puzzles: int = DEFAULT_NO_ROLLOUT_PUZZLES,
    deadline: float | None = None,
    on_puzzle=None,
) -> list[dict[str, Any]]:
    """Run the methods on each puzzle, one after the other, and return one row per puzzle.

    The search without rollouts runs on the first `no_rollout_puzzles` puzzles only. No puzzle
    starts after `deadline` (a `time.perf_counter` value)."""
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
            token_budget=max(1, lm["tokens_forwarded"]),
            max_new_tokens=budget["max_new_tokens"],
            seed=budget["seed"],
        )
        row = {
            "numbers": list(numbers),
            "search_lm": lm,
            "search_uniform": uniform,
            "best_of_n": {
                "solved": sampled.solved,
                "seconds": sampled.seconds,
                "forward_passes": sampled.forward_passes,
                "tokens_forwarded": sampled.tokens_forwarded,
                "samples": sampled.samples,
                "text": sampled.text,
            },
        }
        if index < no_rollout_puzzles:
            row["search_lm_no_rollout"] = _search_row(
                model, Game24Task(numbers), budget, "lm", rollout="none"
            )
        rows.append(row)
        if on_puzzle is not None:
            on_puzzle()
        logger.info(
            "24 %s: lm %s, uniform %s, best-of-%d %s",
            numbers,
            lm["solved"],
            uniform["solved"],
            num_samples,
            sampled.solved,
        )
    return rows


def _game24_chunk(model_arg, puzzles, budget, num_samples, no_rollout_puzzles, max_seconds):
    """Worker of `_run_game24_jobs`: load the model and run `run_game24` on `puzzles`, a list
    of (index, numbers)."""
    from tempo_search.models import load_model

    torch.set_num_threads(1)
    model = load_model(model_arg)
    deadline = None if max_seconds is None else time.perf_counter() + max_seconds
    rows = []
    for index, numbers in puzzles:
        if deadline is not None and time.perf_counter() >= deadline:
            break
        # The search without rollouts runs on the puzzles with the lowest indices.
        (row,) = run_game24(
            model,
            [numbers],
            budget,
            num_samples=num_samples,
            no_rollout_puzzles=1 if index < no_rollout_puzzles else 0,
        )
        rows.append((index, row))
    return rows


def _run_game24_jobs(model, sample, budget, num_samples, no_rollout_puzzles, max_seconds, jobs):
    return _run_indexed_jobs(
        _game24_chunk, model, sample, jobs, budget, num_samples, no_rollout_puzzles, max_seconds
    )


def _run_indexed_jobs(worker, model, items, jobs: int, *args) -> list:
    """Split `items` over `jobs` processes, call `worker(model, chunk, *args)` in each, where a
    chunk is a list of (index, item), and return the rows in the order of `items`."""
    from joblib import Parallel, delayed

    if not (model is None or isinstance(model, str)):
        raise ValueError("jobs > 1 needs the model as a path or None, so that workers load it.")
    indexed = list(enumerate(items))
    chunks = [indexed[start::jobs] for start in range(jobs)]
    results = Parallel(n_jobs=jobs, backend="loky")(
        delayed(worker)(model, chunk, *args) for chunk in chunks
    )
    ordered = sorted((pair for chunk in results for pair in chunk), key=lambda pair: pair[0])
    return [row for _, row in ordered]


def run_blocksworld(
    model,
    budget: dict[str, Any],
    priors: Sequence[str],
    *,
    limit: int | None = None,
    on_instance=None,
) -> list[dict[str, Any]]:
    """Search each packaged instance (the first `limit`, all when None) with each prior."""
    from tempo_search.tasks.blocksworld import BlocksworldTask, load_instances

    rows = []
    for instance in load_instances()[:limit]:
        row: dict[str, Any] = {"name": instance.name, "optimal_length": instance.optimal_length}
        for prior in priors:
            row[prior] = _search_row(model, BlocksworldTask(instance), budget, prior)
        rows.append(row)
        if on_instance is not None:
            on_instance()
    return rows


def countdown_sample(count: int, *, seed: int = 0) -> list[tuple[tuple[int, ...], int]]:
    """Deal `count` solvable six-number Countdown puzzles as in the TV game, from `seed`.

    Each deal draws 0 to 4 large numbers and the rest from the small cards, then a target from
    101 to 999. A deal that the exact solver cannot reach is redrawn."""
    from tempo_search.tasks.countdown import solve_countdown

    if count < 1:
        raise ValueError(f"count={count!r} is invalid; pass 1 or more Countdown puzzles.")
    rng = random.Random(seed)
    puzzles: list[tuple[tuple[int, ...], int]] = []
    while len(puzzles) < count:
        large = rng.randint(0, len(COUNTDOWN_LARGE))
        numbers = rng.sample(COUNTDOWN_LARGE, large) + rng.sample(COUNTDOWN_SMALL, 6 - large)
        target = rng.randint(101, 999)
        if solve_countdown(numbers, target) is not None:
            puzzles.append((tuple(sorted(numbers)), target))
    return puzzles


def run_countdown(
    model,
    puzzles: Sequence[tuple[tuple[int, ...], int]],
    budget: dict[str, Any],
    priors: Sequence[str] = COUNTDOWN_PRIORS,
    *,
    on_puzzle=None,
) -> list[dict[str, Any]]:
    """Search each Countdown puzzle with each prior and return one row per puzzle."""
    from tempo_search.tasks.countdown import CountdownTask

    rows = []
    for numbers, target in puzzles:
        row: dict[str, Any] = {"numbers": list(numbers), "target": target}
        for prior in priors:
            row[prior] = _search_row(model, CountdownTask(numbers, target), budget, prior)
        rows.append(row)
        if on_puzzle is not None:
            on_puzzle()
        logger.info(
            "countdown %s -> %d: %s",
            numbers,
            target,
            ", ".join(f"{prior} {row[prior]['solved']}" for prior in priors),
        )
    return rows


def _countdown_chunk(model_arg, puzzles, budget, priors):
    """Load the model and search `puzzles`, a list of (index, puzzle), with each prior: the
    worker of `run`'s Countdown part when `jobs` > 1."""
    from tempo_search.models import load_model

    torch.set_num_threads(1)
    model = load_model(model_arg)
    return [
        (index, row)
        for index, puzzle in puzzles
        for row in run_countdown(model, [puzzle], budget, priors)
    ]


def summarize_countdown(
    rows: Sequence[dict[str, Any]], priors: Sequence[str]
) -> dict[str, dict[str, float]]:
    """Return the summary of each prior's rows (`_summarize_cells`)."""
    return {prior: _summarize_cells([row[prior] for row in rows]) for prior in priors}


def _summarize_cells(cells: Sequence[dict[str, Any]]) -> dict[str, float]:
    """Return the puzzles, solved count, solve rate and mean seconds, forwards and tokens
    forwarded of one method's search rows."""
    return {
        "puzzles": len(cells),
        "solved": sum(cell["solved"] for cell in cells),
        "solve_rate": _mean([float(cell["solved"]) for cell in cells]),
        "mean_seconds": _mean([cell["seconds"] for cell in cells]),
        "mean_forward_passes": _mean([cell["forward_passes"] for cell in cells]),
        "mean_tokens_forwarded": _mean([cell["tokens_forwarded"] for cell in cells]),
    }


def summarize_game24(rows: Sequence[dict[str, Any]]) -> dict[str, dict[str, float]]:
    """Solve rate, mean seconds and mean forward passes per method."""
    summary = {}
    for method in METHODS:
        cells = [row[method] for row in rows if method in row]
        if cells:
            summary[method] = _summarize_cells(cells)
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
    "search_lm": "move search, LM prior",
    "search_uniform": "move search, uniform prior",
    "search_lm_no_rollout": "move search, LM prior, no rollouts",
    "best_of_n": "best-of-N masked sampling ({n} at a time), same tokens",
}


def markdown_tables(record: dict[str, Any]) -> str:
    """Format the Game of 24, Blocksworld and Countdown tables of `record` as Markdown."""
    return "\n".join(markdown_blocks(record).values())


def markdown_blocks(record: dict[str, Any]) -> dict[str, str]:
    """Return the doc blocks of `record`: "tasks" (Game of 24), "tasks.blocksworld" and, when
    the record has Countdown rows, "tasks.countdown"."""
    blocks = {"tasks": _game24_table(record), "tasks.blocksworld": _blocksworld_table(record)}
    if record.get("countdown", {}).get("rows"):
        blocks["tasks.countdown"] = _countdown_table(record)
    return blocks


def _game24_table(record: dict[str, Any]) -> str:
    n = record["budget"]["num_samples"]
    game = record["game24"]["summary"]
    count = game["search_lm"]["puzzles"]
    lines = [
        f"Game of 24, {count} solvable puzzles (the search without rollouts: the first "
        f"{game.get('search_lm_no_rollout', {}).get('puzzles', 0)}):",
        "",
        "| method | solved | solve rate | mean seconds | mean forward passes "
        "| mean tokens forwarded |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for method in METHODS:
        cell = game.get(method)
        if cell is None:
            continue
        lines.append(
            f"| {_LABELS[method].format(n=n)} | {cell['solved']}/{cell['puzzles']} "
            f"| {100 * cell['solve_rate']:.0f} % | {cell['mean_seconds']:.2f} "
            f"| {cell['mean_forward_passes']:.1f} | {cell['mean_tokens_forwarded']:.0f} |"
        )
    return "\n".join(lines) + "\n"


def _blocksworld_table(record: dict[str, Any]) -> str:
    blocks = record["blocksworld"]["summary"]
    lines = [
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


def _countdown_table(record: dict[str, Any]) -> str:
    summary = record["countdown"]["summary"]
    count = next(iter(summary.values()))["puzzles"]
    lines = [
        f"Countdown, {count} solvable six-number puzzles:",
        "",
        "| prior | solved | solve rate | mean seconds | mean forward passes "
        "| mean tokens forwarded |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for prior, cell in summary.items():
        lines.append(
            f"| {prior} | {cell['solved']}/{cell['puzzles']} | {100 * cell['solve_rate']:.0f} % "
            f"| {cell['mean_seconds']:.2f} | {cell['mean_forward_passes']:.1f} "
            f"| {cell['mean_tokens_forwarded']:.0f} |"
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
    no_rollout_puzzles: int = DEFAULT_NO_ROLLOUT_PUZZLES,
    countdown_puzzles: int = 0,
    max_seconds: float | None = None,
    seed: int = 0,
    on_puzzle=None,
    jobs: int = 1,
) -> dict[str, Any]:
    """Run the benchmarks and return the JSON record (without the machine description).

    `on_puzzle`, when given, is called after each Game of 24 puzzle, Blocksworld instance and
    Countdown puzzle. With `jobs` > 1 the Game of 24 and Countdown puzzles are split over that
    many processes (joblib), each with one torch thread and its own copy of `model` (a path or
    None); every method still runs on each puzzle in the same process, one after the other.
    `countdown_puzzles` puzzles from `countdown_sample` are searched with both priors (none
    when 0).
    """
    if isinstance(countdown_puzzles, bool) or not isinstance(countdown_puzzles, int):
        raise TypeError(f"countdown_puzzles={countdown_puzzles!r} must be an int, such as 20.")
    if countdown_puzzles < 0:
        raise ValueError(
            f"countdown_puzzles={countdown_puzzles!r} is invalid; pass 0 to skip Countdown or "
            "a number of puzzles such as 20."
        )
    budget = {
        "num_simulations": simulations,
        "batch_size": batch_size,
        "max_new_tokens": max_new_tokens,
        "seed": seed,
    }
    deadline = None if max_seconds is None else time.perf_counter() + max_seconds
    sample = game24_sample(puzzles, seed=seed)
    if jobs > 1:
        game_rows = _run_game24_jobs(
            model, sample, budget, num_samples, no_rollout_puzzles, max_seconds, jobs
        )
    else:
        game_rows = run_game24(
            model,
            sample,
            budget,
            num_samples=num_samples,
            no_rollout_puzzles=no_rollout_puzzles,
            deadline=deadline,
            on_puzzle=on_puzzle,
        )
    countdown_rows: list[dict[str, Any]] = []
    if countdown_puzzles and jobs > 1:
        countdown_rows = _run_indexed_jobs(
            _countdown_chunk,
            model,
            countdown_sample(countdown_puzzles, seed=seed),
            jobs,
            budget,
            COUNTDOWN_PRIORS,
        )
    if jobs > 1:
        from tempo_search.models import load_model

        model = load_model(model)
    block_rows = run_blocksworld(
        model, budget, blocksworld_priors, limit=blocksworld_limit, on_instance=on_puzzle
    )
    if countdown_puzzles and jobs <= 1:
        countdown_rows = run_countdown(
            model, countdown_sample(countdown_puzzles, seed=seed), budget, on_puzzle=on_puzzle
        )
    game_summary = summarize_game24(game_rows)
    return {
        "budget": {
            **budget,
            "actions": "moves",
            "num_samples": num_samples,
            "no_rollout_puzzles": no_rollout_puzzles,
        },
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
        "countdown": {
            "summary": summarize_countdown(countdown_rows, COUNTDOWN_PRIORS)
            if countdown_rows
            else {},
            "rows": countdown_rows,
        },
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.tasks",
        description="Game of 24, Blocksworld and Countdown benchmarks.",
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="5 puzzles, 6 Blocksworld instances, 1 Countdown puzzle",
    )
    parser.add_argument(
        "--countdown",
        type=int,
        default=None,
        help=f"six-number Countdown puzzles ({DEFAULT_COUNTDOWN_PUZZLES}; 0 skips them)",
    )
    parser.add_argument("--puzzles", type=int, default=None, help="Game of 24 puzzles (100)")
    parser.add_argument("--simulations", type=int, default=DEFAULT_SIMULATIONS)
    parser.add_argument("--samples", type=int, default=DEFAULT_NUM_SAMPLES, help="best-of-N rows")
    parser.add_argument(
        "--no-rollout-puzzles",
        type=int,
        default=None,
        help=f"puzzles also searched without rollouts ({DEFAULT_NO_ROLLOUT_PUZZLES}; 1 with --quick)",
    )
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
    parser.add_argument(
        "--jobs", type=int, default=1, help="processes for the Game of 24 puzzles (1)"
    )
    parser.add_argument("--out", default="bench-out", help="folder of the JSON record")
    args = parser.parse_args(argv)
    if args.countdown is not None and args.countdown < 0:
        parser.error(f"--countdown {args.countdown} is invalid; pass 0 to skip Countdown or N > 0")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    torch.set_num_threads(1)

    from tempo_search.models import load_model

    puzzles = args.puzzles or (QUICK_PUZZLES if args.quick else DEFAULT_PUZZLES)
    priors = [p for p in args.blocksworld_priors.split(",") if p]
    model = load_model(args.model)
    started = utc_now()
    record = run(
        model if args.jobs <= 1 else args.model,
        puzzles=puzzles,
        simulations=args.simulations,
        num_samples=args.samples,
        blocksworld_priors=priors,
        blocksworld_limit=6 if args.quick else None,
        no_rollout_puzzles=(
            args.no_rollout_puzzles
            if args.no_rollout_puzzles is not None
            else (1 if args.quick else DEFAULT_NO_ROLLOUT_PUZZLES)
        ),
        countdown_puzzles=(
            args.countdown
            if args.countdown is not None
            else (QUICK_COUNTDOWN_PUZZLES if args.quick else DEFAULT_COUNTDOWN_PUZZLES)
        ),
        max_seconds=args.max_seconds,
        jobs=args.jobs,
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
