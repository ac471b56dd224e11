from benchmarks.budget import run_budget_check
from tempo_search.testing import tiny_model


def test_budget_check_holds_node_budget():
    figures = run_budget_check(
        tiny_model("llama"), num_simulations=300, max_nodes=40, max_new_tokens=12
    )

    assert figures["peak_tree_nodes"] <= 40
    assert figures["budget_held"]
    assert figures["evicted_nodes"] > 0


def test_budget_check_runs_past_first_eviction():
    figures = run_budget_check(
        tiny_model("llama"), num_simulations=300, max_nodes=40, max_new_tokens=12
    )

    assert figures["simulations_done"] > 100
