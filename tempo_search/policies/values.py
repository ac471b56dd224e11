"""Node values in ``[0, 1]`` combined from parts: likelihood, coherence and task reward."""

from __future__ import annotations

import logging
import math
import numbers
from dataclasses import dataclass

logger = logging.getLogger(__name__)

# Log-probabilities from log_softmax can round to a hair above 0. A sum up to this much above 0
# per token is treated as 0; anything larger is an error.
_LOG_PROB_TOLERANCE = 1e-5


def likelihood_value(sum_log_prob: float, num_tokens: int) -> float:
    """Return the geometric-mean token probability ``exp(sum_log_prob / num_tokens)`` in ``[0, 1]``.

    This is the length-normalised log-likelihood of a path, mapped back to a probability so that
    paths of different lengths compare fairly.

    Args:
        sum_log_prob: sum of the natural-log probabilities of the path's tokens, <= 0.
        num_tokens: number of tokens in that sum, >= 1.
    """
    if isinstance(num_tokens, bool) or not isinstance(num_tokens, numbers.Integral):
        raise TypeError(f"num_tokens must be an int, got {num_tokens!r}")
    if num_tokens < 1:
        raise ValueError(f"num_tokens={num_tokens!r} is invalid; pass the path length, >= 1")
    if isinstance(sum_log_prob, bool) or not isinstance(sum_log_prob, numbers.Real):
        raise TypeError(f"sum_log_prob must be a float, got {sum_log_prob!r}")
    if math.isnan(sum_log_prob) or sum_log_prob > _LOG_PROB_TOLERANCE * num_tokens:
        raise ValueError(
            f"sum_log_prob={sum_log_prob!r} is invalid; pass a sum of log-probabilities, <= 0"
        )

    mean_log_prob = min(0.0, float(sum_log_prob)) / num_tokens
    return math.exp(mean_log_prob)


def _check_part(name: str, value: float | None) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a float in [0, 1] or None, got {value!r}")
    if not 0.0 <= value <= 1.0:
        raise ValueError(
            f"{name}={value!r} is invalid; pass a value in [0, 1], or None to leave it out"
        )
    return float(value)


@dataclass(frozen=True)
class ValueWeights:
    """Weights of the value parts: likelihood, coherence and task reward.

    The defaults weigh likelihood and reward equally and leave coherence out, because coherence
    needs attention weights (an eager attention implementation), which not every run captures.

    Args:
        likelihood: weight of ``likelihood_value`` of the path, >= 0.
        coherence: weight of the attention-derived coherence of the path, >= 0.
        reward: weight of the task reward, >= 0.
    """

    likelihood: float = 1.0
    coherence: float = 0.0
    reward: float = 1.0

    def __post_init__(self) -> None:
        for name in ("likelihood", "coherence", "reward"):
            weight = getattr(self, name)
            if isinstance(weight, bool) or not isinstance(weight, numbers.Real):
                raise TypeError(f"ValueWeights.{name} must be a float, got {weight!r}")
            if not math.isfinite(weight) or weight < 0:
                raise ValueError(
                    f"ValueWeights.{name}={weight!r} is invalid; pass a finite weight >= 0"
                )
            object.__setattr__(self, name, float(weight))
        if self.likelihood == self.coherence == self.reward == 0.0:
            raise ValueError(
                "ValueWeights are all 0; give at least one of likelihood, coherence, reward "
                "a positive weight"
            )

    def combine(
        self, likelihood: float | None, coherence: float | None, reward: float | None
    ) -> float:
        """Return the weighted mean of the parts that are available, in ``[0, 1]``.

        A part that is None (a reward before the text is finished, a coherence the run did not
        compute) is left out and the remaining weights are renormalised to sum to 1.

        Raises:
            ValueError: if no available part has a positive weight.
        """
        parts = {
            "likelihood": (_check_part("likelihood", likelihood), self.likelihood),
            "coherence": (_check_part("coherence", coherence), self.coherence),
            "reward": (_check_part("reward", reward), self.reward),
        }
        available = {name: pair for name, pair in parts.items() if pair[0] is not None}
        total_weight = sum(weight for _, weight in available.values())
        if total_weight <= 0.0:
            raise ValueError(
                f"no value part with a positive weight is available (given: {sorted(available)}, "
                f"weights: {self}); pass one of the weighted parts or change the weights"
            )

        weighted_sum = sum(value * weight for value, weight in available.values())
        return min(1.0, max(0.0, weighted_sum / total_weight))
