"""Rollouts: parity with model.generate, rewinding the shared cache, seeds, masks and budgets."""

from __future__ import annotations

import re

import pytest
import torch

from tempo_search.models import LoadedModel
from tempo_search.rollouts import RolloutConfig, RolloutResult, run_rollouts
from tempo_search.testing import tiny_model
from tempo_search.tree_state import ROOT, TreeState, plain_logits

ATOL = 1e-4
"""The exactness invariant's bound on logits (and log-probabilities) in float32."""

PROMPT = "the cat sat on a mat"
# Arbitrary token ids inside the tiny tokenizer's vocabulary (byte symbols).
TOKENS = [40, 41, 42, 50, 51, 60]


@pytest.fixture(scope="module")
def llama() -> LoadedModel:
    return tiny_model("llama")


@pytest.fixture
def tree(llama):
    """A TreeState with a small tree: three children of the prompt, three grandchildren.

    Returns the state, the prompt ids and the logits of every node by id.
    """
    prompt_ids = llama.encode_prompt(PROMPT)
    state = TreeState(llama.model, prompt_ids)
    output = state.expand([ROOT, ROOT, ROOT, 0, 0, 1], TOKENS)
    logits = {ROOT: state.prompt_logits}
    logits.update(zip(output.node_ids, output.logits, strict=True))
    return state, prompt_ids, logits


def generate_greedy(model: LoadedModel, input_ids: list[int], max_new_tokens: int) -> list[int]:
    """Return the new token ids of `model.generate(do_sample=False)`."""
    ids = torch.tensor([input_ids], dtype=torch.long)
    with torch.no_grad():
        output = model.model.generate(
            ids,
            attention_mask=torch.ones_like(ids),
            do_sample=False,
            max_new_tokens=max_new_tokens,
            pad_token_id=0,
        )
    return output[0, len(input_ids) :].tolist()


def snapshot(state: TreeState) -> dict:
    return {
        "cache_length": state.cache_length,
        "layer_lengths": [layer.get_seq_length() for layer in state.cache.layers],
        "node_ids": state.node_ids(),
        "slots": {n: state.slot(n) for n in state.node_ids()},
    }


def sum_of_log_probs(model: LoadedModel, prefix: list[int], tokens: list[int]) -> float:
    """Log-probability of `tokens` after `prefix`, from plain forwards."""
    total = 0.0
    for index, token in enumerate(tokens):
        logits = plain_logits(model.model, prefix + tokens[:index])
        total += float(torch.log_softmax(logits, dim=-1)[token])
    return total


# ----------------------------------------------------------------- parity and rewind


@pytest.mark.parametrize("start", [ROOT, 0, 3])
@pytest.mark.parametrize("depth", [1, 5])
def test_greedy_rollout_matches_generate(llama, tree, start, depth):
    state, prompt_ids, logits = tree
    path = state.path_token_ids(start)
    before = snapshot(state)

    [result] = run_rollouts(
        state, [(start, logits[start])], RolloutConfig("greedy", depth=depth), eos_token_ids={0}
    )

    expected = generate_greedy(llama, prompt_ids + path, depth)
    assert result.token_ids == expected
    assert result.finished == (0 in expected)
    assert result.sum_log_prob == pytest.approx(
        sum_of_log_probs(llama, prompt_ids + path, expected), abs=ATOL
    )
    assert snapshot(state) == before


def test_batched_greedy_rollouts_match_generate(llama, tree):
    state, prompt_ids, logits = tree
    starts = [ROOT, 1, 2, 3, 5]
    before = snapshot(state)

    results = run_rollouts(
        state,
        [(node_id, logits[node_id]) for node_id in starts],
        RolloutConfig("greedy", depth=6),
        eos_token_ids={0},
    )

    for node_id, result in zip(starts, results, strict=True):
        expected = generate_greedy(llama, prompt_ids + state.path_token_ids(node_id), 6)
        assert result.token_ids == expected, f"rollout from node {node_id}"
    assert snapshot(state) == before


def test_rollout_leaves_cache_exact(llama, tree):
    state, prompt_ids, logits = tree
    run_rollouts(
        state, [(5, logits[5]), (2, logits[2])], RolloutConfig("greedy", depth=6), eos_token_ids={0}
    )
    output = state.expand([5, 2, ROOT], [70, 71, 72])
    for node_id, row in zip(output.node_ids, output.logits, strict=True):
        reference = plain_logits(llama.model, prompt_ids + state.path_token_ids(node_id))
        diff = float((row - reference).abs().max())
        assert diff <= ATOL, f"node {node_id}: {diff:.3g}"


def test_rollout_forwards_depth_minus_one_tokens(tree):
    state, _, logits = tree
    forwarded = state.tokens_forwarded
    passes = state.forward_passes
    [result] = run_rollouts(
        state, [(4, logits[4])], RolloutConfig("greedy", depth=5), eos_token_ids=set()
    )
    # The last token is picked from the logits of the one before, so it is never forwarded.
    assert len(result.token_ids) == 5
    assert state.tokens_forwarded - forwarded == 4
    assert state.forward_passes - passes == 4


def test_rollout_stops_at_end_of_sequence(tree):
    state, _, logits = tree
    greedy = int(torch.argmax(logits[3]))
    before = snapshot(state)
    [result] = run_rollouts(
        state, [(3, logits[3])], RolloutConfig("greedy", depth=6), eos_token_ids={greedy}
    )
    assert result.token_ids == [greedy]
    assert result.finished
    assert snapshot(state) == before


# ----------------------------------------------------------------- sampling


def test_sampled_rollouts_same_seed_identical(tree):
    state, _, logits = tree
    config = RolloutConfig("sample", depth=6)
    starts = [(ROOT, logits[ROOT]), (0, logits[0]), (4, logits[4])]
    first = run_rollouts(
        state, starts, config, eos_token_ids={0}, generator=torch.Generator().manual_seed(11)
    )
    second = run_rollouts(
        state, starts, config, eos_token_ids={0}, generator=torch.Generator().manual_seed(11)
    )
    assert first == second
    assert all(len(result.token_ids) > 0 for result in first)


def test_sampled_rollout_log_probs_exact(llama, tree):
    state, prompt_ids, logits = tree
    before = snapshot(state)
    [result] = run_rollouts(
        state,
        [(2, logits[2])],
        RolloutConfig("sample", depth=5, temperature=2.0),
        eos_token_ids={0},
        generator=torch.Generator().manual_seed(3),
    )
    prefix = prompt_ids + state.path_token_ids(2)
    # The log-probabilities are the model's own, not those of the tempered sampler.
    assert result.sum_log_prob == pytest.approx(
        sum_of_log_probs(llama, prefix, result.token_ids), abs=ATOL
    )
    assert snapshot(state) == before


def test_rollout_log_probs_per_token_sum_to_total(tree):
    state, _, logits = tree
    [result] = run_rollouts(
        state, [(1, logits[1])], RolloutConfig("greedy", depth=5), eos_token_ids={0}
    )
    assert sum(result.log_probs) == pytest.approx(result.sum_log_prob)


def test_rollout_log_probs_one_per_token(tree):
    state, _, logits = tree
    [result] = run_rollouts(
        state, [(1, logits[1])], RolloutConfig("greedy", depth=5), eos_token_ids={0}
    )
    assert len(result.log_probs) == len(result.token_ids)


def test_rollout_after_first_matches_greedy(llama, tree):
    state, prompt_ids, logits = tree
    [result] = run_rollouts(
        state, [(1, logits[1])], RolloutConfig("greedy", depth=5), eos_token_ids={0}
    )
    rest = result.after_first()
    prefix = prompt_ids + state.path_token_ids(1) + result.token_ids[:1]
    assert rest.token_ids == generate_greedy(llama, prefix, len(rest.token_ids))
    assert rest.sum_log_prob == pytest.approx(
        sum_of_log_probs(llama, prefix, rest.token_ids), abs=ATOL
    )


def test_rollout_after_first_needs_log_probs():
    with pytest.raises(ValueError, match="after_first"):
        RolloutResult([5, 6], -1.0, True).after_first()


# ----------------------------------------------------------------- masks, budgets, errors


def test_rollout_allowed_mask_restricts_tokens(llama, tree):
    state, prompt_ids, logits = tree
    allowed = torch.zeros(llama.vocab_size, dtype=torch.bool)
    allowed[[40, 41, 42]] = True
    calls = []

    def allowed_mask(index, rollout_ids):
        calls.append((index, list(rollout_ids)))
        return allowed

    results = run_rollouts(
        state,
        [(0, logits[0]), (1, logits[1])],
        RolloutConfig("greedy", depth=4),
        eos_token_ids={0},
        allowed_mask=allowed_mask,
    )
    for node_id, result in zip([0, 1], results, strict=True):
        assert len(result.token_ids) == 4
        assert set(result.token_ids) <= {40, 41, 42}
        # The log-probabilities are the model's, not renormalised over the allowed tokens.
        prefix = prompt_ids + state.path_token_ids(node_id)
        assert result.sum_log_prob == pytest.approx(
            sum_of_log_probs(llama, prefix, result.token_ids), abs=ATOL
        )
    assert calls[0] == (0, [])
    assert calls[1] == (1, [])
    assert calls[2] == (0, [results[0].token_ids[0]])


def test_rollout_with_nothing_allowed_finishes_empty(llama, tree):
    state, _, logits = tree
    nothing = torch.zeros(llama.vocab_size, dtype=torch.bool)
    [result] = run_rollouts(
        state,
        [(0, logits[0])],
        RolloutConfig("greedy", depth=4),
        eos_token_ids={0},
        allowed_mask=lambda index, ids: nothing,
    )
    assert result == RolloutResult([], 0.0, True)


def test_rollout_max_tokens_caps_appended_nodes(tree):
    state, _, logits = tree
    record = []
    original_expand = state.expand

    def expand(*args, **kwargs):
        output = original_expand(*args, **kwargs)
        record.append(state.num_nodes)
        return output

    state.expand = expand
    base = state.num_nodes
    results = run_rollouts(
        state,
        [(0, logits[0]), (1, logits[1]), (2, logits[2])],
        RolloutConfig("greedy", depth=8),
        eos_token_ids=set(),
        max_tokens=7,
    )
    assert max(record) - base <= 7
    assert state.num_nodes == base
    for result in results:
        assert 1 <= len(result.token_ids) < 8


def test_rollout_limits_cap_each_rollout(tree):
    state, _, logits = tree
    results = run_rollouts(
        state,
        [(0, logits[0]), (1, logits[1])],
        RolloutConfig("greedy", depth=8),
        eos_token_ids=set(),
        limits=[2, 5],
    )
    assert [len(r.token_ids) for r in results] == [2, 5]


def test_rollout_at_limit_counts_as_finished(tree):
    state, _, logits = tree
    (result,) = run_rollouts(
        state,
        [(0, logits[0])],
        RolloutConfig("greedy", depth=8),
        eos_token_ids=set(),
        limits=[3],
    )
    assert result.finished


def test_rollout_none_does_nothing(tree):
    state, _, logits = tree
    passes = state.forward_passes
    results = run_rollouts(state, [(0, logits[0])], RolloutConfig("none"), eos_token_ids={0})
    assert results == [RolloutResult([], 0.0, False)]
    assert state.forward_passes == passes


def test_rollout_rewinds_after_failed_forward(tree):
    state, _, logits = tree
    before = snapshot(state)
    original_expand = state.expand
    calls = []

    def failing_expand(*args, **kwargs):
        calls.append(1)
        if len(calls) == 3:
            raise RuntimeError("forward failed")
        return original_expand(*args, **kwargs)

    state.expand = failing_expand
    with pytest.raises(RuntimeError, match="forward failed"):
        run_rollouts(state, [(4, logits[4])], RolloutConfig("greedy", depth=8), eos_token_ids=set())
    assert snapshot(state) == before


def fail_in_last_layer(monkeypatch, model: LoadedModel, error: BaseException, after: int):
    """Make the last decoder layer raise `error` from its forward after `after` calls."""
    layer = model.model.model.layers[-1]
    original_forward = layer.forward
    calls = []

    def forward(*args, **kwargs):
        calls.append(1)
        if len(calls) > after:
            raise error
        return original_forward(*args, **kwargs)

    monkeypatch.setattr(layer, "forward", forward)


def test_rollout_rewinds_after_error_inside_forward(llama, tree, monkeypatch):
    state, _, logits = tree
    before = snapshot(state)
    fail_in_last_layer(monkeypatch, llama, RuntimeError("layer failed"), after=2)
    with pytest.raises(RuntimeError, match="layer failed"):
        run_rollouts(state, [(4, logits[4])], RolloutConfig("greedy", depth=8), eos_token_ids=set())
    assert snapshot(state) == before


def test_rollout_rewinds_after_ctrl_c_inside_forward(llama, tree, monkeypatch):
    state, _, logits = tree
    before = snapshot(state)
    fail_in_last_layer(monkeypatch, llama, KeyboardInterrupt(), after=2)
    with pytest.raises(KeyboardInterrupt):
        run_rollouts(state, [(4, logits[4])], RolloutConfig("greedy", depth=8), eos_token_ids=set())
    assert snapshot(state) == before


@pytest.mark.parametrize(
    ("kwargs", "fragments"),
    [
        ({"kind": "foo"}, ["rollout", "foo"]),
        ({"kind": "greedy", "depth": 0}, ["depth", "0"]),
        ({"kind": "greedy", "depth": 2.5}, ["depth", "2.5"]),
        ({"kind": "sample", "temperature": 0}, ["temperature", "0"]),
    ],
)
def test_rollout_config_rejects_invalid(kwargs, fragments):
    with pytest.raises(ValueError, match=re.escape(fragments[0])) as error:
        RolloutConfig(**kwargs)
    for fragment in fragments[1:]:
        assert fragment in str(error.value)
