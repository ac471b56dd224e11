"""Engine benchmarks: the parallel-token step and the cost of capturing attention weights.

Run `python -m benchmarks.engine [--quick] [--out DIR]`. It loads the embedded
SmolLM2-135M-Instruct (or `--model`), prints Markdown tables and, with `--out`, writes a JSON
record with the raw samples and the machine description.

Every ratio compares calls timed side by side in one process: each repetition runs every
variant once, in an order that alternates between repetitions, after warm-up repetitions that
are not recorded. Figures are medians over the recorded repetitions.
"""

from __future__ import annotations

import argparse
import logging
import statistics
import sys
from collections.abc import Sequence
from typing import Any

import torch

from benchmarks._common import (
    describe_machine,
    load_average,
    machine_info,
    median,
    milliseconds,
    timed,
    utc_now,
    write_record,
)
from tempo_search.generate import generate
from tempo_search.models import LoadedModel, load_model
from tempo_search.tree_state import ROOT, TreeState, cache_argument_name

logger = logging.getLogger(__name__)

DEFAULT_WIDTHS = (1, 4, 8, 16)
"""Sibling counts K of the parallel-step benchmark."""

PARALLEL_STEP_PROMPT = (
    "The old lighthouse keeper climbed the spiral stairs every evening at dusk, carrying a "
    "lantern and a notebook in which he recorded the ships that passed, the colour of the sea "
    "and the direction of the wind."
)
"""Prompt of the parallel-step and capture benchmarks: 40 tokens with the SmolLM2 tokenizer."""

GENERATION_PROMPTS: tuple[dict[str, Any], ...] = (
    {
        "name": "story",
        "prompt": "Once upon a time, in a small village at the edge of a dark forest, there lived",
        "chat": False,
    },
    {"name": "factual", "prompt": "Q: Why is the sky blue?\nA:", "chat": False},
    {
        "name": "chat",
        "prompt": "Give me three tips for writing clear and polite emails to a colleague.",
        "chat": True,
    },
)
"""Prompts of the generation benchmark: a story opening, a factual question, a chat request."""

DEFAULT_REPETITIONS = 20
DEFAULT_WARMUP = 3


# --------------------------------------------------------------------------- helpers


def _check_budget(repetitions: int, warmup: int) -> None:
    if not isinstance(repetitions, int) or repetitions < 1:
        raise ValueError(f"repetitions={repetitions!r} must be an integer of at least 1.")
    if not isinstance(warmup, int) or warmup < 0:
        raise ValueError(f"warmup={warmup!r} must be a non-negative integer.")


def _candidates(logits: torch.Tensor, count: int) -> list[int]:
    """Return the `count` most likely next tokens of `logits` `[vocab_size]`, most likely first."""
    if count > logits.shape[-1]:
        raise ValueError(
            f"{count} candidates requested but the vocabulary has {logits.shape[-1]} tokens; "
            "pass smaller widths."
        )
    return [int(i) for i in torch.topk(logits, count).indices]


def _ordered(names: Sequence[str], repetition: int) -> list[str]:
    """Rotate the variant order by one place per repetition so that no variant always runs first."""
    shift = repetition % len(names)
    return [*names[shift:], *names[:shift]]


def _paired_ratios(numerators: Sequence[float], denominators: Sequence[float]) -> list[float]:
    """`numerator / denominator` per repetition, the two timed in the same repetition."""
    return [n / d for n, d in zip(numerators, denominators, strict=True)]


def _quartiles(values: Sequence[float]) -> list[float]:
    """First and third quartiles of `values` (both the one value when there is only one)."""
    if len(values) == 1:
        return [round(values[0], 3)] * 2
    first, _, third = statistics.quantiles(values, n=4, method="inclusive")
    return [round(first, 3), round(third, 3)]


class _PlainDecoder:
    """A prompt in its own KV cache, forwarded one token at a time and cropped back after each.

    This is what decoding one candidate alone costs: a plain model forward of one token at
    position P over the prompt's cache, with no tree mask. The crop (the operation
    `TreeState.rewind` uses) restores the cache between candidates and is not timed.
    """

    def __init__(self, net, prompt_ids: list[int]) -> None:
        from transformers import DynamicCache

        self.net = net
        self.prompt_length = len(prompt_ids)
        self.device = next(net.parameters()).device
        self.cache = DynamicCache()
        self._cache_kwarg = cache_argument_name(net)
        with torch.no_grad():
            net(
                input_ids=torch.tensor([prompt_ids], device=self.device),
                **{self._cache_kwarg: self.cache},
                use_cache=True,
            )

    def forward(self, token_id: int) -> tuple[float, torch.Tensor]:
        """Time one single-token forward; return `(seconds, logits [vocab_size])`."""
        input_ids = torch.tensor([[token_id]], device=self.device)
        position_ids = torch.tensor([[self.prompt_length]], device=self.device)

        def call():
            with torch.no_grad():
                return self.net(
                    input_ids=input_ids,
                    position_ids=position_ids,
                    **{self._cache_kwarg: self.cache},
                    use_cache=True,
                )

        seconds, output = timed(call)
        self.cache.crop(-1)
        assert self.cache.get_seq_length() == self.prompt_length
        return seconds, output.logits[0, -1].float()


def _timed_expand(
    state: TreeState, token_ids: list[int], capture_layers: Sequence[int] = ()
) -> tuple[float, Any]:
    """Time one expand of `token_ids` as siblings under ROOT, then rewind it (not timed)."""
    seconds, output = timed(
        lambda: state.expand([ROOT] * len(token_ids), token_ids, capture_layers=capture_layers)
    )
    state.rewind(len(token_ids))
    return seconds, output


# --------------------------------------------------------------------------- parallel step


def parallel_step(
    model: LoadedModel,
    *,
    prompt: str = PARALLEL_STEP_PROMPT,
    widths: Sequence[int] = DEFAULT_WIDTHS,
    repetitions: int = DEFAULT_REPETITIONS,
    warmup: int = DEFAULT_WARMUP,
) -> dict[str, Any]:
    """Time one parallel-token step of K siblings against K single-token forwards.

    The parallel step is one `TreeState.expand` of the K most likely next tokens, all with
    parent ROOT at one logical position, rewound after each call. The baseline is K plain
    forwards of one token each over a second cache that contains the same prompt (see
    `_PlainDecoder`). Both run in the same repetition loop.

    Returns a dict with `prompt_tokens`, `repetitions`, `warmup`, `baseline`, and `rows`: one
    dict per K with `width`, `parallel_ms`, `single_ms`, `singles_total_ms`,
    `ratio_singles_over_parallel` (median over repetitions of the paired ratio),
    `ratio_quartiles` (its first and third quartiles), `max_logit_difference` (parallel against single logits of
    the same token, a sanity check of the tree mask) and the raw `samples_ms`.
    """
    _check_budget(repetitions, warmup)
    widths = [int(k) for k in widths]
    if not widths or min(widths) < 1:
        raise ValueError(f"widths={widths!r} must be a non-empty list of positive integers.")
    loaded = load_model(model)
    prompt_ids = loaded.encode_prompt(prompt)
    state = TreeState(loaded.model, prompt_ids)
    decoder = _PlainDecoder(loaded.model, prompt_ids)
    candidates = _candidates(state.prompt_logits, max(widths))

    parallel_s: dict[int, list[float]] = {k: [] for k in widths}
    single_s: dict[int, list[float]] = {k: [] for k in widths}
    singles_total_s: dict[int, list[float]] = {k: [] for k in widths}
    logit_difference: dict[int, float] = dict.fromkeys(widths, 0.0)

    for repetition in range(warmup + repetitions):
        recorded = repetition >= warmup
        for width in widths:
            tokens = candidates[:width]
            for variant in _ordered(["parallel", "singles"], repetition):
                if variant == "parallel":
                    seconds, output = _timed_expand(state, tokens)
                    parallel_logits = output.logits
                    if recorded:
                        parallel_s[width].append(seconds)
                    continue
                times, single_logits = [], []
                for token_id in tokens:
                    seconds, logits = decoder.forward(token_id)
                    times.append(seconds)
                    single_logits.append(logits)
                if recorded:
                    single_s[width].extend(times)
                    singles_total_s[width].append(sum(times))
            difference = (parallel_logits - torch.stack(single_logits)).abs().max().item()
            logit_difference[width] = max(logit_difference[width], difference)

    rows = []
    for width in widths:
        ratios = _paired_ratios(singles_total_s[width], parallel_s[width])
        rows.append(
            {
                "width": width,
                "parallel_ms": milliseconds(median(parallel_s[width])),
                "single_ms": milliseconds(median(single_s[width])),
                "singles_total_ms": milliseconds(median(singles_total_s[width])),
                "ratio_singles_over_parallel": round(median(ratios), 3),
                "ratio_quartiles": _quartiles(ratios),
                "max_logit_difference": logit_difference[width],
                "samples_ms": {
                    "parallel": [milliseconds(s) for s in parallel_s[width]],
                    "singles_total": [milliseconds(s) for s in singles_total_s[width]],
                },
            }
        )
    return {
        "model": loaded.name,
        "prompt_tokens": len(prompt_ids),
        "repetitions": repetitions,
        "warmup": warmup,
        "baseline": "plain one-token forward over a separate prompt cache, cropped back after "
        "each call (crop not timed)",
        "rows": rows,
    }


# --------------------------------------------------------------------------- generation


def generation_tokens(
    model: LoadedModel,
    *,
    prompts: Sequence[dict[str, Any]] = GENERATION_PROMPTS,
    threshold: float = 0.1,
    max_new_tokens: int = 32,
    modes: Sequence[str] = ("superposition", "tree"),
) -> dict[str, Any]:
    """Count the tokens `generate` forwards per generated step, per prompt and mode.

    `prompts` contains dicts with `name`, `prompt` and `chat`. `generate` runs with its default
    `max_width` and `max_paths`. Returns `threshold`, `max_new_tokens` and `rows`: one dict per
    (prompt, mode) with `prompt_tokens`, `generated_steps`, `forward_passes` (prefill included),
    `generated_tokens_forwarded` (prompt excluded), `tokens_forwarded_per_step` (the library's
    `GenerationStats.tokens_forwarded_per_step`), `mean_set_size` and the bracketed `text`.
    """
    loaded = load_model(model)
    rows = []
    for entry in prompts:
        for mode in modes:
            result = generate(
                loaded,
                entry["prompt"],
                threshold=threshold,
                max_new_tokens=max_new_tokens,
                mode=mode,
                chat=bool(entry.get("chat", False)),
            )
            stats = result.stats
            set_sizes = [len(step.tokens) for step in result.steps]
            rows.append(
                {
                    "prompt": entry["name"],
                    "mode": mode,
                    "prompt_tokens": stats.prompt_tokens,
                    "generated_steps": stats.generated_steps,
                    "forward_passes": stats.forward_passes,
                    "generated_tokens_forwarded": stats.tokens_forwarded - stats.prompt_tokens,
                    "tokens_forwarded_per_step": round(stats.tokens_forwarded_per_step, 3),
                    "mean_set_size": round(sum(set_sizes) / max(1, len(set_sizes)), 3),
                    "text": result.text,
                }
            )
    return {"threshold": threshold, "max_new_tokens": max_new_tokens, "rows": rows}


# --------------------------------------------------------------------------- capture overhead


def _sibling_mask(prompt_length: int, width: int, dtype: torch.dtype) -> torch.Tensor:
    """Additive mask `[1, 1, width, prompt_length + width]`: the prompt and each row's own slot."""
    mask = torch.full((width, prompt_length + width), torch.finfo(dtype).min, dtype=dtype)
    mask[:, :prompt_length] = 0.0
    rows = torch.arange(width)
    mask[rows, prompt_length + rows] = 0.0
    return mask[None, None]


def _timed_output_attentions(
    net, state: TreeState, token_ids: list[int]
) -> tuple[float, torch.Tensor]:
    """Time one `output_attentions=True` forward of ROOT siblings over `state`'s cache.

    Uses the same inputs as `TreeState.expand` (tokens, one logical position, sibling mask), then
    crops the cache back (not timed). Returns `(seconds, logits [width, vocab_size])`.
    """
    width = len(token_ids)
    device = next(net.parameters()).device
    input_ids = torch.tensor([token_ids], device=device)
    position_ids = torch.full((1, width), state.prompt_length, device=device)
    mask = _sibling_mask(state.prompt_length, width, next(net.parameters()).dtype).to(device)

    def call():
        with torch.no_grad():
            return net(
                input_ids=input_ids,
                position_ids=position_ids,
                attention_mask=mask,
                **{cache_argument_name(net): state.cache},
                use_cache=True,
                output_attentions=True,
            )

    seconds, output = timed(call)
    state.cache.crop(-width)
    assert len(output.attentions) == net.config.num_hidden_layers
    return seconds, output.logits[0].float()


def capture_overhead(
    model: LoadedModel,
    *,
    eager_model: LoadedModel | None = None,
    prompt: str = PARALLEL_STEP_PROMPT,
    width: int = 8,
    last_layers: int = 4,
    repetitions: int = DEFAULT_REPETITIONS,
    warmup: int = DEFAULT_WARMUP,
) -> dict[str, Any]:
    """Time one expand of `width` siblings with and without capturing attention weights.

    Variants, all in one repetition loop:
        "none": `TreeState.expand` without capture (the model's own attention, sdpa by default).
        "last": capture_layers = the last `last_layers` layers.
        "all": capture_layers = every layer.
        "eager_plain" and "eager_output_attentions" (only with `eager_model`, the same weights
            loaded with `attn_implementation="eager"`): an expand on the eager model, and one
            plain forward of the same inputs with `output_attentions=True`.

    Returns `width`, `prompt_tokens`, `layers` (per variant, the captured layer indices) and
    `rows`: per variant `median_ms`, `ratio_to_none` (median of paired ratios) with its
    `ratio_quartiles`,
    `max_logit_difference` against "none", and the raw `samples_ms`.
    """
    _check_budget(repetitions, warmup)
    if not isinstance(width, int) or width < 1:
        raise ValueError(f"width={width!r} must be an integer of at least 1.")
    if not isinstance(last_layers, int) or last_layers < 1:
        raise ValueError(f"last_layers={last_layers!r} must be an integer of at least 1.")
    loaded = load_model(model)
    prompt_ids = loaded.encode_prompt(prompt)
    state = TreeState(loaded.model, prompt_ids)
    tokens = _candidates(state.prompt_logits, width)
    num_layers = loaded.model.config.num_hidden_layers
    layers: dict[str, list[int]] = {
        "none": [],
        "last": list(range(max(0, num_layers - last_layers), num_layers)),
        "all": list(range(num_layers)),
    }
    variants = list(layers)

    eager_state = None
    if eager_model is not None:
        eager = load_model(eager_model)
        if eager.attn_implementation != "eager":
            raise ValueError(
                f"eager_model is loaded with attn_implementation={eager.attn_implementation!r}; "
                "load it with load_model(..., attn_implementation='eager')."
            )
        eager_state = TreeState(eager.model, prompt_ids)
        variants += ["eager_plain", "eager_output_attentions"]
        layers_captured = {**layers, "eager_plain": [], "eager_output_attentions": layers["all"]}
    else:
        layers_captured = dict(layers)

    samples: dict[str, list[float]] = {name: [] for name in variants}
    logit_difference: dict[str, float] = dict.fromkeys(variants, 0.0)
    for repetition in range(warmup + repetitions):
        logits: dict[str, torch.Tensor] = {}
        for name in _ordered(variants, repetition):
            if name in layers:
                seconds, output = _timed_expand(state, tokens, layers[name])
                assert sorted(output.attentions) == layers[name]
                logits[name] = output.logits
            elif name == "eager_plain":
                seconds, output = _timed_expand(eager_state, tokens)
                logits[name] = output.logits
            else:
                seconds, logits[name] = _timed_output_attentions(
                    eager_state.model, eager_state, tokens
                )
            if repetition >= warmup:
                samples[name].append(seconds)
        for name in variants:
            difference = (logits[name] - logits["none"]).abs().max().item()
            logit_difference[name] = max(logit_difference[name], difference)

    rows = []
    for name in variants:
        ratios = _paired_ratios(samples[name], samples["none"])
        rows.append(
            {
                "variant": name,
                "layers": layers_captured[name],
                "median_ms": milliseconds(median(samples[name])),
                "ratio_to_none": round(median(ratios), 3),
                "ratio_quartiles": _quartiles(ratios),
                "max_logit_difference": logit_difference[name],
                "samples_ms": [milliseconds(s) for s in samples[name]],
            }
        )
    return {
        "model": loaded.name,
        "attn_implementation": loaded.attn_implementation,
        "width": width,
        "prompt_tokens": len(prompt_ids),
        "num_layers": num_layers,
        "repetitions": repetitions,
        "warmup": warmup,
        "rows": rows,
    }


# --------------------------------------------------------------------------- report


def _format_quartiles(row: dict[str, Any]) -> str:
    # Records written before the quartiles were added have none.
    quartiles = row.get("ratio_quartiles")
    return "-" if quartiles is None else f"{quartiles[0]:.2f} to {quartiles[1]:.2f}"


def format_tables(record: dict[str, Any]) -> str:
    """Render a record of `run_benchmarks` as Markdown tables.

    "Quartiles" are the first and third quartiles of the ratio over repetitions.
    """
    lines = []
    step = record["parallel_step"]
    lines += [
        f"Parallel step, prompt of {step['prompt_tokens']} tokens, median of "
        f"{step['repetitions']} repetitions:",
        "",
        "| K | one parallel step (ms) | one single (ms) | K singles (ms) | K singles / parallel "
        "| quartiles |",
        "|---:|---:|---:|---:|---:|---:|",
    ]
    for row in step["rows"]:
        lines.append(
            f"| {row['width']} | {row['parallel_ms']:.1f} | {row['single_ms']:.1f} | "
            f"{row['singles_total_ms']:.1f} | {row['ratio_singles_over_parallel']:.2f} | "
            f"{_format_quartiles(row)} |"
        )

    generation = record["generation"]
    lines += [
        "",
        f"Generation, threshold {generation['threshold']}, max_new_tokens "
        f"{generation['max_new_tokens']}:",
        "",
        "| prompt | mode | steps | forward passes | tokens forwarded | per step | mean set size |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for row in generation["rows"]:
        lines.append(
            f"| {row['prompt']} | {row['mode']} | {row['generated_steps']} | "
            f"{row['forward_passes']} | {row['generated_tokens_forwarded']} | "
            f"{row['tokens_forwarded_per_step']:.2f} | {row['mean_set_size']:.2f} |"
        )

    capture = record["capture"]
    lines += [
        "",
        f"Attention capture, K = {capture['width']}, {capture['num_layers']} layers, median of "
        f"{capture['repetitions']} repetitions:",
        "",
        "| variant | layers captured | time (ms) | ratio to no capture | quartiles |",
        "|---|---:|---:|---:|---:|",
    ]
    for row in capture["rows"]:
        lines.append(
            f"| {row['variant']} | {len(row['layers'])} | {row['median_ms']:.1f} | "
            f"{row['ratio_to_none']:.2f} | {_format_quartiles(row)} |"
        )
    return "\n".join(lines)


def run_benchmarks(
    model: LoadedModel,
    *,
    eager_model: LoadedModel | None = None,
    widths: Sequence[int] = DEFAULT_WIDTHS,
    repetitions: int = DEFAULT_REPETITIONS,
    warmup: int = DEFAULT_WARMUP,
    max_new_tokens: int = 32,
    prompts: Sequence[dict[str, Any]] = GENERATION_PROMPTS,
) -> dict[str, Any]:
    """Run the three engine benchmarks and return one record with the machine description."""
    record: dict[str, Any] = {
        "benchmark": "engine",
        "started": utc_now(),
        "machine": machine_info(),
        "model": load_model(model).name,
    }

    logger.info("Parallel step: K in %s, %d repetitions", list(widths), repetitions)
    record["parallel_step"] = parallel_step(
        model, widths=widths, repetitions=repetitions, warmup=warmup
    )

    logger.info("Generation: %d prompts, max_new_tokens=%d", len(prompts), max_new_tokens)
    record["generation"] = generation_tokens(model, prompts=prompts, max_new_tokens=max_new_tokens)

    logger.info("Attention capture: %d repetitions", repetitions)
    record["capture"] = capture_overhead(
        model, eager_model=eager_model, repetitions=repetitions, warmup=warmup
    )

    record["finished"] = utc_now()
    record["load_average_at_end"] = load_average()
    return record


def _parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.engine",
        description="Time the parallel-token step and attention capture of tempo_search.",
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="3 repetitions after 1 warm-up and 8 new tokens per generation, for a smoke run",
    )
    parser.add_argument("--out", help="folder for the JSON record (default: none written)")
    parser.add_argument(
        "--model", help="model folder, .gguf file or hub id (default: embedded SmolLM2)"
    )
    parser.add_argument(
        "--repetitions",
        type=int,
        default=None,
        help=f"recorded repetitions per variant (default {DEFAULT_REPETITIONS}, 3 with --quick)",
    )
    parser.add_argument(
        "--no-eager", action="store_true", help="skip the output_attentions comparison"
    )
    parser.add_argument(
        "--threads",
        type=int,
        default=None,
        help="torch intra-op threads (default: torch's own choice, recorded in the JSON record)",
    )
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = _parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if args.threads is not None:
        if args.threads < 1:
            raise SystemExit(f"--threads={args.threads} is invalid; pass 1 or more threads.")
        torch.set_num_threads(args.threads)
    repetitions = args.repetitions or (3 if args.quick else DEFAULT_REPETITIONS)
    warmup = 1 if args.quick else DEFAULT_WARMUP
    max_new_tokens = 8 if args.quick else 32

    model = load_model(args.model)
    eager_model = None if args.no_eager else load_model(args.model, attn_implementation="eager")
    record = run_benchmarks(
        model,
        eager_model=eager_model,
        repetitions=repetitions,
        warmup=warmup,
        max_new_tokens=max_new_tokens,
    )
    arguments = sys.argv[1:] if argv is None else list(argv)
    record["command"] = " ".join(["python -m benchmarks.engine", *arguments])
    print(format_tables(record))
    print(f"\n{describe_machine(record['machine'])}")
    if args.out:
        path = write_record("engine", record, args.out)
        print(f"Record written to {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
