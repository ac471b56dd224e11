import math

import pytest
import torch

from tempo_search.coherence import (
    PruneConfig,
    aggregate_attention,
    keep_weights,
    layer_weights,
    member_keep_weights,
    member_scores,
    parse_prune_layers,
    prune_decision,
    relative_scores,
)


def sigmoid(x):
    return 1.0 / (1.0 + math.exp(-x))


# [layers=2, heads=2, q=2, k=4], hand-written so that every entry is known.
ATTN = torch.tensor(
    [
        [
            [[0.4, 0.1, 0.3, 0.2], [0.1, 0.5, 0.2, 0.2]],
            [[0.2, 0.2, 0.2, 0.4], [0.3, 0.3, 0.1, 0.3]],
        ],
        [
            [[0.1, 0.1, 0.6, 0.2], [0.2, 0.2, 0.4, 0.2]],
            [[0.5, 0.1, 0.2, 0.2], [0.1, 0.1, 0.1, 0.7]],
        ],
    ]
)


def test_layer_weights_linear():
    assert layer_weights(3).tolist() == pytest.approx([1 / 6, 2 / 6, 3 / 6])


def test_layer_weights_uniform():
    assert layer_weights(4, scheme="uniform").tolist() == pytest.approx([0.25] * 4)


def test_layer_weights_rejects_scheme():
    with pytest.raises(ValueError, match="'exponential' is not a layer scheme"):
        layer_weights(3, scheme="exponential")


def test_layer_weights_rejects_zero_layers():
    with pytest.raises(ValueError, match="num_layers_used=0"):
        layer_weights(0)


def test_aggregate_attention_mean_heads():
    weights = [1 / 3, 2 / 3]
    result = aggregate_attention(ATTN, layer_weights=weights)
    assert result.shape == (2, 4)
    for q in range(2):
        for k in range(4):
            expected = sum(
                weights[layer] * (ATTN[layer, 0, q, k] + ATTN[layer, 1, q, k]).item() / 2
                for layer in range(2)
            )
            assert result[q, k].item() == pytest.approx(expected)


def test_aggregate_attention_max_heads():
    weights = [0.25, 0.75]
    result = aggregate_attention(ATTN, layer_weights=weights, head_reduce="max")
    # Query 1, key 3: max over heads is 0.3 in layer 0 and 0.7 in layer 1.
    assert result[1, 3].item() == pytest.approx(0.25 * 0.3 + 0.75 * 0.7)
    # Query 0, key 0: 0.4 in layer 0 and 0.5 in layer 1.
    assert result[0, 0].item() == pytest.approx(0.25 * 0.4 + 0.75 * 0.5)


def test_aggregate_attention_accepts_layer_sequence():
    as_list = aggregate_attention(list(ATTN), layer_weights=[0.5, 0.5])
    as_tensor = aggregate_attention(ATTN, layer_weights=[0.5, 0.5])
    assert torch.equal(as_list, as_tensor)


def test_aggregate_attention_rejects_weight_count():
    with pytest.raises(ValueError, match="one weight per layer"):
        aggregate_attention(ATTN, layer_weights=[1.0])


def test_aggregate_attention_rejects_batch_dimension():
    with pytest.raises(ValueError, match="batch dimension"):
        aggregate_attention(ATTN.unsqueeze(0), layer_weights=[0.5, 0.5])


def test_aggregate_attention_rejects_head_reduce():
    with pytest.raises(ValueError, match="head_reduce"):
        aggregate_attention(ATTN, layer_weights=[0.5, 0.5], head_reduce="median")


def test_member_scores_selected_rows():
    attention = torch.tensor(
        [
            [1.0, 0.0, 0.0, 0.0, 0.0],
            [0.4, 0.1, 0.2, 0.3, 0.0],
            [0.2, 0.1, 0.4, 0.1, 0.2],
        ]
    )
    scores = member_scores(attention, member_slots=[2, 3, 4], query_rows=[1, 2])
    assert scores.tolist() == pytest.approx([(0.2 + 0.4) / 2, (0.3 + 0.1) / 2, (0.0 + 0.2) / 2])


def test_member_scores_all_rows():
    attention = torch.tensor([[0.5, 0.5], [0.1, 0.9]])
    scores = member_scores(attention, member_slots=[1, 0])
    assert scores.tolist() == pytest.approx([(0.5 + 0.9) / 2, (0.5 + 0.1) / 2])


def test_member_scores_rejects_slot_out_of_range():
    with pytest.raises(ValueError, match="member_slots"):
        member_scores(torch.zeros(2, 3), member_slots=[1, 3])


def test_member_scores_rejects_empty_rows():
    with pytest.raises(ValueError, match="query_rows is empty"):
        member_scores(torch.zeros(2, 3), member_slots=[1], query_rows=[])


def test_relative_scores_formula():
    relative = relative_scores(torch.tensor([0.2, 0.1, 0.3], dtype=torch.float64))
    assert relative.tolist() == pytest.approx([0.2 / 0.2 - 1, 0.1 / 0.2 - 1, 0.3 / 0.2 - 1])


def test_relative_scores_zero_mean():
    assert relative_scores(torch.zeros(3)).tolist() == [0.0, 0.0, 0.0]


def test_keep_weights_formula():
    weights = keep_weights(torch.tensor([0.0, -0.5, -1.0, 0.5]), steepness=10.0, cut=-0.5)
    expected = [sigmoid(10.0 * (r + 0.5)) for r in (0.0, -0.5, -1.0, 0.5)]
    assert weights.tolist() == pytest.approx(expected)


def test_keep_weights_half_at_cut():
    assert keep_weights(torch.tensor([-0.5]), steepness=3.0, cut=-0.5).item() == pytest.approx(0.5)


def test_keep_weights_rejects_steepness():
    with pytest.raises(ValueError, match="steepness=0"):
        keep_weights(torch.tensor([0.0]), steepness=0, cut=-0.5)


def test_prune_decision_floor():
    keep = prune_decision(torch.tensor([0.9, 0.4, 0.6, 0.5]), floor=0.5)
    assert keep.tolist() == [True, False, True, True]


def test_prune_decision_keeps_best_when_all_below():
    keep = prune_decision(torch.tensor([0.1, 0.3, 0.2]), floor=0.5)
    assert keep.tolist() == [False, True, False]


def test_prune_decision_tie_keeps_lowest_index():
    keep = prune_decision(torch.tensor([0.2, 0.3, 0.3]), floor=0.5)
    assert keep.tolist() == [False, True, False]


def test_prune_decision_does_not_modify_weights():
    weights = torch.tensor([0.1, 0.3])
    prune_decision(weights, floor=0.5)
    assert weights.tolist() == pytest.approx([0.1, 0.3])


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("all", "all"),
        ("ALL", "all"),
        ("last:4", "last:4"),
        (" last: 2 ", "last:2"),
        ("0,3,5", (0, 3, 5)),
        ("-1", (-1,)),
        ("7", (7,)),
    ],
)
def test_parse_prune_layers(text, expected):
    assert parse_prune_layers(text) == expected


@pytest.mark.parametrize("text", ["last:0", "last:x", "first:2", "a,b", "", "1,,2"])
def test_parse_prune_layers_invalid(text):
    with pytest.raises(ValueError, match="prune layers"):
        parse_prune_layers(text)


@pytest.mark.parametrize(
    ("layers", "expected"),
    [
        ("last:4", [8, 9, 10, 11]),
        ("all", list(range(12))),
        ("0,3,5", [0, 3, 5]),
        (3, [3]),
        (-1, [11]),
        ([5, 0, -12], [0, 5]),
    ],
)
def test_prune_config_resolve_layers(layers, expected):
    assert PruneConfig(layers=layers).resolve_layers(12) == expected


def test_prune_config_last_more_than_model():
    assert PruneConfig().resolve_layers(2) == [0, 1]


def test_prune_config_resolve_out_of_range():
    with pytest.raises(ValueError, match="layer index 12"):
        PruneConfig(layers=[0, 12]).resolve_layers(12)


def test_prune_config_normalises_layers():
    assert PruneConfig(layers=[1, 2]).layers == (1, 2)
    assert PruneConfig(layers="0,2").layers == (0, 2)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"layers": []}, "layers"),
        ({"layers": 1.5}, "layers"),
        ({"head_reduce": "median"}, "head_reduce"),
        ({"layer_scheme": "cubic"}, "layer_scheme"),
        ({"steepness": -1.0}, "steepness"),
        ({"cut": math.nan}, "cut"),
        ({"floor": 1.5}, "floor"),
    ],
)
def test_prune_config_invalid(kwargs, message):
    with pytest.raises(ValueError, match=message):
        PruneConfig(**kwargs)


def test_prune_config_default_half_mean_gets_half_weight():
    config = PruneConfig()
    weight = keep_weights(
        relative_scores(torch.tensor([0.5, 1.5])), steepness=config.steepness, cut=config.cut
    )
    # Member 0 receives 0.5 / mean(0.5, 1.5) = half the mean attention.
    assert weight[0].item() == pytest.approx(0.5)


def test_member_keep_weights_pipeline():
    config = PruneConfig(steepness=4.0, cut=-0.25, head_reduce="mean", layer_scheme="linear")
    slots = [1, 2, 3]
    rows = [0, 1]

    weights = member_keep_weights(ATTN, slots, config=config, query_rows=rows)

    # Steps by hand: layer weights 1/3, 2/3; mean over heads; mean over rows; relative; sigmoid.
    layer_w = [1 / 3, 2 / 3]
    scores = []
    for k in slots:
        total = 0.0
        for q in rows:
            for layer in range(2):
                head_mean = (ATTN[layer, 0, q, k] + ATTN[layer, 1, q, k]).item() / 2
                total += layer_w[layer] * head_mean
        scores.append(total / len(rows))
    mean = sum(scores) / len(scores)
    expected = [sigmoid(4.0 * ((s / mean - 1) + 0.25)) for s in scores]
    assert weights.tolist() == pytest.approx(expected)
