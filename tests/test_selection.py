import functools
import math

import pytest
import torch

from tempo_search.policies.selection import (
    DEFAULT_C_PUCT,
    SELECTION_RULES,
    gumbel_root_scores,
    puct_scores,
    sample_gumbel,
    select_child,
    uct_scores,
)


def test_puct_scores_formula():
    prior = [0.5, 0.3, 0.2]
    visit_count = [3, 1, 0]
    q_value = [0.6, 0.4, 0.0]
    scores = puct_scores(prior, visit_count, q_value, 4, c_puct=1.5)
    expected = [
        0.6 + 1.5 * 0.5 * math.sqrt(4) / (1 + 3),
        0.4 + 1.5 * 0.3 * math.sqrt(4) / (1 + 1),
        0.0 + 1.5 * 0.2 * math.sqrt(4) / (1 + 0),
    ]
    assert scores.tolist() == pytest.approx(expected)


def test_puct_scores_fpu_for_unvisited():
    scores = puct_scores([0.5, 0.5], [2, 0], [0.3, 0.9], 2, c_puct=1.0, fpu=0.4)
    expected_unvisited = 0.4 + 1.0 * 0.5 * math.sqrt(2) / 1
    assert scores[1].item() == pytest.approx(expected_unvisited)


def test_puct_scores_ignores_q_of_unvisited():
    with_zero = puct_scores([0.5, 0.5], [2, 0], [0.3, 0.0], 2)
    with_nan = puct_scores([0.5, 0.5], [2, 0], [0.3, math.nan], 2)
    assert torch.equal(with_zero, with_nan)


def test_puct_scores_virtual_loss():
    prior = [0.6, 0.4]
    visit_count = [2, 2]
    q_value = [0.5, 0.5]
    c_puct = DEFAULT_C_PUCT

    scores = puct_scores(prior, visit_count, q_value, 4, virtual_loss=[1, 0])

    # Child 0 gets one extra visit with value 0: N = 3, Q = 2 * 0.5 / 3. The parent gets one too.
    expected = [
        (2 * 0.5) / 3 + c_puct * 0.6 * math.sqrt(5) / (1 + 3),
        0.5 + c_puct * 0.4 * math.sqrt(5) / (1 + 2),
    ]
    assert scores.tolist() == pytest.approx(expected)


def test_puct_virtual_loss_moves_selection():
    prior = [0.6, 0.4]
    visit_count = [2, 2]
    q_value = [0.5, 0.5]
    assert select_child("puct", prior, visit_count, q_value, 4) == 0
    assert select_child("puct", prior, visit_count, q_value, 4, virtual_loss=[1, 0]) == 1


def test_puct_virtual_loss_value_scales_penalty():
    prior = [0.6, 0.4]
    scores = puct_scores(prior, [2, 2], [0.5, 0.5], 4, virtual_loss=[1, 0], virtual_loss_value=3.0)
    expected_first = (2 * 0.5) / 5 + DEFAULT_C_PUCT * 0.6 * math.sqrt(7) / (1 + 5)
    assert scores[0].item() == pytest.approx(expected_first)


def test_puct_virtual_loss_on_unvisited_child():
    # An unvisited child with a pending selection has one visit of value 0, not the fpu.
    scores = puct_scores([0.5, 0.5], [0, 0], [0.0, 0.0], 0, fpu=0.5, virtual_loss=[1, 0])
    expected = [
        0.0 + DEFAULT_C_PUCT * 0.5 * math.sqrt(1) / 2,
        0.5 + DEFAULT_C_PUCT * 0.5 * math.sqrt(1) / 1,
    ]
    assert scores.tolist() == pytest.approx(expected)


def test_puct_batch_with_virtual_loss_spreads():
    prior = [0.4, 0.35, 0.25]
    visit_count = [5, 3, 2]
    q_value = [0.6, 0.55, 0.5]
    pending = [0, 0, 0]
    selected = []
    for _ in range(3):
        child = select_child("puct", prior, visit_count, q_value, 10, virtual_loss=pending)
        selected.append(child)
        pending[child] += 1
    assert len(set(selected)) > 1


def test_puct_rejects_negative_c_puct():
    with pytest.raises(ValueError, match=r"c_puct=-1\.0 is invalid.*>= 0"):
        puct_scores([0.5, 0.5], [1, 1], [0.5, 0.5], 2, c_puct=-1.0)


def test_puct_rejects_mismatched_lengths():
    with pytest.raises(ValueError, match="visit_count has 1 entries"):
        puct_scores([0.5, 0.5], [1], [0.5, 0.5], 2)


def test_puct_rejects_negative_visit_count():
    with pytest.raises(ValueError, match="visit_count"):
        puct_scores([0.5, 0.5], [1, -1], [0.5, 0.5], 2)


def test_puct_rejects_nan_q_of_visited_child():
    with pytest.raises(ValueError, match="q_value"):
        puct_scores([0.5, 0.5], [1, 1], [0.5, math.nan], 2)


def test_puct_rejects_empty_prior():
    with pytest.raises(ValueError, match="prior is empty"):
        puct_scores([], [], [], 0)


def test_puct_does_not_modify_inputs():
    prior = torch.tensor([0.6, 0.4])
    visit_count = torch.tensor([2.0, 0.0])
    q_value = torch.tensor([0.5, 0.0])
    virtual_loss = torch.tensor([1.0, 1.0])
    copies = [t.clone() for t in (prior, visit_count, q_value, virtual_loss)]
    puct_scores(prior, visit_count, q_value, 2, virtual_loss=virtual_loss)
    for original, copy in zip((prior, visit_count, q_value, virtual_loss), copies, strict=True):
        assert torch.equal(original, copy)


def test_uct_scores_formula():
    c_uct = math.sqrt(2)
    scores = uct_scores([0.3, 0.3, 0.4], [4, 1, 0], [0.5, 0.2, 0.0], 5, c_uct=c_uct)
    assert scores[0].item() == pytest.approx(0.5 + c_uct * math.sqrt(math.log(5) / 4))
    assert scores[1].item() == pytest.approx(0.2 + c_uct * math.sqrt(math.log(5) / 1))
    assert scores[2].item() == math.inf


def test_uct_unvisited_first_in_index_order():
    assert select_child("uct", [0.1, 0.2, 0.7], [3, 0, 0], [0.9, 0.0, 0.0], 3) == 1


def test_uct_virtual_loss_counts_as_visit():
    scores = uct_scores([0.5, 0.5], [0, 0], [0.0, 0.0], 0, virtual_loss=[1, 0])
    # Child 0: N = 1, Q = 0, parent N = 1 so ln N = 0. Child 1 is still unvisited.
    assert scores[0].item() == pytest.approx(0.0)
    assert scores[1].item() == math.inf


def test_uct_rejects_negative_c_uct():
    with pytest.raises(ValueError, match="c_uct"):
        uct_scores([0.5], [1], [0.5], 1, c_uct=-0.1)


def test_gumbel_root_scores_formula():
    gumbel = [0.1, -0.2, 0.3]
    prior = [0.5, 0.3, 0.2]
    visit_count = [2, 1, 0]
    q_value = [0.6, 0.9, 0.0]
    c_visit, c_scale, fpu = 50.0, 1.0, 0.25
    scores = gumbel_root_scores(
        prior, visit_count, q_value, 3, gumbel=gumbel, c_visit=c_visit, c_scale=c_scale, fpu=fpu
    )
    max_visits = 2
    completed_q = [0.6, 0.9, fpu]
    expected = [
        g + math.log(p) + (c_visit + max_visits) * c_scale * q
        for g, p, q in zip(gumbel, prior, completed_q, strict=True)
    ]
    assert scores.tolist() == pytest.approx(expected)


def test_gumbel_root_scores_c_scale():
    scores = gumbel_root_scores(
        [0.5, 0.5], [4, 0], [0.5, 0.0], 4, gumbel=[0.0, 0.0], c_visit=10.0, c_scale=0.1
    )
    assert scores[0].item() == pytest.approx(math.log(0.5) + (10.0 + 4) * 0.1 * 0.5)


def test_gumbel_zero_prior_never_selected():
    scores = gumbel_root_scores([1.0, 0.0], [0, 0], [0.0, 0.0], 0, gumbel=[0.0, 100.0])
    assert scores[1].item() == -math.inf


def test_gumbel_same_seed_same_scores():
    args = ([0.4, 0.3, 0.2, 0.1], [1, 1, 0, 0], [0.5, 0.4, 0.0, 0.0], 2)
    first = gumbel_root_scores(*args, generator=torch.Generator().manual_seed(7))
    second = gumbel_root_scores(*args, generator=torch.Generator().manual_seed(7))
    other = gumbel_root_scores(*args, generator=torch.Generator().manual_seed(8))
    assert torch.equal(first, second)
    assert not torch.equal(first, other)


def test_gumbel_select_child_deterministic_with_seed():
    args = ([0.25, 0.25, 0.25, 0.25], [0, 0, 0, 0], [0.0, 0.0, 0.0, 0.0], 0)
    choices = [
        select_child("gumbel", *args, generator=torch.Generator().manual_seed(seed))
        for seed in range(20)
    ]
    repeated = [
        select_child("gumbel", *args, generator=torch.Generator().manual_seed(seed))
        for seed in range(20)
    ]
    assert choices == repeated
    assert len(set(choices)) > 1  # uniform prior: the noise decides


def test_gumbel_requires_randomness():
    with pytest.raises(ValueError, match="generator"):
        gumbel_root_scores([0.5, 0.5], [0, 0], [0.0, 0.0], 0)


def test_sample_gumbel_mean_is_euler_gamma():
    noise = sample_gumbel(20000, generator=torch.Generator().manual_seed(0))
    euler_gamma = 0.5772156649
    assert noise.mean().item() == pytest.approx(euler_gamma, abs=0.05)
    assert bool(torch.isfinite(noise).all())


def test_sample_gumbel_rejects_non_generator():
    with pytest.raises(TypeError, match=r"torch\.Generator"):
        sample_gumbel(3, generator=7)


def test_select_child_rules_registry():
    assert set(SELECTION_RULES) == {"puct", "uct", "gumbel"}


def test_select_child_rejects_unknown_rule():
    with pytest.raises(ValueError, match="'ucb' is not a selection rule"):
        select_child("ucb", [0.5, 0.5], [1, 1], [0.5, 0.5], 2)


def test_select_child_ties_lowest_index():
    assert select_child("puct", [0.25, 0.25, 0.25, 0.25], [1, 1, 1, 1], [0.5] * 4, 4) == 0
    assert select_child("puct", [0.2, 0.4, 0.4], [1, 1, 1], [0.5] * 3, 3) == 1


def test_select_child_passes_hyperparameters():
    # With c_puct = 0 only Q counts, so the child with the highest Q wins despite its low prior.
    args = ([0.9, 0.1], [5, 5], [0.4, 0.6], 10)
    assert select_child("puct", *args) == 0
    assert select_child("puct", *args, c_puct=0.0) == 1


def test_select_child_accepts_partial():
    rule = functools.partial(puct_scores, c_puct=0.0)
    assert select_child(rule, [0.9, 0.1], [5, 5], [0.4, 0.6], 10) == 1
