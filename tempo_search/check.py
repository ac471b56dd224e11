"""Exactness check: tree-state logits against plain forward passes, for any causal LM."""

from __future__ import annotations

import logging
import random
from dataclasses import asdict, dataclass

import torch

from tempo_search.tree_state import ROOT, TreeState, plain_logits, unwrap_model

logger = logging.getLogger(__name__)

DEFAULT_TOLERANCE = 1e-4
"""Largest absolute logit difference accepted in float32 (the exactness invariant)."""


@dataclass(frozen=True)
class ExactnessReport:
    """Result of `check_model`.

    Attributes:
        passed: every checked node's logits were within `tolerance` of the plain forward pass.
        max_abs_diff: largest absolute logit difference over all checked nodes.
        tolerance: the bound used.
        num_nodes_checked: nodes whose logits were compared.
        max_depth: deepest node of the random tree.
        forward_passes: forward passes of the tree state (prefill included).
        rewinds: rewinds done during the check.
        compactions: compactions done during the check.
        architecture: `config.model_type` of the model.
        attn_implementation: attention implementation the model ran with.
        dtype: weight dtype.
    """

    passed: bool
    max_abs_diff: float
    tolerance: float
    num_nodes_checked: int
    max_depth: int
    forward_passes: int
    rewinds: int
    compactions: int
    architecture: str
    attn_implementation: str
    dtype: str

    def to_dict(self) -> dict:
        return asdict(self)


def check_model(
    model,
    *,
    seed: int = 0,
    tolerance: float = DEFAULT_TOLERANCE,
    prompt_length: int = 8,
    depth: int = 7,
    max_branching: int = 3,
) -> ExactnessReport:
    """Build a random token tree in a `TreeState` and compare every node with plain decoding.

    The tree has several branchings, reaches `depth` (at least 6), goes through rollout-style
    rewinds and a compaction, and mixes batches whose parents are earlier nodes of the same
    batch. Each node's logits from the tree state are compared with a plain forward pass
    over the prompt and the node's path.

    Args:
        model: a `transformers.PreTrainedModel` or the object from `load_model`.
        seed: seed of the random tree (tokens, shape, which nodes are rewound or kept).
        tolerance: largest absolute logit difference that passes (1e-4 suits float32).
        prompt_length: tokens in the random prompt.
        depth: depth the tree reaches (at least 6).
        max_branching: most children a node gets in one batch.
    """
    if isinstance(tolerance, bool) or not isinstance(tolerance, (int, float)) or not tolerance >= 0:
        raise ValueError(
            f"tolerance={tolerance!r} must be a number >= 0; 1e-4 suits float32 logits."
        )
    if depth < 6:
        raise ValueError(f"depth={depth} is too shallow; pass at least 6.")
    if prompt_length < 1:
        raise ValueError(f"prompt_length={prompt_length} must be at least 1.")
    if max_branching < 2:
        raise ValueError(f"max_branching={max_branching} must be at least 2.")
    net = unwrap_model(model)
    rng = random.Random(seed)
    vocab_size = int(net.get_output_embeddings().weight.shape[0])
    # Avoid token 0..2, which are often special tokens with untrained embeddings.
    low = min(3, vocab_size - 1)

    def random_token() -> int:
        return rng.randrange(low, vocab_size)

    prompt = [random_token() for _ in range(prompt_length)]
    state = TreeState(net, prompt)
    worst = 0.0
    checked = 0
    rewinds = 0
    compactions = 0

    def verify(node_ids: list[int], logits: torch.Tensor) -> None:
        nonlocal worst, checked
        for node_id, row in zip(node_ids, logits, strict=True):
            reference = plain_logits(net, prompt + state.path_token_ids(node_id))
            worst = max(worst, float((reference - row).abs().max()))
            checked += 1

    def grow(leaves: list[int], levels: int) -> list[int]:
        # Expand each leaf with 1..max_branching children per level, one forward per level,
        # and add a grandchild of the first new child in the same batch.
        for _ in range(levels):
            parents: list[int] = []
            tokens: list[int] = []
            for leaf in leaves:
                for _ in range(rng.randint(1, max_branching)):
                    parents.append(leaf)
                    tokens.append(random_token())
            parents.append(state.next_node_id)  # the first node of this batch
            tokens.append(random_token())
            output = state.expand(parents, tokens)
            verify(output.node_ids, output.logits)
            leaves = rng.sample(output.node_ids, k=min(3, len(output.node_ids)))
        return leaves

    # 1. Branch from the root, a few levels deep.
    leaves = grow([ROOT], 3)

    # 2. A rollout: a chain appended at the tail, checked, then rewound.
    chain_parent = leaves[0]
    for _ in range(2):
        parents = []
        tokens = []
        for _ in range(4):
            parents.append(chain_parent)
            tokens.append(random_token())
            chain_parent = state.next_node_id + len(parents) - 1
        output = state.expand(parents, tokens)
        verify(output.node_ids, output.logits)
        state.rewind(len(tokens))
        rewinds += 1
        chain_parent = leaves[0]

    # 3. Compact to the paths of two leaves, then grow past the required depth.
    keep = set()
    for leaf in leaves[:2]:
        keep.update(state.path(leaf))
    state.compact(keep)
    compactions += 1
    leaves = grow(leaves[:2], depth - 3)

    max_depth = max(state.depth(n) for n in state.node_ids())
    report = ExactnessReport(
        passed=worst <= tolerance,
        max_abs_diff=worst,
        tolerance=tolerance,
        num_nodes_checked=checked,
        max_depth=max_depth,
        forward_passes=state.forward_passes,
        rewinds=rewinds,
        compactions=compactions,
        architecture=str(net.config.model_type),
        attn_implementation=str(net.config._attn_implementation),
        dtype=str(next(net.parameters()).dtype).replace("torch.", ""),
    )
    logger.info(
        "check_model %s/%s: max_abs_diff=%.3g over %d nodes (%s)",
        report.architecture,
        report.attn_implementation,
        report.max_abs_diff,
        report.num_nodes_checked,
        "passed" if report.passed else "FAILED",
    )
    return report
