"""Tests of the MCTS benchmark: the naive re-running engine and the benchmark driver."""

from __future__ import annotations

import pytest
import torch

from benchmarks.mcts import GOALS, format_tables, goal, run_benchmarks
from benchmarks.naive_mcts import NaiveEngine, tree_differences
from tempo_search.search import search
from tempo_search.tree_state import ROOT, TreeState, plain_logits

PROMPT = "the cat sat on"


@pytest.fixture
def llama(get_tiny_model):
    return get_tiny_model("llama")


def _prompt_ids(loaded) -> list[int]:
    return loaded.encode_prompt(PROMPT)


@pytest.mark.parametrize("rollout", ["none", "greedy"])
def test_naive_engine_builds_same_tree(llama, rollout):
    settings = {
        "num_simulations": 24,
        "max_new_tokens": 8,
        "batch_size": 4,
        # A low widening threshold admits several children per node: a wide and deep tree.
        "widening": (0.2, 0.05, 0.01, 0.005),
        "rollout": rollout,
        "rollout_depth": 3,
    }
    shared = search(llama, PROMPT, **settings)
    naive = search(llama, PROMPT, _engine_factory=NaiveEngine, **settings)

    assert shared.stats.nodes >= 15
    assert tree_differences(shared.tree, naive.tree) == []
    assert naive.text == shared.text
    assert naive.stats.tokens_forwarded > shared.stats.tokens_forwarded


def test_naive_engine_logits_match_plain_forward(llama):
    prompt_ids = _prompt_ids(llama)
    engine = NaiveEngine(llama, prompt_ids)
    first = engine.expand([ROOT, ROOT], [5, 7])
    second = engine.expand([first.node_ids[1]], [9])

    expected = plain_logits(llama, [*prompt_ids, 7, 9])
    torch.testing.assert_close(second.logits[0], expected)
    torch.testing.assert_close(engine.prompt_logits, plain_logits(llama, prompt_ids))


def test_naive_engine_counts_every_rerun_token(llama):
    prompt_ids = _prompt_ids(llama)
    length = len(prompt_ids)
    engine = NaiveEngine(llama, prompt_ids)
    first = engine.expand([ROOT, ROOT], [5, 7])
    engine.expand([first.node_ids[0]], [9])

    # The prompt once, two nodes at depth 1, one at depth 2, each over its whole sequence.
    assert engine.tokens_forwarded == length + 2 * (length + 1) + (length + 2)
    assert engine.forward_passes == 4
    assert engine.peak_cache_length == length + 2
    assert engine.forward_sizes == {length + 1: 2, length + 2: 1}


def test_naive_engine_slots_follow_tree_state(llama):
    prompt_ids = _prompt_ids(llama)
    engines = [TreeState(llama, prompt_ids), NaiveEngine(llama, prompt_ids)]
    for engine in engines:
        first = engine.expand([ROOT, ROOT, ROOT], [5, 7, 11])
        engine.expand([first.node_ids[0], first.node_ids[2]], [9, 13])
        engine.expand([4], [6])
        engine.rewind(1)
        engine.compact([0, 2, 3, 4])

    shared, naive = engines
    assert naive.num_nodes == shared.num_nodes
    assert naive.next_node_id == shared.next_node_id
    for node_id in (0, 2, 3, 4):
        assert naive.slot(node_id) == shared.slot(node_id)


def test_naive_engine_rejects_unknown_parent(llama):
    engine = NaiveEngine(llama, _prompt_ids(llama))
    with pytest.raises(ValueError, match="parent 3"):
        engine.expand([3], [5])
    assert engine.num_nodes == 0


def test_tree_differences_finds_changed_value(llama):
    settings = {"num_simulations": 8, "max_new_tokens": 4}
    first = search(llama, PROMPT, **settings)
    second = search(llama, PROMPT, **settings)
    child = second.tree.children[0]
    child.value_sum += 0.5

    differences = tree_differences(first.tree, second.tree)
    assert len(differences) == 1
    assert "value_sum" in differences[0]


def test_goal_marks_met_and_missed():
    operator, target = GOALS["token_ratio"]
    assert operator == ">="
    assert goal("token_ratio", target + 1.0)["met"] is True
    assert goal("token_ratio", target - 1.0)["met"] is False
    operator, target = GOALS["outside_model_share"]
    assert operator == "<="
    assert goal("outside_model_share", target - 0.01)["met"] is True
    assert goal("outside_model_share", target + 0.01)["met"] is False


def test_run_benchmarks_returns_expected_keys(llama):
    record = run_benchmarks(
        llama,
        num_simulations=4,
        max_new_tokens=3,
        rollout_depth=2,
        profile_simulations=4,
        profile_max_new_tokens=4,
    )

    assert set(record) >= {"machine", "goals", "comparisons", "outside_model"}
    assert [c["settings"]["rollout"] for c in record["comparisons"]] == ["none", "greedy"]
    for comparison in record["comparisons"]:
        assert len(comparison["prompts"]) == 3
        assert set(comparison["overall"]) >= {
            "tokens_forwarded_per_node",
            "token_ratio",
            "wall_ratio",
            "identical_trees",
        }
        assert comparison["overall"]["identical_trees"] is True
    outside = record["outside_model"]
    assert set(outside["outside_model_share"]) == {"value", "goal", "met"}
    assert outside["replay_identical_tree"] is True
    assert 0 < len(outside["profile_top_cumulative"]) <= 15
    assert 0 < len(outside["outside_profile_top_cumulative"]) <= 15
    functions = [entry["function"] for entry in outside["outside_profile_top_cumulative"]]
    assert not any("_run_search" in function for function in functions)
    assert "overall" in format_tables(record)
