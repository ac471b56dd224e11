"""TEMPO generate: greedy parity, the superposition mixture, tree-mode paths, helpers, inputs."""

from __future__ import annotations

import json

import pytest
import torch
from transformers import LlamaForCausalLM

import tempo_search.generate as generate_module
from tempo_search.generate import (
    TokenChoice,
    bracket_text,
    check_position_ids,
    generate,
    select_parallel_set,
)
from tempo_search.models import LoadedModel
from tempo_search.testing import tiny_model, tiny_tokenizer
from tempo_search.tree_state import ROOT, TreeState, plain_logits

REQUIRED_ARCHITECTURES = ("llama", "qwen2", "mistral", "gpt2", "gemma")
PROMPT = "the cat sat on"


def strip_eos(token_ids: list[int], eos: set[int]) -> list[int]:
    """Return `token_ids` up to, not including, the first end-of-sequence token."""
    for index, token_id in enumerate(token_ids):
        if token_id in eos:
            return token_ids[:index]
    return token_ids


# ----------------------------------------------------------------- greedy parity


@pytest.mark.parametrize("mode", ["superposition", "tree"])
@pytest.mark.parametrize("arch", REQUIRED_ARCHITECTURES)
def test_generate_threshold_one_is_greedy(arch, mode, get_tiny_model, greedy):
    loaded = get_tiny_model(arch)
    prompt_ids = loaded.encode_prompt(PROMPT)
    expected = greedy(loaded, prompt_ids, 12)

    result = generate(loaded, PROMPT, threshold=1.0, max_new_tokens=12, mode=mode)

    assert result.prompt_token_ids == prompt_ids
    assert strip_eos(result.best_token_ids, loaded.eos_token_ids) == strip_eos(
        expected, loaded.eos_token_ids
    )
    assert all(len(step.tokens) == 1 for step in result.steps)
    assert result.best_text == loaded.tokenizer.decode(
        strip_eos(expected, loaded.eos_token_ids), skip_special_tokens=True
    )


@pytest.fixture
def llama_with_stop_token(greedy) -> tuple[LoadedModel, list[int], int]:
    """A fresh tiny llama whose greedy output ends early at an extra end-of-sequence token.

    Returns the model, the greedy ids (ending with the stop token) and the stop token.
    """
    loaded = tiny_model("llama")
    prompt_ids = loaded.encode_prompt(PROMPT)
    free_run = greedy(loaded, prompt_ids, 12)
    # The first token from the third on that did not occur before it becomes end-of-sequence.
    stop_index = next(i for i in range(2, len(free_run)) if free_run[i] not in free_run[:i])
    stop = free_run[stop_index]
    loaded.model.generation_config.eos_token_id = [0, stop]
    expected = greedy(loaded, prompt_ids, 12)
    assert expected == free_run[: stop_index + 1]
    return loaded, expected, stop


@pytest.mark.parametrize("mode", ["superposition", "tree"])
def test_generate_stops_where_greedy_stops(mode, llama_with_stop_token):
    loaded, expected, stop = llama_with_stop_token

    result = generate(loaded, PROMPT, threshold=1.0, max_new_tokens=12, mode=mode)

    assert strip_eos(result.best_token_ids, {stop}) == expected[:-1]
    assert len(result.steps) <= len(expected)
    assert stop not in result.best_token_ids[:-1]


def test_generate_eos_handling_same_in_both_modes(llama_with_stop_token):
    loaded, _, _ = llama_with_stop_token

    superposition = generate(loaded, PROMPT, threshold=1.0, max_new_tokens=12)
    tree = generate(loaded, PROMPT, threshold=1.0, max_new_tokens=12, mode="tree")

    assert tree.best_token_ids == superposition.best_token_ids
    assert len(tree.steps) == len(superposition.steps)
    assert tree.text == superposition.text


def test_generate_tree_one_path_is_greedy(get_tiny_model, greedy):
    # With one live path the best candidate is always the top token, whatever the threshold.
    loaded = get_tiny_model("qwen2")
    expected = greedy(loaded, loaded.encode_prompt(PROMPT), 10)

    result = generate(loaded, PROMPT, threshold=0.05, max_new_tokens=10, mode="tree", max_paths=1)

    assert strip_eos(result.best_token_ids, loaded.eos_token_ids) == strip_eos(
        expected, loaded.eos_token_ids
    )


def test_generate_superposition_stats(get_tiny_model):
    loaded = get_tiny_model("gpt2")
    p = len(loaded.encode_prompt(PROMPT))
    n = 6

    stats = generate(loaded, PROMPT, threshold=1.0, max_new_tokens=n).stats

    # The last step is chosen but never forwarded.
    assert stats.generated_steps == n
    assert stats.forward_passes == 1 + (n - 1)
    assert stats.tokens_forwarded == p + (n - 1)
    assert stats.cache_length == p + (n - 1)
    assert stats.peak_cache_length == p + (n - 1)
    assert stats.live_tokens == n - 1
    assert stats.prompt_tokens == p
    assert stats.tokens_forwarded_per_step == (n - 1) / n


# ----------------------------------------------------------------- superposition mixture


def admitted_tokens(
    probs: torch.Tensor, threshold: float, max_width: int, eos: set[int]
) -> list[int]:
    """The TEMPO rule written out: tokens with prob >= threshold, end-of-sequence excluded,
    highest first with ties by token id, at most max_width, at least the top one."""
    order = sorted(range(len(probs)), key=lambda i: (-float(probs[i]), i))
    candidates = [i for i in order if i not in eos]
    above = [i for i in candidates if float(probs[i]) >= threshold]
    return above[:max_width] or candidates[:1]


def member_distribution(net, prompt_ids, earlier_sets, token) -> torch.Tensor:
    """Next-token distribution of one member, forwarded alone after the earlier sets."""
    state = TreeState(net, prompt_ids, mode="superposition")
    parent = ROOT
    for members in earlier_sets:
        parent = state.expand([parent] * len(members), members).node_ids[0]
    logits = state.expand([parent], [token]).logits[0]
    return torch.softmax(logits, dim=-1)


@pytest.mark.parametrize("arch", ["llama", "gemma"])
def test_generate_superposition_is_weighted_mixture(arch, get_tiny_model):
    loaded = get_tiny_model(arch)
    net = loaded.model
    eos = loaded.eos_token_ids
    threshold, max_width, max_new_tokens = 0.05, 4, 5

    result = generate(
        loaded, PROMPT, threshold=threshold, max_width=max_width, max_new_tokens=max_new_tokens
    )

    sets = [[choice.id for choice in step.tokens] for step in result.steps]
    assert any(len(members) > 1 for members in sets[:-1]), "no parallel set to mix; lower threshold"
    prompt_ids = result.prompt_token_ids
    probs = torch.softmax(plain_logits(net, prompt_ids), dim=-1)
    for k in range(max_new_tokens):
        # 1. A top end-of-sequence token ends generation before step k.
        if int(torch.argmax(probs)) in eos:
            assert len(result.steps) == k
            break

        # 2. Step k's set and its probabilities come from the current distribution.
        step = result.steps[k]
        assert [c.id for c in step.tokens] == admitted_tokens(probs, threshold, max_width, eos)
        for choice in step.tokens:
            assert choice.prob == pytest.approx(float(probs[choice.id]), abs=1e-5)

        # 3. The next distribution: members' distributions weighted by p_i / sum_j p_j.
        weights = torch.tensor([c.prob for c in step.tokens])
        weights = weights / weights.sum()
        dists = [member_distribution(net, prompt_ids, sets[:k], c.id) for c in step.tokens]
        probs = sum(w * d for w, d in zip(weights, dists, strict=True))
    else:
        assert len(result.steps) == max_new_tokens


def test_generate_superposition_passes_isolate(monkeypatch, get_tiny_model):
    created: list[dict] = []

    class RecordingTreeState(TreeState):
        def __init__(self, model, prompt_ids, **kwargs):
            created.append(kwargs)
            super().__init__(model, prompt_ids, **kwargs)

    monkeypatch.setattr(generate_module, "TreeState", RecordingTreeState)

    generate(get_tiny_model("llama"), PROMPT, threshold=0.1, max_new_tokens=2, isolate=False)

    assert created == [{"mode": "superposition", "isolate": False}]


# ----------------------------------------------------------------- tree mode


def test_generate_tree_bounds_paths_and_compacts(monkeypatch, get_tiny_model):
    max_paths = 2
    checks: list[dict] = []
    compactions: list[int] = []

    class RecordingTreeState(TreeState):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            self.last_batch: list[int] = []

        def expand(self, parents, token_ids, **kwargs):
            # After the previous step's compaction the cache contains the paths of that step's
            # nodes and nothing else.
            live_nodes = set()
            for node_id in self.last_batch:
                live_nodes.update(self.path(node_id))
            checks.append(
                {
                    "batch": len(parents),
                    "num_nodes": self.num_nodes,
                    "live_nodes": len(live_nodes),
                    "cache_length": self.cache_length,
                    "expected_cache_length": self.prompt_length + len(live_nodes),
                }
            )
            output = super().expand(parents, token_ids, **kwargs)
            self.last_batch = output.node_ids
            return output

        def compact(self, keep):
            compactions.append(self.num_nodes - len(set(keep)))
            return super().compact(keep)

    monkeypatch.setattr(generate_module, "TreeState", RecordingTreeState)

    result = generate(
        get_tiny_model("llama"),
        PROMPT,
        threshold=0.05,
        max_width=4,
        max_new_tokens=8,
        mode="tree",
        max_paths=max_paths,
    )

    assert result.mode == "tree"
    assert any(dropped > 0 for dropped in compactions), "no branch died; the test saw no pruning"
    for index, check in enumerate(checks):
        assert check["batch"] <= max_paths, f"step {index}"
        assert check["num_nodes"] == check["live_nodes"], f"step {index}"
        assert check["cache_length"] == check["expected_cache_length"], f"step {index}"


def test_generate_tree_step_sets_are_distinct_tokens(get_tiny_model):
    result = generate(
        get_tiny_model("gemma"), PROMPT, threshold=0.05, max_new_tokens=6, mode="tree", max_paths=3
    )

    for step in result.steps:
        ids = [choice.id for choice in step.tokens]
        assert len(ids) == len(set(ids))
        assert 1 <= len(ids) <= 3


# ----------------------------------------------------------------- select_parallel_set


def test_select_parallel_set_returns_top_when_none_pass():
    probs = torch.tensor([0.1, 0.5, 0.4])

    ids, member_probs = select_parallel_set(probs, threshold=0.9, max_width=4)

    assert ids == [1]
    assert member_probs == [pytest.approx(0.5)]


def test_select_parallel_set_threshold_one_is_argmax():
    probs = torch.tensor([0.2, 0.3, 0.3, 0.2])

    ids, _ = select_parallel_set(probs, threshold=1.0, max_width=4)

    assert ids == [int(torch.argmax(probs))]


def test_select_parallel_set_highest_first():
    probs = torch.tensor([0.05, 0.25, 0.1, 0.4, 0.2])

    ids, member_probs = select_parallel_set(probs, threshold=0.2, max_width=8)

    assert ids == [3, 1, 4]
    assert member_probs == [pytest.approx(0.4), pytest.approx(0.25), pytest.approx(0.2)]


def test_select_parallel_set_max_width_caps():
    probs = torch.full((10,), 0.1)

    ids, _ = select_parallel_set(probs, threshold=0.05, max_width=3)

    assert ids == [0, 1, 2]


def test_select_parallel_set_ties_by_token_id():
    probs = torch.tensor([0.1, 0.3, 0.1, 0.3, 0.2])

    ids, _ = select_parallel_set(probs, threshold=0.1, max_width=8)

    assert ids == [1, 3, 4, 0, 2]


def test_select_parallel_set_exclude_keeps_threshold():
    # Token 0 (end-of-sequence) passes the threshold but is excluded; token 2 does not pass.
    probs = torch.tensor([0.3, 0.5, 0.05, 0.15])

    ids, member_probs = select_parallel_set(probs, threshold=0.2, max_width=8, exclude={0})

    assert ids == [1]
    assert member_probs == [pytest.approx(0.5)]


def test_select_parallel_set_never_returns_excluded():
    probs = torch.tensor([0.6, 0.4])

    ids, member_probs = select_parallel_set(probs, threshold=0.1, max_width=8, exclude={0})

    assert ids == [1]
    assert member_probs == [pytest.approx(0.4)]


def test_select_parallel_set_exclude_leaves_probs_unchanged():
    probs = torch.tensor([0.3, 0.5, 0.2])

    select_parallel_set(probs, threshold=0.1, max_width=8, exclude={0})

    assert probs.tolist() == pytest.approx([0.3, 0.5, 0.2])


# ----------------------------------------------------------------- bracket_text


def choice(token: str, pruned: bool = False) -> TokenChoice:
    return TokenChoice(token=token, id=0, prob=0.5, pruned=pruned)


def test_bracket_text_writes_sets_in_brackets():
    sets = [[choice("The")], [choice(" cat"), choice(" dog")], [choice(" sat")]]

    assert bracket_text(sets) == "The [cat|dog] sat"


def test_bracket_text_common_whitespace_written_once():
    sets = [[choice("A")], [choice("\n\n B"), choice("\n\n C"), choice("\n\nD")]]

    assert bracket_text(sets) == "A\n\n[ B| C|D]"


def test_bracket_text_without_common_whitespace():
    sets = [[choice(" cat"), choice("dog")], [choice(" cat"), choice(" ")]]

    assert bracket_text(sets) == "[ cat|dog] [cat|]"


def test_bracket_text_escapes_line_breaks_inside_brackets():
    sets = [[choice("A\n"), choice("B")], [choice("\n")]]

    assert bracket_text(sets) == "[A\\n|B]\n"


def test_bracket_text_leaves_out_pruned_members():
    sets = [[choice("The")], [choice(" cat"), choice(" dog", pruned=True)], [choice(" x", True)]]

    assert bracket_text(sets) == "The cat"


def test_bracket_text_shows_pruned_struck_through():
    sets = [[choice("The")], [choice(" cat"), choice(" dog", pruned=True)]]

    assert bracket_text(sets, show_pruned=True) == "The [cat|~dog~]"


def test_bracket_text_empty():
    assert bracket_text([]) == ""


# ----------------------------------------------------------------- results and callbacks


def test_generate_on_step_sees_every_step(get_tiny_model):
    seen = []

    result = generate(
        get_tiny_model("llama"), PROMPT, threshold=0.05, max_new_tokens=4, on_step=seen.append
    )

    assert seen == result.steps
    assert [step.position for step in result.steps] == [
        len(result.prompt_token_ids) + i for i in range(len(result.steps))
    ]


def test_generate_result_to_dict_is_json(get_tiny_model):
    result = generate(get_tiny_model("llama"), PROMPT, threshold=0.05, max_new_tokens=3)

    data = json.loads(json.dumps(result.to_dict()))

    assert data["text"] == result.text
    assert "prompt_token_ids" not in data
    assert data["stats"]["tokens_forwarded_per_step"] == pytest.approx(
        result.stats.tokens_forwarded_per_step
    )


def test_generate_chat_messages_use_template(get_tiny_model):
    loaded = get_tiny_model("llama")
    messages = [{"role": "user", "content": "the cat"}]

    result = generate(loaded, messages, threshold=1.0, max_new_tokens=2)

    assert result.prompt_token_ids == loaded.encode_prompt(messages)


# ----------------------------------------------------------------- invalid input


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"threshold": 0}, "threshold=0 "),
        ({"threshold": 1.5}, "threshold=1.5"),
        ({"threshold": -1}, "threshold=-1"),
        ({"threshold": float("nan")}, "threshold=nan"),
        ({"threshold": "0.5"}, "threshold='0.5'"),
        ({"max_new_tokens": 0}, "max_new_tokens=0"),
        ({"max_new_tokens": 253}, r"max_new_tokens=253 .* context length of 256"),
        ({"max_width": 0}, "max_width=0"),
        ({"max_paths": 0}, "max_paths=0"),
        ({"mode": "banana"}, "mode='banana'"),
    ],
)
def test_generate_rejects_bad_arguments(kwargs, message, get_tiny_model):
    # The prompt has 4 tokens, so 252 new tokens fill the 256-token context.
    with pytest.raises(ValueError, match=message):
        generate(get_tiny_model("llama"), PROMPT, **kwargs)


@pytest.mark.parametrize("prompt", ["", "  "])
def test_generate_rejects_empty_prompt(prompt, get_tiny_model):
    with pytest.raises(ValueError, match="prompt is empty"):
        generate(get_tiny_model("llama"), prompt)


# ----------------------------------------------------------------- check_position_ids


class PositionBlindLlama(LlamaForCausalLM):
    """A Llama that accepts `position_ids` but drops them, so positions count from the cache."""

    def forward(self, input_ids=None, position_ids=None, **kwargs):
        return super().forward(input_ids=input_ids, **kwargs)


class NoPositionLlama(LlamaForCausalLM):
    """A Llama whose forward signature has no `position_ids` at all."""

    def forward(self, input_ids=None, **kwargs):
        kwargs.pop("position_ids", None)
        return super().forward(input_ids=input_ids, **kwargs)


def blind_model(model_class, name: str) -> LoadedModel:
    source = tiny_model("llama").model
    net = model_class(source.config)
    net.load_state_dict(source.state_dict())
    net.generation_config.eos_token_id = 0
    net.generation_config.pad_token_id = 0
    net.eval()
    return LoadedModel(model=net, tokenizer=tiny_tokenizer(), name=name)


@pytest.mark.parametrize("arch", ["llama", "gpt2"])
def test_check_position_ids_passes_tiny(arch):
    loaded = tiny_model(arch)

    check_position_ids(loaded)

    assert loaded._position_check is True


@pytest.mark.parametrize(
    ("model_class", "name"),
    [(PositionBlindLlama, "position-blind-llama"), (NoPositionLlama, "no-position-llama")],
)
def test_check_position_ids_rejects_model_ignoring_them(model_class, name):
    loaded = blind_model(model_class, name)

    with pytest.raises(ValueError, match=f"model '{name}' ignores position_ids"):
        check_position_ids(loaded)

    assert loaded._position_check is False
    with pytest.raises(ValueError, match=name):
        check_position_ids(loaded)


def test_generate_rejects_model_ignoring_position_ids():
    loaded = blind_model(PositionBlindLlama, "position-blind-llama")

    with pytest.raises(ValueError, match="'position-blind-llama' ignores position_ids"):
        generate(loaded, PROMPT, max_new_tokens=2)


# ----------------------------------------------------------------- SmolLM2


@pytest.mark.smollm2
@pytest.mark.parametrize("mode", ["superposition", "tree"])
def test_generate_smollm2_threshold_one_is_greedy(mode, smollm2, greedy):
    prompt = "The capital of France is"
    expected = greedy(smollm2, smollm2.encode_prompt(prompt), 8)

    result = generate(smollm2, prompt, threshold=1.0, max_new_tokens=8, mode=mode)

    assert strip_eos(result.best_token_ids, smollm2.eos_token_ids) == strip_eos(
        expected, smollm2.eos_token_ids
    )
