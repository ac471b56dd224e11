"""Structure of the engine benchmark results on a tiny model (no timing assertions)."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import pytest

from tempo_search.testing import tiny_model

# `benchmarks` is a folder of the repository, not part of the installed package, so the
# repository root goes on the import path when pytest is run as `.venv/bin/pytest`.
_REPOSITORY = str(Path(__file__).resolve().parent.parent)
if _REPOSITORY not in sys.path:
    sys.path.insert(0, _REPOSITORY)

from benchmarks import engine  # noqa: E402

WIDTHS = (1, 2)
PROMPTS = (
    {"name": "story", "prompt": "the cat sat on a mat", "chat": False},
    {"name": "chat", "prompt": "tell me about the dog", "chat": True},
)


@pytest.fixture(scope="module")
def model():
    return tiny_model("llama")


@pytest.fixture(scope="module")
def eager_model():
    return tiny_model("llama", attn_implementation="eager")


@pytest.fixture(scope="module")
def step(model):
    return engine.parallel_step(model, widths=WIDTHS, repetitions=1, warmup=0)


@pytest.fixture(scope="module")
def capture(model, eager_model):
    return engine.capture_overhead(model, eager_model=eager_model, width=2, repetitions=1, warmup=0)


@pytest.fixture(scope="module")
def generation(model):
    return engine.generation_tokens(model, prompts=PROMPTS, max_new_tokens=3)


def test_parallel_step_rows_per_width(step):
    assert [row["width"] for row in step["rows"]] == list(WIDTHS)
    assert step["prompt_tokens"] > 0
    assert step["repetitions"] == 1


def test_parallel_step_figures_positive_finite(step):
    for row in step["rows"]:
        for key in ("parallel_ms", "single_ms", "singles_total_ms", "ratio_singles_over_parallel"):
            assert math.isfinite(row[key]), (row["width"], key)
            assert row[key] > 0, (row["width"], key)


def test_parallel_step_quartiles_single_repetition(step):
    # With one repetition both quartiles are that repetition's ratio.
    for row in step["rows"]:
        samples = row["samples_ms"]
        ratio = samples["singles_total"][0] / samples["parallel"][0]
        assert row["ratio_quartiles"] == pytest.approx([ratio, ratio], rel=1e-2)


def test_parallel_step_samples_per_repetition(step):
    for row in step["rows"]:
        assert len(row["samples_ms"]["parallel"]) == 1
        assert len(row["samples_ms"]["singles_total"]) == 1


def test_parallel_step_matches_single_logits(step):
    # Siblings under ROOT see only the prompt and themselves, so each one's logits equal a
    # plain one-token forward over the prompt cache (the exactness tolerance of the tree state).
    for row in step["rows"]:
        assert row["max_logit_difference"] < 1e-4, row["width"]


def test_parallel_step_rejects_zero_width(model):
    with pytest.raises(ValueError, match="widths"):
        engine.parallel_step(model, widths=(0,), repetitions=1, warmup=0)


def test_parallel_step_rejects_zero_repetitions(model):
    with pytest.raises(ValueError, match="repetitions"):
        engine.parallel_step(model, widths=(1,), repetitions=0)


def test_capture_overhead_variants(capture, model):
    variants = [row["variant"] for row in capture["rows"]]
    assert variants == ["none", "last", "all", "eager_plain", "eager_output_attentions"]
    num_layers = model.model.config.num_hidden_layers
    layers = {row["variant"]: row["layers"] for row in capture["rows"]}
    assert layers["none"] == []
    assert layers["last"] == list(range(max(0, num_layers - 4), num_layers))
    assert layers["all"] == list(range(num_layers))


def test_capture_overhead_ratios_finite(capture):
    for row in capture["rows"]:
        assert math.isfinite(row["ratio_to_none"]), row["variant"]
        assert row["ratio_to_none"] > 0, row["variant"]
        assert row["median_ms"] > 0, row["variant"]


def test_capture_overhead_baseline_ratio_one(capture):
    none = next(row for row in capture["rows"] if row["variant"] == "none")
    assert none["ratio_to_none"] == 1.0
    assert none["ratio_quartiles"] == [1.0, 1.0]


def test_quartiles_of_four_ratios():
    # statistics.quantiles(method="inclusive") interpolates between order statistics.
    assert engine._quartiles([1.0, 2.0, 3.0, 4.0]) == [1.75, 3.25]


def test_capture_overhead_same_logits(capture):
    for row in capture["rows"]:
        assert row["max_logit_difference"] < 1e-4, row["variant"]


def test_capture_overhead_without_eager(model):
    result = engine.capture_overhead(model, width=2, repetitions=1, warmup=0)
    assert [row["variant"] for row in result["rows"]] == ["none", "last", "all"]


def test_capture_overhead_rejects_sdpa_as_eager(model):
    with pytest.raises(ValueError, match="eager_model"):
        engine.capture_overhead(model, eager_model=model, width=2, repetitions=1, warmup=0)


def test_generation_rows_per_prompt_and_mode(generation):
    pairs = [(row["prompt"], row["mode"]) for row in generation["rows"]]
    expected = [(p["name"], mode) for p in PROMPTS for mode in ("superposition", "tree")]
    assert pairs == expected


def test_generation_counts_positive(generation):
    for row in generation["rows"]:
        assert row["prompt_tokens"] > 0, row
        assert row["forward_passes"] >= 1, row
        assert row["generated_steps"] >= 1, row
        assert row["tokens_forwarded_per_step"] >= 0, row


def test_generation_per_step_formula(generation):
    for row in generation["rows"]:
        expected = row["generated_tokens_forwarded"] / max(1, row["generated_steps"])
        assert row["tokens_forwarded_per_step"] == pytest.approx(expected, abs=1e-3)


def test_format_tables_and_json(step, capture, generation):
    record = {"parallel_step": step, "generation": generation, "capture": capture}
    text = engine.format_tables(record)
    assert text.count("\n| ") >= len(WIDTHS) + len(generation["rows"]) + len(capture["rows"])
    assert json.loads(json.dumps(record)) == record
