"""Search policies: selection scores, priors from logits and node values."""

from tempo_search.policies.priors import prior_from_logits, top_candidates
from tempo_search.policies.selection import (
    SELECTION_RULES,
    ScoreFunction,
    gumbel_root_scores,
    puct_scores,
    sample_gumbel,
    select_child,
    uct_scores,
)
from tempo_search.policies.values import ValueWeights, likelihood_value

__all__ = [
    "SELECTION_RULES",
    "ScoreFunction",
    "ValueWeights",
    "gumbel_root_scores",
    "likelihood_value",
    "prior_from_logits",
    "puct_scores",
    "sample_gumbel",
    "select_child",
    "top_candidates",
    "uct_scores",
]
