"""The shared tree state: one KV cache that contains a prompt and a tree of token nodes.

Every new node is forwarded at logical position `P + depth - 1` (through `position_ids`) with a
4-D additive attention mask that shows it the prompt, its ancestors and itself. Keys are cached
after the rotary embedding, so an entry keeps its logical position wherever its physical slot
is; that is what lets `rewind` and `compact` move or drop slots without recomputing anything.
"""

from __future__ import annotations

import inspect
import logging
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

import torch

logger = logging.getLogger(__name__)

ROOT = -1
"""Parent id of a node whose parent is the prompt (depth 1)."""

MODES = ("tree", "superposition")


class NodeBudgetExceeded(RuntimeError):
    """Raised by `TreeState.expand` when the new nodes would pass `max_nodes`."""


@dataclass(frozen=True)
class ForwardOutput:
    """Output of one forward pass over new nodes.

    Attributes:
        node_ids: `[num_new]` ids of the new nodes, in the order they were given.
        logits: `[num_new, vocab_size]` float32 next-token logits of each new node.
        attentions: captured attention per layer index, each `[heads, num_new, kv_len]`, or an
            empty dict when nothing was captured.
    """

    node_ids: list[int]
    logits: torch.Tensor
    attentions: dict[int, torch.Tensor]


class TreeState:
    """A prompt and a tree of token nodes in one shared KV cache.

    Args:
        model: a `transformers.PreTrainedModel` (causal LM) or a `LoadedModel`.
        prompt_ids: `[P]` prompt token ids; prefilled once at positions `0 .. P-1`.
        mode: "tree" (each node sees the prompt, its ancestors and itself: exact) or
            "superposition" (a node at depth d sees every live node of depth < d and itself,
            never its siblings: the original TEMPO reading, an approximation by design).
        isolate: when False, a node also sees the nodes of its own depth that sit in earlier
            slots (plain causal order inside a parallel set). Only meaningful in superposition.
        max_nodes: most live nodes the cache may hold besides the prompt; None for no limit.

    New nodes get consecutive ids starting at `next_node_id`, so a batch can name a parent
    created earlier in the same batch by the id that parent will receive.

    Example:
        >>> state = TreeState(model, tokenizer("The cat")["input_ids"])
        >>> out = state.expand([ROOT, ROOT], [id_sat, id_ran])  # siblings at one position
        >>> out.logits.shape  # [2, vocab_size]
    """

    def __init__(
        self,
        model,
        prompt_ids: Sequence[int] | torch.Tensor,
        *,
        mode: str = "tree",
        isolate: bool = True,
        max_nodes: int | None = None,
    ) -> None:
        from transformers import DynamicCache

        self.model = unwrap_model(model)
        self._cache_kwarg = cache_argument_name(self.model)
        if mode not in MODES:
            raise ValueError(f"mode={mode!r} is not supported; pass 'tree' or 'superposition'.")
        if max_nodes is not None and max_nodes < 1:
            raise ValueError(f"max_nodes={max_nodes} must be at least 1, or None for no limit.")
        ids = torch.as_tensor(prompt_ids, dtype=torch.long).flatten()
        if ids.numel() == 0:
            raise ValueError("prompt_ids is empty; the tree state needs at least one prompt token.")
        self.mode = mode
        self.isolate = isolate
        self.max_nodes = max_nodes
        self.prompt_ids = ids.tolist()
        self.prompt_length = len(self.prompt_ids)
        self.device = next(self.model.parameters()).device
        self._mask_value = torch.finfo(next(self.model.parameters()).dtype).min

        # Per node, by id: parent id, depth, token id, slot. Slots of live nodes are
        # prompt_length + index into `_slot_nodes`.
        self._parent: dict[int, int] = {}
        self._depth: dict[int, int] = {}
        self._token: dict[int, int] = {}
        self._slot: dict[int, int] = {}
        self._slot_nodes: list[int] = []
        self.next_node_id = 0

        # Counters for statistics.
        self.forward_passes = 0
        self.tokens_forwarded = 0
        self.peak_cache_length = 0
        # Forwards after the prefill, by the number of tokens each appended.
        self.forward_sizes: Counter[int] = Counter()

        # Prefill the prompt as an ordinary causal sequence.
        # Built without a config on purpose: with a config, DynamicCache gives sliding-window
        # models windowed layers, which would drop entries the tree mask still shows.
        self.cache = DynamicCache()
        with torch.no_grad():
            output = self.model(
                input_ids=ids.unsqueeze(0).to(self.device),
                position_ids=torch.arange(self.prompt_length, device=self.device).unsqueeze(0),
                **{self._cache_kwarg: self.cache},
                use_cache=True,
            )
        self.prompt_logits = output.logits[0, -1].float()
        self._count_forward(self.prompt_length, prefill=True)

    # ----------------------------------------------------------------- inspection

    @property
    def num_nodes(self) -> int:
        return len(self._slot_nodes)

    @property
    def cache_length(self) -> int:
        return self.prompt_length + len(self._slot_nodes)

    @property
    def capacity_left(self) -> int | None:
        """How many more nodes fit under `max_nodes`, or None without a limit."""
        return None if self.max_nodes is None else self.max_nodes - self.num_nodes

    def node_ids(self) -> list[int]:
        """Ids of the live nodes in slot order."""
        return list(self._slot_nodes)

    def has_node(self, node_id: int) -> bool:
        return node_id in self._slot

    def parent(self, node_id: int) -> int:
        return self._parent[node_id]

    def depth(self, node_id: int) -> int:
        return 0 if node_id == ROOT else self._depth[node_id]

    def token(self, node_id: int) -> int:
        return self._token[node_id]

    def slot(self, node_id: int) -> int:
        return self._slot[node_id]

    def position(self, node_id: int) -> int:
        """Logical position `P + depth - 1` of a node."""
        return self.prompt_length + self._depth[node_id] - 1

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
        """Append new nodes in one forward pass and return their next-token logits.

        Args:
            parents: `[num_new]` parent id of each new node: ROOT, a live node, or a node
                earlier in this same batch (named by its future id, see `next_node_id`).
            token_ids: `[num_new]` token of each new node.
            capture_layers: layer indices whose attention weights to return; needs a model
                loaded with `attn_implementation="eager"` or the capture implementation of
                `tempo_search.attention`.

        Raises:
            NodeBudgetExceeded: the new nodes would pass `max_nodes`; the state is unchanged.
        """
        if len(parents) != len(token_ids):
            raise ValueError(
                f"parents has {len(parents)} entries but token_ids has {len(token_ids)}; pass "
                "one parent per new token."
            )
        num_new = len(token_ids)
        if num_new == 0:
            raise ValueError("expand() needs at least one new token.")
        if self.max_nodes is not None and self.num_nodes + num_new > self.max_nodes:
            raise NodeBudgetExceeded(
                f"expanding {num_new} nodes would hold {self.num_nodes + num_new} nodes, over "
                f"max_nodes={self.max_nodes}; compact the tree or raise max_nodes."
            )

        # 1. Register the new nodes: ids, depths and slots at the tail of the cache.
        first_id = self.next_node_id
        new_ids = list(range(first_id, first_id + num_new))
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
        self.next_node_id = first_id + num_new

        # 2. Inputs: tokens, logical positions and the tree mask.
        input_ids = torch.tensor([token_ids], dtype=torch.long, device=self.device)
        position_ids = torch.tensor(
            [[self.position(n) for n in new_ids]], dtype=torch.long, device=self.device
        )
        mask = self._attention_mask(new_ids)

        # 3. One forward pass; the cache grows by num_new entries on every layer.
        try:
            with torch.no_grad():
                output = self._forward(input_ids, position_ids, mask, capture_layers)
        except BaseException:
            # KeyboardInterrupt too: Ctrl-C usually lands inside the forward.
            self._rollback(new_ids)
            raise
        self._count_forward(num_new)
        return output

    def _forward(self, input_ids, position_ids, mask, capture_layers) -> ForwardOutput:
        from tempo_search import attention as attention_capture

        with attention_capture.capturing(self.model, capture_layers) as captured:
            output = self.model(
                input_ids=input_ids,
                position_ids=position_ids,
                attention_mask=mask,
                **{self._cache_kwarg: self.cache},
                use_cache=True,
            )
        new_ids = list(range(self.next_node_id - input_ids.shape[1], self.next_node_id))
        return ForwardOutput(node_ids=new_ids, logits=output.logits[0].float(), attentions=captured)

    def _attention_mask(self, new_ids: list[int]) -> torch.Tensor:
        """Build the `[1, 1, num_new, kv_len]` additive mask for new nodes at the cache tail."""
        kv_len = self.cache_length
        num_new = len(new_ids)
        visible = torch.zeros(num_new, kv_len, dtype=torch.bool)
        visible[:, : self.prompt_length] = True

        if self.mode == "tree":
            # Each row sees its own path: the node and its ancestors.
            for row, node_id in enumerate(new_ids):
                slots = [self._slot[n] for n in self.path(node_id)]
                visible[row, slots] = True
        else:
            # Superposition: every live node of a smaller depth, and the node itself.
            slot_depths = torch.tensor([self._depth[n] for n in self._slot_nodes], dtype=torch.long)
            for row, node_id in enumerate(new_ids):
                depth = self._depth[node_id]
                own_slot = self._slot[node_id]
                visible[row, self.prompt_length :] = slot_depths < depth
                if not self.isolate:
                    same_depth = slot_depths == depth
                    same_depth[own_slot - self.prompt_length + 1 :] = False
                    visible[row, self.prompt_length :] |= same_depth
                visible[row, own_slot] = True

        mask = torch.full((num_new, kv_len), self._mask_value, dtype=self._dtype())
        mask.masked_fill_(visible, 0.0)
        return mask.to(self.device)[None, None]

    def _dtype(self) -> torch.dtype:
        return next(self.model.parameters()).dtype

    # ----------------------------------------------------------------- rewind and compact

    def rewind(self, num_tokens: int) -> None:
        """Remove the last `num_tokens` nodes (for example a rollout) from the cache tail.

        Raises ValueError if a node that stays has a parent among the removed ones.
        """
        if num_tokens < 0 or num_tokens > self.num_nodes:
            raise ValueError(
                f"cannot rewind {num_tokens} tokens: the tree contains {self.num_nodes} nodes."
            )
        if num_tokens == 0:
            return
        removed = set(self._slot_nodes[-num_tokens:])
        for node_id in self._slot_nodes[:-num_tokens]:
            if self._parent[node_id] in removed:
                raise ValueError(
                    f"cannot rewind {num_tokens} tokens: node {node_id} stays but its parent "
                    f"{self._parent[node_id]} would be removed."
                )
        self.cache.crop(-num_tokens)
        self._forget(self._slot_nodes[-num_tokens:])

    def compact(self, keep: Sequence[int] | set[int]) -> dict[int, int]:
        """Keep only the prompt and the nodes in `keep`; gather their slots on every layer.

        `keep` must contain the parent of every kept node (ROOT aside). Slots are renumbered
        in their old order; node ids stay. Returns the map from kept node id to its new slot.
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
        kept_nodes = [n for n in self._slot_nodes if n in keep_set]
        if len(kept_nodes) == len(self._slot_nodes):
            return {n: self._slot[n] for n in kept_nodes}

        # 1. Gather the kept slots on every layer: `[batch, heads, kv_len, head_dim]` along dim -2.
        slots = list(range(self.prompt_length)) + [self._slot[n] for n in kept_nodes]
        index = torch.tensor(slots, dtype=torch.long, device=self.device)
        for layer in self.cache.layers:
            if getattr(layer, "keys", None) is None or layer.keys.numel() == 0:
                continue
            layer.keys = layer.keys.index_select(-2, index)
            layer.values = layer.values.index_select(-2, index)

        # 2. Renumber the slots and forget the dropped nodes.
        dropped = [n for n in self._slot_nodes if n not in keep_set]
        self._forget(dropped)
        self._slot_nodes = kept_nodes
        for offset, node_id in enumerate(kept_nodes):
            self._slot[node_id] = self.prompt_length + offset
        return {n: self._slot[n] for n in kept_nodes}

    def _forget(self, node_ids: Sequence[int]) -> None:
        dropped = set(node_ids)
        for node_id in dropped:
            for table in (self._parent, self._depth, self._token, self._slot):
                table.pop(node_id, None)
        self._slot_nodes = [n for n in self._slot_nodes if n not in dropped]

    def _rollback(self, new_ids: list[int]) -> None:
        # A forward that failed part-way may have appended to some layers and not to others,
        # so each layer is cut back to the old length on its own.
        old_length = self.cache_length - len(new_ids)
        for layer in self.cache.layers:
            keys = getattr(layer, "keys", None)
            if keys is not None and keys.dim() == 4 and keys.shape[-2] > old_length:
                layer.keys = layer.keys[..., :old_length, :]
                layer.values = layer.values[..., :old_length, :]
        self._forget(new_ids)
        self.next_node_id -= len(new_ids)

    def _count_forward(self, num_tokens: int, *, prefill: bool = False) -> None:
        if not prefill:
            self.forward_sizes[num_tokens] += 1
        self.forward_passes += 1
        self.tokens_forwarded += num_tokens
        self.peak_cache_length = max(self.peak_cache_length, self.cache_length)


def unwrap_model(model):
    """Return the `PreTrainedModel` inside a `LoadedModel`, or `model` itself."""
    return model if hasattr(model, "config") else model.model


def cache_argument_name(model) -> str:
    """Name of the forward argument that takes the KV cache.

    transformers 5.25 renamed `past_key_values` to `cache` and keeps the old name until 5.40.
    """
    parameters = inspect.signature(model.forward).parameters
    return "cache" if "cache" in parameters else "past_key_values"


def plain_logits(model, token_ids: Sequence[int]) -> torch.Tensor:
    """Return `[vocab_size]` float32 next-token logits of one plain causal forward pass."""
    model = unwrap_model(model)
    device = next(model.parameters()).device
    ids = torch.tensor([list(token_ids)], dtype=torch.long, device=device)
    with torch.no_grad():
        return model(input_ids=ids).logits[0, -1].float()
