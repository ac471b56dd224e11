"""The naive baseline of the MCTS benchmark: an engine that re-runs every prefix.

A language-model MCTS without a shared KV cache evaluates a new node by running the model over
the node's whole sequence, prompt and root-to-node path, as an ordinary causal forward pass.
`NaiveEngine` does exactly that, one forward pass per new node, behind the interface of
`tempo_search.tree_state.TreeState`. `search(..., _engine_factory=NaiveEngine)` therefore runs
the same MCTS loop on the baseline.

Because the shared tree state returns the logits of a plain forward pass over each node's path
(the exactness invariant, to within 1e-4 in float32), a search with the same seed builds the
same tree on either engine. `tree_differences` checks that.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from typing import Any

import torch

from tempo_search.tree import SearchNode, tree_to_dict
from tempo_search.tree_state import ROOT, ForwardOutput, unwrap_model

DEFAULT_REL_TOL = 1e-4
DEFAULT_ABS_TOL = 1e-4
"""Tolerances of `tree_differences` on float fields: the 1e-4 of the exactness invariant."""


class NaiveEngine:
    """The interface of `TreeState` without a shared cache: every new node re-runs its prefix.

    Args:
        model: a `transformers.PreTrainedModel` (causal LM) or a `LoadedModel`.
        prompt_ids: `[P]` prompt token ids; run once to get `prompt_logits`.

    `expand` runs one plain causal forward pass per new node over `prompt + path`, with the
    default positions `0 .. P + depth - 1` and no cache. `rewind` and `compact` only update
    the bookkeeping, which assigns node ids and slots exactly as `TreeState` does, so that the
    trees of both engines compare field by field.

    Counters: `forward_passes` counts every forward (the prompt run included),
    `tokens_forwarded` every token of every re-run, and `peak_cache_length` is the longest
    sequence forwarded, because no cache outlives one forward pass.
    """

    def __init__(self, model, prompt_ids: Sequence[int] | torch.Tensor) -> None:
        self.model = unwrap_model(model)
        ids = torch.as_tensor(prompt_ids, dtype=torch.long).flatten()
        if ids.numel() == 0:
            raise ValueError("prompt_ids is empty; the naive engine needs at least one token.")
        self.prompt_ids = ids.tolist()
        self.prompt_length = len(self.prompt_ids)
        self.device = next(self.model.parameters()).device

        # Per node, by id: parent id, depth, token id and slot, laid out as in TreeState.
        self._parent: dict[int, int] = {}
        self._depth: dict[int, int] = {}
        self._token: dict[int, int] = {}
        self._slot: dict[int, int] = {}
        self._slot_nodes: list[int] = []
        self.next_node_id = 0

        self.forward_passes = 0
        self.tokens_forwarded = 0
        self.peak_cache_length = 0
        # Re-runs after the prompt run, by their length in tokens (as `TreeState.forward_sizes`).
        self.forward_sizes: Counter[int] = Counter()
        self.prompt_logits = self._run_prompt()

    # ----------------------------------------------------------------- inspection

    @property
    def num_nodes(self) -> int:
        return len(self._slot_nodes)

    @property
    def cache_length(self) -> int:
        """Length the shared cache of `TreeState` would have; this engine keeps no cache."""
        return self.prompt_length + len(self._slot_nodes)

    def slot(self, node_id: int) -> int:
        return self._slot[node_id]

    def path(self, node_id: int) -> list[int]:
        """Node ids from the first generated node down to `node_id` (empty for ROOT)."""
        path = []
        while node_id != ROOT:
            path.append(node_id)
            node_id = self._parent[node_id]
        path.reverse()
        return path

    def path_token_ids(self, node_id: int) -> list[int]:
        """Generated token ids on the root-to-node path, without the prompt."""
        return [self._token[n] for n in self.path(node_id)]

    # ----------------------------------------------------------------- expand

    def expand(
        self,
        parents: Sequence[int],
        token_ids: Sequence[int],
        *,
        capture_layers: Sequence[int] = (),
    ) -> ForwardOutput:
        """Add new nodes and return `[num_new, vocab_size]` logits, one full re-run per node.

        Args:
            parents: `[num_new]` parent id of each new node: ROOT, a live node, or a node
                earlier in this batch (named by its future id, see `next_node_id`).
            token_ids: `[num_new]` token of each new node.
            capture_layers: must be empty; the baseline captures no attention weights.
        """
        if capture_layers:
            raise ValueError(
                f"capture_layers={list(capture_layers)!r} is not supported by the naive "
                "baseline; pass no layers (the MCTS benchmark uses no coherence value)."
            )
        if len(parents) != len(token_ids):
            raise ValueError(
                f"parents has {len(parents)} entries but token_ids has {len(token_ids)}; pass "
                "one parent per new token."
            )
        if not token_ids:
            raise ValueError("expand() needs at least one new token.")

        # 1. Register the new nodes at the tail, as TreeState does.
        first_id = self.next_node_id
        new_ids = list(range(first_id, first_id + len(token_ids)))
        for offset, (parent, token) in enumerate(zip(parents, token_ids, strict=True)):
            parent = int(parent)
            if (
                parent != ROOT
                and parent not in self._slot
                and not first_id <= parent < first_id + offset
            ):
                self._forget(new_ids[:offset])
                raise ValueError(
                    f"parent {parent} of new node {offset} is neither ROOT, a live node nor an "
                    "earlier node of this batch."
                )
            node_id = new_ids[offset]
            self._parent[node_id] = parent
            self._depth[node_id] = 1 if parent == ROOT else self._depth[parent] + 1
            self._token[node_id] = int(token)
            self._slot[node_id] = self.cache_length
            self._slot_nodes.append(node_id)
        self.next_node_id = first_id + len(new_ids)

        # 2. One plain forward pass per new node over its whole sequence.
        return ForwardOutput(node_ids=new_ids, logits=self._run_nodes(new_ids), attentions={})

    def _run_prompt(self) -> torch.Tensor:
        """Return the prompt's `[vocab_size]` next-token logits."""
        return self._last_logits(self.prompt_ids)

    def _run_nodes(self, new_ids: list[int]) -> torch.Tensor:
        """Return `[num_new, vocab_size]` logits of registered nodes, one re-run per node."""
        rows = []
        for node_id in new_ids:
            sequence = self.prompt_ids + self.path_token_ids(node_id)
            rows.append(self._last_logits(sequence))
            self.forward_sizes[len(sequence)] += 1
        return torch.stack(rows)

    def _last_logits(self, sequence: list[int]) -> torch.Tensor:
        """Return `[vocab_size]` float32 next-token logits of one causal forward over `sequence`."""
        input_ids = torch.tensor([sequence], dtype=torch.long, device=self.device)
        with torch.no_grad():
            logits = self.model(input_ids=input_ids, use_cache=False).logits[0, -1].float()
        self.forward_passes += 1
        self.tokens_forwarded += len(sequence)
        self.peak_cache_length = max(self.peak_cache_length, len(sequence))
        return logits

    # ----------------------------------------------------------------- rewind and compact

    def rewind(self, num_tokens: int) -> None:
        """Forget the last `num_tokens` nodes (for example a rollout); nothing is cached."""
        if num_tokens < 0 or num_tokens > self.num_nodes:
            raise ValueError(
                f"cannot rewind {num_tokens} tokens: the tree contains {self.num_nodes} nodes."
            )
        if num_tokens:
            self._forget(self._slot_nodes[-num_tokens:])

    def compact(self, keep: Sequence[int] | set[int]) -> dict[int, int]:
        """Keep only the nodes in `keep` and renumber their slots in their old order.

        `keep` must contain the parent of every kept node (ROOT aside). Returns the map from
        kept node id to its new slot.
        """
        keep_set = {int(n) for n in keep}
        for node_id in keep_set:
            if node_id not in self._slot:
                raise ValueError(f"cannot keep node {node_id}: it is not in the tree.")
            parent = self._parent[node_id]
            if parent != ROOT and parent not in keep_set:
                raise ValueError(
                    f"cannot keep node {node_id} without its parent {parent}; keep whole paths."
                )
        kept = [n for n in self._slot_nodes if n in keep_set]
        self._forget([n for n in self._slot_nodes if n not in keep_set])
        self._slot_nodes = kept
        for offset, node_id in enumerate(kept):
            self._slot[node_id] = self.prompt_length + offset
        return {n: self._slot[n] for n in kept}

    def _forget(self, node_ids: Sequence[int]) -> None:
        dropped = set(node_ids)
        for node_id in dropped:
            for table in (self._parent, self._depth, self._token, self._slot):
                table.pop(node_id, None)
        self._slot_nodes = [n for n in self._slot_nodes if n not in dropped]


def tree_differences(
    first: SearchNode,
    second: SearchNode,
    *,
    rel_tol: float = DEFAULT_REL_TOL,
    abs_tol: float = DEFAULT_ABS_TOL,
    limit: int = 10,
) -> list[str]:
    """Compare two search trees through `tree_to_dict`; return up to `limit` differences.

    Integers, booleans and strings must be equal; floats (prior, log_prob, value_sum, value,
    reward, coherence) must agree to `math.isclose(rel_tol, abs_tol)`. An empty list means
    the trees are the same: same nodes in the same order, with the same fields.
    """
    first_nodes = tree_to_dict(first)["nodes"]
    second_nodes = tree_to_dict(second)["nodes"]
    differences: list[str] = []
    if len(first_nodes) != len(second_nodes):
        differences.append(f"node count: {len(first_nodes)} != {len(second_nodes)}")
    for index, (a, b) in enumerate(zip(first_nodes, second_nodes, strict=False)):
        for key in a:
            if not _field_matches(a[key], b.get(key), rel_tol, abs_tol):
                differences.append(
                    f"node {index} (id {a['node_id']}) {key}: {a[key]!r} != {b.get(key)!r}"
                )
                if len(differences) >= limit:
                    return differences
    return differences


def _field_matches(a: Any, b: Any, rel_tol: float, abs_tol: float) -> bool:
    if isinstance(a, float) and isinstance(b, (int, float)) and not isinstance(b, bool):
        return math.isclose(a, float(b), rel_tol=rel_tol, abs_tol=abs_tol)
    return type(a) is type(b) and a == b
