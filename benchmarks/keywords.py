"""Keyword-constraint benchmark: MCTS with the keyword task against sampling and beam search.

Run `python -m benchmarks.keywords [--quick] [--sets N] [--skip K] [--simulations S] [--out DIR]`,
or `python -m benchmarks.keywords --table RECORD [RECORD ...]` to print the tables of saved
records, merged by set (the parts of a run resumed with `--skip`).
For each keyword set of `tempo_search/data/keyword_sets.json` the prompt "Write one sentence
that uses all of these words: w1, w2, w3." goes through the chat template, and each method
writes up to 32 new tokens. The methods run one after the other on each set (interleaved), with
the same fixed seed per set:

- "MCTS": `search` with `constraints_task(keywords=...)`, 340 simulations in batches of 8 with
  up to 32 children per node, first tokens opened down to a prior of 0.002
  (`MCTS_ROOT_WIDENING`) and later ones down to 0.01 (`MCTS_WIDENING`), the keyword
  guide at its default share (`search.DEFAULT_GUIDE`: the prior mixes in the LM's
  probabilities of the tokens that start a missing word) and a greedy rollout from every new
  node to the length limit, so each simulation scores a whole text. The max backup
  (`backup="max"`) steers selection toward the best text found below each token rather than
  the mean, and skips finished texts. A child on its parent's rollout takes the rest of that
  rollout at no forward. The search spends its whole budget (`stop_when_solved=False`) and
  returns the most likely text (mean token log-probability, end-of-sequence left out) that
  covers every word, or its most visited path when none does.
- "sampling + rejection": batches of 4 samples at temperature 1 (`top_k=0`, `top_p=1`) until
  a sample covers every word or the forward budget of MCTS on that set is used. The first
  sample with full coverage is kept, else the one with the best coverage (the first on ties).
- "beam search + rerank": `num_beams=4, num_return_sequences=4`, the beam with the best
  coverage (the higher-ranked beam on ties).
- "beam search + rerank, same forwards": the same with as many beams as the MCTS forwards on
  that set pay for over `max_new_tokens` steps (`forwards * 4 / max_new_tokens`, 4 to
  `MAX_BEAMS`), every beam returned and reranked. Early stopping can end it below the budget.

Forward accounting. One forward is one model call over at most 4 rows with one new token each, and
a call over more rows counts `ceil(rows / 4)` forwards. An MCTS call sends its new tree children
and rollout steps side by side, one token per row (`SearchStats.forward_sizes`), so it counts
`ceil(tokens / 4)`, and its prefill counts one (`mcts_forwards`). `model_calls` records the calls
themselves. A `model.generate` call over 4 rows that returns `steps` new tokens costs
`rows * steps / 4 = steps` forwards: the prefill yields the first token, and each later token
needs one forward. Each sampling batch prefills the prompt again, and that prefill counts as
one forward, as the prefill of MCTS does. Sampling draws another batch while the forwards used
are below the MCTS count, with `max_new_tokens` capped at the forwards left, so a last batch can
be cut short. The first batch always gets `max_new_tokens`, so sampling passes the budget only
when MCTS used fewer forwards than one batch. Reported forwards are the ones actually used.

Metrics per method: mean keyword coverage (`metrics.keyword_coverage`), the share of sets with
full coverage, and forwards per set. The mean perplexity is that of the chosen text given the
chat prompt under the same model (`metrics.perplexity`). An empty text has no perplexity, so
the mean skips it. The tables add the mean share of repeated 4-grams in the chosen texts
(`metrics.repetition_rate`), since a text that loops is likely under the model.
"""

from __future__ import annotations

import argparse
import collections
import dataclasses
import json
import logging
import math
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from importlib import resources
from typing import Any

import torch

from benchmarks._common import machine_info, utc_now, write_record
from tempo_search.metrics import keyword_coverage, perplexity, repetition_rate
from tempo_search.models import LoadedModel, load_model
from tempo_search.policies.values import ValueWeights
from tempo_search.schedules import BezierSchedule
from tempo_search.search import DEFAULT_WIDENING_SCHEDULE, search
from tempo_search.tasks.constraints import constraints_task

logger = logging.getLogger(__name__)

MAX_NEW_TOKENS = 32
MCTS_SIMULATIONS = 340
"""Simulations of the MCTS method. In exploratory runs on keyword sets 11 to 30 (not recorded),
150 simulations covered every word of every set at mean perplexity 2.38, and 250 at 2.21. The
first runs used 60; the 100-set runs up to commit e468725 used 250 in batches of 4, and up to
commit 61b55a7 used 500 (commit 138f2eb set 220 but made no 100-set run). Since then, the max
backup skips finished texts, so every simulation opens a node and costs more forwards. In
exploratory runs (not recorded) with `MCTS_ROOT_WIDENING`, 380 simulations cost 1,249 forwards
per set on 20 sets where the record of 500 cost 1,119. At 340, the 100-set run with `--jobs 2` at commit
bf2ad2c spent 1,123 forwards per set and took 109 minutes. A run of 1,000 simulations in
batches of 32 (`keywords-20261205T210435Z.json`, stopped by its time limit after 71 sets)
gave no lower perplexity than the wide beam search at its forwards (2.08 against 2.06), and
27 of its 71 texts repeat a 4-gram, against 4 of the wide beam's, so 340 in batches of 8
stays."""
MCTS_BATCH_SIZE = 8
"""Leaves per batch. Eight leaves send more rows per model call than four. With 500
simulations and 8 children per node, batches of 8 cost about 970 forwards per set (in 4-row
forwards), and batches of 4 made about 1,150 calls of 2 rows on average. In exploratory runs
on keyword sets 13 to 27 (not recorded), both covered every word, at mean perplexity 2.16 and
2.18; 250 simulations in batches of 4 covered 14 of the 15 sets at 2.20."""
MCTS_MAX_WIDTH = 32
"""Most children a node opens (`max_width`; the search default is 8). In exploratory runs on
keyword sets 41 to 56 (not recorded), 500 simulations in batches of 8 covered every word at
mean perplexity 2.26 with 8 children and 2.17 with 32."""
MCTS_WIDENING = DEFAULT_WIDENING_SCHEDULE
"""Progressive widening below the root: the search default, whose floor is a prior of 0.01."""
MCTS_ROOT_WIDENING = BezierSchedule(1.0, 0.25, 0.05, 0.002)
"""Progressive widening at the root: the prior a first token needs to be opened falls from 1
to 0.002 over the root's first 32 visits. With the default floor of 0.01, `max_width=32`
opened only the first tokens above 1 % prior. On kw-064 the first token "This" (prior 0.0075)
leads by greedy decoding to a text that covers every word at perplexity 2.06, below the 2.47
that the record of 500 simulations found. In exploratory runs (not recorded) on 16 sets
(kw-021 to kw-030 and kw-061 to kw-070), mean perplexity was 2.15 with this floor at the root
only (380 simulations). It was 2.19 with the floor at every node (240 simulations), and 2.19
with the default schedule everywhere (400 simulations). A low floor deep in the tree spends
simulations on unlikely tokens (kw-021: 3.53 at every node, 2.92 at the root only)."""
MCTS_BACKUP = "max"
"""Backup rule of the MCTS method: a token's Q is the best text found below it, rescaled over
its siblings (`search(backup="max")`). In exploratory runs on keyword sets 1 to 10 (not
recorded), mean perplexity of the chosen texts was 2.11 with the mean backup and 2.05 with
this rule, both at full coverage."""
MCTS_VALUE = ValueWeights()
"""Value weights of the MCTS method: the search default, likelihood (1 / perplexity of the text
found below a node) and keyword coverage weighted 1 and 1. In exploratory runs (not
recorded), a likelihood weight of 3 lowered the mean perplexity from 2.22 to 2.17 on 31 sets
between kw-009 and kw-070 at 500 simulations. On kw-021 to kw-031 at 400 simulations, it was
worse than weights of 1 and 1 on 3 sets, by up to 1.36 (kw-031: 3.50 against 2.14). So the
default stays."""
MCTS_ROLLOUT = "greedy"
"""Rollout policy of the MCTS method; each rollout runs to `max_new_tokens`. Without rollouts
(the setting of the first run), 60 simulations left most texts unfinished: 35 % full coverage
on 100 sets, against 40 % for beam search with reranking."""
ROWS_PER_FORWARD = 4
"""Rows one forward counts for: the beams of the 4-beam search and the samples of a batch."""
TEMPERATURE = 1.0
SEED = 0
FULL_SETS = 100
QUICK_SETS = 5
PROMPT_TEMPLATE = "Write one sentence that uses all of these words: {words}."

METHODS = (
    "MCTS",
    "sampling + rejection",
    "beam search + rerank",
    "beam search + rerank, same forwards",
)
MAX_BEAMS = 512
"""Most beams of the wide beam search, to bound its memory: 512 beams pay for 4,096 forwards.
The 100-set record of 500 simulations (`keywords-20261205T113006Z.json`) paid for 136 beams on
average, and its 12 costliest sets reached the cap of 192 that it had. The 100-set record at
commit bf2ad2c paid for 140 beams on average and at most 218, and the run of 1,000 simulations
in batches of 32 (see `MCTS_SIMULATIONS`) for 262 and at most 377, under a cap of 512."""


def _keyword_set_entries() -> list[dict[str, Any]]:
    """Return every packaged keyword set (`{"id", "words"}`)."""
    path = resources.files("tempo_search") / "data" / "keyword_sets.json"
    return json.loads(path.read_text(encoding="utf-8"))


def select_keyword_sets(num_sets: int, skip: int = 0) -> list[dict[str, Any]]:
    """Return the `num_sets` packaged keyword sets after the first `skip`, or raise ValueError
    naming the invalid value and the fix."""
    if isinstance(skip, bool) or not isinstance(skip, int) or skip < 0:
        raise ValueError(f"skip={skip!r} must be an int >= 0, the number of sets to leave out.")
    if isinstance(num_sets, bool) or not isinstance(num_sets, int) or num_sets < 1:
        raise ValueError(f"num_sets={num_sets!r} must be a positive int, such as 100.")
    entries = _keyword_set_entries()
    if skip + num_sets > len(entries):
        raise ValueError(
            f"skip={skip} with num_sets={num_sets} reaches past the {len(entries)} keyword "
            f"sets; lower one of them so that skip + num_sets <= {len(entries)}."
        )
    return entries[skip : skip + num_sets]


def load_keyword_sets(count: int) -> list[dict[str, Any]]:
    """Return the first `count` entries (`{"id", "words"}`) of the packaged keyword sets."""
    entries = _keyword_set_entries()
    if isinstance(count, bool) or not isinstance(count, int) or not 1 <= count <= len(entries):
        raise ValueError(f"count={count!r} must be an integer from 1 to {len(entries)}.")
    return entries[:count]


def build_prompt(words: Sequence[str]) -> str:
    return PROMPT_TEMPLATE.format(words=", ".join(words))


def chat_prompt_text(loaded: LoadedModel, prompt: str) -> str:
    """Return `prompt` as one user message rendered by the chat template, as text."""
    messages = [{"role": "user", "content": prompt}]
    return loaded.tokenizer.apply_chat_template(
        messages, add_generation_prompt=True, tokenize=False
    )


# --------------------------------------------------------------------------- methods


def _generate_rows(
    loaded: LoadedModel,
    prompt_ids: list[int],
    *,
    max_new_tokens: int,
    rows: int = ROWS_PER_FORWARD,
    **options: Any,
) -> tuple[list[str], int]:
    """Run `model.generate` on `rows` rows and return `(texts, forwards)`, with forwards =
    `rows * steps / 4` (new tokens times rows, in forwards of 4 rows)."""
    input_ids = torch.tensor([prompt_ids], device=loaded.device)
    eos = sorted(loaded.eos_token_ids)
    with torch.no_grad():
        output = loaded.model.generate(
            input_ids=input_ids,
            attention_mask=torch.ones_like(input_ids),
            max_new_tokens=max_new_tokens,
            min_new_tokens=1,
            num_return_sequences=rows,
            pad_token_id=eos[0] if eos else 0,
            eos_token_id=eos or None,
            **options,
        )
    new = output[:, len(prompt_ids) :]  # [rows, steps]
    texts = [loaded.tokenizer.decode(row, skip_special_tokens=True) for row in new.tolist()]
    rows, steps = int(new.shape[0]), int(new.shape[1])
    return texts, math.ceil(rows * steps / ROWS_PER_FORWARD)


def mcts_forwards(forward_sizes: dict[int, int]) -> int:
    """Return the forwards of a search in units of `ROWS_PER_FORWARD` rows: one for the
    prefill, and `ceil(tokens / ROWS_PER_FORWARD)` for each later call
    (`SearchStats.forward_sizes`, `{tokens: calls}`)."""
    return 1 + sum(
        count * math.ceil(size / ROWS_PER_FORWARD) for size, count in forward_sizes.items()
    )


def run_mcts(
    loaded: LoadedModel,
    prompt: str,
    words: Sequence[str],
    *,
    simulations: int,
    max_new_tokens: int,
    seed: int,
) -> dict[str, Any]:
    result = search(
        loaded,
        prompt,
        task=constraints_task(keywords=list(words)),
        chat=True,
        num_simulations=simulations,
        batch_size=MCTS_BATCH_SIZE,
        max_new_tokens=max_new_tokens,
        rollout=MCTS_ROLLOUT,
        rollout_depth=max_new_tokens,
        stop_when_solved=False,
        max_width=MCTS_MAX_WIDTH,
        widening=MCTS_WIDENING,
        root_widening=MCTS_ROOT_WIDENING,
        backup=MCTS_BACKUP,
        value=MCTS_VALUE,
        seed=seed,
    )
    return {
        "text": result.text,
        "forward_passes": mcts_forwards(result.stats.forward_sizes),
        "model_calls": result.stats.forward_passes,
        "simulations": result.stats.simulations,
        "stopped_by": result.stats.stopped_by,
        "reused_rollouts": result.stats.reused_rollouts,
    }


def run_sampling(
    loaded: LoadedModel,
    prompt_ids: list[int],
    words: Sequence[str],
    *,
    budget: int,
    max_new_tokens: int,
    seed: int,
) -> dict[str, Any]:
    """Sample batches of 4 until one sample covers every word or `budget` forwards are used."""
    torch.manual_seed(seed)
    used = 0
    samples = 0
    best_text, best_coverage = "", -1.0
    while True:
        # A batch after the first gets only the forwards left, so it may end truncated.
        length = max_new_tokens if used == 0 else min(max_new_tokens, budget - used)
        texts, forwards = _generate_rows(
            loaded,
            prompt_ids,
            max_new_tokens=length,
            do_sample=True,
            temperature=TEMPERATURE,
            top_k=0,
            top_p=1.0,
        )
        used += forwards
        for text in texts:
            samples += 1
            coverage = keyword_coverage(text, words)
            if coverage > best_coverage:
                best_text, best_coverage = text, coverage
            if coverage == 1.0:
                break
        if best_coverage == 1.0 or used >= budget:
            break
    return {"text": best_text, "forward_passes": used, "samples": samples}


def run_beam(
    loaded: LoadedModel, prompt_ids: list[int], words: Sequence[str], *, max_new_tokens: int
) -> dict[str, Any]:
    texts, forwards = _generate_rows(
        loaded,
        prompt_ids,
        max_new_tokens=max_new_tokens,
        num_beams=ROWS_PER_FORWARD,
        do_sample=False,
        early_stopping=True,
    )
    coverages = [keyword_coverage(text, words) for text in texts]
    best = max(range(len(texts)), key=lambda i: (coverages[i], -i))
    return {"text": texts[best], "forward_passes": forwards, "beams": len(texts)}


def run_wide_beam(
    loaded: LoadedModel,
    prompt_ids: list[int],
    words: Sequence[str],
    *,
    budget: int,
    max_new_tokens: int,
) -> dict[str, Any]:
    """Beam search with as many beams as the forward `budget` pays for over `max_new_tokens`
    steps (`budget * 4 / max_new_tokens`, from 4 to `MAX_BEAMS`), all returned and reranked."""
    beams = max(ROWS_PER_FORWARD, min(MAX_BEAMS, round(budget * ROWS_PER_FORWARD / max_new_tokens)))
    texts, forwards = _generate_rows(
        loaded,
        prompt_ids,
        max_new_tokens=max_new_tokens,
        rows=beams,
        num_beams=beams,
        do_sample=False,
        early_stopping=True,
    )
    coverages = [keyword_coverage(text, words) for text in texts]
    best = max(range(len(texts)), key=lambda i: (coverages[i], -i))
    return {"text": texts[best], "forward_passes": forwards, "beams": beams}


# --------------------------------------------------------------------------- run


def _mean(values: Sequence[float]) -> float | None:
    finite = [v for v in values if v is not None and math.isfinite(v)]
    return statistics.fmean(finite) if finite else None


def summarise(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Return the metrics of one method over its per-set rows."""
    coverages = [row["coverage"] for row in rows]
    return {
        "keyword_coverage_mean": _mean(coverages),
        "full_coverage_share": sum(c == 1.0 for c in coverages) / len(coverages),
        "perplexity_mean": _mean([row["perplexity"] for row in rows]),
        "perplexity_missing": sum(not math.isfinite(row["perplexity"]) for row in rows),
        "forward_passes_mean": _mean([row["forward_passes"] for row in rows]),
    }


def _run_set(
    loaded: LoadedModel,
    index: int,
    entry: dict[str, Any],
    simulations: int,
    max_new_tokens: int,
    seed: int,
) -> tuple[dict[str, dict[str, Any]], bool]:
    """Run the methods on one keyword set; return their rows and whether the rendered
    chat prompt tokenizes to the ids the search used."""
    words = entry["words"]
    prompt = build_prompt(words)
    prompt_ids = loaded.encode_prompt(prompt, chat=True)
    set_seed = seed + index

    # 1. The methods, interleaved on the same set; MCTS first, because it sets the budget.
    mcts = run_mcts(
        loaded, prompt, words, simulations=simulations, max_new_tokens=max_new_tokens, seed=set_seed
    )
    outputs = {
        "MCTS": mcts,
        "sampling + rejection": run_sampling(
            loaded,
            prompt_ids,
            words,
            budget=mcts["forward_passes"],
            max_new_tokens=max_new_tokens,
            seed=set_seed,
        ),
        "beam search + rerank": run_beam(loaded, prompt_ids, words, max_new_tokens=max_new_tokens),
        "beam search + rerank, same forwards": run_wide_beam(
            loaded,
            prompt_ids,
            words,
            budget=mcts["forward_passes"],
            max_new_tokens=max_new_tokens,
        ),
    }

    # 2. Coverage and perplexity of each chosen text given the chat prompt.
    chat_text = chat_prompt_text(loaded, prompt)
    rendered_ids = loaded.tokenizer(chat_text, add_special_tokens=True)["input_ids"]
    texts = [outputs[name]["text"] for name in METHODS]
    perplexities = perplexity(loaded, prompts=[chat_text] * len(texts), texts=texts)
    for name, value in zip(METHODS, perplexities, strict=True):
        row = outputs[name]
        row["set_id"] = entry["id"]
        row["coverage"] = keyword_coverage(row["text"], words)
        row["perplexity"] = value
    logger.info(
        "%s: %s", entry["id"], ", ".join(f"{n} {outputs[n]['coverage']:.2f}" for n in METHODS)
    )
    return outputs, list(rendered_ids) == prompt_ids


def _run_chunk(model_arg, chunk, simulations, max_new_tokens, seed, time_limit, log_level):
    """Worker of `run_keywords(jobs > 1)`: load the model, run `_run_set` on each (index,
    entry) of `chunk` until `time_limit` seconds have passed. `log_level` is the parent's, so
    that the worker's per-set lines reach its stderr."""
    torch.set_num_threads(1)
    # loky reuses workers across runs, so the level is set on every call. basicConfig adds the
    # stderr handler only once.
    logging.basicConfig(format="%(asctime)s %(message)s")
    logging.getLogger().setLevel(log_level)
    loaded = load_model(model_arg)
    start = time.perf_counter()
    done = []
    for index, entry in chunk:
        if time_limit is not None and time.perf_counter() - start > time_limit:
            logger.warning(
                "time limit reached after %d of %d sets of this worker", len(done), len(chunk)
            )
            break
        done.append((index, _run_set(loaded, index, entry, simulations, max_new_tokens, seed)))
    return done


def run_keywords(
    loaded: LoadedModel,
    *,
    num_sets: int,
    skip: int = 0,
    simulations: int = MCTS_SIMULATIONS,
    max_new_tokens: int = MAX_NEW_TOKENS,
    seed: int = SEED,
    time_limit: float | None = None,
    on_progress: Callable[[], None] | None = None,
    jobs: int = 1,
    model_arg: str | None = None,
) -> dict[str, Any]:
    """Run the methods on `num_sets` keyword sets after the first `skip` and return the section.

    Each set runs with seed `seed + its index` in the packaged list, so a run with `skip`
    gives the rows that a longer run gives for those sets: `skip` resumes a run that a time
    limit stopped, and `--table` merges the records.

    With `time_limit` (seconds) no new set starts once that much time has passed; the section
    then records `num_sets_done < num_sets_requested`. `on_progress` is called after each set.
    With `jobs` > 1 the sets are split over that many processes (joblib), each with one torch
    thread and its own copy of the model loaded from `model_arg` (a path or None for the
    embedded model); every method still runs on each set in the same process.
    """
    if isinstance(simulations, bool) or not isinstance(simulations, int) or simulations < 1:
        raise ValueError(f"simulations={simulations!r} must be a positive int, such as 250.")
    sets = select_keyword_sets(num_sets, skip)
    per_method: dict[str, list[dict[str, Any]]] = {name: [] for name in METHODS}
    start = time.perf_counter()
    prompt_tokens_match = True

    if jobs > 1:
        if not (model_arg is None or isinstance(model_arg, str)):
            raise ValueError(
                "jobs > 1 needs model_arg, a model path or None, so that workers load it."
            )
        from joblib import Parallel, delayed

        log_level = logger.getEffectiveLevel()
        indexed = list(enumerate(sets, start=skip))
        chunks = [indexed[first::jobs] for first in range(jobs)]
        results = Parallel(n_jobs=jobs, backend="loky")(
            delayed(_run_chunk)(
                model_arg, chunk, simulations, max_new_tokens, seed, time_limit, log_level
            )
            for chunk in chunks
        )
        done_sets = sorted((item for chunk in results for item in chunk), key=lambda x: x[0])
    else:
        done_sets = []
        for index, entry in enumerate(sets, start=skip):
            if time_limit is not None and time.perf_counter() - start > time_limit:
                logger.warning("time limit reached after %d of %d sets", index - skip, len(sets))
                break
            done_sets.append(
                (index, _run_set(loaded, index, entry, simulations, max_new_tokens, seed))
            )
            if on_progress is not None:
                on_progress()
    for _, (outputs, match) in done_sets:
        prompt_tokens_match &= match
        for name in METHODS:
            per_method[name].append(outputs[name])

    done = len(per_method["MCTS"])
    methods = {
        name: {"summary": summarise(rows), "sets": rows} for name, rows in per_method.items()
    }
    for method in methods.values():
        for row in method["sets"]:
            if not math.isfinite(row["perplexity"]):
                row["perplexity"] = None  # JSON has no NaN
    return {
        "settings": {
            "num_sets_requested": num_sets,
            "sets_skipped": skip,
            "num_sets_done": done,
            "mcts_simulations": simulations,
            "mcts_batch_size": MCTS_BATCH_SIZE,
            "mcts_max_width": MCTS_MAX_WIDTH,
            "mcts_widening": dataclasses.asdict(MCTS_WIDENING),
            "mcts_root_widening": dataclasses.asdict(MCTS_ROOT_WIDENING),
            "mcts_backup": MCTS_BACKUP,
            "mcts_value_weights": dataclasses.asdict(MCTS_VALUE),
            "mcts_rollout": MCTS_ROLLOUT,
            "rows_per_forward": ROWS_PER_FORWARD,
            "max_new_tokens": max_new_tokens,
            "sampling_temperature": TEMPERATURE,
            "seed": seed,
            "model": loaded.name,
            "prompt_template": PROMPT_TEMPLATE,
            "perplexity_prompt_tokens_match_search": prompt_tokens_match,
            "seconds": round(time.perf_counter() - start, 1),
        },
        "methods": methods,
    }


def goal_met(section: dict[str, Any]) -> bool:
    """Return whether MCTS reached full coverage on every set at lower mean perplexity than
    both baselines."""
    methods = section["methods"]
    mcts = methods["MCTS"]["summary"]
    if mcts["full_coverage_share"] < 1.0 or mcts["perplexity_mean"] is None:
        return False
    return all(
        s["perplexity_mean"] is None or mcts["perplexity_mean"] < s["perplexity_mean"]
        for name, s in ((n, m["summary"]) for n, m in methods.items())
        if name != "MCTS"
    )


def format_table(section: dict[str, Any]) -> str:
    """Return the Markdown table of the section, one row per method.

    The last column is the mean share of repeated 4-grams in the chosen texts
    (`metrics.repetition_rate`), computed from the per-set texts: perplexity rewards a text
    that repeats itself, so a low perplexity with a high repetition is a loop, not fluency."""

    def show(value: float | None, digits: int) -> str:
        return "n/a" if value is None else f"{value:.{digits}f}"

    lines = [
        "| method | mean coverage | full coverage | mean perplexity | forwards per set "
        "| repeated 4-grams |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for name, method in section["methods"].items():
        s = method["summary"]
        repeated = repetition_rate([row["text"] for row in method["sets"]], n=4)
        lines.append(
            f"| {name} | {show(s['keyword_coverage_mean'], 3)} "
            f"| {100 * s['full_coverage_share']:.0f} % | {show(s['perplexity_mean'], 2)} "
            f"| {show(s['forward_passes_mean'], 1)} | {100 * repeated:.1f} % |"
        )
    return "\n".join(lines)


def paired_perplexities(section: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Return, for each baseline, the mean perplexity of MCTS and of the baseline on the sets
    where both texts cover every word (`{"sets", "mcts", "baseline"}`, means None on no set).

    The means of `summarise` also count texts that miss words, which are often more likely
    than any covering text; this comparison leaves them out."""
    rows = {name: method["sets"] for name, method in section["methods"].items()}
    mcts_rows = {row["set_id"]: row for row in rows["MCTS"]}
    paired = {}
    for name, baseline_rows in rows.items():
        if name == "MCTS":
            continue
        pairs = [
            (mcts_rows[row["set_id"]]["perplexity"], row["perplexity"])
            for row in baseline_rows
            if row["coverage"] == 1.0
            and row["set_id"] in mcts_rows
            and mcts_rows[row["set_id"]]["coverage"] == 1.0
        ]
        pairs = [(a, b) for a, b in pairs if a is not None and b is not None]
        paired[name] = {
            "sets": len(pairs),
            "mcts": _mean([a for a, _ in pairs]),
            "baseline": _mean([b for _, b in pairs]),
        }
    return paired


def format_paired_table(section: dict[str, Any]) -> str:
    """Return the Markdown table of `paired_perplexities`, one row per baseline."""
    lines = [
        "| baseline | sets both cover | MCTS perplexity | baseline perplexity |",
        "|---|---:|---:|---:|",
    ]
    for name, pair in paired_perplexities(section).items():
        mcts = "n/a" if pair["mcts"] is None else f"{pair['mcts']:.2f}"
        baseline = "n/a" if pair["baseline"] is None else f"{pair['baseline']:.2f}"
        lines.append(f"| {name} | {pair['sets']} | {mcts} | {baseline} |")
    return "\n".join(lines)


def _parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.keywords",
        description="Keyword coverage of MCTS against sampling with rejection and beam search.",
    )
    parser.add_argument(
        "--quick", action="store_true", help=f"{QUICK_SETS} sets instead of {FULL_SETS}"
    )
    parser.add_argument("--sets", type=int, default=None, help="number of keyword sets")
    parser.add_argument(
        "--skip",
        type=int,
        default=0,
        help="leave out the first N sets, to resume a run stopped by --time-limit (default 0)",
    )
    parser.add_argument(
        "--simulations",
        type=int,
        default=MCTS_SIMULATIONS,
        help=f"MCTS simulations per set (default {MCTS_SIMULATIONS})",
    )
    parser.add_argument(
        "--time-limit",
        type=float,
        default=None,
        help="seconds after which no new set starts (default: none)",
    )
    parser.add_argument("--model", default=None, help="model path (default: embedded SmolLM2)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    parser.add_argument(
        "--jobs", type=int, default=1, help="processes, each with one thread (default 1)"
    )
    parser.add_argument("--out", default=None, help="folder for the JSON record")
    parser.add_argument(
        "--table",
        metavar="RECORD",
        nargs="+",
        default=None,
        help="print the tables of saved records (keywords-*.json), merged by set, and run nothing",
    )
    return parser.parse_args(argv)


_RUN_SETTINGS = ("num_sets_requested", "num_sets_done", "sets_skipped", "seconds")
"""Settings that differ between the parts of one run split by `--skip`."""


def merge_sections(sections: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Return one section with the per-set rows of `sections` (records of runs split with
    `--skip`), ordered by set id, and summaries computed again.

    Raises ValueError when the sections ran with different settings (other than their set
    counts and times) or share a set."""
    first = sections[0]
    settings = [
        {key: value for key, value in section["settings"].items() if key not in _RUN_SETTINGS}
        for section in sections
    ]
    for index, other in enumerate(settings[1:], start=2):
        if other != settings[0]:
            differ = sorted(
                key
                for key in other.keys() | settings[0].keys()
                if other.get(key) != settings[0].get(key)
            )
            raise ValueError(
                f"record {index} ran with other settings than record 1 ({', '.join(differ)}); "
                "merge only the parts of one run, split with --skip."
            )
    methods = {}
    for name in first["methods"]:
        rows = [row for section in sections for row in section["methods"][name]["sets"]]
        counts = collections.Counter(row["set_id"] for row in rows)
        repeated = sorted(set_id for set_id, count in counts.items() if count > 1)
        if repeated:
            raise ValueError(
                f"sets {', '.join(repeated)} appear in more than one record; merge records of "
                "disjoint sets (--skip N leaves out the first N)."
            )
        rows = sorted(rows, key=lambda row: row["set_id"])
        # Records store a missing perplexity as None (JSON has no NaN), and `summarise` counts NaN.
        scored = [
            {**row, "perplexity": math.nan if row["perplexity"] is None else row["perplexity"]}
            for row in rows
        ]
        methods[name] = {"summary": summarise(scored), "sets": rows}
    totals = {
        key: sum(section["settings"][key] for section in sections)
        for key in ("num_sets_requested", "num_sets_done")
    }
    return {
        "settings": {**first["settings"], **totals},
        "methods": methods,
    }


def _write_tables(section: dict[str, Any]) -> None:
    sys.stdout.write(format_table(section) + "\n\n" + format_paired_table(section) + "\n")
    sys.stdout.write(f"goal met: {goal_met(section)}\n")


def _load_record(path: str) -> dict[str, Any]:
    """Return the keywords record at `path`, or raise ValueError naming the path and the fix."""
    try:
        with open(path, encoding="utf-8") as file:
            record = json.load(file)
    except (OSError, json.JSONDecodeError) as error:
        raise ValueError(
            f"--table {path!r}: failed to read a JSON record ({error}); pass a keywords-*.json "
            "that `python -m benchmarks.keywords --out DIR` wrote."
        ) from error
    if not isinstance(record, dict) or record.get("benchmark") != "keywords":
        raise ValueError(
            f'--table {path!r} is not a keywords record (no "benchmark": "keywords"); pass '
            "a keywords-*.json that `python -m benchmarks.keywords --out DIR` wrote."
        )
    return record


def main(argv: Sequence[str] | None = None) -> int:
    args = _parse_args(argv)
    if args.table is not None:
        try:
            section = merge_sections([_load_record(path) for path in args.table])
        except ValueError as error:
            sys.stderr.write(f"error: {error}\n")
            return 2
        _write_tables(section)
        return 0
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    torch.set_num_threads(args.threads)
    num_sets = QUICK_SETS if args.quick else FULL_SETS
    if args.sets is not None:
        num_sets = args.sets
    try:
        select_keyword_sets(num_sets, args.skip)  # checks --sets and --skip before the model loads
    except ValueError as error:
        sys.stderr.write(f"error: {error}\n")
        return 2
    loaded = load_model(args.model)
    section = run_keywords(
        loaded,
        num_sets=num_sets,
        skip=args.skip,
        simulations=args.simulations,
        time_limit=args.time_limit,
        jobs=args.jobs,
        model_arg=args.model,
    )
    section["goal_met"] = goal_met(section)
    _write_tables(section)
    if args.out is not None:
        record = {
            "benchmark": "keywords",
            "command": "python -m benchmarks.keywords " + " ".join(sys.argv[1:]),
            "time": utc_now(),
            "machine": machine_info(),
            **section,
        }
        sys.stdout.write(f"record: {write_record('keywords', record, args.out)}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
