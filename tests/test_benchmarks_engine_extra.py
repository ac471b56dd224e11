"""Structure of the extra engine benchmark results on tiny models (no timing assertions)."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import pytest

from tempo_search.testing import tiny_model
from tempo_search.tree_state import ROOT, TreeState

# `benchmarks` is a folder of the repository, not part of the installed package, so the
# repository root goes on the import path when pytest is run as `.venv/bin/pytest`.
_REPOSITORY = str(Path(__file__).resolve().parent.parent)
if _REPOSITORY not in sys.path:
    sys.path.insert(0, _REPOSITORY)

from benchmarks import engine_extra  # noqa: E402
from benchmarks._common import write_record  # noqa: E402

TREE_SIZES = (12, 20)
REWIND_LENGTHS = (2, 4)
SIMULATIONS = (3, 6)
MAX_NODES = (None, 8)


@pytest.fixture(scope="module")
def model():
    return tiny_model("llama")


@pytest.fixture(scope="module")
def exactness_result():
    pairs = engine_extra.tiny_models(("llama", "gemma2"))
    return engine_extra.exactness(pairs)


@pytest.fixture(scope="module")
def costs(model):
    return engine_extra.rewind_and_compact(
        model,
        prompt="the cat sat on a mat",
        tree_sizes=TREE_SIZES,
        rewind_lengths=REWIND_LENGTHS,
        expand_width=2,
        grow_batch=4,
        repetitions=2,
        warmup=0,
    )


@pytest.fixture(scope="module")
def usage(model):
    return engine_extra.memory(
        model,
        prompt="the cat",
        simulations=SIMULATIONS,
        max_nodes_values=MAX_NODES,
        max_new_tokens=4,
    )


def test_tiny_models_gemma2_eager_only():
    pairs = engine_extra.tiny_models(("llama", "gemma2"))
    implementations = [model.model.config._attn_implementation for _, model in pairs]
    assert [label for label, _ in pairs] == ["tiny-llama", "tiny-llama", "tiny-gemma2"]
    assert implementations == ["sdpa", "eager", "eager"]


def test_exactness_rows_pass(exactness_result):
    rows = exactness_result["rows"]
    assert [row["architecture"] for row in rows] == ["llama", "llama", "gemma2"]
    for row in rows:
        assert row["passed"] is True
        assert 0.0 <= row["max_abs_diff"] <= row["tolerance"]
        assert row["num_nodes_checked"] > 0


def test_rewind_compact_rows_per_size(costs):
    operations = ["expand", "rewind_2", "rewind_4", "compact"]
    expected = [(size, name) for size in TREE_SIZES for name in operations]
    assert [(row["tree_nodes"], row["operation"]) for row in costs["rows"]] == expected


def test_rewind_compact_figures_positive_finite(costs):
    for row in costs["rows"]:
        assert row["median_ms"] > 0
        assert math.isfinite(row["ratio_to_expand"])
        assert len(row["samples_ms"]) == 2


def test_rewind_compact_expand_ratio_one(costs):
    for row in costs["rows"]:
        if row["operation"] == "expand":
            assert row["ratio_to_expand"] == 1.0


def test_rewind_compact_keeps_about_half(costs):
    for row in costs["rows"]:
        if row["operation"] == "compact":
            assert row["tree_nodes"] // 2 <= row["kept_nodes"] < row["tree_nodes"]


def test_half_keep_is_ancestor_closed(model):
    import random

    rng = random.Random(1)
    state = TreeState(model.model, [5, 6, 7])
    engine_extra._grow_tree(state, 30, 4, rng, model.model.config.vocab_size)
    keep = engine_extra._half_keep(state, rng)
    assert len(keep) >= 15
    for node_id in keep:
        parent = state.parent(node_id)
        assert parent == ROOT or parent in keep


def test_snapshot_restores_after_compact(model):
    import random

    rng = random.Random(2)
    state = TreeState(model.model, [5, 6, 7])
    engine_extra._grow_tree(state, 20, 4, rng, model.model.config.vocab_size)
    before_bytes = engine_extra.cache_bytes(state)
    before_slots = {n: state.slot(n) for n in state.node_ids()}
    snapshot = engine_extra._Snapshot(state)
    state.compact(engine_extra._half_keep(state, rng))
    snapshot.restore(state)
    assert engine_extra.cache_bytes(state) == before_bytes
    assert {n: state.slot(n) for n in state.node_ids()} == before_slots


def test_cache_bytes_formula(model):
    config = model.model.config
    state = TreeState(model.model, [5, 6, 7])
    state.expand([ROOT, ROOT], [8, 9])
    head_dim = config.hidden_size // config.num_attention_heads
    per_entry = 2 * config.num_hidden_layers * config.num_key_value_heads * head_dim * 4
    assert engine_extra.cache_bytes(state) == per_entry * state.cache_length


def test_memory_rows_per_setting(usage):
    expected = [(count, limit) for limit in MAX_NODES for count in SIMULATIONS]
    assert [(row["simulations"], row["max_nodes"]) for row in usage["rows"]] == expected


def test_memory_peak_bounds(usage):
    for row in usage["rows"]:
        assert row["peak_cache_bytes"] >= row["final_cache_bytes"] > 0
        assert row["peak_cache_bytes"] == row["bytes_per_entry"] * row["peak_cache_length"]
        if row["max_nodes"] is not None:
            assert row["peak_cache_length"] <= row["prompt_tokens"] + row["max_nodes"]


def test_format_tables_and_record(exactness_result, costs, usage, tmp_path):
    record = {"exactness": exactness_result, "rewind_compact": costs, "memory": usage}
    tables = engine_extra.format_tables(record)
    separators = [line for line in tables.splitlines() if line.startswith("|---")]
    assert len(separators) == 3
    assert "compact to" in tables
    path = write_record("engine_extra", record, tmp_path)
    assert json.loads(path.read_text())["memory"]["rows"][0]["simulations"] == SIMULATIONS[0]
