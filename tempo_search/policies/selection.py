"""Selection scores over the children of one node: PUCT, UCT (UCB1) and Gumbel root scores.

Every score function has the same signature, so a search can take any of them and fix its
hyperparameters with ``functools.partial``::

    score_fn(prior, visit_count, q_value, parent_visit_count, *,
             virtual_loss=None, virtual_loss_value=1.0, fpu=0.0, generator=None) -> [num_children]

Statistics are per child: ``prior`` (the LM's next-token probability), ``visit_count`` and
``q_value`` (mean value in ``[0, 1]``; ignored where ``visit_count`` is 0).

Virtual loss convention: a child with ``v`` in-flight selections (selected in this batch but not
backed up yet) counts as if it had ``v * virtual_loss_value`` extra visits, each with value 0, the
worst value in ``[0, 1]``. Its mean value drops to ``N Q / (N + v w)`` and its visit count grows to
``N + v w``. The parent's visit count grows by the total of its children's extra visits, as it
would if the virtual loss were applied along the whole selected path. Both changes lower the score
of a child that is already pending, so repeated selections in one batch spread over other children.
"""

from __future__ import annotations

import functools
import logging
import math
import numbers
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

import torch

logger = logging.getLogger(__name__)

#: c_puct for PUCT: ``pb_c_init = 1.25`` of the AlphaZero pseudocode (Silver et al., 2018), which is
#: its whole exploration constant while the parent's visit count is far below ``pb_c_base = 19652``.
DEFAULT_C_PUCT = 1.25

#: Exploration constant of UCB1 (Auer et al., 2002): ``sqrt(2 ln n / n_j)`` is ``c = sqrt(2)``.
DEFAULT_C_UCT = math.sqrt(2.0)

#: First-play urgency: the value an unvisited child is scored with. 0 is what the AlphaZero
#: pseudocode uses (an unvisited child's value is 0), the pessimistic end of ``[0, 1]``, so
#: unvisited children are ranked by their exploration term alone. Pass the parent's q_value for
#: a neutral start.
DEFAULT_FPU = 0.0

#: Gumbel root scores: ``c_visit`` and ``c_scale`` of ``sigma(q) = (c_visit + max_b N(b)) c_scale q``,
#: the values used by Danihelka et al. (2022) with q in ``[0, 1]``.
DEFAULT_C_VISIT = 50.0
DEFAULT_C_SCALE = 1.0

TensorLike = torch.Tensor | Sequence[float]


class ScoreFunction(Protocol):
    """A selection rule: one score per child, the child with the highest score is selected."""

    def __call__(
        self,
        prior: TensorLike,
        visit_count: TensorLike,
        q_value: TensorLike,
        parent_visit_count: float,
        *,
        virtual_loss: TensorLike | None = None,
        virtual_loss_value: float = 1.0,
        fpu: float = DEFAULT_FPU,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor: ...


@dataclass(frozen=True)
class _EffectiveStats:
    """Child statistics after virtual loss, all ``[num_children]`` float64 except the parent."""

    prior: torch.Tensor
    visit_count: torch.Tensor
    q_value: torch.Tensor  # fpu where visit_count is 0
    parent_visit_count: float


def _as_vector(name: str, values: TensorLike, num_children: int | None) -> torch.Tensor:
    vector = torch.as_tensor(values, dtype=torch.float64)
    if vector.ndim != 1:
        raise ValueError(
            f"{name} has shape {tuple(vector.shape)}; pass a 1-D [num_children] tensor"
        )
    if num_children is not None and vector.numel() != num_children:
        raise ValueError(
            f"{name} has {vector.numel()} entries but prior has {num_children}; "
            "pass one entry per child"
        )
    return vector


def _check_scalar(name: str, value: float, *, minimum: float = 0.0) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a real number, got {value!r}")
    if not math.isfinite(value) or value < minimum:
        raise ValueError(f"{name}={value!r} is invalid; pass a finite number >= {minimum}")
    return float(value)


def _effective_stats(
    prior: TensorLike,
    visit_count: TensorLike,
    q_value: TensorLike,
    parent_visit_count: float,
    *,
    virtual_loss: TensorLike | None,
    virtual_loss_value: float,
    fpu: float,
) -> _EffectiveStats:
    # 1. Validate the per-child statistics.
    prior_vec = _as_vector("prior", prior, None)
    num_children = prior_vec.numel()
    if num_children == 0:
        raise ValueError("prior is empty; a node needs at least one child to select from")
    visits = _as_vector("visit_count", visit_count, num_children)
    q = _as_vector("q_value", q_value, num_children)
    if not bool(torch.isfinite(prior_vec).all()) or bool((prior_vec < 0).any()):
        raise ValueError(f"prior={prior_vec.tolist()} is invalid; pass finite probabilities >= 0")
    if not bool(torch.isfinite(visits).all()) or bool((visits < 0).any()):
        raise ValueError(f"visit_count={visits.tolist()} is invalid; pass finite counts >= 0")
    if not bool(torch.isfinite(q[visits > 0]).all()):
        raise ValueError(f"q_value={q.tolist()} is invalid; visited children need a finite q_value")
    parent = _check_scalar("parent_visit_count", parent_visit_count)
    weight = _check_scalar("virtual_loss_value", virtual_loss_value)
    fpu = _check_scalar("fpu", fpu, minimum=-math.inf)

    # 2. Add the virtual-loss visits, each with value 0.
    pending = torch.zeros_like(visits)
    if virtual_loss is not None:
        pending = _as_vector("virtual_loss", virtual_loss, num_children)
        if not bool(torch.isfinite(pending).all()) or bool((pending < 0).any()):
            raise ValueError(
                f"virtual_loss={pending.tolist()} is invalid; pass in-flight selection counts >= 0"
            )
        pending = pending * weight
    value_sum = torch.where(visits > 0, visits * q, torch.zeros_like(q))
    effective_visits = visits + pending

    # 3. Mean value over real and virtual visits, first-play urgency where there are none.
    safe_visits = torch.where(effective_visits > 0, effective_visits, torch.ones_like(visits))
    effective_q = torch.where(
        effective_visits > 0, value_sum / safe_visits, torch.full_like(q, fpu)
    )
    return _EffectiveStats(
        prior=prior_vec,
        visit_count=effective_visits,
        q_value=effective_q,
        parent_visit_count=parent + float(pending.sum()),
    )


def puct_scores(
    prior: TensorLike,
    visit_count: TensorLike,
    q_value: TensorLike,
    parent_visit_count: float,
    *,
    c_puct: float = DEFAULT_C_PUCT,
    virtual_loss: TensorLike | None = None,
    virtual_loss_value: float = 1.0,
    fpu: float = DEFAULT_FPU,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Return PUCT scores ``Q + c_puct * P * sqrt(N_parent) / (1 + N_child)``, ``[num_children]``.

    Args:
        prior: ``[num_children]`` prior probabilities ``P``.
        visit_count: ``[num_children]`` visit counts ``N_child``.
        q_value: ``[num_children]`` mean values ``Q`` in ``[0, 1]``; unvisited entries are ignored.
        parent_visit_count: the parent's visit count ``N_parent``. When it is 0 the exploration
            term is 0 for every child, so all children score ``fpu`` and the first one is selected.
        c_puct: exploration constant, >= 0 (default 1.25, see ``DEFAULT_C_PUCT``).
        virtual_loss: ``[num_children]`` in-flight selection counts (module docstring).
        virtual_loss_value: extra visits, each with value 0, per in-flight selection.
        fpu: value of unvisited children (default 0, see ``DEFAULT_FPU``).
        generator: unused, part of the shared signature.
    """
    if isinstance(c_puct, bool) or not isinstance(c_puct, numbers.Real):
        raise TypeError(f"c_puct must be a real number, got {c_puct!r}")
    if not math.isfinite(c_puct) or c_puct < 0:
        raise ValueError(
            f"c_puct={c_puct!r} is invalid; pass a finite c_puct >= 0 (1.25 is the AlphaZero value)"
        )
    stats = _effective_stats(
        prior,
        visit_count,
        q_value,
        parent_visit_count,
        virtual_loss=virtual_loss,
        virtual_loss_value=virtual_loss_value,
        fpu=fpu,
    )

    exploration = c_puct * stats.prior * math.sqrt(stats.parent_visit_count)
    return stats.q_value + exploration / (1.0 + stats.visit_count)


def uct_scores(
    prior: TensorLike,
    visit_count: TensorLike,
    q_value: TensorLike,
    parent_visit_count: float,
    *,
    c_uct: float = DEFAULT_C_UCT,
    virtual_loss: TensorLike | None = None,
    virtual_loss_value: float = 1.0,
    fpu: float = DEFAULT_FPU,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Return UCB1 scores ``Q + c_uct * sqrt(ln N_parent / N_child)``, ``[num_children]``.

    Unvisited children (no real or virtual visits) score ``+inf``, so they are tried first, in
    index order. ``ln N_parent`` is taken as 0 when ``N_parent <= 1``. ``prior``, ``fpu`` and
    ``generator`` are unused and part of the shared signature.
    """
    if isinstance(c_uct, bool) or not isinstance(c_uct, numbers.Real):
        raise TypeError(f"c_uct must be a real number, got {c_uct!r}")
    if not math.isfinite(c_uct) or c_uct < 0:
        raise ValueError(
            f"c_uct={c_uct!r} is invalid; pass a finite c_uct >= 0 (sqrt(2) is the UCB1 value)"
        )
    stats = _effective_stats(
        prior,
        visit_count,
        q_value,
        parent_visit_count,
        virtual_loss=virtual_loss,
        virtual_loss_value=virtual_loss_value,
        fpu=fpu,
    )

    log_parent = math.log(max(stats.parent_visit_count, 1.0))
    visited = stats.visit_count > 0
    safe_visits = torch.where(visited, stats.visit_count, torch.ones_like(stats.visit_count))
    scores = stats.q_value + c_uct * torch.sqrt(log_parent / safe_visits)
    return torch.where(visited, scores, torch.full_like(scores, math.inf))


def sample_gumbel(num_children: int, *, generator: torch.Generator) -> torch.Tensor:
    """Draw ``[num_children]`` standard Gumbel(0, 1) variables ``-log(-log(U))`` in float64.

    Gumbel root selection draws this noise once per search and reuses it for every simulation;
    pass the result as ``gumbel`` to ``gumbel_root_scores``.
    """
    if not isinstance(generator, torch.Generator):
        raise TypeError(
            f"generator must be a torch.Generator, got {type(generator).__name__}; "
            "pass torch.Generator().manual_seed(seed)"
        )
    uniform = torch.rand(num_children, dtype=torch.float64, generator=generator)
    # Keep U inside (0, 1) so that the noise is finite.
    tiny = torch.finfo(torch.float64).tiny
    uniform = uniform.clamp(min=tiny, max=1.0 - torch.finfo(torch.float64).eps)
    return -torch.log(-torch.log(uniform))


def gumbel_root_scores(
    prior: TensorLike,
    visit_count: TensorLike,
    q_value: TensorLike,
    parent_visit_count: float,
    *,
    gumbel: TensorLike | None = None,
    c_visit: float = DEFAULT_C_VISIT,
    c_scale: float = DEFAULT_C_SCALE,
    virtual_loss: TensorLike | None = None,
    virtual_loss_value: float = 1.0,
    fpu: float = DEFAULT_FPU,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Return Gumbel root scores ``g + log P + sigma(Q)``, ``[num_children]``.

    From Danihelka et al. (2022), "Policy improvement by planning with Gumbel": the root action
    is ``argmax_a g(a) + logits(a) + sigma(q(a))`` with ``g`` i.i.d. Gumbel(0, 1) noise and the
    monotone transform ``sigma(q) = (c_visit + max_b N(b)) * c_scale * q``. ``log P`` differs from
    the logits by a constant per node, so the argmax is the same. Children with prior 0 score
    ``-inf``.

    Args:
        gumbel: ``[num_children]`` noise drawn once per search with ``sample_gumbel``. When None,
            fresh noise is drawn from ``generator``, which suits a single call only.
        c_visit, c_scale: constants of ``sigma`` (defaults 50 and 1.0, see ``DEFAULT_C_VISIT``).
        generator: source of the noise when ``gumbel`` is None. One of the two is required.

    The other arguments are as in ``puct_scores``; ``parent_visit_count`` only matters through
    virtual loss. Unvisited children use ``fpu`` as their q.
    """
    # NOTE: the paper completes the q of unvisited children with a mixed value estimate (v_mix),
    # but here they get ``fpu``. Sequential halving over the root's children is left to the caller.
    c_visit = _check_scalar("c_visit", c_visit)
    c_scale = _check_scalar("c_scale", c_scale)
    stats = _effective_stats(
        prior,
        visit_count,
        q_value,
        parent_visit_count,
        virtual_loss=virtual_loss,
        virtual_loss_value=virtual_loss_value,
        fpu=fpu,
    )
    num_children = stats.prior.numel()

    # 1. Gumbel noise, given or drawn from the explicit generator.
    if gumbel is not None:
        noise = _as_vector("gumbel", gumbel, num_children)
    elif generator is not None:
        noise = sample_gumbel(num_children, generator=generator)
    else:
        raise ValueError(
            "gumbel_root_scores needs randomness: pass gumbel=sample_gumbel(n, generator=g) "
            "once per search, or generator=torch.Generator().manual_seed(seed)"
        )

    # 2. sigma(q) grows with the largest visit count, so values outweigh the prior as search goes on.
    max_visits = float(stats.visit_count.max())
    sigma = (c_visit + max_visits) * c_scale * stats.q_value

    return noise + torch.log(stats.prior) + sigma


#: Selection rules by name, as accepted by ``select_child`` and the command line.
SELECTION_RULES: Mapping[str, ScoreFunction] = {
    "puct": puct_scores,
    "uct": uct_scores,
    "gumbel": gumbel_root_scores,
}


def select_child(
    rule: str | ScoreFunction,
    prior: TensorLike,
    visit_count: TensorLike,
    q_value: TensorLike,
    parent_visit_count: float,
    *,
    virtual_loss: TensorLike | None = None,
    virtual_loss_value: float = 1.0,
    fpu: float = DEFAULT_FPU,
    generator: torch.Generator | None = None,
    **hyperparameters: object,
) -> int:
    """Return the index of the child with the highest score under ``rule``.

    Args:
        rule: a name in ``SELECTION_RULES`` (``"puct"``, ``"uct"``, ``"gumbel"``) or a score
            function with the shared signature, e.g. ``functools.partial(puct_scores, c_puct=2.0)``.
        hyperparameters: keyword arguments of the rule, such as ``c_puct`` or ``gumbel``.

    Ties go to the lowest index, so the result is deterministic for fixed inputs and noise.
    """
    if isinstance(rule, str):
        if rule not in SELECTION_RULES:
            raise ValueError(
                f"rule={rule!r} is not a selection rule; pass one of {sorted(SELECTION_RULES)} "
                "or a score function"
            )
        score_fn = SELECTION_RULES[rule]
    elif callable(rule):
        score_fn = rule
    else:
        raise TypeError(f"rule must be a rule name or a score function, got {rule!r}")
    if hyperparameters:
        score_fn = functools.partial(score_fn, **hyperparameters)

    scores = score_fn(
        prior,
        visit_count,
        q_value,
        parent_visit_count,
        virtual_loss=virtual_loss,
        virtual_loss_value=virtual_loss_value,
        fpu=fpu,
        generator=generator,
    )
    if bool(torch.isnan(scores).any()):
        raise ValueError(f"selection scores contain NaN: {scores.tolist()}; check the statistics")
    # torch.argmax returns the first maximal index, which is the tie-break promised above.
    return int(torch.argmax(scores))
