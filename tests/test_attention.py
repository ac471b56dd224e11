"""Attention capture from chosen layers through TreeState.expand(capture_layers=...)."""

from __future__ import annotations

import pytest
import torch

from tempo_search.attention import capturing
from tempo_search.tree_state import ROOT, TreeState

PROMPT = [258, 262, 268]  # "the cat sat" in tiny_tokenizer
CHAIN = [40, 41, 42]
LAYER = 1


def eager_attentions(loaded, token_ids: list[int]) -> tuple[torch.Tensor, ...]:
    """Per-layer `[1, heads, q, kv]` weights of one plain eager forward with output_attentions."""
    ids = torch.tensor([token_ids], dtype=torch.long)
    with torch.no_grad():
        output = loaded.model(input_ids=ids, output_attentions=True)
    return output.attentions


@pytest.mark.parametrize("arch", ["llama", "gpt2", "gemma", "gemma2"])
@pytest.mark.parametrize("attn_implementation", ["sdpa", "eager"])
def test_capture_matches_eager_weights_on_a_path(arch, attn_implementation, get_tiny_model):
    # A chain in one batch sits in plain order, so its rows are the last rows of plain attention.
    loaded = get_tiny_model(arch, attn_implementation)
    reference_model = get_tiny_model(arch, "eager")
    state = TreeState(loaded, PROMPT)

    output = state.expand([ROOT, 0, 1], CHAIN, capture_layers=[LAYER])

    captured = output.attentions[LAYER]
    heads = loaded.model.config.num_attention_heads
    assert captured.shape == (heads, 3, len(PROMPT) + 3)
    reference = eager_attentions(reference_model, PROMPT + CHAIN)[LAYER][0, :, -3:, :]
    assert torch.allclose(captured, reference, atol=1e-5)


@pytest.mark.parametrize("attn_implementation", ["sdpa", "eager"])
def test_capture_rows_normalised_and_masked(attn_implementation, get_tiny_model):
    loaded = get_tiny_model("llama", attn_implementation)
    state = TreeState(loaded, PROMPT)
    state.expand([ROOT, ROOT], [40, 41])  # a=0 (slot 3), b=1 (slot 4)

    # c: child of a (slot 5); d: child of b (slot 6); e: child of c in the same batch (slot 7).
    output = state.expand([0, 1, 2], [42, 43, 44], capture_layers=[0, LAYER])

    assert set(output.attentions) == {0, LAYER}
    visible = torch.tensor(
        [
            # p  p  p  a  b  c  d  e
            [1, 1, 1, 1, 0, 1, 0, 0],  # c
            [1, 1, 1, 0, 1, 0, 1, 0],  # d
            [1, 1, 1, 1, 0, 1, 0, 1],  # e
        ],
        dtype=torch.bool,
    )
    for layer, weights in output.attentions.items():
        assert weights.shape == (4, 3, 8), f"layer {layer}"
        assert torch.allclose(weights.sum(-1), torch.ones(4, 3)), f"layer {layer}"
        assert torch.all(weights[:, ~visible] == 0), f"layer {layer}"
        assert torch.all(weights[:, visible] > 0), f"layer {layer}"


@pytest.mark.parametrize("arch", ["llama", "gpt2", "gemma2"])
@pytest.mark.parametrize("attn_implementation", ["sdpa", "eager"])
def test_capture_leaves_logits_unchanged(arch, attn_implementation, get_tiny_model):
    loaded = get_tiny_model(arch, attn_implementation)
    plain = TreeState(loaded, PROMPT)
    captured = TreeState(loaded, PROMPT)

    for parents, tokens in (([ROOT, ROOT, 0], [40, 41, 42]), ([2, 1], [43, 44])):
        without = plain.expand(parents, tokens)
        with_capture = captured.expand(parents, tokens, capture_layers=[0, 2])

        assert without.attentions == {}
        assert torch.allclose(with_capture.logits, without.logits, atol=1e-5)


def test_capture_restores_attention_implementation(get_tiny_model):
    loaded = get_tiny_model("llama", "sdpa")
    state = TreeState(loaded, PROMPT)

    state.expand([ROOT], [40], capture_layers=[LAYER])

    assert loaded.model.config._attn_implementation == "sdpa"


def test_capture_rejects_bad_layer(get_tiny_model):
    loaded = get_tiny_model("llama", "sdpa")
    state = TreeState(loaded, PROMPT)
    state.expand([ROOT], [40])

    with pytest.raises(ValueError, match=r"attention layers \[3\] are out of range"):
        state.expand([0], [41], capture_layers=[3])

    assert state.num_nodes == 1
    assert state.next_node_id == 1
    assert state.cache.get_seq_length() == len(PROMPT) + 1
    assert loaded.model.config._attn_implementation == "sdpa"


def test_capturing_without_layers_changes_nothing(get_tiny_model):
    loaded = get_tiny_model("llama", "sdpa")

    with capturing(loaded.model, []) as captured:
        implementation = loaded.model.config._attn_implementation

    assert implementation == "sdpa"
    assert captured == {}
