"""Retroactive attention-based pruning in `generate` and its command-line flags."""

from __future__ import annotations

import json
from typing import ClassVar

import pytest
import torch

import tempo_search.generate as generate_module
from tempo_search import cli
from tempo_search.coherence import PruneConfig
from tempo_search.generate import generate, select_parallel_set
from tempo_search.tree_state import ROOT, TreeState

PROMPT = "the cat sat on"
# Settings under which the tiny llama prunes several members in 12 steps; tests that rely on
# pruning assert that it happened.
SETTINGS = {"threshold": 0.05, "max_new_tokens": 12, "max_width": 8}
PRUNE = PruneConfig(cut=-0.2)


class RecordingTreeState(TreeState):
    """A TreeState that keeps every forward: depth, token ids, logits and captured attention."""

    instances: ClassVar[list[RecordingTreeState]] = []

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.forwards: list[dict] = []
        RecordingTreeState.instances.append(self)

    def expand(self, parents, token_ids, *, capture_layers=()):
        output = super().expand(parents, token_ids, capture_layers=capture_layers)
        self.forwards.append(
            {
                "depth": self.depth(output.node_ids[0]),
                "token_ids": list(token_ids),
                "logits": output.logits.clone(),
                "attentions": dict(output.attentions),
                "first_slot": self.slot(output.node_ids[0]),
            }
        )
        return output


@pytest.fixture
def recording(monkeypatch):
    RecordingTreeState.instances = []
    monkeypatch.setattr(generate_module, "TreeState", RecordingTreeState)
    return RecordingTreeState.instances


@pytest.fixture
def tiny(get_tiny_model):
    return get_tiny_model("llama", "sdpa")


def _final_forwards(state: RecordingTreeState) -> dict[int, dict]:
    """The last forward of each depth: the one whose entries stayed in the cache."""
    final = {}
    for record in state.forwards:
        final[record["depth"]] = record
    return final


def _kept_rows(step) -> list[int]:
    return [i for i, token in enumerate(step.tokens) if not token.pruned]


def test_superposition_removal_matches_replay_without_pruned(tiny, recording):
    result = generate(tiny, PROMPT, prune=PRUNE, **SETTINGS)
    assert result.stats.pruned_tokens > 0
    final = _final_forwards(recording[0])

    # Replay only the kept members of each set in a fresh cache and compare every row.
    replay = TreeState(tiny.model, result.prompt_token_ids, mode="superposition")
    parent = ROOT
    largest = 0.0
    for depth, step in enumerate(result.steps[:-1], start=1):
        record = final[depth]
        assert record["token_ids"] == [t.id for t in step.tokens]
        rows = _kept_rows(step)
        kept_ids = [step.tokens[i].id for i in rows]
        output = replay.expand([parent] * len(kept_ids), kept_ids)
        parent = output.node_ids[0]
        difference = (record["logits"][rows] - output.logits).abs().max().item()
        largest = max(largest, difference)
    assert largest < 1e-4


def test_superposition_mixture_after_removal_weights_keep(tiny, recording):
    result = generate(tiny, PROMPT, prune=PRUNE, **SETTINGS)
    final = _final_forwards(recording[0])
    checked = 0
    for index in range(1, len(result.steps)):
        previous = result.steps[index - 1]
        if not any(t.pruned for t in previous.tokens):
            continue
        rows = _kept_rows(previous)
        weights = torch.tensor(
            [previous.tokens[i].prob * previous.tokens[i].keep_weight for i in rows]
        )
        dists = torch.softmax(final[index]["logits"][rows], dim=-1)
        mixture = ((weights / weights.sum())[:, None] * dists).sum(dim=0)
        ids, _ = select_parallel_set(
            mixture,
            threshold=SETTINGS["threshold"],
            max_width=SETTINGS["max_width"],
            exclude=tiny.eos_token_ids,
        )
        chosen = result.steps[index].tokens
        assert ids == [t.id for t in chosen]
        probs = torch.tensor([t.prob for t in chosen])
        assert torch.allclose(probs, mixture[ids], atol=1e-6)
        checked += 1
    assert checked > 0


def test_superposition_pruned_tokens_absent_from_cache(tiny, recording):
    result = generate(tiny, PROMPT, prune=PRUNE, **SETTINGS)
    state = recording[0]
    depths = sorted({state.depth(n) for n in state.node_ids()})
    expected = [t.id for step in result.steps[: len(depths)] for t in step.tokens if not t.pruned]
    assert [state.token(n) for n in state.node_ids()] == expected
    assert result.stats.cache_length == result.stats.prompt_tokens + len(expected)
    assert state.cache.get_seq_length() == state.cache_length


def test_superposition_best_path_and_text_skip_pruned(tiny):
    result = generate(tiny, PROMPT, prune=PRUNE, **SETTINGS)
    for step, token_id in zip(result.steps, result.best_token_ids, strict=True):
        kept = [t.id for t in step.tokens if not t.pruned]
        assert token_id == kept[0]
    pruned = [t.token for step in result.steps for t in step.tokens if t.pruned]
    rebuilt = generate_module.bracket_text(
        [[t for t in step.tokens if not t.pruned] for step in result.steps]
    )
    assert pruned
    assert result.text == rebuilt


def test_pruning_never_removes_every_member(tiny):
    # With steepness 1 every weight is at most sigmoid(max_width - 0.5) < 1, so floor=1.0 removes
    # every member and only the fallback member of each set survives.
    result = generate(tiny, PROMPT, prune=PruneConfig(floor=1.0, steepness=1.0), **SETTINGS)
    for step in result.steps:
        assert any(not t.pruned for t in step.tokens)
    scored = [s for s in result.steps if any(t.keep_weight is not None for t in s.tokens)]
    assert scored
    for step in scored:
        assert sum(not t.pruned for t in step.tokens) == 1


def test_pruning_counts_forwards_of_recomputations(tiny, recording):
    result = generate(tiny, PROMPT, prune=PRUNE, **SETTINGS)
    state = recording[0]
    assert result.stats.forward_passes == 1 + len(state.forwards)
    assert result.stats.tokens_forwarded == state.prompt_length + sum(
        len(r["token_ids"]) for r in state.forwards
    )
    # A set is forwarded again only after a removal from the set before it.
    for depth in range(2, len(result.steps) + 1):
        count = sum(r["depth"] == depth for r in state.forwards)
        removal = any(t.pruned for t in result.steps[depth - 2].tokens)
        assert count == (2 if removal and depth < SETTINGS["max_new_tokens"] else 1)


def test_keep_weights_match_formula_by_hand(tiny, recording):
    config = PruneConfig(layers="all", cut=-0.2, steepness=7.0)
    result = generate(tiny, PROMPT, prune=config, **SETTINGS)
    state = recording[0]
    first_scoring = next(r for r in state.forwards if r["attentions"])
    assert first_scoring["depth"] == 2
    # The first set sits right after the prompt; its step is the first one.
    members = result.steps[0].tokens
    slots = [state.prompt_length + i for i in range(len(members))]
    layers = sorted(first_scoring["attentions"])
    assert layers == [0, 1, 2]

    # Layer i gets weight (i + 1) / sum; mean over heads; mean over the query rows.
    layer_weights = torch.tensor([1.0, 2.0, 3.0], dtype=torch.float64) / 6.0
    per_layer = torch.stack(
        [first_scoring["attentions"][layer].double().mean(dim=0) for layer in layers]
    )  # [layers, q, k]
    attention = (layer_weights[:, None, None] * per_layer).sum(dim=0)
    scores = attention[:, slots].mean(dim=0)
    relative = scores / scores.mean() - 1.0
    expected = torch.sigmoid(7.0 * (relative + 0.2))
    actual = torch.tensor([t.keep_weight for t in members], dtype=torch.float64)
    assert torch.allclose(actual, expected, atol=1e-6)
    assert [t.pruned for t in members] == (expected < config.floor).tolist()


def test_tree_pruned_branches_leave_cache(tiny, recording, monkeypatch):
    removed_all: set[int] = set()
    original = generate_module._prune_siblings

    def spy(*args, **kwargs):
        removed = original(*args, **kwargs)
        removed_all.update(removed)
        return removed

    monkeypatch.setattr(generate_module, "_prune_siblings", spy)
    result = generate(tiny, PROMPT, mode="tree", prune=PRUNE, **SETTINGS)
    state = recording[0]
    assert result.stats.pruned_tokens == len(removed_all)
    assert removed_all
    for node_id in state.node_ids():
        assert not removed_all.intersection(state.path(node_id))
    assert result.stats.cache_length == result.stats.prompt_tokens + state.num_nodes
    assert state.cache.get_seq_length() == state.cache_length


def test_tree_pruning_keeps_one_sibling(tiny):
    everything = PruneConfig(floor=1.0, steepness=1.0)
    result = generate(tiny, PROMPT, mode="tree", prune=everything, **SETTINGS)
    assert result.stats.pruned_tokens > 0
    for step in result.steps:
        assert any(not t.pruned for t in step.tokens)


def test_threshold_schedule_changes_width_over_steps(tiny):
    progress_seen: list[float] = []

    def schedule(progress: float) -> float:
        progress_seen.append(progress)
        return 1.0 if progress < 0.5 else 0.0

    result = generate(
        tiny, PROMPT, max_new_tokens=8, max_width=3, threshold_schedule=schedule, threshold=0.9
    )
    assert len(result.steps) == 8
    assert progress_seen == [d / 8 for d in range(8)]
    assert [len(s.tokens) for s in result.steps] == [1] * 4 + [3] * 4


def test_prune_rejects_visible_members(tiny):
    with pytest.raises(ValueError, match="isolate=False"):
        generate(tiny, PROMPT, prune=PRUNE, isolate=False, max_new_tokens=4)


def test_prune_rejects_non_config(tiny):
    with pytest.raises(TypeError, match="PruneConfig"):
        generate(tiny, PROMPT, prune={"cut": -0.2}, max_new_tokens=4)


def test_parse_threshold_schedule_kinds():
    bezier = generate_module.parse_threshold_schedule("bezier:0.3,0.2,0.1,0.05")
    flat = generate_module.parse_threshold_schedule("flat:0.5,0.1,0.2")
    assert bezier(0.0) == pytest.approx(0.3)
    assert flat(1.0) == pytest.approx(0.1)
    with pytest.raises(ValueError, match="bezier"):
        generate_module.parse_threshold_schedule("cubic:0.1")


# ----------------------------------------------------------------------------- command line


@pytest.fixture
def cli_model(monkeypatch, tiny):
    monkeypatch.setattr(cli, "_load", lambda args: tiny)
    return tiny


CLI_ARGS = ["generate", PROMPT, "--threshold", "0.05", "--max-new-tokens", "12"]


def test_cli_prune_json_lists_pruned_tokens(cli_model, capsys):
    code = cli.main([*CLI_ARGS, "--prune", "--prune-cut", "-0.2", "--json"])
    data = json.loads(capsys.readouterr().out)
    tokens = [t for step in data["steps"] for t in step["tokens"]]
    pruned = [t for t in tokens if t["pruned"]]
    assert code == 0
    assert all("pruned" in t and "keep_weight" in t for t in tokens)
    assert pruned
    assert all(isinstance(t["keep_weight"], float) for t in pruned)
    assert data["stats"]["pruned_tokens"] == len(pruned)


def test_cli_prune_text_strikes_pruned(cli_model, capsys):
    code = cli.main([*CLI_ARGS, "--prune-cut", "-0.2"])
    out = capsys.readouterr().out
    assert code == 0
    assert "~" in out.splitlines()[0]
    assert "tokens pruned" in out


@pytest.mark.parametrize(
    ("flag", "value"),
    [
        ("--prune-cut", "nan"),
        ("--prune-steepness", "0"),
        ("--prune-floor", "1.5"),
        ("--prune-layers", "last:0"),
        ("--prune-layers", "0,x"),
        ("--prune-layers", "7"),
        ("--threshold-schedule", "bezier:1,2"),
        ("--threshold-schedule", "flat:0.5,1.5,0.2"),
        ("--threshold-schedule", "spline:0.1,0.2"),
    ],
)
def test_cli_rejects_invalid_prune_flags(cli_model, capsys, flag, value):
    code = cli.main([*CLI_ARGS, f"{flag}={value}"])
    err = capsys.readouterr().err
    assert code == cli.EXIT_INVALID
    assert len(err.strip().splitlines()) == 1
    assert "error" in err


@pytest.mark.parametrize("mode", ["superposition", "tree"])
def test_cut_schedule_constant_equals_fixed_cut(tiny, mode):
    fixed = generate(tiny, PROMPT, mode=mode, prune=PruneConfig(cut=-0.3), **SETTINGS)
    scheduled = generate(
        tiny, PROMPT, mode=mode, prune=PruneConfig(), cut_schedule=lambda _p: 0.3, **SETTINGS
    )

    assert scheduled.to_dict()["steps"] == fixed.to_dict()["steps"]


def test_cut_schedule_receives_progress(tiny):
    seen: list[float] = []

    def schedule(progress: float) -> float:
        seen.append(progress)
        return 0.5

    generate(tiny, PROMPT, prune=PruneConfig(), cut_schedule=schedule, **SETTINGS)

    assert seen
    assert all(0.0 <= p < 1.0 for p in seen)


def test_cut_schedule_needs_prune(tiny):
    with pytest.raises(ValueError, match="cut_schedule needs prune"):
        generate(tiny, PROMPT, cut_schedule=lambda _p: 0.5, **SETTINGS)
