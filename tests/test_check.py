"""check_model: the exactness check on every tiny architecture, and that it can fail."""

from __future__ import annotations

import json

import pytest
import torch

from tempo_search.check import DEFAULT_TOLERANCE, ExactnessReport, check_model
from tempo_search.testing import ARCHITECTURES
from tempo_search.tree_state import TreeState

ARCH_IMPLS = [
    (arch, impl)
    for arch in ARCHITECTURES
    for impl in ("sdpa", "eager")
    if not (arch == "gemma2" and impl == "sdpa")  # tiny_model builds Gemma 2 with eager only
]


@pytest.mark.parametrize(("arch", "attn_implementation"), ARCH_IMPLS)
def test_check_model_passes_tiny(arch, attn_implementation, get_tiny_model):
    loaded = get_tiny_model(arch, attn_implementation)

    report = check_model(loaded)

    assert report.passed
    assert report.max_abs_diff <= 1e-4
    assert report.tolerance == DEFAULT_TOLERANCE
    assert report.architecture == loaded.model.config.model_type
    assert report.attn_implementation == attn_implementation
    assert report.dtype == "float32"


def test_check_model_report_describes_the_tree(get_tiny_model):
    report = check_model(get_tiny_model("llama"), depth=7)

    assert report.max_depth >= 7
    assert report.rewinds == 2
    assert report.compactions == 1
    # Prefill, 3 levels, 2 rollout chunks, then depth - 3 levels after the compaction.
    assert report.forward_passes == 1 + 3 + 2 + (7 - 3)
    assert report.num_nodes_checked > report.max_depth


def test_check_model_accepts_the_bare_model(get_tiny_model):
    report = check_model(get_tiny_model("gpt2").model, seed=3, prompt_length=1, depth=6)

    assert report.passed


def test_check_model_same_seed_same_report(get_tiny_model):
    loaded = get_tiny_model("qwen2")

    first = check_model(loaded, seed=5)
    second = check_model(loaded, seed=5)

    assert first == second


def test_check_model_report_to_dict_is_json(get_tiny_model):
    report = check_model(get_tiny_model("gemma"))

    data = json.loads(json.dumps(report.to_dict()))

    assert data["passed"] is True
    assert set(data) == set(ExactnessReport.__dataclass_fields__)


def test_check_model_fails_with_wrong_positions(monkeypatch, get_tiny_model):
    # Shift every node one position further: the rotary phases no longer match plain decoding.
    original = TreeState.position
    monkeypatch.setattr(TreeState, "position", lambda self, node_id: original(self, node_id) + 1)

    report = check_model(get_tiny_model("llama"))

    assert not report.passed
    assert report.max_abs_diff > report.tolerance


def test_check_model_fails_when_siblings_see_each_other(monkeypatch, get_tiny_model):
    # An all-zero additive mask shows every slot to every new node.
    def open_mask(self, new_ids):
        return torch.zeros(1, 1, len(new_ids), self.cache_length)

    monkeypatch.setattr(TreeState, "_attention_mask", open_mask)

    report = check_model(get_tiny_model("llama"))

    assert not report.passed


def test_check_model_tolerance_decides_passed(get_tiny_model):
    loaded = get_tiny_model("llama")
    exact = check_model(loaded)

    report = check_model(loaded, tolerance=exact.max_abs_diff / 2)

    assert report.max_abs_diff == exact.max_abs_diff
    assert not report.passed


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"depth": 5}, "depth=5"),
        ({"prompt_length": 0}, "prompt_length=0"),
        ({"max_branching": 1}, "max_branching=1"),
    ],
)
def test_check_model_rejects_bad_arguments(kwargs, message, get_tiny_model):
    with pytest.raises(ValueError, match=message):
        check_model(get_tiny_model("llama"), **kwargs)


@pytest.mark.smollm2
@pytest.mark.parametrize("fixture_name", ["smollm2", "smollm2_eager"])
def test_check_model_passes_smollm2(fixture_name, request):
    loaded = request.getfixturevalue(fixture_name)

    report = check_model(loaded)

    assert report.passed
    assert report.max_abs_diff <= 1e-4
    assert report.architecture == "llama"
    assert report.attn_implementation == ("eager" if fixture_name == "smollm2_eager" else "sdpa")
