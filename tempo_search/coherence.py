"""Attention-based scoring and pruning of the members of a parallel set.

The members of a parallel set are siblings that share one logical position. Tokens generated after
them attend to each member's KV-cache slot. A member that later tokens attend to little is
incoherent with how the text went on and can be pruned. The pipeline, from attention tensors only:

1. ``aggregate_attention``: weighted mean over the chosen layers (deeper layers weigh more) and a
   mean or max over heads, ``[layers, heads, q, k] -> [q, k]``.
2. ``member_scores``: mean attention that the later query rows pay to each member's slot.
3. ``relative_scores``: each score relative to the set's mean, ``score / mean - 1``.
4. ``keep_weights``: ``sigmoid(steepness * (relative - cut))``, a soft keep weight in ``(0, 1)``.
5. ``prune_decision``: keep the members whose weight reaches ``floor``, never none.

``member_keep_weights`` runs steps 1 to 4 with the settings of a ``PruneConfig``.
"""

from __future__ import annotations

import logging
import math
import numbers
from collections.abc import Sequence
from dataclasses import dataclass

import torch

logger = logging.getLogger(__name__)

_LAYER_SCHEMES = ("linear", "uniform")
_HEAD_REDUCTIONS = ("mean", "max")


def layer_weights(num_layers_used: int, *, scheme: str = "linear") -> torch.Tensor:
    """Return ``[num_layers_used]`` weights that sum to 1, in order from shallow to deep.

    ``"linear"`` gives layer ``i`` (0-based among the layers used) the weight ``(i + 1) / sum``,
    so deeper layers weigh more. ``"uniform"`` weighs all layers the same.
    """
    if isinstance(num_layers_used, bool) or not isinstance(num_layers_used, int):
        raise TypeError(f"num_layers_used must be an int, got {num_layers_used!r}")
    if num_layers_used < 1:
        raise ValueError(f"num_layers_used={num_layers_used!r} is invalid; pass an int >= 1")
    if scheme not in _LAYER_SCHEMES:
        raise ValueError(f"scheme={scheme!r} is not a layer scheme; pass one of {_LAYER_SCHEMES}")

    if scheme == "linear":
        raw = torch.arange(1, num_layers_used + 1, dtype=torch.float64)
    else:
        raw = torch.ones(num_layers_used, dtype=torch.float64)
    return raw / raw.sum()


def aggregate_attention(
    attn: torch.Tensor | Sequence[torch.Tensor],
    *,
    layer_weights: torch.Tensor | Sequence[float],
    head_reduce: str = "mean",
) -> torch.Tensor:
    """Reduce attention probabilities over heads, then take the weighted sum over layers.

    Args:
        attn: ``[layers, heads, q, k]``, or a sequence of ``[heads, q, k]`` tensors, one per layer.
        layer_weights: ``[layers]`` non-negative weights, used as given (``layer_weights()``
            returns weights that sum to 1, which makes this a weighted mean).
        head_reduce: ``"mean"`` or ``"max"`` over heads.

    Returns:
        ``[q, k]`` float64 attention.
    """
    if head_reduce not in _HEAD_REDUCTIONS:
        raise ValueError(f"head_reduce={head_reduce!r} is invalid; pass one of {_HEAD_REDUCTIONS}")
    if not isinstance(attn, torch.Tensor):
        attn = torch.stack(list(attn))
    if attn.ndim != 4:
        raise ValueError(
            f"attn has shape {tuple(attn.shape)}; pass [layers, heads, q, k] "
            "(drop the batch dimension of transformers' attentions first)"
        )
    weights = torch.as_tensor(layer_weights, dtype=torch.float64, device=attn.device)
    if weights.shape != (attn.shape[0],):
        raise ValueError(
            f"layer_weights has shape {tuple(weights.shape)}; pass one weight per layer "
            f"({attn.shape[0]} layers in attn)"
        )
    if not bool(torch.isfinite(weights).all()) or bool((weights < 0).any()):
        raise ValueError(f"layer_weights={weights.tolist()} is invalid; pass finite weights >= 0")

    attn = attn.to(torch.float64)
    per_layer = attn.mean(dim=1) if head_reduce == "mean" else attn.amax(dim=1)  # [layers, q, k]
    return torch.einsum("l,lqk->qk", weights, per_layer)


def _check_indices(name: str, indices: Sequence[int], size: int, axis: str) -> torch.Tensor:
    index = torch.as_tensor(list(indices), dtype=torch.long)
    if index.ndim != 1 or index.numel() == 0:
        raise ValueError(f"{name} is empty; pass at least one {axis} index")
    if bool((index < 0).any()) or bool((index >= size).any()):
        raise ValueError(
            f"{name}={index.tolist()} has indices outside [0, {size}); "
            f"pass {axis} indices of the attention matrix"
        )
    return index


def member_scores(
    attention: torch.Tensor,
    member_slots: Sequence[int],
    query_rows: Sequence[int] | None = None,
) -> torch.Tensor:
    """Return ``[num_members]`` mean attention that the query rows pay to each member slot.

    Args:
        attention: ``[q, k]`` aggregated attention, e.g. from ``aggregate_attention``.
        member_slots: key indices (KV-cache slots) of the members of one parallel set.
        query_rows: query indices of the later tokens that score the set; all rows when None.
    """
    if attention.ndim != 2:
        raise ValueError(f"attention has shape {tuple(attention.shape)}; pass [q, k]")
    num_queries, num_keys = attention.shape
    slots = _check_indices("member_slots", member_slots, num_keys, "key")
    if query_rows is None:
        rows = torch.arange(num_queries)
    else:
        rows = _check_indices("query_rows", query_rows, num_queries, "query")

    selected = attention.to(torch.float64)[rows][:, slots]  # [num_rows, num_members]
    return selected.mean(dim=0)


def relative_scores(scores: torch.Tensor) -> torch.Tensor:
    """Return ``[m]`` scores relative to their mean, ``score / mean(scores) - 1``.

    A member at the mean gets 0 and a member with no attention gets -1. When the mean is 0 (no
    member received attention), all members count as equal and get 0.
    """
    scores = torch.as_tensor(scores, dtype=torch.float64)
    if scores.ndim != 1 or scores.numel() == 0:
        raise ValueError(f"scores has shape {tuple(scores.shape)}; pass a non-empty [m] tensor")
    mean = scores.mean()
    if float(mean.abs()) <= torch.finfo(torch.float64).tiny:
        return torch.zeros_like(scores)
    return scores / mean - 1.0


def keep_weights(relative: torch.Tensor, *, steepness: float, cut: float) -> torch.Tensor:
    """Return ``[m]`` soft keep weights ``sigmoid(steepness * (relative - cut))`` in ``(0, 1)``."""
    _check_real("steepness", steepness, positive=True)
    _check_real("cut", cut)
    relative = torch.as_tensor(relative, dtype=torch.float64)
    return torch.sigmoid(steepness * (relative - cut))


def prune_decision(weights: torch.Tensor, *, floor: float) -> torch.Tensor:
    """Return a ``[m]`` bool mask of the members to keep: those with weight ``>= floor``.

    If no member reaches ``floor``, the member with the highest weight is kept (the lowest index
    on ties), so a parallel set is never emptied.
    """
    _check_real("floor", floor)
    weights = torch.as_tensor(weights, dtype=torch.float64)
    if weights.ndim != 1 or weights.numel() == 0:
        raise ValueError(f"weights has shape {tuple(weights.shape)}; pass a non-empty [m] tensor")

    keep = weights >= floor
    if not bool(keep.any()):
        keep[int(torch.argmax(weights))] = True
    return keep


def _check_real(name: str, value: float, *, positive: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a float, got {value!r}")
    if not math.isfinite(value) or (positive and value <= 0):
        bound = "finite and > 0" if positive else "finite"
        raise ValueError(f"{name}={value!r} is invalid; pass a value that is {bound}")
    return float(value)


LayerSpec = str | int | Sequence[int]


def parse_prune_layers(text: str) -> str | tuple[int, ...]:
    """Parse a ``--prune-layers`` string into ``"all"``, ``"last:K"`` or a tuple of layer indices.

    Accepted forms: ``"all"``, ``"last:4"`` (the last 4 layers) and ``"0,3,5"`` (layer indices,
    negative ones counting from the last layer, as in Python).
    """
    if not isinstance(text, str):
        raise TypeError(f"prune layers must be a str, got {text!r}")
    spec = text.strip().lower()
    if spec == "all":
        return "all"
    if spec.startswith("last:"):
        count_text = spec.removeprefix("last:").strip()
        if not count_text.isdigit() or int(count_text) < 1:
            raise ValueError(
                f"prune layers {text!r} is invalid; pass last:K with K a positive int, e.g. last:4"
            )
        return f"last:{int(count_text)}"
    try:
        indices = tuple(int(part) for part in spec.split(","))
    except ValueError:
        raise ValueError(
            f"prune layers {text!r} is invalid; pass 'all', 'last:K' or comma-separated layer "
            "indices such as 0,3,5"
        ) from None
    return indices


@dataclass(frozen=True)
class PruneConfig:
    """Settings of attention-based retroactive pruning.

    Args:
        layers: layers whose attention is used: ``"last:K"`` (default ``"last:4"``), ``"all"``,
            an int layer index, or a sequence of indices (negative ones count from the last
            layer). Strings are parsed with ``parse_prune_layers`` and an int or a sequence is
            stored as a tuple. Four deep layers are a hand-chosen default: deep layers carry the
            more semantic attention, and capturing only a few keeps the cost of eager attention low.
        head_reduce: ``"mean"`` or ``"max"`` over heads (default ``"mean"``).
        steepness: slope of the sigmoid in ``keep_weights``, > 0 (default 10).
        cut: relative score at which the keep weight is 0.5 (default -0.5, a member that receives
            half the set's mean attention).
        floor: minimum keep weight, in ``[0, 1]`` (default 0.5). With the default ``cut`` a member
            is pruned when it receives less than half the set's mean attention. With steepness 10,
            a member at the mean keeps weight ``sigmoid(5)`` (about 0.993) and a member with no
            attention gets ``sigmoid(-5)`` (about 0.007).
        layer_scheme: ``"linear"`` (deeper layers weigh more) or ``"uniform"``, see ``layer_weights``.
    """

    layers: LayerSpec = "last:4"
    head_reduce: str = "mean"
    steepness: float = 10.0
    cut: float = -0.5
    floor: float = 0.5
    layer_scheme: str = "linear"

    def __post_init__(self) -> None:
        object.__setattr__(self, "layers", self._normalise_layers(self.layers))
        if self.head_reduce not in _HEAD_REDUCTIONS:
            raise ValueError(
                f"head_reduce={self.head_reduce!r} is invalid; pass one of {_HEAD_REDUCTIONS}"
            )
        if self.layer_scheme not in _LAYER_SCHEMES:
            raise ValueError(
                f"layer_scheme={self.layer_scheme!r} is invalid; pass one of {_LAYER_SCHEMES}"
            )
        object.__setattr__(
            self, "steepness", _check_real("steepness", self.steepness, positive=True)
        )
        object.__setattr__(self, "cut", _check_real("cut", self.cut))
        floor = _check_real("floor", self.floor)
        if not 0.0 <= floor <= 1.0:
            raise ValueError(f"floor={floor!r} is invalid; pass a keep weight in [0, 1]")
        object.__setattr__(self, "floor", floor)

    @staticmethod
    def _normalise_layers(layers: LayerSpec) -> str | tuple[int, ...]:
        if isinstance(layers, str):
            return parse_prune_layers(layers)
        if isinstance(layers, bool):
            raise TypeError(f"layers must be a str, an int or a sequence of ints, got {layers!r}")
        if isinstance(layers, numbers.Integral):
            return (int(layers),)
        is_index_list = (
            isinstance(layers, Sequence)
            and len(layers) > 0
            and all(isinstance(i, numbers.Integral) and not isinstance(i, bool) for i in layers)
        )
        if is_index_list:
            return tuple(int(i) for i in layers)
        raise ValueError(
            f"layers={layers!r} is invalid; pass 'all', 'last:K', an int layer index "
            "or a non-empty sequence of layer indices"
        )

    def resolve_layers(self, num_hidden_layers: int) -> list[int]:
        """Return the sorted, distinct, non-negative layer indices for a model with that many layers.

        ``"last:K"`` with K above ``num_hidden_layers`` uses all layers, so the default also works on
        small models. Explicit indices outside the model raise ``ValueError``.
        """
        if isinstance(num_hidden_layers, bool) or not isinstance(num_hidden_layers, int):
            raise TypeError(f"num_hidden_layers must be an int, got {num_hidden_layers!r}")
        if num_hidden_layers < 1:
            raise ValueError(
                f"num_hidden_layers={num_hidden_layers!r} is invalid; pass an int >= 1"
            )

        if self.layers == "all":
            return list(range(num_hidden_layers))
        if isinstance(self.layers, str):  # "last:K", normalised by parse_prune_layers
            count = min(int(self.layers.removeprefix("last:")), num_hidden_layers)
            return list(range(num_hidden_layers - count, num_hidden_layers))
        resolved = set()
        for index in self.layers:
            if not -num_hidden_layers <= index < num_hidden_layers:
                raise ValueError(
                    f"layer index {index} in layers={self.layers!r} is outside a model with "
                    f"{num_hidden_layers} layers; pass indices in [{-num_hidden_layers}, "
                    f"{num_hidden_layers - 1}]"
                )
            resolved.add(index % num_hidden_layers)
        return sorted(resolved)


def member_keep_weights(
    attn: torch.Tensor | Sequence[torch.Tensor],
    member_slots: Sequence[int],
    *,
    config: PruneConfig,
    query_rows: Sequence[int] | None = None,
) -> torch.Tensor:
    """Return ``[num_members]`` keep weights of one parallel set, steps 1 to 4 of the module.

    Args:
        attn: ``[layers, heads, q, k]`` attention of the layers ``config.resolve_layers`` chose,
            in the same order, shallow to deep.
        member_slots: key indices of the set's members.
        config: the pruning settings.
        query_rows: query indices of the later tokens; all rows when None.

    Pass the result to ``prune_decision(weights, floor=config.floor)`` to decide what to keep.
    """
    num_layers_used = attn.shape[0] if isinstance(attn, torch.Tensor) else len(attn)
    weights = layer_weights(num_layers_used, scheme=config.layer_scheme)
    attention = aggregate_attention(attn, layer_weights=weights, head_reduce=config.head_reduce)
    scores = member_scores(attention, member_slots, query_rows)
    relative = relative_scores(scores)
    return keep_weights(relative, steepness=config.steepness, cut=config.cut)
