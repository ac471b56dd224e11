"""Built-in sweep runners: TEMPO generation, search over a prompt and Game of 24.

Each runner is a top-level function `run(params, item) -> {metric: value}` registered in
`RUNNERS`, so a sweep config can name it in its `task` key (`task: search`) and loky or Dask
workers can import it by name. Every runner reads the parameter `model`: None (the default) is
the embedded SmolLM2-135M-Instruct, and a string is a model folder, `.gguf` file or hub id with
a local copy. The model is loaded once per worker process through `worker_cache`.

A parameter that a runner does not know makes the job fail with a ValueError that lists the
known ones, so a typo in a grid key (`c_pcut`) does not go unnoticed. Parameters left out
take the defaults of `generate` and `search`.

The sweep adds its own `seconds` column (the wall time of the job, model loading included on
a worker's first job), so the runners report the time of the generation or search alone as
`generate_seconds` or `search_seconds`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from tempo_search._sweep_config import register_runner

__all__ = [
    "GAME24_MAX_NEW_TOKENS",
    "GENERATE_PARAMETERS",
    "SEARCH_PARAMETERS",
    "run_game24",
    "run_generate",
    "run_search",
]

# Parameter names of each runner besides "model" and "seed". A parameter left out of a point
# takes the default of `generate` or `search`, except max_new_tokens of game24 (below).
GENERATE_PARAMETERS = ("threshold", "max_new_tokens", "max_width", "mode")
SEARCH_PARAMETERS = (
    "num_simulations",
    "c_puct",
    "widening",
    "batch_size",
    "rollout",
    "rollout_depth",
    "max_new_tokens",
    "max_width",
    "prior",
)
# The step lines and the answer line of a Game of 24 solution need more than the 32 tokens of
# `search`; 96 is the default of `tempo-search solve game24`.
GAME24_MAX_NEW_TOKENS = 96


def _options(params: Mapping[str, Any], names: tuple[str, ...], runner: str) -> dict[str, Any]:
    """Return the keyword arguments in `params` (without model and seed); raise on unknown keys."""
    known = {*names, "model", "seed"}
    unknown = sorted(set(params) - known)
    if unknown:
        raise ValueError(
            f"runner {runner!r} got unknown parameter {unknown[0]!r}; its parameters are "
            f"{', '.join(sorted(known))}. Rename or remove the grid key"
        )
    return {name: params[name] for name in names if name in params}


def _model(name: Any) -> Any:
    """Return the model `name` (None = the default), loaded once in this process."""
    from tempo_search.sweep import worker_cache

    if name is not None and not isinstance(name, str):
        raise TypeError(
            f"parameter 'model' must be a model folder, .gguf path or hub id (a string) or None "
            f"for the default model, got {type(name).__name__} {name!r}"
        )
    return worker_cache(("model", name), lambda: _load_quietly(name))


def _load_quietly(name: str | None) -> Any:
    # The weight-loading bar of transformers would interleave with the sweep's own bar, once per
    # worker process, so it is off while the model loads and restored afterwards.
    from transformers.utils import logging as transformers_logging

    from tempo_search.models import load_model

    was_enabled = transformers_logging.is_progress_bar_enabled()
    transformers_logging.disable_progress_bar()
    try:
        return load_model(name)
    finally:
        if was_enabled:
            transformers_logging.enable_progress_bar()


def _prompt(item: Any, runner: str) -> str:
    if not isinstance(item, str) or not item.strip():
        raise ValueError(
            f"runner {runner!r} needs each item to be a prompt string, got {item!r}; "
            "set items (or prompts) to a list of strings"
        )
    return item


@register_runner("generate")
def run_generate(params: dict[str, Any], item: Any) -> dict[str, Any]:
    """TEMPO generation of the prompt `item`.

    Params: model, threshold, max_new_tokens, max_width, mode (see `generate`), seed.
    Metrics: steps, forward_passes, tokens_forwarded, distinct_2 (of the best path's text),
    mean_set_width (mean parallel-set size), generate_seconds.
    """
    from tempo_search.generate import generate
    from tempo_search.metrics import distinct_n

    options = _options(params, GENERATE_PARAMETERS, "generate")
    prompt = _prompt(item, "generate")
    model = _model(params.get("model"))
    result = generate(model, prompt, seed=params.get("seed"), **options)
    widths = [len(step.tokens) for step in result.steps]
    return {
        "steps": result.stats.generated_steps,
        "forward_passes": result.stats.forward_passes,
        "tokens_forwarded": result.stats.tokens_forwarded,
        "distinct_2": distinct_n([result.best_text], 2),
        "mean_set_width": sum(widths) / len(widths) if widths else 0.0,
        "generate_seconds": result.stats.seconds,
    }


@register_runner("search")
def run_search(params: dict[str, Any], item: Any) -> dict[str, Any]:
    """MCTS over the prompt `item`.

    Params: model, num_simulations, c_puct, widening ("p0,p1,p2,p3"), batch_size, rollout,
    rollout_depth, max_new_tokens, max_width, prior (see `search`), seed.
    Metrics: simulations, nodes, forward_passes, tokens_forwarded, value (mean value of the best
    completion, NaN when there is none), distinct_2 (over the top completions), search_seconds.
    """
    from tempo_search.metrics import distinct_n
    from tempo_search.search import search

    options = _options(params, SEARCH_PARAMETERS, "search")
    prompt = _prompt(item, "search")
    model = _model(params.get("model"))
    result = search(model, prompt, seed=params.get("seed", 0), **options)
    texts = [completion.text for completion in result.completions]
    stats = result.stats
    return {
        "simulations": stats.simulations,
        "nodes": stats.nodes,
        "forward_passes": stats.forward_passes,
        "tokens_forwarded": stats.tokens_forwarded,
        "value": result.completions[0].score if result.completions else math.nan,
        "distinct_2": distinct_n(texts, 2) if texts else 0.0,
        "search_seconds": stats.seconds,
    }


def _puzzle_numbers(item: Any) -> list[int]:
    if isinstance(item, str):
        parts = item.replace(",", " ").split()
        if all(part.strip().lstrip("-").isdigit() for part in parts):
            return [int(part) for part in parts]
    elif isinstance(item, list) and all(
        isinstance(n, int) and not isinstance(n, bool) for n in item
    ):
        return item
    raise ValueError(
        f"runner 'game24' needs each item to be four numbers such as '4 9 10 13' or "
        f"[4, 9, 10, 13], got {item!r}"
    )


@register_runner("game24")
def run_game24(params: dict[str, Any], item: Any) -> dict[str, Any]:
    """Search for a Game of 24 solution of the puzzle `item` ("4 9 10 13" or [4, 9, 10, 13]).

    Params: as `run_search`; max_new_tokens defaults to `GAME24_MAX_NEW_TOKENS` (96).
    Metrics: solved (the search found an answer the task accepts), verified (the exact verifier
    accepts the returned answer), simulations, forward_passes, search_seconds.
    """
    from tempo_search.search import search
    from tempo_search.tasks import Game24Task

    options = {
        "max_new_tokens": GAME24_MAX_NEW_TOKENS,
        **_options(params, SEARCH_PARAMETERS, "game24"),
    }
    task = Game24Task(_puzzle_numbers(item))
    model = _model(params.get("model"))
    result = search(model, task=task, seed=params.get("seed", 0), **options)
    report = result.task_report or {}
    return {
        "solved": bool(result.solved),
        "verified": bool(report.get("verified", False)),
        "simulations": result.stats.simulations,
        "forward_passes": result.stats.forward_passes,
        "search_seconds": result.stats.seconds,
    }
