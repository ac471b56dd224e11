"""Priors from next-token logits: logits processors, allowed-token masks, temperature, top-k, top-p."""

from __future__ import annotations

import logging
import math
import numbers
from collections.abc import Callable, Iterable

import torch

logger = logging.getLogger(__name__)

#: A transformers ``LogitsProcessor`` or any callable with its signature:
#: ``(input_ids [n, seq] long, scores [n, vocab] float) -> scores [n, vocab]``.
LogitsProcessorLike = Callable[[torch.LongTensor, torch.FloatTensor], torch.FloatTensor]


def _check_arguments(temperature: float, top_p: float, top_k: int | None) -> None:
    if isinstance(temperature, bool) or not isinstance(temperature, numbers.Real):
        raise TypeError(f"temperature must be a float, got {temperature!r}")
    if not math.isfinite(temperature) or temperature <= 0:
        raise ValueError(
            f"temperature={temperature!r} is invalid; pass a finite temperature > 0 "
            "(1.0 leaves the distribution unchanged)"
        )
    if isinstance(top_p, bool) or not isinstance(top_p, numbers.Real):
        raise TypeError(f"top_p must be a float, got {top_p!r}")
    if not 0.0 < top_p <= 1.0:
        raise ValueError(f"top_p={top_p!r} is invalid; pass 0 < top_p <= 1 (1.0 disables it)")
    if top_k is not None and (isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1):
        raise ValueError(f"top_k={top_k!r} is invalid; pass an int >= 1, or None to disable it")


def _apply_top_k(scores: torch.Tensor, top_k: int) -> torch.Tensor:
    """Set all but the ``top_k`` highest scores of each row to -inf; ties keep the lower id."""
    if top_k >= scores.shape[-1]:
        return scores
    # A stable descending sort keeps equal scores in token-id order.
    order = torch.sort(scores, dim=-1, descending=True, stable=True).indices
    removed_ids = order[:, top_k:]
    return scores.scatter(-1, removed_ids, -math.inf)


def _apply_top_p(probs: torch.Tensor, top_p: float) -> torch.Tensor:
    """Zero all tokens outside the smallest set whose probability mass reaches ``top_p``.

    A token is kept when the mass of the tokens ranked before it is below ``top_p``, so the top
    token is always kept. Ties in probability are ranked by token id.
    """
    sorted_probs, order = torch.sort(probs, dim=-1, descending=True, stable=True)
    mass_before = torch.cumsum(sorted_probs, dim=-1) - sorted_probs
    sorted_keep = mass_before < top_p
    keep = torch.zeros_like(sorted_keep).scatter(-1, order, sorted_keep)
    return torch.where(keep, probs, torch.zeros_like(probs))


def prior_from_logits(
    logits: torch.Tensor,
    *,
    temperature: float = 1.0,
    top_p: float = 1.0,
    top_k: int | None = None,
    allowed_mask: torch.Tensor | None = None,
    logits_processors: Iterable[LogitsProcessorLike] | None = None,
    input_ids: torch.Tensor | None = None,
) -> torch.Tensor:
    """Turn next-token logits into renormalised prior probabilities.

    Steps, in order: the logits processors, the allowed-token mask (disallowed tokens get
    ``-inf``), temperature, top-k, softmax, top-p, renormalisation. This is the order of
    transformers' sampling (processors, then temperature, top-k, top-p warpers).

    Args:
        logits: ``[n, vocab]`` (or ``[vocab]``) float logits. Not modified.
        temperature: divisor of the logits, > 0 (1.0 leaves them unchanged).
        top_p: nucleus mass in ``(0, 1]``: keep the smallest set of tokens whose probability
            reaches ``top_p``, at least one token (1.0 disables it).
        top_k: keep the ``top_k`` most likely tokens, ties by lower token id (None disables it).
        allowed_mask: ``[n, vocab]`` or ``[vocab]`` bool, True where a token is allowed.
        logits_processors: a ``transformers.LogitsProcessorList`` or list of processors,
            applied in order to a copy of the logits.
        input_ids: ``[n, seq]`` long, the token ids so far; required with ``logits_processors``.

    Returns:
        ``[n, vocab]`` (or ``[vocab]``) probabilities, float32 unless ``logits`` is float64. A row in
        which no token is left (its mask allows nothing, or a processor removed every token) is
        all zeros, and the caller treats that node as a dead end.
    """
    # 1. Validate and bring everything to [n, vocab].
    _check_arguments(temperature, top_p, top_k)
    if not isinstance(logits, torch.Tensor) or not logits.is_floating_point():
        raise TypeError("logits must be a float torch.Tensor of shape [n, vocab] or [vocab]")
    if logits.ndim not in (1, 2):
        raise ValueError(f"logits has shape {tuple(logits.shape)}; pass [n, vocab] or [vocab]")
    squeeze = logits.ndim == 1
    dtype = torch.float64 if logits.dtype == torch.float64 else torch.float32
    scores = logits.reshape(-1, logits.shape[-1]).to(dtype=dtype, copy=True)  # [n, vocab]

    # 2. Logits processors, on a copy because some of them write in place.
    if logits_processors is not None:
        if input_ids is None:
            raise ValueError(
                "logits_processors need input_ids; pass input_ids [n, seq] with the token ids so far"
            )
        input_ids = torch.as_tensor(input_ids)
        if input_ids.ndim == 1:
            input_ids = input_ids.unsqueeze(0)
        if input_ids.ndim != 2 or input_ids.shape[0] != scores.shape[0]:
            raise ValueError(
                f"input_ids has shape {tuple(input_ids.shape)} but logits has {scores.shape[0]} "
                "rows; pass input_ids [n, seq] with one row per logits row"
            )
        for processor in logits_processors:
            scores = processor(input_ids, scores)
    if bool(torch.isnan(scores).any()) or bool(torch.isposinf(scores).any()):
        raise ValueError(
            "logits contain NaN or +inf (after the logits processors, if any); "
            "pass finite logits, with -inf only for removed tokens"
        )

    # 3. Allowed-token mask.
    if allowed_mask is not None:
        mask = torch.as_tensor(allowed_mask, device=scores.device)
        if mask.dtype != torch.bool:
            raise TypeError(f"allowed_mask must be a bool tensor, got dtype {mask.dtype}")
        if mask.shape not in (scores.shape, scores.shape[-1:]):
            raise ValueError(
                f"allowed_mask has shape {tuple(mask.shape)}; pass {tuple(scores.shape)} "
                f"or [{scores.shape[-1]}] to match the logits"
            )
        scores = scores.masked_fill(~mask, -math.inf)

    # 4. Temperature and top-k on the logits.
    scores = scores / temperature
    if top_k is not None:
        scores = _apply_top_k(scores, top_k)

    # 5. Softmax; rows with no token left stay all zeros.
    dead_rows = torch.isneginf(scores).all(dim=-1, keepdim=True)  # [n, 1]
    probs = torch.softmax(scores.masked_fill(dead_rows, 0.0), dim=-1)
    probs = probs.masked_fill(dead_rows, 0.0)
    if bool(dead_rows.any()):
        logger.debug("%d of %d rows allow no token", int(dead_rows.sum()), dead_rows.shape[0])

    # 6. Top-p on the probabilities, then renormalise what is left.
    if top_p < 1.0:
        probs = _apply_top_p(probs, top_p)
        totals = probs.sum(dim=-1, keepdim=True)
        probs = probs / torch.where(totals > 0, totals, torch.ones_like(totals))

    return probs.squeeze(0) if squeeze else probs


def top_candidates(probs: torch.Tensor, max_width: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Return the most likely tokens of one distribution, sorted by descending probability.

    Args:
        probs: ``[vocab]`` probabilities, e.g. one row of ``prior_from_logits``.
        max_width: maximum number of candidates.

    Returns:
        ``(token_ids [k], probs [k])`` with ``k = min(max_width, number of tokens with probability
        > 0)``. Ties are ordered by token id. ``k`` is 0 for an all-zero row (a dead end).
    """
    if isinstance(max_width, bool) or not isinstance(max_width, int) or max_width < 1:
        raise ValueError(f"max_width={max_width!r} is invalid; pass an int >= 1")
    probs = torch.as_tensor(probs)
    if probs.ndim != 1:
        raise ValueError(f"probs has shape {tuple(probs.shape)}; pass one [vocab] distribution")

    num_candidates = min(max_width, int((probs > 0).sum()))
    if num_candidates == 0:
        return torch.zeros(0, dtype=torch.long), probs.new_zeros(0)

    # A full sort of a 49k vocabulary costs about 7 ms on a CPU; topk finds the k-th value,
    # and only the tokens at or above it (ties included) are sorted by (-prob, token id).
    kth_value = torch.topk(probs, num_candidates).values[-1]
    shortlist = torch.nonzero(probs >= kth_value).flatten()
    order = torch.sort(probs[shortlist], descending=True, stable=True).indices
    ids = shortlist[order[:num_candidates]]
    return ids, probs[ids]
