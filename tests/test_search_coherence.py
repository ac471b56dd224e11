"""Coherence value and low-coherence pruning in the MCTS search."""

from __future__ import annotations

import pytest
import torch

from tempo_search.coherence import PruneConfig
from tempo_search.models import LoadedModel
from tempo_search.policies.values import ValueWeights
from tempo_search.schedules import BezierSchedule
from tempo_search.search import _MCTS, SearchConfig, search
from tempo_search.testing import tiny_model
from tempo_search.tree import SearchNode, iter_nodes, tree_to_dict
from tempo_search.tree_state import ROOT, TreeState, plain_logits

ATOL = 1e-4
"""The exactness invariant's bound on logits in float32."""

PROMPT = "the cat sat"

# Low thresholds, so that nodes open several children after a few visits and trees get bushy.
BUSHY_WIDENING = BezierSchedule(0.1, 0.05, 0.02, 0.0, horizon=8)

# A cut above 0 and a floor of 0.5 prune every child below its siblings' mean attention, so
# that tiny random models prune often.
EAGER_PRUNING = PruneConfig(layers="all", cut=0.0, floor=0.5)


@pytest.fixture(scope="module")
def llama() -> LoadedModel:
    return tiny_model("llama")


class Recorder:
    """An `_engine_factory` that records each expand's arguments, attention and node ids."""

    def __init__(self) -> None:
        self.engines: list[TreeState] = []
        self.calls: list[dict] = []

    def __call__(self, model, prompt_ids) -> TreeState:
        engine = TreeState(model, prompt_ids)
        original_expand = engine.expand

        def expand(parents, token_ids, *, capture_layers=()):
            slots = {p: engine.slot(p) for p in parents if p != ROOT}
            output = original_expand(parents, token_ids, capture_layers=capture_layers)
            self.calls.append(
                {
                    "parents": list(parents),
                    "capture_layers": list(capture_layers),
                    "attentions": {k: v.clone() for k, v in output.attentions.items()},
                    "parent_slots": slots,
                    "num_nodes": engine.num_nodes,
                    "node_ids": list(output.node_ids),
                    "logits": output.logits.clone(),
                }
            )
            return output

        engine.expand = expand
        self.engines.append(engine)
        return engine


def run(model: LoadedModel, **kwargs):
    recorder = Recorder()
    options = {
        "num_simulations": 40,
        "widening": BUSHY_WIDENING,
        "max_width": 4,
        "max_new_tokens": 6,
        "_engine_factory": recorder,
    }
    options.update(kwargs)
    result = search(model, PROMPT, **options)
    return result, recorder


def live_nodes(root: SearchNode) -> list[SearchNode]:
    return [n for n in iter_nodes(root) if n is not root and not n.pruned]


def hand_scores(recorder: Recorder, layers: list[int]) -> dict[int, float]:
    """Per node id: the mean attention its children paid to its slot in its first expansion,
    with linearly rising layer weights and a mean over heads, computed from the formula."""
    raw = torch.arange(1, len(layers) + 1, dtype=torch.float64)
    weights = raw / raw.sum()
    scores: dict[int, float] = {}
    for call in recorder.calls:
        rows_by_parent: dict[int, list[int]] = {}
        for row, parent in enumerate(call["parents"]):
            rows_by_parent.setdefault(parent, []).append(row)
        for parent, rows in rows_by_parent.items():
            if parent == ROOT or parent in scores:
                continue
            slot = call["parent_slots"][parent]
            total = 0.0
            for weight, layer in zip(weights.tolist(), layers, strict=True):
                attention = call["attentions"][layer].double()  # [heads, num_new, kv_len]
                total += weight * float(attention[:, rows, slot].mean())
            scores[parent] = total
    return scores


# ----------------------------------------------------------------- no coherence


def test_search_without_coherence_tree_unchanged(llama):
    plain, plain_record = run(llama)
    explicit, explicit_record = run(llama, coherence=None)
    assert tree_to_dict(explicit.tree) == tree_to_dict(plain.tree)
    assert all(call["capture_layers"] == [] for call in plain_record.calls)
    assert all(call["capture_layers"] == [] for call in explicit_record.calls)


def test_search_coherence_unused_captures_nothing(llama):
    plain, _ = run(llama)
    unused, recorder = run(llama, coherence=PruneConfig())
    assert all(call["capture_layers"] == [] for call in recorder.calls)
    assert tree_to_dict(unused.tree) == tree_to_dict(plain.tree)


# ----------------------------------------------------------------- coherence values


def test_search_captures_configured_layers_only(llama):
    config = PruneConfig(layers=(0, -1))
    _, recorder = run(llama, coherence=config, value=ValueWeights(coherence=1.0))
    last = llama.model.config.num_hidden_layers - 1
    assert recorder.calls
    for call in recorder.calls:
        assert call["capture_layers"] == [0, last]
        assert sorted(call["attentions"]) == [0, last]


def test_search_coherence_matches_hand_computation(llama):
    config = PruneConfig(layers="all", steepness=4.0, cut=-0.25)
    result, recorder = run(llama, coherence=config, value=ValueWeights(coherence=1.0))
    layers = list(range(llama.model.config.num_hidden_layers))
    scores = hand_scores(recorder, layers)

    checked = 0
    for node in iter_nodes(result.tree):
        scored = [c for c in node.children if c.node_id in scores]
        if len(scored) < 2:
            for child in node.children:
                assert child.coherence is None, child
            continue
        values = torch.tensor([scores[c.node_id] for c in scored], dtype=torch.float64)
        relative = values / values.mean() - 1.0
        expected = torch.sigmoid(config.steepness * (relative - config.cut))
        for child, weight in zip(scored, expected.tolist(), strict=True):
            assert child.coherence == pytest.approx(weight, abs=1e-6), child
            checked += 1
        for child in node.children:
            if child not in scored:
                assert child.coherence is None, child
    assert checked >= 4


def test_search_coherence_enters_child_values(llama):
    # With coherence as the only weighted part besides likelihood, a child's value is the
    # mean of its likelihood and its parent's coherence at the time it was evaluated.
    value = ValueWeights(likelihood=1.0, coherence=1.0, reward=0.0)
    plain, _ = run(llama, value=ValueWeights(likelihood=1.0, coherence=0.0, reward=0.0))
    coherent, _ = run(llama, coherence=PruneConfig(layers="all"), value=value)
    plain_values = {n.node_id: n.value for n in iter_nodes(plain.tree)}
    differing = [
        n
        for n in iter_nodes(coherent.tree)
        if n.node_id in plain_values
        and n.value is not None
        and abs(n.value - plain_values[n.node_id]) > 1e-9
    ]
    assert differing


def test_search_coherence_requires_likelihood_weight(llama):
    with pytest.raises(ValueError, match="likelihood"):
        search(
            llama,
            PROMPT,
            num_simulations=4,
            coherence=PruneConfig(),
            value=ValueWeights(likelihood=0.0, coherence=1.0, reward=1.0),
        )


def test_search_prune_children_requires_coherence(llama):
    with pytest.raises(ValueError, match="coherence=PruneConfig"):
        search(llama, PROMPT, num_simulations=4, prune_children=True)


def test_search_rejects_non_prune_config(llama):
    with pytest.raises(TypeError, match="PruneConfig"):
        search(llama, PROMPT, num_simulations=4, coherence={"floor": 0.5})


# ----------------------------------------------------------------- pruning


@pytest.fixture(scope="module")
def pruned_search(llama):
    return run(
        llama,
        num_simulations=60,
        coherence=EAGER_PRUNING,
        prune_children=True,
        value=ValueWeights(coherence=1.0),
    )


def test_pruning_counts_pruned_nodes(pruned_search):
    result, _ = pruned_search
    pruned = [n for n in iter_nodes(result.tree) if n.pruned]
    assert result.stats.pruned_nodes > 0
    assert result.stats.pruned_nodes == len(pruned)


def test_pruned_nodes_absent_from_cache(pruned_search):
    result, recorder = pruned_search
    engine = recorder.engines[0]
    live = live_nodes(result.tree)
    assert engine.num_nodes == len(live)
    assert set(engine.node_ids()) == {n.node_id for n in live}


def test_pruned_nodes_are_leaves_below_floor(pruned_search):
    result, _ = pruned_search
    for node in iter_nodes(result.tree):
        if node.pruned:
            assert not node.children, node
            assert node.coherence < EAGER_PRUNING.floor, node
            assert node.slot == -1, node


def test_pruning_keeps_a_live_child(pruned_search):
    result, _ = pruned_search
    for node in iter_nodes(result.tree):
        if node.children:
            assert any(not c.pruned for c in node.children), node


def stepped_search(model: LoadedModel, chunks: int) -> tuple[_MCTS, Recorder, list[dict]]:
    """Run a pruning search four simulations at a time; after each chunk, record the pruned
    nodes' visit counts and how many expand calls had run."""
    config = SearchConfig(
        num_simulations=4,
        widening=BUSHY_WIDENING,
        max_width=4,
        max_new_tokens=6,
        coherence=EAGER_PRUNING,
        prune_children=True,
        value=ValueWeights(coherence=1.0),
    )
    prompt_ids = model.encode_prompt(PROMPT)
    recorder = Recorder()
    mcts = _MCTS(model, prompt_ids, config, None, recorder(model.model, prompt_ids), [])
    snapshots = []
    for _ in range(chunks):
        mcts._simulate(4, None)
        pruned = {n.node_id: (n, n.visit_count) for n in iter_nodes(mcts.root) if n.pruned}
        snapshots.append({"pruned": pruned, "calls": len(recorder.calls)})
    return mcts, recorder, snapshots


@pytest.fixture(scope="module")
def stepped(llama):
    return stepped_search(llama, chunks=15)


def test_pruned_nodes_never_selected_again(stepped):
    mcts, recorder, snapshots = stepped
    assert mcts.pruned > 0
    for snapshot in snapshots:
        for node_id, (node, visits) in snapshot["pruned"].items():
            assert node.visit_count == visits, node_id
            for call in recorder.calls[snapshot["calls"] :]:
                assert node_id not in call["parents"], node_id


def test_pruned_tokens_not_admitted_again(stepped):
    mcts, _, _ = stepped
    for node in iter_nodes(mcts.root):
        tokens = [c.token_id for c in node.children]
        assert len(tokens) == len(set(tokens)), node


def test_logits_exact_after_pruning(stepped, llama):
    mcts, recorder, snapshots = stepped
    first = next(s["calls"] for s in snapshots if s["pruned"])
    later = recorder.calls[first:]
    assert later

    # Nodes forwarded after the first pruning: their recorded logits against a plain forward.
    prompt_ids = llama.encode_prompt(PROMPT)
    checked = 0
    for call in later:
        for node_id, logits in zip(call["node_ids"], call["logits"], strict=True):
            node = mcts.nodes.get(node_id)
            if node is None:
                continue
            expected = plain_logits(llama, prompt_ids + node.token_ids())
            assert torch.allclose(logits, expected, atol=ATOL), node
            checked += 1
    assert checked >= 4


def test_cache_exact_after_pruning(stepped, llama):
    # One more token below live nodes: the compacted cache gives the plain forward's logits.
    mcts, _, _ = stepped
    engine = mcts.engine
    prompt_ids = llama.encode_prompt(PROMPT)
    checked = 0
    for node in live_nodes(mcts.root):
        if node.is_terminal or checked >= 8:
            continue
        path = node.token_ids()
        output = engine.expand([node.node_id], [path[-1]])
        expected = plain_logits(llama, prompt_ids + path + [path[-1]])
        assert torch.allclose(output.logits[0], expected, atol=ATOL), node
        engine.rewind(1)
        checked += 1
    assert checked >= 4


# ----------------------------------------------------------------- command line


def test_cli_coherence_flags_build_search_arguments():
    from tempo_search.cli import _coherence_from_args, _value_from_args, build_parser

    args = build_parser().parse_args(
        ["search", "the cat", "--coherence-weight", "0.5", "--prune-children"]
    )
    arguments = _coherence_from_args(args)
    assert _value_from_args(args) == ValueWeights(coherence=0.5)
    assert arguments["prune_children"] is True
    assert arguments["coherence"] == PruneConfig(layers="last:4", floor=0.5)


def test_cli_without_coherence_flags_passes_nothing():
    from tempo_search.cli import _coherence_from_args, build_parser

    args = build_parser().parse_args(["search", "the cat"])
    assert _coherence_from_args(args) == {}
