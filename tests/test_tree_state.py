"""TreeState: exactness against plain forwards, masks, position_ids, rewind, compact, budgets."""

from __future__ import annotations

import functools

import pytest
import torch

from tempo_search.testing import ARCHITECTURES, tiny_model
from tempo_search.tree_state import ROOT, NodeBudgetExceeded, TreeState, plain_logits

ATOL = 1e-4
"""The exactness invariant's bound on logits in float32."""

# Gemma 2 has no sdpa path, so tiny_model always builds it with eager attention.
ARCH_IMPLS = [
    (arch, impl)
    for arch in ARCHITECTURES
    for impl in ("sdpa", "eager")
    if not (arch == "gemma2" and impl == "sdpa")
]

PROMPT_TEXT = "the cat sat on a mat"
# Arbitrary token ids inside every tiny model's vocabulary (byte symbols of tiny_tokenizer).
TOKENS = list(range(30, 130, 3))


def max_diff_to_plain(state: TreeState, net, prompt: list[int], node_id: int, row) -> float:
    reference = plain_logits(net, prompt + state.path_token_ids(node_id))
    return float((reference - row).abs().max())


def assert_exact(state: TreeState, net, prompt: list[int], output) -> None:
    """Compare each new node's logits with a plain forward over prompt + path."""
    assert output.logits.shape == (len(output.node_ids), net.config.vocab_size)
    for node_id, row in zip(output.node_ids, output.logits, strict=True):
        diff = max_diff_to_plain(state, net, prompt, node_id, row)
        assert diff <= ATOL, (
            f"node {node_id} (path {state.path_token_ids(node_id)}): max |logit diff| {diff:.3g}"
        )


def assert_cache_length(state: TreeState, expected: int) -> None:
    assert state.cache_length == expected
    for index, layer in enumerate(state.cache.layers):
        assert layer.get_seq_length() == expected, f"layer {index}"


def expand_checked(state, net, prompt, parents, tokens):
    first = state.next_node_id
    output = state.expand(parents, tokens)
    assert output.node_ids == list(range(first, first + len(tokens)))
    assert_exact(state, net, prompt, output)
    return output


# ----------------------------------------------------------------- exactness


@pytest.mark.parametrize(("arch", "attn_implementation"), ARCH_IMPLS)
def test_exact_after_rewind_and_compact(arch, attn_implementation, get_tiny_model):
    loaded = get_tiny_model(arch, attn_implementation)
    net = loaded.model
    prompt = loaded.encode_prompt(PROMPT_TEXT)
    p = len(prompt)
    state = TreeState(loaded, prompt)
    assert_cache_length(state, p)
    assert float((state.prompt_logits - plain_logits(net, prompt)).abs().max()) <= ATOL

    # 1. Three siblings at the root, a child of the first and a grandchild, all in one batch.
    #    Ids 0..4; depths 1, 1, 1, 2, 3.
    expand_checked(state, net, prompt, [ROOT, ROOT, ROOT, 0, 3], TOKENS[0:5])

    # 2. Branching at two depths: two children of node 1, one of node 4, and a child of
    #    node 5 from the same batch. Ids 5..8.
    expand_checked(state, net, prompt, [1, 1, 4, 5], TOKENS[5:9])
    assert_cache_length(state, p + 9)

    # 3. A rollout chain of four under node 8 (ids 9..12), checked and rewound.
    expand_checked(state, net, prompt, [8, 9, 10, 11], TOKENS[9:13])
    state.rewind(4)
    assert state.num_nodes == 9
    assert_cache_length(state, p + 9)
    for node_id in range(9, 13):
        assert not state.has_node(node_id)

    # 4. New nodes in the rewound slots: a child of node 2 with a grandchild, and a child of 6.
    first = state.next_node_id
    expand_checked(state, net, prompt, [2, first, 6], TOKENS[13:16])
    node_13, node_14, node_15 = first, first + 1, first + 2

    # 5. Compact to the paths of node 7 (0 -> 3 -> 4 -> 7) and node_14 (2 -> 13 -> 14).
    keep = set(state.path(7)) | set(state.path(node_14))
    assert keep == {0, 3, 4, 7, 2, node_13, node_14}
    old_slot_order = [n for n in state.node_ids() if n in keep]
    parents_before = {n: state.parent(n) for n in keep}
    tokens_before = {n: state.token(n) for n in keep}
    depths_before = {n: state.depth(n) for n in keep}
    slots = state.compact(keep)

    expected_slots = {n: p + i for i, n in enumerate(old_slot_order)}
    assert slots == expected_slots
    assert state.node_ids() == old_slot_order
    assert {n: state.slot(n) for n in keep} == expected_slots
    assert {n: state.parent(n) for n in keep} == parents_before
    assert {n: state.token(n) for n in keep} == tokens_before
    assert {n: state.depth(n) for n in keep} == depths_before
    for dropped in (1, 5, 6, 8, node_15):
        assert not state.has_node(dropped)
    assert_cache_length(state, p + len(keep))

    # 6. Nodes expanded after the compaction: under the deepest kept node, under node_14, and a
    #    new root child with its own child in the same batch.
    first = state.next_node_id
    expand_checked(state, net, prompt, [7, node_14, ROOT, first + 2], TOKENS[16:20])

    # 7. A rewind after the compaction, then more nodes in the freed slots.
    state.rewind(2)
    assert_cache_length(state, p + len(keep) + 2)
    expand_checked(state, net, prompt, [first, first + 1, 0], TOKENS[20:23])


@pytest.mark.parametrize("mode", ["tree", "superposition"])
def test_chain_exact_in_both_modes(mode, get_tiny_model):
    # A chain has no siblings, so superposition sees exactly the path too.
    loaded = get_tiny_model("llama")
    prompt = loaded.encode_prompt(PROMPT_TEXT)
    state = TreeState(loaded, prompt, mode=mode)
    expand_checked(state, loaded.model, prompt, [ROOT], TOKENS[:1])
    expand_checked(state, loaded.model, prompt, [0, 1, 2], TOKENS[1:4])


def test_compact_keeping_everything_changes_nothing(get_tiny_model):
    loaded = get_tiny_model("llama")
    prompt = loaded.encode_prompt(PROMPT_TEXT)
    state = TreeState(loaded, prompt)
    state.expand([ROOT, ROOT, 0], TOKENS[:3])
    before = {n: state.slot(n) for n in state.node_ids()}

    slots = state.compact({0, 1, 2})

    assert slots == before
    assert_cache_length(state, len(prompt) + 3)


def test_compact_to_prompt_then_expand_exact(get_tiny_model):
    loaded = get_tiny_model("qwen2")
    prompt = loaded.encode_prompt(PROMPT_TEXT)
    state = TreeState(loaded, prompt)
    state.expand([ROOT, ROOT, 0], TOKENS[:3])

    slots = state.compact(set())

    assert slots == {}
    assert state.num_nodes == 0
    assert_cache_length(state, len(prompt))
    expand_checked(state, loaded.model, prompt, [ROOT, ROOT], TOKENS[3:5])


def test_expand_counts_forwards_and_tokens(get_tiny_model):
    loaded = get_tiny_model("llama")
    prompt = loaded.encode_prompt(PROMPT_TEXT)
    p = len(prompt)
    state = TreeState(loaded, prompt)
    assert (state.forward_passes, state.tokens_forwarded, state.peak_cache_length) == (1, p, p)

    state.expand([ROOT, ROOT, 0], TOKENS[:3])
    state.rewind(2)

    assert state.forward_passes == 2
    assert state.tokens_forwarded == p + 3
    assert state.peak_cache_length == p + 3
    assert state.capacity_left is None


def test_position_from_depth(get_tiny_model):
    loaded = get_tiny_model("llama")
    state = TreeState(loaded, [5, 6, 7])
    state.expand([ROOT, ROOT, 0, 2], TOKENS[:4])

    assert [state.depth(n) for n in range(4)] == [1, 1, 2, 3]
    assert [state.position(n) for n in range(4)] == [3, 3, 4, 5]
    assert state.depth(ROOT) == 0
    assert state.path(3) == [0, 2, 3]
    assert state.path(ROOT) == []


# ----------------------------------------------------------------- masks and position_ids


def record_forward_inputs(monkeypatch, net) -> list[dict]:
    """Wrap `net.forward` to record the `position_ids` and `attention_mask` of every call."""
    calls: list[dict] = []
    original = net.forward

    @functools.wraps(original)
    def recording(*args, **kwargs):
        calls.append(
            {
                "position_ids": kwargs.get("position_ids"),
                "attention_mask": kwargs.get("attention_mask"),
            }
        )
        return original(*args, **kwargs)

    monkeypatch.setattr(net, "forward", recording)
    return calls


def additive_mask(visible: list[list[int]]) -> torch.Tensor:
    """`[1, 1, rows, kv_len]` float32 mask: 0 where `visible` is 1, the float32 minimum elsewhere."""
    flags = torch.tensor(visible, dtype=torch.bool)
    minimum = torch.finfo(torch.float32).min
    return torch.where(flags, 0.0, minimum).to(torch.float32)[None, None]


def assert_forward_inputs(call: dict, positions: list[int], visible: list[list[int]]) -> None:
    assert torch.equal(call["position_ids"].cpu(), torch.tensor([positions]))
    mask = call["attention_mask"].cpu()
    assert mask.dtype == torch.float32
    assert mask.shape == (1, 1, len(visible), len(visible[0]))
    assert torch.equal(mask, additive_mask(visible))


def test_tree_mode_forward_inputs_hand_built(monkeypatch):
    net = tiny_model("llama").model
    state = TreeState(net, [258, 262, 268])  # "the cat sat": prompt slots 0..2
    calls = record_forward_inputs(monkeypatch, net)

    # ROOT -> a (id 0, slot 3), b (id 1, slot 4), both at position 3.
    state.expand([ROOT, ROOT], [40, 41])
    assert_forward_inputs(
        calls[-1],
        positions=[3, 3],
        visible=[
            # p  p  p  a  b
            [1, 1, 1, 1, 0],  # a
            [1, 1, 1, 0, 1],  # b
        ],
    )

    # a -> c (id 2, slot 5) at position 4.
    state.expand([0], [42])
    assert_forward_inputs(calls[-1], positions=[4], visible=[[1, 1, 1, 1, 0, 1]])

    # c -> d (id 3, slot 6); b -> e (id 4, slot 7); d -> f (id 5, slot 8) in the same batch.
    state.expand([2, 1, 3], [43, 44, 45])
    assert_forward_inputs(
        calls[-1],
        positions=[5, 4, 6],
        visible=[
            # p  p  p  a  b  c  d  e  f
            [1, 1, 1, 1, 0, 1, 1, 0, 0],  # d: a, c, itself
            [1, 1, 1, 0, 1, 0, 0, 1, 0],  # e: b, itself
            [1, 1, 1, 1, 0, 1, 1, 0, 1],  # f: a, c, d, itself
        ],
    )


def test_tree_mode_forward_inputs_after_compact(monkeypatch):
    net = tiny_model("llama").model
    state = TreeState(net, [258, 262, 268])
    state.expand([ROOT, ROOT, 1], [40, 41, 42])  # a=0, b=1, c=2 (child of b)
    state.compact({1, 2})  # b -> slot 3, c -> slot 4
    calls = record_forward_inputs(monkeypatch, net)

    first = state.next_node_id
    state.expand([2, ROOT], [43, 44])  # x: child of c (slot 5), y: root child (slot 6)

    assert state.slot(first) == 5
    assert_forward_inputs(
        calls[-1],
        positions=[5, 3],
        visible=[
            # p  p  p  b  c  x  y
            [1, 1, 1, 1, 1, 1, 0],  # x
            [1, 1, 1, 0, 0, 0, 1],  # y
        ],
    )


def test_superposition_forward_inputs_hide_siblings(monkeypatch):
    net = tiny_model("llama").model
    state = TreeState(net, [258, 262, 268], mode="superposition")
    calls = record_forward_inputs(monkeypatch, net)

    # Step 1: a, b at depth 1 hide each other.
    state.expand([ROOT, ROOT], [40, 41])
    assert_forward_inputs(calls[-1], positions=[3, 3], visible=[[1, 1, 1, 1, 0], [1, 1, 1, 0, 1]])

    # Step 2: c, d at depth 2 see every depth-1 node (a and b), themselves, not each other.
    state.expand([0, 0], [42, 43])
    assert_forward_inputs(
        calls[-1],
        positions=[4, 4],
        visible=[
            # p  p  p  a  b  c  d
            [1, 1, 1, 1, 1, 1, 0],  # c
            [1, 1, 1, 1, 1, 0, 1],  # d
        ],
    )

    # Step 3: e at depth 3 sees all four earlier nodes.
    state.expand([2], [44])
    assert_forward_inputs(calls[-1], positions=[5], visible=[[1, 1, 1, 1, 1, 1, 1, 1]])


def test_superposition_mask_without_isolate(monkeypatch):
    net = tiny_model("llama").model
    state = TreeState(net, [258, 262, 268], mode="superposition", isolate=False)
    calls = record_forward_inputs(monkeypatch, net)

    state.expand([ROOT, ROOT, ROOT], [40, 41, 42])
    assert_forward_inputs(
        calls[-1],
        positions=[3, 3, 3],
        visible=[
            # p  p  p  a  b  c
            [1, 1, 1, 1, 0, 0],  # a
            [1, 1, 1, 1, 1, 0],  # b: a, itself
            [1, 1, 1, 1, 1, 1],  # c: a, b, itself
        ],
    )

    state.expand([0, 0], [43, 44])
    assert_forward_inputs(
        calls[-1],
        positions=[4, 4],
        visible=[
            # p  p  p  a  b  c  d  e
            [1, 1, 1, 1, 1, 1, 1, 0],  # d
            [1, 1, 1, 1, 1, 1, 1, 1],  # e: d too
        ],
    )


def test_isolate_ignored_in_tree_mode(monkeypatch):
    net = tiny_model("llama").model
    state = TreeState(net, [258, 262, 268], mode="tree", isolate=False)
    calls = record_forward_inputs(monkeypatch, net)

    state.expand([ROOT, ROOT], [40, 41])

    assert_forward_inputs(calls[-1], positions=[3, 3], visible=[[1, 1, 1, 1, 0], [1, 1, 1, 0, 1]])


def test_prefill_uses_positions_from_zero(monkeypatch):
    net = tiny_model("llama").model
    calls = record_forward_inputs(monkeypatch, net)

    TreeState(net, [258, 262, 268, 273])

    assert torch.equal(calls[0]["position_ids"].cpu(), torch.tensor([[0, 1, 2, 3]]))
    assert calls[0]["attention_mask"] is None


# ----------------------------------------------------------------- budgets


def test_max_nodes_raises_and_keeps_state(get_tiny_model):
    loaded = get_tiny_model("llama")
    prompt = loaded.encode_prompt(PROMPT_TEXT)
    p = len(prompt)
    state = TreeState(loaded, prompt, max_nodes=4)
    state.expand([ROOT, ROOT, 0], TOKENS[:3])
    assert state.capacity_left == 1

    with pytest.raises(NodeBudgetExceeded, match="max_nodes=4"):
        state.expand([1, 1], TOKENS[3:5])

    assert state.num_nodes == 3
    assert state.next_node_id == 3
    assert state.forward_passes == 2
    assert_cache_length(state, p + 3)
    expand_checked(state, loaded.model, prompt, [1], TOKENS[5:6])
    assert state.capacity_left == 0


def test_max_nodes_frees_capacity_after_compact(get_tiny_model):
    loaded = get_tiny_model("gpt2")
    prompt = loaded.encode_prompt(PROMPT_TEXT)
    state = TreeState(loaded, prompt, max_nodes=3)
    state.expand([ROOT, ROOT, ROOT], TOKENS[:3])

    state.compact({2})

    assert state.capacity_left == 2
    expand_checked(state, loaded.model, prompt, [2, 3], TOKENS[3:5])


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"mode": "banana"}, "mode='banana'"),
        ({"max_nodes": 0}, "max_nodes=0"),
    ],
)
def test_tree_state_rejects_bad_arguments(kwargs, message, get_tiny_model):
    with pytest.raises(ValueError, match=message):
        TreeState(get_tiny_model("llama"), [1, 2], **kwargs)


def test_tree_state_rejects_empty_prompt(get_tiny_model):
    with pytest.raises(ValueError, match="prompt_ids is empty"):
        TreeState(get_tiny_model("llama"), [])


# ----------------------------------------------------------------- errors leave the state unchanged


def snapshot(state: TreeState) -> dict:
    return {
        "node_ids": state.node_ids(),
        "slots": {n: state.slot(n) for n in state.node_ids()},
        "next_node_id": state.next_node_id,
        "cache_lengths": [layer.get_seq_length() for layer in state.cache.layers],
        "forward_passes": state.forward_passes,
    }


@pytest.fixture
def small_tree(get_tiny_model):
    """A llama TreeState with ROOT -> 0, 1; 0 -> 2; 2 -> 3 and its prompt."""
    loaded = get_tiny_model("llama")
    prompt = loaded.encode_prompt(PROMPT_TEXT)
    state = TreeState(loaded, prompt)
    state.expand([ROOT, ROOT, 0, 2], TOKENS[:4])
    return loaded, prompt, state


@pytest.mark.parametrize("num_tokens", [5, -1])
def test_rewind_rejects_bad_count(num_tokens, small_tree):
    _, _, state = small_tree
    before = snapshot(state)

    with pytest.raises(ValueError, match=f"cannot rewind {num_tokens} tokens"):
        state.rewind(num_tokens)

    assert snapshot(state) == before


def test_rewind_zero_is_noop(small_tree):
    _, _, state = small_tree
    before = snapshot(state)

    state.rewind(0)

    assert snapshot(state) == before


def test_rewind_rejects_orphaning_a_kept_node(small_tree):
    # Public operations always put a child in a later slot than its parent, so this order
    # (node 3 before its parent 2) is forced through the private slot list to reach the check.
    _, _, state = small_tree
    state._slot_nodes = [0, 1, 3, 2]
    before = snapshot(state)

    with pytest.raises(ValueError, match="node 3 stays but its parent 2 would be removed"):
        state.rewind(1)

    assert snapshot(state) == before


def test_children_follow_parents_in_slots(small_tree):
    # The invariant that makes tail rewinds safe, through expand, rewind and compact.
    _, _, state = small_tree
    state.expand([1, 4, 3], TOKENS[4:7])
    state.rewind(1)
    state.compact({0, 2, 3, 1, 4})
    state.expand([3, 7, ROOT], TOKENS[7:10])

    for node_id in state.node_ids():
        parent = state.parent(node_id)
        if parent != ROOT:
            assert state.slot(parent) < state.slot(node_id), f"node {node_id}"


def test_compact_rejects_node_without_parent(small_tree):
    _, _, state = small_tree
    before = snapshot(state)

    with pytest.raises(ValueError, match="cannot keep node 3 without its parent 2"):
        state.compact({0, 3})

    assert snapshot(state) == before


def test_compact_rejects_unknown_node(small_tree):
    _, _, state = small_tree
    before = snapshot(state)

    with pytest.raises(ValueError, match="cannot keep node 42"):
        state.compact({0, 42})

    assert snapshot(state) == before


@pytest.mark.parametrize(
    "parents",
    [
        [0, 99],  # an id that was never created
        [0, 5],  # the node's own future id
        [6, 0],  # a later node of the same batch
    ],
)
def test_expand_rejects_bad_parent_and_keeps_state(parents, small_tree):
    loaded, prompt, state = small_tree
    before = snapshot(state)

    with pytest.raises(ValueError, match="neither ROOT, a live node nor an earlier node"):
        state.expand(parents, TOKENS[4:6])

    assert snapshot(state) == before
    assert not state.has_node(4)
    expand_checked(state, loaded.model, prompt, [3, 4], TOKENS[6:8])


def test_expand_rejects_removed_parent(small_tree):
    _, _, state = small_tree
    state.rewind(1)  # node 3 goes
    before = snapshot(state)

    with pytest.raises(ValueError, match="parent 3"):
        state.expand([3], TOKENS[4:5])

    assert snapshot(state) == before


def test_expand_rejects_length_mismatch_and_empty(small_tree):
    _, _, state = small_tree
    before = snapshot(state)

    with pytest.raises(ValueError, match="parents has 2 entries but token_ids has 1"):
        state.expand([0, 1], TOKENS[:1])
    with pytest.raises(ValueError, match="at least one new token"):
        state.expand([], [])

    assert snapshot(state) == before


def test_expand_failed_embedding_rolls_back(small_tree):
    loaded, prompt, state = small_tree
    before = snapshot(state)
    out_of_vocabulary = loaded.model.config.vocab_size + 5

    with pytest.raises(IndexError):
        state.expand([0, 1], [TOKENS[4], out_of_vocabulary])

    assert snapshot(state) == before
    expand_checked(state, loaded.model, prompt, [3, 1], TOKENS[5:7])


def test_expand_late_layer_failure_rolls_back():
    # The first two decoder layers append to the cache before the last one fails, as an
    # out-of-memory error in a late layer would.
    loaded = tiny_model("llama")
    net = loaded.model
    prompt = loaded.encode_prompt(PROMPT_TEXT)
    state = TreeState(loaded, prompt)
    state.expand([ROOT, ROOT, 0], TOKENS[:3])
    before = snapshot(state)
    last_layer = net.model.layers[-1]

    def failing_forward(*args, **kwargs):
        raise RuntimeError("simulated failure in the last decoder layer")

    last_layer.forward = failing_forward
    try:
        with pytest.raises(RuntimeError, match="simulated failure"):
            state.expand([2, 1], TOKENS[3:5])
    finally:
        del last_layer.forward

    assert snapshot(state) == before
    expand_checked(state, net, prompt, [2, 1], TOKENS[5:7])
