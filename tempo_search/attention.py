"""Attention capture from chosen layers only.

transformers 5.x returns no attention weights from `sdpa`, and `output_attentions=True` needs
eager attention on every layer. tempo_search registers one attention function,
"tempo_capture", that runs `sdpa` on every layer except the layers being captured, where it
computes the weights explicitly and keeps them. The model switches to it only for the duration
of a `capturing(...)` block, so forwards without capture are plain `sdpa` (or whatever the model
was loaded with).
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator, Sequence

import torch

CAPTURE_IMPLEMENTATION = "tempo_capture"

_local = threading.local()
_registered = False


def _capture_attention_forward(
    module: torch.nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    scaling: float | None = None,
    dropout: float = 0.0,
    **kwargs,
):
    """Attention with the transformers attention-function signature; keeps chosen layers' weights.

    Shapes: query `[batch, heads, q, head_dim]`, key and value `[batch, kv_heads, kv, head_dim]`,
    attention_mask `[batch, 1, q, kv]` (additive) or None.
    """
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    layers = getattr(_local, "layers", None)
    layer_idx = getattr(module, "layer_idx", None)
    keep = bool(layers) and layer_idx in layers
    explicit = keep or getattr(_local, "previous", "sdpa") != "sdpa" or "softcap" in kwargs
    if not explicit:
        return sdpa_attention_forward(
            module, query, key, value, attention_mask, scaling=scaling, dropout=dropout, **kwargs
        )

    # 1. Grouped-query attention: repeat each key/value head for its query heads.
    groups = query.shape[1] // key.shape[1]
    if groups > 1:
        key = key.repeat_interleave(groups, dim=1)
        value = value.repeat_interleave(groups, dim=1)

    # 2. Scores `[batch, heads, q, kv]`, with the optional logit soft-capping of Gemma 2.
    scale = scaling if scaling is not None else query.shape[-1] ** -0.5
    scores = torch.matmul(query, key.transpose(2, 3)) * scale
    softcap = kwargs.get("softcap")
    if softcap is not None:
        scores = torch.tanh(scores / softcap) * softcap
    if attention_mask is not None:
        scores = scores + attention_mask[:, :, :, : key.shape[-2]]
    elif query.shape[2] > 1:
        causal = torch.ones(query.shape[2], key.shape[-2], dtype=torch.bool, device=query.device)
        causal = causal.tril(key.shape[-2] - query.shape[2])
        scores = scores.masked_fill(~causal, torch.finfo(scores.dtype).min)

    # 3. Weights and output `[batch, q, heads, head_dim]`, as the other attention functions return.
    weights = torch.softmax(scores.float(), dim=-1).to(query.dtype)
    if keep:
        _local.captured[layer_idx] = weights[0].detach()
    output = torch.matmul(weights, value).transpose(1, 2).contiguous()
    return output, weights


def _register() -> None:
    global _registered
    if _registered:
        return
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

    AttentionInterface.register(CAPTURE_IMPLEMENTATION, _capture_attention_forward)
    AttentionMaskInterface.register(CAPTURE_IMPLEMENTATION, sdpa_mask)
    _registered = True


@contextlib.contextmanager
def capturing(model, layers: Sequence[int]) -> Iterator[dict[int, torch.Tensor]]:
    """Capture the attention weights of `layers` during the forwards inside the block.

    Yields a dict that fills with `layer_index -> [heads, q, kv]` weights of the last forward.
    An empty `layers` changes nothing. A model loaded with eager attention is switched too,
    because only the capture function stores the weights.
    """
    captured: dict[int, torch.Tensor] = {}
    if not layers:
        yield captured
        return
    num_layers = model.config.num_hidden_layers
    bad = [layer for layer in layers if not 0 <= layer < num_layers]
    if bad:
        raise ValueError(
            f"attention layers {bad} are out of range; the model has layers 0 to {num_layers - 1}."
        )
    _register()
    config = model.config
    previous = config._attn_implementation
    _local.layers = set(layers)
    _local.captured = captured
    _local.previous = previous
    config._attn_implementation = CAPTURE_IMPLEMENTATION
    try:
        yield captured
    finally:
        config._attn_implementation = previous
        _local.layers = None
        _local.captured = {}
        _local.previous = "sdpa"
