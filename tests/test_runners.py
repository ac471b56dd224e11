"""The built-in sweep runners on a tiny model saved to disk, alone and inside parallel sweeps."""

from __future__ import annotations

import math

import pandas as pd
import pytest

from tempo_search.runners import (
    GAME24_MAX_NEW_TOKENS,
    run_game24,
    run_generate,
    run_search,
)
from tempo_search.sweep import RUNNERS, clear_worker_cache, get_runner, sweep, worker_cache
from tempo_search.testing import tiny_model

GENERATE_METRICS = {
    "steps",
    "forward_passes",
    "tokens_forwarded",
    "distinct_2",
    "mean_set_width",
    "generate_seconds",
}
SEARCH_METRICS = {
    "simulations",
    "nodes",
    "forward_passes",
    "tokens_forwarded",
    "value",
    "distinct_2",
    "search_seconds",
}
GAME24_METRICS = {"solved", "verified", "simulations", "forward_passes", "search_seconds"}

# Columns that depend on timing or on what an earlier run left in the cache.
VOLATILE_COLUMNS = ["seconds", "cached", "search_seconds"]


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> str:
    """A tiny Llama saved as a model folder, with room in its context for the Game of 24 prompt."""
    folder = tmp_path_factory.mktemp("tiny-llama")
    loaded = tiny_model("llama")
    # The Game of 24 prompt (format and worked example) is about 460 tiny-tokenizer tokens,
    # more than the tiny config's 256 positions; rotary positions have no built-in limit.
    loaded.model.config.max_position_embeddings = 1024
    loaded.model.save_pretrained(folder)
    loaded.tokenizer.save_pretrained(folder)
    return str(folder)


def test_runners_registered():
    for name, function in [("generate", run_generate), ("search", run_search)]:
        assert get_runner(name) is function
    assert RUNNERS["game24"] is run_game24


def test_run_generate_metric_keys(model_dir):
    metrics = run_generate({"model": model_dir, "max_new_tokens": 3, "seed": 0}, "the cat")
    assert set(metrics) == GENERATE_METRICS
    assert metrics["steps"] == 3
    assert metrics["mean_set_width"] >= 1.0


def test_run_generate_threshold_one_is_greedy(model_dir):
    params = {"model": model_dir, "threshold": 1.0, "max_new_tokens": 3, "seed": 0}
    metrics = run_generate(params, "the cat")
    assert metrics["mean_set_width"] == 1.0


def test_run_search_metric_keys(model_dir):
    params = {"model": model_dir, "num_simulations": 4, "max_new_tokens": 3, "seed": 0}
    metrics = run_search(params, "the cat")
    assert set(metrics) == SEARCH_METRICS
    assert metrics["simulations"] == 4
    assert 0.0 <= metrics["value"] <= 1.0


def test_run_search_passes_widening_string(model_dir):
    params = {
        "model": model_dir,
        "num_simulations": 4,
        "max_new_tokens": 3,
        "widening": "not,a,schedule,here",
        "seed": 0,
    }
    with pytest.raises(ValueError, match="widening"):
        run_search(params, "the cat")


def test_run_game24_metric_keys(model_dir):
    params = {"model": model_dir, "num_simulations": 2, "max_new_tokens": 8, "seed": 0}
    metrics = run_game24(params, "4 9 10 13")
    assert set(metrics) == GAME24_METRICS
    assert isinstance(metrics["solved"], bool)
    assert isinstance(metrics["verified"], bool)


def test_run_game24_default_budget_fits_context():
    assert GAME24_MAX_NEW_TOKENS == 96


@pytest.mark.parametrize("item", ["4 9 10", "four nine ten", None])
def test_run_game24_rejects_bad_item(model_dir, item):
    params = {"model": model_dir, "num_simulations": 2, "seed": 0}
    with pytest.raises((ValueError, TypeError)):
        run_game24(params, item)


def test_runner_rejects_unknown_parameter(model_dir):
    with pytest.raises(ValueError, match="c_pcut"):
        run_search({"model": model_dir, "c_pcut": 1.0, "seed": 0}, "the cat")


def test_runner_rejects_non_string_prompt(model_dir):
    with pytest.raises(ValueError, match="prompt string"):
        run_generate({"model": model_dir, "seed": 0}, ["the", "cat"])


def test_runner_loads_model_once(model_dir):
    clear_worker_cache()
    params = {"model": model_dir, "max_new_tokens": 2, "seed": 0}
    run_generate(params, "the cat")
    first = worker_cache(("model", model_dir), lambda: pytest.fail("model loaded again"))
    run_generate(params, "a dog")
    second = worker_cache(("model", model_dir), lambda: pytest.fail("model loaded again"))
    assert first is second


def _grid(model_dir: str) -> dict:
    return {
        "model": [model_dir],
        "c_puct": [0.5, 2.0],
        "num_simulations": [3, 6],
        "max_new_tokens": [3],
    }


def _stable(table: pd.DataFrame) -> pd.DataFrame:
    return table.drop(columns=VOLATILE_COLUMNS)


@pytest.fixture(scope="module")
def sequential_table(model_dir) -> pd.DataFrame:
    return sweep(_grid(model_dir), run_search, items=["the cat"], progress=False)


def test_sweep_sequential_has_metrics(sequential_table):
    assert len(sequential_table) == 4
    assert sequential_table["error"].isna().all()
    assert set(sequential_table.columns) >= SEARCH_METRICS


# Starting loky workers and importing torch in them takes 10-20 s on a loaded 2-core machine.
@pytest.mark.slow
def test_sweep_loky_matches_sequential(model_dir, sequential_table):
    table = sweep(
        _grid(model_dir),
        run_search,
        items=["the cat"],
        n_jobs=2,
        backend="loky",
        torch_threads=1,
        progress=False,
    )
    assert table["error"].isna().all(), table["error"].tolist()
    pd.testing.assert_frame_equal(_stable(table), _stable(sequential_table), rtol=1e-5)


@pytest.mark.slow
def test_sweep_dask_matches_loky(model_dir, sequential_table):
    pytest.importorskip("distributed")
    table = sweep(
        _grid(model_dir),
        run_search,
        items=["the cat"],
        n_jobs=2,
        backend="dask",
        torch_threads=1,
        progress=False,
    )
    assert table["error"].isna().all(), table["error"].tolist()
    pd.testing.assert_frame_equal(_stable(table), _stable(sequential_table), rtol=1e-5)


def test_sweep_value_is_finite(sequential_table):
    assert all(math.isfinite(value) for value in sequential_table["value"])
