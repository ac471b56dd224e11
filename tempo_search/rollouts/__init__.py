"""Rollout policies: extend leaves in the shared cache, score the result, then rewind.

All rollouts of one batch advance together, one forward pass per token. Their tokens are
appended at the tail of the tree state and removed with one `rewind` afterwards, so a rollout
leaves the cache exactly as it found it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

logger = logging.getLogger(__name__)

ROLLOUT_KINDS = ("none", "greedy", "sample")


@dataclass(frozen=True)
class RolloutConfig:
    """Rollout policy that extends new leaves before they are scored.

    Attributes:
        kind: "none", "greedy" (argmax, as `model.generate(do_sample=False)`) or "sample".
        depth: most tokens a rollout adds.
        temperature: sampling temperature for "sample".
    """

    kind: str = "none"
    depth: int = 8
    temperature: float = 1.0

    def __post_init__(self) -> None:
        if self.kind not in ROLLOUT_KINDS:
            raise ValueError(
                f"rollout={self.kind!r} is not supported; pass one of {', '.join(ROLLOUT_KINDS)}."
            )
        if not isinstance(self.depth, int) or self.depth < 1:
            raise ValueError(
                f"rollout_depth={self.depth!r} (RolloutConfig.depth) must be an integer of at "
                "least 1, such as 8."
            )
        if not self.temperature > 0:
            raise ValueError(f"rollout temperature={self.temperature!r} must be above 0.")

    @property
    def enabled(self) -> bool:
        return self.kind != "none"


@dataclass(frozen=True)
class RolloutResult:
    """One rollout: `token_ids` added after the start node, their summed log-probability
    under the model, whether it ended (end-of-sequence or its length limit), and the
    log-probability of each token (`[len(token_ids)]`)."""

    token_ids: list[int]
    sum_log_prob: float
    finished: bool
    log_probs: tuple[float, ...] = ()

    def after_first(self) -> RolloutResult:
        """Return the rest of this rollout once its first token is a tree node: a rollout of that
        node with the same policy (the first token's log-probability removed)."""
        if not self.token_ids or len(self.log_probs) != len(self.token_ids):
            raise ValueError("after_first() needs a rollout with tokens and their log_probs")
        return RolloutResult(
            self.token_ids[1:],
            self.sum_log_prob - self.log_probs[0],
            self.finished,
            self.log_probs[1:],
        )


def run_rollouts(
    state,
    starts: Sequence[tuple[int, torch.Tensor]],
    config: RolloutConfig,
    *,
    eos_token_ids: set[int],
    generator: torch.Generator | None = None,
    allowed_mask: Callable[[int, list[int]], torch.Tensor | None] | None = None,
    max_tokens: int | None = None,
    limits: Sequence[int] | None = None,
) -> list[RolloutResult]:
    """Roll every start node forward together, then rewind the cache.

    Args:
        state: the `TreeState` (or an object with its `expand` and `rewind`).
        starts: `(node_id, logits [vocab_size])` of each start node.
        config: the rollout policy.
        eos_token_ids: tokens that end a rollout.
        generator: randomness for "sample".
        allowed_mask: `(start_index, rollout_token_ids) -> [vocab_size] bool or None`, the
            task's constraint at each rollout step.
        max_tokens: most tokens appended in all (a node budget); rollouts stop early at it.
        limits: most tokens each rollout may add (the length left under the search's
            `max_new_tokens`); a rollout that reaches its limit counts as finished, as a tree
            node at that length is terminal. None for `config.depth` only.
    """
    results = [RolloutResult([], 0.0, False) for _ in starts]
    if not config.enabled or not starts:
        return results
    tokens: list[list[int]] = [[] for _ in starts]
    sums = [0.0] * len(starts)
    steps: list[list[float]] = [[] for _ in starts]
    finished = [False] * len(starts)
    tails = [node_id for node_id, _ in starts]
    logits = [row for _, row in starts]
    appended = 0
    try:
        for step in range(config.depth):
            # 1. Pick the next token of every active rollout.
            active, parents, picks = [], [], []
            for index, row in enumerate(logits):
                if finished[index] or row is None:
                    continue
                if limits is not None and len(tokens[index]) >= limits[index]:
                    finished[index] = True
                    continue
                token, log_prob = _pick(row, config, generator, _mask(allowed_mask, index, tokens))
                if token is None:
                    finished[index] = True
                    continue
                tokens[index].append(token)
                sums[index] += log_prob
                steps[index].append(log_prob)
                if token in eos_token_ids:
                    finished[index] = True
                    continue
                active.append(index)
                parents.append(tails[index])
                picks.append(token)
            if not active or step == config.depth - 1:
                break
            if max_tokens is not None and appended + len(active) > max_tokens:
                break

            # 2. One forward for all of them; the new nodes become the tails.
            output = state.expand(parents, picks)
            appended += len(active)
            for index, node_id, row in zip(active, output.node_ids, output.logits, strict=True):
                tails[index] = node_id
                logits[index] = row
    finally:
        state.rewind(appended)
    return [
        RolloutResult(tokens[i], sums[i], finished[i], tuple(steps[i])) for i in range(len(starts))
    ]


def _mask(allowed_mask, index: int, tokens: list[list[int]]) -> torch.Tensor | None:
    return None if allowed_mask is None else allowed_mask(index, tokens[index])


def _pick(
    logits: torch.Tensor,
    config: RolloutConfig,
    generator: torch.Generator | None,
    allowed: torch.Tensor | None,
) -> tuple[int | None, float]:
    log_probs = torch.log_softmax(logits.float(), dim=-1)
    scores = logits.float()
    if allowed is not None:
        if not bool(allowed.any()):
            return None, 0.0
        scores = scores.masked_fill(~allowed, float("-inf"))
    if config.kind == "greedy":
        token = int(torch.argmax(scores))
    else:
        probs = torch.softmax(scores / config.temperature, dim=-1)
        token = int(torch.multinomial(probs, 1, generator=generator))
    return token, float(log_probs[token])
