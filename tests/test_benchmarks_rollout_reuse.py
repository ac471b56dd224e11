"""The rollout-reuse benchmark on a tiny random model: both runs, and reuse restored after."""

import pytest

from benchmarks.rollout_reuse import format_table, run_reuse
from tempo_search.search import _MCTS
from tempo_search.testing import tiny_model


@pytest.fixture(scope="module")
def section():
    return run_reuse(tiny_model("llama"), num_sets=2, simulations=8)


def test_run_reuse_one_row_per_set(section):
    assert len(section["sets"]) == 2


def test_run_reuse_never_more_forwards(section):
    assert all(r["forwards_with_reuse"] <= r["forwards_without_reuse"] for r in section["sets"])


def test_run_reuse_same_text(section):
    assert all(r["same_text"] for r in section["sets"])


def test_run_reuse_counts_reused_rollouts(section):
    assert sum(r["reused_rollouts"] for r in section["sets"]) > 0


def test_run_reuse_restores_shipped_method(section):
    assert _MCTS._reused_rollout.__name__ == "_reused_rollout"


def test_format_table_names_ratio(section):
    assert "Forwards without reuse / with reuse" in format_table(section)
