import math

import pytest

from tempo_search.policies.values import ValueWeights, likelihood_value


def test_likelihood_value_geometric_mean():
    log_probs = [math.log(0.5), math.log(0.2), math.log(0.8)]
    expected = (0.5 * 0.2 * 0.8) ** (1 / 3)
    assert likelihood_value(sum(log_probs), 3) == pytest.approx(expected)


def test_likelihood_value_certain_path():
    assert likelihood_value(0.0, 5) == 1.0


def test_likelihood_value_length_normalised():
    # Two tokens of probability 0.5 score the same as one token of probability 0.5.
    assert likelihood_value(2 * math.log(0.5), 2) == pytest.approx(
        likelihood_value(math.log(0.5), 1)
    )


def test_likelihood_value_impossible_path():
    assert likelihood_value(-math.inf, 3) == 0.0


def test_likelihood_value_tolerates_rounding_above_zero():
    assert likelihood_value(1e-7, 2) == 1.0


def test_likelihood_value_rejects_positive_sum():
    with pytest.raises(ValueError, match=r"sum_log_prob=0\.5"):
        likelihood_value(0.5, 2)


def test_likelihood_value_rejects_nan():
    with pytest.raises(ValueError, match="sum_log_prob"):
        likelihood_value(math.nan, 2)


def test_likelihood_value_rejects_zero_tokens():
    with pytest.raises(ValueError, match="num_tokens=0"):
        likelihood_value(-1.0, 0)


def test_value_weights_combine_weighted_mean():
    weights = ValueWeights(likelihood=1.0, coherence=2.0, reward=3.0)
    expected = (1.0 * 0.4 + 2.0 * 0.7 + 3.0 * 1.0) / 6.0
    assert weights.combine(0.4, 0.7, 1.0) == pytest.approx(expected)


def test_value_weights_combine_renormalises_missing_part():
    weights = ValueWeights(likelihood=1.0, coherence=2.0, reward=3.0)
    expected = (1.0 * 0.4 + 2.0 * 0.7) / 3.0
    assert weights.combine(0.4, 0.7, None) == pytest.approx(expected)


def test_value_weights_defaults_ignore_coherence():
    weights = ValueWeights()
    assert weights.combine(0.4, 0.9, 0.0) == pytest.approx((0.4 + 0.0) / 2)


def test_value_weights_only_likelihood_available():
    assert ValueWeights().combine(0.3, None, None) == pytest.approx(0.3)


def test_value_weights_no_weighted_part_available():
    with pytest.raises(ValueError, match="no value part with a positive weight"):
        ValueWeights().combine(None, 0.5, None)


def test_value_weights_rejects_out_of_range_part():
    with pytest.raises(ValueError, match=r"reward=1\.5"):
        ValueWeights().combine(0.5, None, 1.5)


def test_value_weights_rejects_negative_weight():
    with pytest.raises(ValueError, match=r"ValueWeights\.coherence=-1\.0"):
        ValueWeights(coherence=-1.0)


def test_value_weights_rejects_all_zero():
    with pytest.raises(ValueError, match="all 0"):
        ValueWeights(likelihood=0.0, coherence=0.0, reward=0.0)


def test_value_weights_frozen():
    weights = ValueWeights()
    with pytest.raises(AttributeError):
        weights.reward = 2.0
