import math

import pytest
import torch
from transformers import LogitsProcessorList, RepetitionPenaltyLogitsProcessor

from tempo_search.policies.priors import prior_from_logits, top_candidates


def softmax(values):
    exps = [math.exp(v) for v in values]
    total = sum(exps)
    return [e / total for e in exps]


def test_prior_from_logits_plain_softmax():
    logits = torch.tensor([[2.0, 1.0, 0.0, -1.0]])
    probs = prior_from_logits(logits)
    assert probs.shape == (1, 4)
    assert probs[0].tolist() == pytest.approx(softmax([2.0, 1.0, 0.0, -1.0]))


def test_prior_from_logits_temperature():
    logits = torch.tensor([[2.0, 1.0, 0.0]])
    probs = prior_from_logits(logits, temperature=2.0)
    assert probs[0].tolist() == pytest.approx(softmax([1.0, 0.5, 0.0]))


def test_prior_from_logits_one_dimensional():
    probs = prior_from_logits(torch.tensor([0.0, 0.0]))
    assert probs.shape == (2,)
    assert probs.tolist() == pytest.approx([0.5, 0.5])


def test_prior_from_logits_keeps_float64():
    probs = prior_from_logits(torch.tensor([[0.0, 1.0]], dtype=torch.float64))
    assert probs.dtype == torch.float64


def test_prior_from_logits_top_k():
    probs = prior_from_logits(torch.tensor([[1.0, 3.0, 2.0, 0.0]]), top_k=2)
    expected_kept = softmax([3.0, 2.0])
    assert probs[0].tolist() == pytest.approx([0.0, expected_kept[0], expected_kept[1], 0.0])


def test_prior_top_k_tie_order():
    probs = prior_from_logits(torch.tensor([[3.0, 1.0, 3.0]]), top_k=1)
    assert probs[0].tolist() == pytest.approx([1.0, 0.0, 0.0])


def test_prior_from_logits_top_p():
    logits = torch.log(torch.tensor([[0.5, 0.3, 0.15, 0.05]]))
    probs = prior_from_logits(logits, top_p=0.7)
    # 0.5 < 0.7, so the second token is needed; 0.5 + 0.3 >= 0.7, so the third is not.
    assert probs[0].tolist() == pytest.approx([0.5 / 0.8, 0.3 / 0.8, 0.0, 0.0])


def test_prior_from_logits_top_p_three_tokens():
    logits = torch.log(torch.tensor([[0.5, 0.3, 0.15, 0.05]]))
    probs = prior_from_logits(logits, top_p=0.85)
    assert probs[0].tolist() == pytest.approx([0.5 / 0.95, 0.3 / 0.95, 0.15 / 0.95, 0.0])


def test_prior_top_p_keeps_one():
    logits = torch.log(torch.tensor([[0.2, 0.5, 0.3]]))
    probs = prior_from_logits(logits, top_p=0.01)
    assert probs[0].tolist() == pytest.approx([0.0, 1.0, 0.0])


def test_prior_from_logits_top_p_after_temperature():
    logits = torch.tensor([[2.0, 1.0, 0.0]])
    # At temperature 1 the top token has 0.665 >= 0.6, alone. At temperature 4 it has about 0.42,
    # so the second token joins.
    alone = prior_from_logits(logits, top_p=0.6)
    flatter = prior_from_logits(logits, top_p=0.6, temperature=4.0)
    tempered = softmax([0.5, 0.25, 0.0])
    assert alone[0].tolist() == pytest.approx([1.0, 0.0, 0.0])
    total = tempered[0] + tempered[1]
    assert flatter[0].tolist() == pytest.approx([tempered[0] / total, tempered[1] / total, 0.0])


def test_prior_from_logits_allowed_mask():
    logits = torch.tensor([[2.0, 1.0, 0.0, -1.0]])
    mask = torch.tensor([[False, True, True, False]])
    probs = prior_from_logits(logits, allowed_mask=mask)
    allowed_probs = softmax([1.0, 0.0])
    assert probs[0].tolist() == pytest.approx([0.0, allowed_probs[0], allowed_probs[1], 0.0])


def test_prior_from_logits_allowed_mask_broadcasts():
    logits = torch.tensor([[2.0, 1.0, 0.0], [0.0, 1.0, 2.0]])
    probs = prior_from_logits(logits, allowed_mask=torch.tensor([True, False, True]))
    assert probs[0].tolist() == pytest.approx([softmax([2.0, 0.0])[0], 0.0, softmax([2.0, 0.0])[1]])
    assert probs[1].tolist() == pytest.approx([softmax([0.0, 2.0])[0], 0.0, softmax([0.0, 2.0])[1]])


def test_prior_from_logits_dead_row_is_zero():
    logits = torch.tensor([[2.0, 1.0], [0.0, 0.0]])
    mask = torch.tensor([[False, False], [True, True]])
    probs = prior_from_logits(logits, allowed_mask=mask, top_p=0.9, top_k=1)
    assert probs[0].tolist() == [0.0, 0.0]
    assert probs[1].tolist() == pytest.approx([1.0, 0.0])


def test_prior_from_logits_rejects_mask_shape():
    with pytest.raises(ValueError, match="allowed_mask has shape"):
        prior_from_logits(torch.zeros(2, 3), allowed_mask=torch.ones(2, 2, dtype=torch.bool))


def test_prior_from_logits_rejects_non_bool_mask():
    with pytest.raises(TypeError, match="bool"):
        prior_from_logits(torch.zeros(1, 3), allowed_mask=torch.ones(1, 3))


def test_prior_from_logits_transformers_processor():
    logits = torch.tensor([[2.0, -1.0, 0.5]])
    input_ids = torch.tensor([[0, 1]])
    processors = LogitsProcessorList([RepetitionPenaltyLogitsProcessor(penalty=2.0)])
    probs = prior_from_logits(logits, logits_processors=processors, input_ids=input_ids)
    # Repetition penalty divides positive logits of seen tokens and multiplies negative ones.
    assert probs[0].tolist() == pytest.approx(softmax([2.0 / 2.0, -1.0 * 2.0, 0.5]))


def test_prior_from_logits_processors_in_order():
    def add_one_to_first(input_ids, scores):
        scores[:, 0] += 1.0
        return scores

    def double(input_ids, scores):
        return scores * 2.0

    logits = torch.tensor([[0.0, 0.5]])
    probs = prior_from_logits(
        logits, logits_processors=[add_one_to_first, double], input_ids=torch.tensor([[3]])
    )
    assert probs[0].tolist() == pytest.approx(softmax([2.0, 1.0]))


def test_prior_from_logits_does_not_modify_logits():
    def add_in_place(input_ids, scores):
        scores += 5.0
        return scores

    logits = torch.tensor([[0.0, 0.5, 1.0]])
    original = logits.clone()
    prior_from_logits(
        logits,
        logits_processors=[add_in_place],
        input_ids=torch.tensor([[1]]),
        allowed_mask=torch.tensor([True, False, True]),
        temperature=0.5,
        top_k=1,
    )
    assert torch.equal(logits, original)


def test_prior_from_logits_processors_need_input_ids():
    with pytest.raises(ValueError, match="input_ids"):
        prior_from_logits(torch.zeros(1, 3), logits_processors=[lambda ids, scores: scores])


def test_prior_from_logits_input_ids_rows_must_match():
    with pytest.raises(ValueError, match="one row per logits row"):
        prior_from_logits(
            torch.zeros(2, 3),
            logits_processors=[lambda ids, scores: scores],
            input_ids=torch.zeros(3, 1, dtype=torch.long),
        )


@pytest.mark.parametrize("temperature", [0.0, -1.0, math.inf])
def test_prior_from_logits_rejects_temperature(temperature):
    with pytest.raises(ValueError, match="temperature"):
        prior_from_logits(torch.zeros(1, 3), temperature=temperature)


@pytest.mark.parametrize("top_p", [0.0, -0.1, 1.5])
def test_prior_from_logits_rejects_top_p(top_p):
    with pytest.raises(ValueError, match="top_p"):
        prior_from_logits(torch.zeros(1, 3), top_p=top_p)


def test_prior_from_logits_rejects_top_k():
    with pytest.raises(ValueError, match="top_k"):
        prior_from_logits(torch.zeros(1, 3), top_k=0)


def test_prior_from_logits_rejects_nan():
    with pytest.raises(ValueError, match="NaN"):
        prior_from_logits(torch.tensor([[0.0, math.nan]]))


def test_top_candidates_sorted_with_id_ties():
    token_ids, probs = top_candidates(torch.tensor([0.1, 0.4, 0.0, 0.4, 0.1]), 3)
    assert token_ids.tolist() == [1, 3, 0]
    assert probs.tolist() == pytest.approx([0.4, 0.4, 0.1])


def test_top_candidates_skips_zero_probability():
    token_ids, probs = top_candidates(torch.tensor([0.0, 0.7, 0.0, 0.3]), 10)
    assert token_ids.tolist() == [1, 3]
    assert probs.tolist() == pytest.approx([0.7, 0.3])


def test_top_candidates_dead_row_is_empty():
    token_ids, probs = top_candidates(torch.zeros(4), 3)
    assert token_ids.numel() == 0
    assert probs.numel() == 0


def test_top_candidates_rejects_batch():
    with pytest.raises(ValueError, match="one"):
        top_candidates(torch.zeros(2, 4), 3)


def test_top_candidates_rejects_max_width():
    with pytest.raises(ValueError, match="max_width"):
        top_candidates(torch.ones(4) / 4, 0)
