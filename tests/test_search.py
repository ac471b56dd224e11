"""MCTS search: PUCT and virtual loss, widening, exactness of the tree, commits, export, budgets."""

from __future__ import annotations

import math
import random
import re

import pytest
import torch

from tempo_search.models import LoadedModel
from tempo_search.policies.selection import puct_scores, sample_gumbel
from tempo_search.rollouts import RolloutConfig
from tempo_search.schedules import BezierSchedule, admitted_count
from tempo_search.search import _MCTS, SearchConfig, _puct_choice, _puct_max_choice, search
from tempo_search.tasks.constraints import constraints_task
from tempo_search.testing import tiny_model
from tempo_search.tree import (
    SearchNode,
    iter_nodes,
    load_tree_json,
    save_tree_json,
    tree_to_dict,
    tree_to_dot,
)
from tempo_search.tree_state import ROOT, TreeState, plain_logits

ATOL = 1e-4
"""The exactness invariant's bound on logits (and log-probabilities) in float32."""

PROMPT = "the cat sat"

# Low thresholds, so that nodes open several children after a few visits and trees get bushy.
BUSHY_WIDENING = BezierSchedule(0.1, 0.05, 0.02, 0.0, horizon=8)


@pytest.fixture(scope="module")
def llama() -> LoadedModel:
    return tiny_model("llama")


def make_mcts(model: LoadedModel, prompt: str = PROMPT, **overrides) -> _MCTS:
    """Build the search state that `search` builds, without running it."""
    config = SearchConfig(**overrides)
    prompt_ids = model.encode_prompt(prompt)
    engine = TreeState(model.model, prompt_ids)
    return _MCTS(model, prompt_ids, config, None, engine, [])


def tree_nodes(root: SearchNode) -> list[SearchNode]:
    """Return the nodes below `root`, without `root` itself."""
    return [node for node in iter_nodes(root) if node is not root]


def recording_engine_factory(record: list[int], engines: list[TreeState]):
    """Return an `_engine_factory` whose TreeState appends `num_nodes` after every expand."""

    def factory(model, prompt_ids):
        engine = TreeState(model, prompt_ids)
        original_expand = engine.expand

        def expand(*args, **kwargs):
            output = original_expand(*args, **kwargs)
            record.append(engine.num_nodes)
            return output

        engine.expand = expand
        engines.append(engine)
        return engine

    return factory


# ----------------------------------------------------------------- PUCT and virtual loss


def build_children(
    rng: random.Random, num_children: int, *, with_virtual_loss: bool
) -> tuple[SearchNode, list[SearchNode]]:
    parent = SearchNode(node_id=ROOT, depth=0)
    priors = [rng.random() for _ in range(num_children)]
    total = sum(priors)
    children = []
    for index, prior in enumerate(priors):
        visits = rng.randrange(0, 12)
        q = rng.random()
        children.append(
            SearchNode(
                node_id=index,
                token_id=index,
                prior=prior / total,
                parent=parent,
                visit_count=visits,
                value_sum=visits * q,
                virtual_loss=rng.randrange(0, 3) if with_virtual_loss else 0,
            )
        )
    parent.visit_count = sum(c.visit_count for c in children) + rng.randrange(0, 3)
    return parent, children


def formula_scores(
    parent: SearchNode, children: list[SearchNode], c_puct: float, virtual_loss: float
) -> list[float]:
    """Q + c_puct * P * sqrt(N_parent) / (1 + N_child), with each in-flight selection counted
    as `virtual_loss` extra visits of value 0 on the child and on the parent."""
    pending = sum(c.virtual_loss for c in children) * virtual_loss
    n_parent = parent.visit_count + pending
    scores = []
    for child in children:
        n_child = child.visit_count + child.virtual_loss * virtual_loss
        q = child.value_sum / n_child if n_child > 0 else 0.0
        scores.append(q + c_puct * child.prior * math.sqrt(n_parent) / (1 + n_child))
    return scores


@pytest.mark.parametrize("with_virtual_loss", [False, True])
def test_puct_choice_matches_puct_scores_argmax(with_virtual_loss):
    rng = random.Random(1234)
    for trial in range(200):
        num_children = rng.randrange(1, 9)
        parent, children = build_children(rng, num_children, with_virtual_loss=with_virtual_loss)
        c_puct = rng.choice([0.0, 0.5, 1.25, 3.0])
        virtual_loss = rng.choice([0.0, 1.0, 2.5])
        expected = formula_scores(parent, children, c_puct, virtual_loss)
        scores = puct_scores(
            [c.prior for c in children],
            [c.visit_count for c in children],
            [c.q_value for c in children],
            parent.visit_count,
            c_puct=c_puct,
            virtual_loss=[c.virtual_loss for c in children],
            virtual_loss_value=virtual_loss,
        )
        assert scores.tolist() == pytest.approx(expected, abs=1e-12), f"trial {trial}"
        chosen = _puct_choice(parent, children, c_puct, virtual_loss)
        assert chosen is children[int(torch.argmax(scores))], f"trial {trial}: {expected}"


def test_puct_choice_virtual_loss_moves_selection():
    parent = SearchNode(node_id=ROOT, depth=0, visit_count=4)
    first = SearchNode(node_id=0, prior=0.5, parent=parent, visit_count=2, value_sum=1.0)
    second = SearchNode(node_id=1, prior=0.5, parent=parent, visit_count=2, value_sum=1.0)
    children = [first, second]

    # Equal statistics: the tie goes to the first child.
    assert _puct_choice(parent, children, 1.25, 1.0) is first

    # One selection in flight through `first` lowers its score below that of `second`.
    first.virtual_loss = 1
    scores = formula_scores(parent, children, 1.25, 1.0)
    assert scores[1] > scores[0]
    assert _puct_choice(parent, children, 1.25, 1.0) is second


def test_puct_choice_zero_virtual_loss_repeats_selection():
    parent = SearchNode(node_id=ROOT, depth=0, visit_count=4)
    first = SearchNode(node_id=0, prior=0.5, parent=parent, visit_count=2, value_sum=1.0)
    second = SearchNode(node_id=1, prior=0.5, parent=parent, visit_count=2, value_sum=1.0)
    first.virtual_loss = 1
    assert _puct_choice(parent, [first, second], 1.25, 0.0) is first


# ----------------------------------------------------------------- backup="max"


def _max_children() -> tuple[SearchNode, SearchNode, SearchNode]:
    """A parent with two children of equal prior and visits: `steady` has the higher mean
    value, `spiky` the higher best value."""
    parent = SearchNode(node_id=ROOT, depth=0, visit_count=8)
    steady = SearchNode(node_id=0, prior=0.5, parent=parent, visit_count=4, value_sum=2.4)
    steady.best_value = 0.65
    spiky = SearchNode(node_id=1, prior=0.5, parent=parent, visit_count=4, value_sum=1.6)
    spiky.best_value = 0.9
    return parent, steady, spiky


def test_puct_choice_mean_backup_prefers_higher_mean():
    parent, steady, spiky = _max_children()
    assert _puct_choice(parent, [steady, spiky], 1.25, 1.0) is steady


def test_puct_max_choice_prefers_higher_best_value():
    parent, steady, spiky = _max_children()
    assert _puct_max_choice(parent, [steady, spiky], 1.25, 1.0) is spiky


def test_puct_max_choice_tie_picks_first():
    parent, steady, spiky = _max_children()
    spiky.best_value = steady.best_value
    assert _puct_max_choice(parent, [steady, spiky], 1.25, 1.0) is steady


def test_puct_max_choice_virtual_loss_moves_selection():
    parent, steady, spiky = _max_children()
    steady.best_value = spiky.best_value = 0.9
    steady.virtual_loss = 1
    assert _puct_max_choice(parent, [steady, spiky], 1.25, 1.0) is spiky


def test_puct_max_choice_rescales_small_gaps():
    # Best values 0.01 apart: with the rescaling they span [0, 1] and outweigh a prior gap
    # that the raw values would not.
    parent, steady, spiky = _max_children()
    steady.best_value, spiky.best_value = 0.80, 0.81
    steady.prior, spiky.prior = 0.6, 0.4
    assert _puct_max_choice(parent, [steady, spiky], 1.25, 0.0) is spiky


def test_backup_max_best_value_is_subtree_maximum(llama):
    mcts = make_mcts(
        llama,
        num_simulations=24,
        backup="max",
        rollout=RolloutConfig("greedy", depth=4),
        max_new_tokens=8,
        widening=BUSHY_WIDENING,
    )
    mcts.run(None)
    checked = 0
    for node in tree_nodes(mcts.root):
        if node is mcts.root or node.visit_count == 0:
            continue
        below = [n.value for n in iter_nodes(node) if n.visit_count > 0 and n.value is not None]
        assert node.best_value == pytest.approx(max(below)), f"node {node.node_id}"
        checked += 1
    assert checked > 8


def test_search_backup_max_returns_satisfying_text(llama):
    task = constraints_task(keywords=["the"], max_tokens=4)
    result = search(
        llama,
        PROMPT,
        task=task,
        num_simulations=24,
        backup="max",
        rollout="greedy",
        rollout_depth=8,
        max_new_tokens=8,
        stop_when_solved=False,
        widening=BUSHY_WIDENING,
    )
    assert task.is_satisfied(result.text)


def test_search_backup_max_changes_tree(llama):
    options = dict(
        num_simulations=24,
        rollout="greedy",
        rollout_depth=4,
        max_new_tokens=8,
        widening=BUSHY_WIDENING,
    )
    mean = search(llama, PROMPT, backup="mean", **options)
    best = search(llama, PROMPT, backup="max", **options)
    mean_visits = [n.visit_count for n in iter_nodes(mean.tree)]
    best_visits = [n.visit_count for n in iter_nodes(best.tree)]
    assert mean_visits != best_visits


def test_backup_max_stops_when_exhausted(llama):
    result = search(llama, PROMPT, num_simulations=20, backup="max", max_new_tokens=1, max_width=3)
    assert result.stats.stopped_by == "exhausted"


def test_backup_max_opens_every_finished_child(llama):
    result = search(llama, PROMPT, num_simulations=20, backup="max", max_new_tokens=1, max_width=3)
    assert result.stats.nodes == 3


def test_backup_mean_revisits_finished_texts(llama):
    result = search(llama, PROMPT, num_simulations=20, backup="mean", max_new_tokens=1, max_width=3)
    assert result.stats.stopped_by == "simulations"


def test_backup_max_expands_every_simulation(llama):
    mcts = make_mcts(
        llama,
        num_simulations=24,
        backup="max",
        rollout=RolloutConfig("greedy", depth=4),
        max_new_tokens=3,
        max_width=2,
    )
    revisits = []
    expand = mcts._expand_and_evaluate

    def spy(leaves):
        revisits.extend(leaf for leaf in leaves if not leaf.new_tokens)
        return expand(leaves)

    mcts._expand_and_evaluate = spy
    mcts.run(None)
    assert revisits == []


@pytest.mark.parametrize(
    ("options", "fragment"),
    [
        ({"backup": "best"}, "backup='best'"),
        ({"backup": "max", "selection": "uct"}, "selection='uct'"),
        ({"backup": "max", "selection": "gumbel"}, "selection='gumbel'"),
    ],
)
def test_search_config_rejects_backup(options, fragment):
    with pytest.raises(ValueError, match=re.escape(fragment)):
        SearchConfig(**options)


def test_select_batch_distinct_leaves(llama):
    mcts = make_mcts(llama, widening=BUSHY_WIDENING, max_width=4, batch_size=1)
    mcts._simulate(12, None)
    leaves = mcts._select_batch(4)
    expanding = [leaf.node.node_id for leaf in leaves if leaf.new_tokens]
    assert len(leaves) == 4
    assert len(expanding) == len(set(expanding))
    for node in iter_nodes(mcts.root):
        assert node.virtual_loss == 0, f"node {node.node_id}"


# ----------------------------------------------------------------- widening


def test_widening_follows_schedule(llama):
    schedule = BezierSchedule(0.1, 0.06, 0.03, 0.0, horizon=16)
    max_width = 6
    mcts = make_mcts(llama, widening=schedule, max_width=max_width, batch_size=1)
    tokens, priors, _ = mcts.candidates[ROOT]
    counts = []
    for simulation in range(30):
        visits = mcts.root.visit_count
        mcts._simulate(1, None)
        expected = admitted_count(priors, schedule.at_visits(visits), max_width)
        children = mcts.root.children
        assert len(children) == expected, f"simulation {simulation}, root visits {visits}"
        assert [c.token_id for c in children] == tokens[:expected]
        counts.append(len(children))
    # The schedule must have opened children over time for this test to mean anything.
    assert counts[0] == 1
    assert counts[-1] == max_width
    assert len(set(counts)) >= 3


def test_widening_children_sorted_and_bounded(llama):
    max_width = 4
    mcts = make_mcts(llama, widening=BUSHY_WIDENING, max_width=max_width, max_new_tokens=6)
    mcts.run(None)
    expanded = [n for n in iter_nodes(mcts.root) if n.children]
    assert len(expanded) > 3
    for node in expanded:
        priors = [c.prior for c in node.children]
        assert 1 <= len(node.children) <= max_width, f"node {node.node_id}"
        assert priors == sorted(priors, reverse=True), f"node {node.node_id}"
        tokens, _, _ = mcts.candidates[node.node_id]
        assert [c.token_id for c in node.children] == tokens[: len(node.children)]


NARROW_WIDENING = BezierSchedule(1.0, 1.0, 1.0, 1.0)
"""A schedule whose threshold of 1 no prior reaches, so each node opens only its most likely
child (a node always opens at least one)."""


@pytest.fixture(scope="module")
def root_widened(llama):
    mcts = make_mcts(
        llama,
        widening=NARROW_WIDENING,
        root_widening=BUSHY_WIDENING,
        max_width=4,
        max_new_tokens=6,
        num_simulations=24,
    )
    mcts.run(None)
    return mcts


def test_root_widening_opens_root_children(root_widened):
    assert len(root_widened.root.children) == 4


def test_root_widening_skips_deeper_nodes(root_widened):
    deeper = [n for n in tree_nodes(root_widened.root) if n.children]
    assert len(deeper) > 3
    for node in deeper:
        assert len(node.children) == 1, f"node {node.node_id}"


def test_search_root_widening_error_names_argument(llama):
    with pytest.raises(ValueError, match="root_widening='1,2'"):
        search(llama, PROMPT, root_widening="1,2")


def test_config_rejects_root_widening_number():
    with pytest.raises(TypeError, match="root_widening"):
        SearchConfig(root_widening=0.5)


# ----------------------------------------------------------------- exactness


def test_batched_expand_equals_one_by_one(llama):
    prompt_ids = llama.encode_prompt(PROMPT)
    parents = [ROOT, ROOT, ROOT, 0, 0, 1, 2, 3]
    tokens = [40, 41, 42, 50, 51, 52, 53, 60]

    batched = TreeState(llama.model, prompt_ids)
    first = batched.expand(parents[:3], tokens[:3])
    second = batched.expand(parents[3:], tokens[3:])
    batched_logits = torch.cat([first.logits, second.logits])

    single = TreeState(llama.model, prompt_ids)
    single_logits = torch.cat(
        [
            single.expand([parent], [token]).logits
            for parent, token in zip(parents, tokens, strict=True)
        ]
    )

    assert batched.node_ids() == single.node_ids()
    for node_id in batched.node_ids():
        assert batched.path_token_ids(node_id) == single.path_token_ids(node_id)
        diff = float((batched_logits[node_id] - single_logits[node_id]).abs().max())
        assert diff <= ATOL, f"node {node_id}: {diff:.3g}"
        reference = plain_logits(llama.model, prompt_ids + batched.path_token_ids(node_id))
        diff = float((batched_logits[node_id] - reference).abs().max())
        assert diff <= ATOL, f"node {node_id} against a plain forward: {diff:.3g}"


def assert_candidates_exact(mcts: _MCTS, model: LoadedModel) -> int:
    """Assert that every live node's candidates match a plain forward; return the count."""
    checked = 0
    for node in iter_nodes(mcts.root):
        ids, priors, log_probs = mcts.candidates[node.node_id]
        if not ids:
            assert node.is_terminal, f"node {node.node_id} has no candidates"
            continue
        reference = plain_logits(model.model, mcts.prompt_ids + node.token_ids())
        reference_log_probs = torch.log_softmax(reference, dim=-1)
        reference_probs = reference_log_probs.exp()
        where = f"node {node.node_id} (path {node.token_ids()})"
        assert log_probs == pytest.approx(reference_log_probs[ids].tolist(), abs=ATOL), where
        assert priors == pytest.approx(reference_probs[ids].tolist(), abs=ATOL), where
        # The candidates are the top max_width tokens of the plain distribution.
        left_out = reference_probs.clone()
        left_out[ids] = -1.0
        assert min(priors) >= float(left_out.max()) - ATOL, where
        for child in node.children:
            position = ids.index(child.token_id)
            assert child.log_prob == pytest.approx(log_probs[position]), where
            assert child.slot == mcts.engine.slot(child.node_id), where
        checked += 1
    return checked


@pytest.mark.parametrize("batch_size", [1, 4])
def test_search_tree_candidates_exact(llama, batch_size):
    mcts = make_mcts(
        llama,
        num_simulations=40,
        widening=BUSHY_WIDENING,
        max_width=4,
        batch_size=batch_size,
        max_new_tokens=6,
    )
    result = mcts.run(None)
    assert result.stats.simulations == 40
    checked = assert_candidates_exact(mcts, llama)
    assert checked > 10


@pytest.mark.parametrize("selection", ["puct", "uct", "gumbel"])
def test_search_selection_rules_keep_tree_exact(llama, selection):
    mcts = make_mcts(
        llama,
        num_simulations=24,
        selection=selection,
        widening=BUSHY_WIDENING,
        max_width=4,
        max_new_tokens=5,
    )
    result = mcts.run(None)
    assert result.stats.simulations == 24
    assert len(result.tree.children) > 1
    assert assert_candidates_exact(mcts, llama) > 5


def test_search_batch_size_shares_forward_passes(llama):
    kwargs = {"num_simulations": 40, "widening": BUSHY_WIDENING, "max_width": 4}
    one = search(llama, PROMPT, batch_size=1, **kwargs)
    four = search(llama, PROMPT, batch_size=4, **kwargs)
    assert four.stats.forward_passes < one.stats.forward_passes


# ----------------------------------------------------------------- commit="step"


def test_commit_keeps_subtree_and_drops_siblings(llama):
    mcts = make_mcts(
        llama,
        commit="step",
        num_simulations=40,
        widening=BUSHY_WIDENING,
        max_width=4,
        max_new_tokens=8,
    )
    mcts._simulate(40, None)
    old_root = mcts.current_root
    child = mcts._most_visited_child(old_root)
    siblings = [c for c in old_root.children if c is not child]
    assert siblings
    sibling_ids = {n.node_id for s in siblings for n in iter_nodes(s)}
    kept_stats = {n.node_id: (n.visit_count, n.value_sum) for n in iter_nodes(child)}
    assert len(kept_stats) > 1

    mcts._commit(child)
    engine = mcts.engine

    assert mcts.current_root is child
    assert {n.node_id: (n.visit_count, n.value_sum) for n in iter_nodes(child)} == kept_stats
    assert old_root.children == (child,)
    for sibling in siblings:
        assert sibling.parent is None
    assert not sibling_ids & set(engine.node_ids())
    assert not sibling_ids & set(mcts.nodes)
    live = tree_nodes(mcts.root)
    assert engine.num_nodes == len(live)
    assert set(engine.node_ids()) == {n.node_id for n in live}
    for node in live:
        assert node.slot == engine.slot(node.node_id), f"node {node.node_id}"

    # The compacted cache stays exact: expand one new child under several kept nodes at once.
    parents = [n for n in iter_nodes(child) if not n.is_terminal][:6]
    new_tokens = [mcts.candidates[n.node_id][0][-1] for n in parents]
    output = engine.expand([n.node_id for n in parents], new_tokens)
    for parent, token, row in zip(parents, new_tokens, output.logits, strict=True):
        reference = plain_logits(llama.model, mcts.prompt_ids + parent.token_ids() + [token])
        diff = float((row - reference).abs().max())
        assert diff <= ATOL, f"new child of node {parent.node_id}: {diff:.3g}"


def test_commit_keeps_root_visits(llama):
    mcts = make_mcts(llama, commit="step", widening=BUSHY_WIDENING, max_width=4)
    mcts._simulate(20, None)
    child = mcts._most_visited_child(mcts.current_root)
    visits = child.visit_count
    mcts._commit(child)
    assert child.visit_count == visits
    mcts._simulate(10, None)
    assert child.visit_count >= visits + 10


def test_commit_step_chain_and_cache(llama):
    engines: list[TreeState] = []
    result = search(
        llama,
        PROMPT,
        commit="step",
        num_simulations=8,
        max_new_tokens=5,
        max_width=4,
        widening=BUSHY_WIDENING,
        _engine_factory=recording_engine_factory([], engines),
    )
    # Every committed node keeps only the child committed after it.
    chain = []
    node = result.tree
    while node.children:
        assert len(node.children) == 1, f"node {node.node_id} kept {len(node.children)} children"
        node = node.children[0]
        chain.append(node.token_id)
    assert result.stats.committed_tokens == 5
    assert result.stats.stopped_by == "finished"
    assert result.token_ids == chain
    assert engines[0].num_nodes == len(chain)


def test_commit_step_max_depth_is_lookahead(llama):
    result = search(llama, PROMPT, commit="step", num_simulations=10, max_new_tokens=6, max_depth=2)
    assert len(result.token_ids) == 6


# ----------------------------------------------------------------- export


@pytest.fixture(scope="module")
def searched(llama):
    return search(
        llama, PROMPT, num_simulations=30, widening=BUSHY_WIDENING, max_width=4, max_new_tokens=5
    )


def test_search_tree_json_round_trip(searched, tmp_path):
    path = tmp_path / "tree.json"
    save_tree_json(searched.tree, path)
    loaded = load_tree_json(path)
    original = list(iter_nodes(searched.tree))
    restored = list(iter_nodes(loaded))
    assert len(restored) == len(original)
    for before, after in zip(original, restored, strict=True):
        where = f"node {before.node_id}"
        assert after.node_id == before.node_id, where
        assert after.token_id == before.token_id, where
        assert after.visit_count == before.visit_count, where
        assert after.value_sum == before.value_sum, where
        assert after.prior == before.prior, where
        assert after.value == before.value, where
        assert after.depth == before.depth, where
        assert after.is_terminal == before.is_terminal, where
        assert [c.node_id for c in after.children] == [c.node_id for c in before.children], where
    assert tree_to_dict(loaded) == tree_to_dict(searched.tree)


# A node statement or an edge of `tree_to_dot`, with the node names quoted or not.
DOT_NODE = re.compile(r'^\s*("?)n(-?\d+)\1 \[', re.MULTILINE)
DOT_EDGE = re.compile(r'^\s*"?n(-?\d+)"? -> "?n(-?\d+)"?;', re.MULTILINE)
# An unquoted DOT ID: letters, digits and underscores, not starting with a digit.
DOT_PLAIN_ID = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def test_search_tree_dot_names_every_node(searched):
    dot = tree_to_dot(searched.tree)
    nodes = list(iter_nodes(searched.tree))
    named = [int(match.group(2)) for match in DOT_NODE.finditer(dot)]
    edges = {(int(a), int(b)) for a, b in DOT_EDGE.findall(dot)}
    assert sorted(named) == sorted(n.node_id for n in nodes)
    assert edges == {(n.parent.node_id, n.node_id) for n in nodes if n.parent is not None}


def test_search_tree_dot_node_names_are_dot_ids(searched):
    dot = tree_to_dot(searched.tree)
    for match in DOT_NODE.finditer(dot):
        quoted = match.group(1) == '"'
        name = f"n{match.group(2)}"
        assert quoted or DOT_PLAIN_ID.fullmatch(name), f"{name} is not a DOT ID"


# ----------------------------------------------------------------- determinism


def run_seeded(model: LoadedModel, seed: int):
    return search(
        model,
        PROMPT,
        num_simulations=24,
        selection="gumbel",
        rollout="sample",
        rollout_depth=3,
        widening=BUSHY_WIDENING,
        max_width=4,
        max_new_tokens=5,
        seed=seed,
    )


def test_search_same_seed_same_tree(llama):
    first = run_seeded(llama, 7)
    second = run_seeded(llama, 7)
    assert first.stats.rollout_tokens > 0
    assert tree_to_dict(first.tree) == tree_to_dict(second.tree)
    assert first.text == second.text
    assert first.token_ids == second.token_ids
    assert [c.text for c in first.completions] == [c.text for c in second.completions]


def test_search_seed_drives_gumbel_noise(llama):
    mcts = make_mcts(llama, selection="gumbel", max_width=4, seed=7)
    expected = sample_gumbel(4, generator=torch.Generator().manual_seed(7))
    assert torch.equal(mcts.gumbel, expected)


# ----------------------------------------------------------------- budgets and statistics


def test_max_nodes_never_exceeded(llama):
    record: list[int] = []
    engines: list[TreeState] = []
    result = search(
        llama,
        PROMPT,
        num_simulations=300,
        max_nodes=40,
        widening=BUSHY_WIDENING,
        max_new_tokens=8,
        _engine_factory=recording_engine_factory(record, engines),
    )
    assert record
    assert max(record) <= 40
    assert result.stats.evicted_nodes > 0
    assert engines[0].num_nodes == len(tree_nodes(result.tree))


def test_max_nodes_never_exceeded_with_rollouts(llama):
    record: list[int] = []
    engines: list[TreeState] = []
    result = search(
        llama,
        PROMPT,
        num_simulations=300,
        max_nodes=40,
        widening=BUSHY_WIDENING,
        max_new_tokens=8,
        rollout="greedy",
        rollout_depth=4,
        _engine_factory=recording_engine_factory(record, engines),
    )
    assert result.stats.rollout_tokens > 0
    assert max(record) <= 40


def test_max_nodes_eviction_not_exhausted(llama):
    result = search(
        llama,
        PROMPT,
        num_simulations=300,
        max_nodes=40,
        widening=BUSHY_WIDENING,
        max_new_tokens=8,
    )
    assert result.stats.stopped_by != "exhausted"


def test_time_limit_stops_search(llama):
    result = search(llama, PROMPT, num_simulations=1_000_000, max_new_tokens=4, time_limit=0.2)
    assert result.stats.stopped_by == "time_limit"
    assert result.stats.simulations < 1_000_000


def test_stats_without_rollouts(searched):
    stats = searched.stats
    assert stats.evicted_nodes == 0
    assert stats.tokens_forwarded_per_node == 1.0
    assert stats.nodes == len(tree_nodes(searched.tree))
    assert stats.rollout_tokens == 0
    assert stats.simulations == 30
    assert stats.stopped_by == "simulations"
    assert stats.tokens_forwarded == stats.prompt_tokens + stats.nodes
    assert stats.peak_cache_length == stats.prompt_tokens + stats.nodes


def test_stats_with_rollouts_count_rollout_tokens(llama):
    result = search(
        llama, PROMPT, num_simulations=12, rollout="greedy", rollout_depth=4, max_new_tokens=8
    )
    stats = result.stats
    assert stats.rollout_tokens > 0
    assert stats.tokens_forwarded_per_node == 1.0
    assert stats.tokens_forwarded == stats.prompt_tokens + stats.nodes + stats.rollout_tokens


def test_forward_sizes_add_up_with_rollouts(llama):
    result = search(
        llama, PROMPT, num_simulations=12, rollout="greedy", rollout_depth=4, max_new_tokens=8
    )
    stats = result.stats
    sizes = stats.forward_sizes
    assert sum(sizes.values()) == stats.forward_passes - 1
    assert sum(size * count for size, count in sizes.items()) == (
        stats.tokens_forwarded - stats.prompt_tokens
    )
    assert min(sizes) >= 1


# ----------------------------------------------------------------- invalid input


@pytest.mark.parametrize(
    ("kwargs", "fragments"),
    [
        ({"num_simulations": 0}, ["num_simulations", "0"]),
        ({"c_puct": -1}, ["c_puct", "-1"]),
        ({"widening": "1,2"}, ["1,2"]),
        ({"widening": (0.5, 1.5, 0, 0)}, ["1.5"]),
        ({"widening": (0.5, 0.2)}, ["widening", "(0.5, 0.2)"]),
        ({"batch_size": 0}, ["batch_size", "0"]),
        ({"time_limit": 0}, ["time_limit", "0"]),
        ({"time_limit": -1}, ["time_limit", "-1"]),
        ({"max_nodes": 4}, ["max_nodes", "4", "max_width"]),
        ({"selection": "foo"}, ["selection", "foo"]),
        ({"commit": "twice"}, ["commit", "twice"]),
        ({"rollout": "foo"}, ["rollout", "foo"]),
        ({"max_new_tokens": 300}, ["max_new_tokens", "300"]),
        ({"max_new_tokens": 0}, ["max_new_tokens", "0"]),
        ({"max_width": 0}, ["max_width", "0"]),
        ({"temperature": 0}, ["temperature", "0"]),
        ({"top_p": 1.5}, ["top_p", "1.5"]),
        ({"num_completions": 0}, ["num_completions", "0"]),
    ],
)
def test_search_rejects_invalid_input(llama, kwargs, fragments):
    with pytest.raises(ValueError, match=re.escape(fragments[0])) as error:
        search(llama, PROMPT, **kwargs)
    for fragment in fragments[1:]:
        assert fragment in str(error.value)


@pytest.mark.parametrize("widening", ["1,2", (0.5, 1.5, 0, 0)])
def test_search_widening_error_names_parameter(llama, widening):
    with pytest.raises(ValueError, match="widening"):
        search(llama, PROMPT, widening=widening)


def test_search_rollout_depth_error_names_parameter(llama):
    with pytest.raises(ValueError, match="rollout_depth=0"):
        search(llama, PROMPT, rollout="greedy", rollout_depth=0)


def test_search_rejects_empty_prompt(llama):
    with pytest.raises(ValueError, match="prompt is empty"):
        search(llama, "   ")


def test_search_config_rejects_bool_simulations():
    with pytest.raises(ValueError, match="num_simulations=True"):
        SearchConfig(num_simulations=True)


def test_search_config_rejects_rollout_kind():
    with pytest.raises(ValueError, match="rollout='foo'"):
        SearchConfig(rollout=RolloutConfig(kind="foo"))


def test_search_rollouts_stay_within_max_new_tokens(llama, monkeypatch):
    import tempo_search.search as search_module

    lengths = []
    original = search_module.run_rollouts

    def recording(state, starts, *args, **kwargs):
        results = original(state, starts, *args, **kwargs)
        for (node_id, _), result in zip(starts, results, strict=True):
            lengths.append(state.depth(node_id) + len(result.token_ids))
        return results

    monkeypatch.setattr(search_module, "run_rollouts", recording)
    search(
        llama, "the cat", num_simulations=8, rollout="greedy", rollout_depth=32, max_new_tokens=6
    )
    assert max(lengths) == 6


# ----------------------------------------------------------------- guide, rollout reuse, solutions


def guided_mcts(model: LoadedModel, guide: float) -> tuple[_MCTS, object]:
    task = constraints_task(keywords=["dog"])
    task.bind(model.tokenizer, model.vocab_size)
    prompt_ids = model.encode_prompt(PROMPT)
    engine = TreeState(model.model, prompt_ids)
    config = SearchConfig(guide=guide, max_width=model.vocab_size)
    return _MCTS(model, prompt_ids, config, task, engine, []), task


def test_guide_mixes_lm_prior_over_guide_tokens(llama):
    mcts, task = guided_mcts(llama, 0.2)
    probs = torch.softmax(mcts.engine.prompt_logits.float(), dim=-1)
    guide = task.guide_tokens([], "")
    expected = 0.8 * probs + 0.2 * torch.where(guide, probs, 0.0) / probs[guide].sum()
    ids, priors, _ = mcts.candidates[ROOT]
    assert torch.allclose(torch.tensor(priors), expected[ids], atol=1e-6)


def test_guide_zero_keeps_lm_prior(llama):
    mcts, _ = guided_mcts(llama, 0.0)
    probs = torch.softmax(mcts.engine.prompt_logits.float(), dim=-1)
    ids, priors, _ = mcts.candidates[ROOT]
    assert torch.allclose(torch.tensor(priors), probs[ids], atol=1e-6)


def test_guide_keeps_model_log_probs(llama):
    mcts, _ = guided_mcts(llama, 0.2)
    log_probs = torch.log_softmax(mcts.engine.prompt_logits.float(), dim=-1)
    ids, _, stored = mcts.candidates[ROOT]
    assert torch.allclose(torch.tensor(stored), log_probs[ids], atol=1e-6)


@pytest.mark.parametrize("guide", [1.0, -0.1])
def test_search_config_rejects_guide_out_of_range(guide):
    with pytest.raises(ValueError, match=re.escape(f"guide={guide!r}")):
        SearchConfig(guide=guide)


@pytest.fixture(scope="module")
def reused(llama):
    """A greedy-rollout search run to its end, with its state."""
    mcts = make_mcts(
        llama,
        num_simulations=24,
        rollout=RolloutConfig("greedy", depth=8),
        max_new_tokens=8,
        widening=BUSHY_WIDENING,
    )
    mcts.run(None)
    return mcts


def reusing_nodes(mcts: _MCTS) -> list[SearchNode]:
    """Nodes whose token is the first token of their parent's rollout (with more after it)."""
    found = []
    for node_id in mcts.rollout_of:
        node = mcts.nodes[node_id]
        above = mcts.rollout_of.get(node.parent.node_id) if node.parent is not None else None
        if (
            above is not None
            and above.finished
            and len(above.token_ids) > 1
            and above.token_ids[0] == node.token_id
        ):
            found.append(node)
    return found


def test_rollout_reuse_happens(reused):
    assert reused.reused_rollouts == len(reusing_nodes(reused))


def test_rollout_reuse_some_nodes(reused):
    assert reused.reused_rollouts > 0


def test_rollout_reuse_in_stats(reused):
    assert reused._result().stats.reused_rollouts == reused.reused_rollouts


def test_rollout_reuse_takes_rest_of_parent_rollout(reused):
    for node in reusing_nodes(reused):
        parent_rollout = reused.rollout_of[node.parent.node_id]
        assert reused.rollout_of[node.node_id].token_ids == parent_rollout.token_ids[1:]


def test_rollout_reuse_matches_plain_greedy(llama, reused):
    for node in reusing_nodes(reused):
        tokens = reused.rollout_of[node.node_id].token_ids
        input_ids = torch.tensor([reused.prompt_ids + node.token_ids()])
        with torch.no_grad():
            output = llama.model.generate(
                input_ids,
                attention_mask=torch.ones_like(input_ids),
                do_sample=False,
                max_new_tokens=len(tokens),
                pad_token_id=0,
            )
        assert output[0, input_ids.shape[1] :].tolist() == tokens


def test_offer_solution_keeps_highest_mean_log_prob(llama):
    mcts = make_mcts(llama)
    mcts._offer_solution([5, 6], -4.0)
    mcts._offer_solution([7, 8, 9], -3.0)
    mcts._offer_solution([4], -1.5)
    assert mcts.solution == [7, 8, 9]


def test_offer_solution_drops_closing_eos(llama):
    # With the end-of-sequence token counted, [5, 6, eos] would score -4.0 / 3 > -1.8.
    mcts = make_mcts(llama)
    eos = min(mcts.eos)
    mcts._offer_solution([5, 6, eos], -4.0, -0.1)
    mcts._offer_solution([7, 8, 9], -5.4, -1.0)
    assert mcts.solution == [7, 8, 9]


def test_search_without_stop_returns_most_likely_solution(llama):
    # A token limit ends every path at 4 tokens, so that finished texts are frequent.
    task = constraints_task(keywords=["the"], max_tokens=4)
    offered: list[tuple[float, list[int]]] = []
    original = _MCTS._offer_solution

    def record(self, token_ids, sum_log_prob, last_log_prob=None):
        original(self, token_ids, sum_log_prob, last_log_prob)
        ids = [t for t in token_ids if t not in self.eos]
        closing = last_log_prob if len(ids) < len(token_ids) else 0.0
        offered.append(((sum_log_prob - closing) / max(1, len(ids)), ids))

    _MCTS._offer_solution = record
    try:
        result = search(
            llama,
            PROMPT,
            task=task,
            num_simulations=24,
            rollout="greedy",
            rollout_depth=8,
            max_new_tokens=8,
            stop_when_solved=False,
            widening=BUSHY_WIDENING,
        )
    finally:
        _MCTS._offer_solution = original
    assert len({tuple(ids) for _, ids in offered}) > 1
    assert result.token_ids == max(offered, key=lambda pair: pair[0])[1]


def test_rollout_cut_by_depth_not_reused(llama):
    mcts = make_mcts(
        llama,
        num_simulations=24,
        rollout=RolloutConfig("greedy", depth=3),
        max_new_tokens=8,
        widening=BUSHY_WIDENING,
    )
    mcts.run(None)
    assert mcts.reused_rollouts == 0
