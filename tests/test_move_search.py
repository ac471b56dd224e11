"""Tests of the move search (`search(..., actions="moves")`) on tiny random models."""

from __future__ import annotations

import pytest
import torch

from tempo_search import search
from tempo_search.move_search import MoveNode
from tempo_search.tasks import AllOf, Keywords
from tempo_search.tasks.blocksworld import BlocksworldTask, generate_instances
from tempo_search.tasks.countdown import CountdownTask
from tempo_search.tasks.game24 import Game24Task, verify_game24
from tempo_search.testing import tiny_model
from tempo_search.tree import iter_nodes
from tempo_search.tree_state import TreeState, plain_logits

WIDE = (0.0, 0.0, 0.0, 0.0)  # admit every line at once


@pytest.fixture(scope="module")
def model():
    loaded = tiny_model("llama")
    # The puzzle prompts are longer than the tiny config's 256 positions; rotary positions
    # have no built-in limit (as in tests/test_benchmarks_tasks.py).
    loaded.model.config.max_position_embeddings = 1024
    return loaded


def _expected_prior(model, prompt_ids, node: MoveNode, line: str, task) -> float:
    """Masked-sampling probability of `line` at `node`, from plain forwards of each prefix."""
    encode = model.tokenizer.encode
    lines = {m: encode(m, add_special_tokens=False) for m in task.moves(node.parent.state)}
    context = list(prompt_ids) + node.parent.token_ids()
    target = lines[line]
    probability = 1.0
    for position, token in enumerate(target):
        allowed = {ids[position] for ids in lines.values() if ids[:position] == target[:position]}
        if len(allowed) < 2:
            continue
        probs = torch.softmax(plain_logits(model.model, context + target[:position]), dim=-1)
        probability *= float(probs[token]) / sum(float(probs[t]) for t in allowed)
    return probability


def _prompt_ids(model, task):
    return model.encode_prompt(task.prompt, chat=False)


def _wide_search(model, num_simulations: int):
    """Game of 24 search that opens every line at once, without rollouts."""
    task = Game24Task([1, 2, 3, 4])
    result = search(
        model,
        task=task,
        actions="moves",
        num_simulations=num_simulations,
        widening=WIDE,
        max_width=40,
        rollout="none",
        stop_when_solved=False,
    )
    return task, result


@pytest.fixture(scope="module")
def wide(model):
    return _wide_search(model, 6)


def test_move_search_priors_match_plain_forwards(model, wide):
    task, result = wide
    nodes = [n for n in iter_nodes(result.tree) if n.depth in (1, 2)]
    prompt_ids = _prompt_ids(model, task)
    expected = [_expected_prior(model, prompt_ids, n, n.text, task) for n in nodes]
    assert [n.prior for n in nodes] == pytest.approx(expected, rel=1e-4, abs=1e-6)


def test_move_search_depth_three_priors(model):
    # A depth-3 prior reads the logits after a depth-2 line, which the scoring pass forwards
    # below its depth-1 parent's line.
    task, result = _wide_search(model, 16)
    nodes = [n for n in iter_nodes(result.tree) if n.depth == 3]
    assert len(nodes) >= 4
    prompt_ids = _prompt_ids(model, task)
    expected = [_expected_prior(model, prompt_ids, n, n.text, task) for n in nodes]
    assert [n.prior for n in nodes] == pytest.approx(expected, rel=1e-4, abs=1e-6)


def test_move_search_reaches_depth_two(wide):
    _, result = wide
    assert max(n.depth for n in iter_nodes(result.tree)) >= 2


def test_move_search_root_priors_sum_to_one(model):
    task = Game24Task([1, 2, 3, 4])
    result = search(
        model,
        task=task,
        actions="moves",
        num_simulations=1,
        widening=WIDE,
        max_width=100,
        rollout="none",
    )
    assert sum(c.prior for c in result.tree.children) == pytest.approx(1.0)


def test_move_search_forwards_each_token_once(model):
    task = Game24Task([1, 2, 3, 4])
    result = search(
        model,
        task=task,
        actions="moves",
        num_simulations=12,
        rollout="none",
        stop_when_solved=False,
    )
    assert result.stats.tokens_forwarded_per_node == 1.0


def test_move_search_two_passes_per_iteration_at_most(model):
    task = Game24Task([1, 2, 3, 4])
    iterations = []
    result = search(
        model,
        task=task,
        actions="moves",
        num_simulations=12,
        batch_size=4,
        rollout="none",
        stop_when_solved=False,
        on_simulation=iterations.append,
    )
    # The prefill plus at most one scoring pass per batch of simulations.
    assert result.stats.forward_passes <= 1 + len(iterations)


def test_move_search_uniform_prior_forwards_prompt_only(model):
    task = Game24Task([1, 2, 3, 4])
    result = search(
        model, task=task, actions="moves", num_simulations=20, prior="uniform", rollout="none"
    )
    # No logits are read under the uniform prior, so no line is forwarded.
    assert result.stats.forward_passes == 1


def test_move_search_lm_prior_scores_in_one_pass(model):
    task = Game24Task([1, 2, 3, 4])
    result = search(model, task=task, actions="moves", num_simulations=1, rollout="none")
    assert result.stats.forward_passes == 2


def test_move_search_unexpanded_lines_not_forwarded(wide):
    _, result = wide
    unexpanded = [n for n in iter_nodes(result.tree) if n.depth > 0 and not n.is_expanded]
    assert len(unexpanded) >= 4
    assert [n.slot for n in unexpanded] == [-1] * len(unexpanded)


def test_move_search_expanded_lines_forwarded(wide):
    _, result = wide
    expanded = [n for n in iter_nodes(result.tree) if n.depth > 0 and n.is_expanded]
    assert len(expanded) >= 2
    assert min(n.slot for n in expanded) >= 0


def test_move_search_uniform_prior_values(model):
    task = Game24Task([1, 2, 3, 4])
    result = search(
        model,
        task=task,
        actions="moves",
        num_simulations=1,
        widening=WIDE,
        max_width=100,
        prior="uniform",
        rollout="none",
    )
    count = len(task.moves(task.initial_state()))
    assert [c.prior for c in result.tree.children] == [1.0 / count] * count


def test_move_search_token_ids_spell_text(model):
    task = Game24Task([1, 2, 3, 4])
    result = search(model, task=task, actions="moves", num_simulations=40)
    decoded = model.tokenizer.decode(
        result.token_ids, skip_special_tokens=True, clean_up_tokenization_spaces=False
    )
    assert decoded == result.text


def test_move_search_solves_game24(model):
    task = Game24Task([1, 2, 3, 4])
    result = search(model, task=task, actions="moves", num_simulations=200)
    assert verify_game24([1, 2, 3, 4], result.text).correct


def test_move_search_solved_flag(model):
    task = Game24Task([1, 2, 3, 4])
    result = search(model, task=task, actions="moves", num_simulations=200)
    assert result.solved


def test_move_search_stops_when_solved(model):
    task = Game24Task([1, 2, 3, 4])
    result = search(model, task=task, actions="moves", num_simulations=200)
    assert result.stats.stopped_by == "solved"


def test_move_search_solves_countdown(model):
    task = CountdownTask([2, 3, 7], 13)
    result = search(model, task=task, actions="moves", num_simulations=200)
    assert task.verify(result.text).correct


def test_move_search_solves_blocksworld(model):
    (instance,) = generate_instances(1, 2, seed=0, num_blocks=3)
    task = BlocksworldTask(instance)
    result = search(model, task=task, actions="moves", num_simulations=200)
    assert task.verify(result.text).correct


def test_move_search_solves_without_rollouts(model):
    task = Game24Task([1, 2, 3, 4])
    result = search(
        model,
        task=task,
        actions="moves",
        num_simulations=300,
        rollout="none",
        widening=WIDE,
        max_width=100,
    )
    assert result.solved


def test_move_search_same_seed_same_tree(model):
    task = Game24Task([2, 3, 5, 7])
    first = search(model, task=task, actions="moves", num_simulations=30, prior="uniform")
    second = search(model, task=task, actions="moves", num_simulations=30, prior="uniform")
    assert [n.text for n in iter_nodes(first.tree)] == [n.text for n in iter_nodes(second.tree)]


def test_move_search_engine_cache_matches_node_count(model):
    engines = []

    def factory(*args, **kwargs):
        engines.append(TreeState(*args, **kwargs))
        return engines[-1]

    task = Game24Task([1, 2, 3, 4])
    result = search(
        model,
        task=task,
        actions="moves",
        num_simulations=8,
        rollout="none",
        _engine_factory=factory,
        stop_when_solved=False,
    )
    assert engines[0].cache_length == result.stats.prompt_tokens + result.stats.nodes


@pytest.mark.parametrize(
    ("options", "name"),
    [
        ({"commit": "step"}, "commit"),
        ({"max_nodes": 100}, "max_nodes"),
        ({"top_p": 0.9}, "top_p"),
        ({"selection": "uct"}, "selection"),
        ({"rollout": "greedy"}, "rollout"),
    ],
)
def test_move_search_rejects_unsupported_option(model, options, name):
    task = Game24Task([1, 2, 3, 4])
    with pytest.raises(ValueError, match=name):
        search(model, task=task, actions="moves", num_simulations=2, **options)


def test_move_search_rejects_task_without_moves(model):
    task = AllOf(Keywords(["cat"]))
    with pytest.raises(ValueError, match="actions='moves' needs a task"):
        search(model, "Write", task=task, actions="moves", num_simulations=2)


def test_search_rejects_unknown_actions(model):
    with pytest.raises(ValueError, match="actions='lines'"):
        search(model, "Write", actions="lines", num_simulations=2)


def test_move_search_tree_renders_lines(model):
    from tempo_search.tree import render_tree

    task = Game24Task([1, 2, 3, 4])
    result = search(model, task=task, actions="moves", num_simulations=4, rollout="none")
    # The renderer shows spaces as "␣" so that token boundaries stay visible.
    first_line = result.tree.children[0].text.strip().replace(" ", "\u2423")
    assert first_line in render_tree(result.tree, max_depth=2)


def test_move_search_tree_round_trips_json(model, tmp_path):
    from tempo_search.tree import load_tree_json, save_tree_json

    task = Game24Task([1, 2, 3, 4])
    result = search(model, task=task, actions="moves", num_simulations=4, rollout="none")
    save_tree_json(result.tree, tmp_path / "tree.json")
    loaded = load_tree_json(tmp_path / "tree.json")
    assert [c.text for c in loaded.children] == [c.text for c in result.tree.children]
