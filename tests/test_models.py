"""load_model and LoadedModel: inputs it accepts, inputs it rejects, prompt encoding."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from tempo_search.models import LoadedModel, default_cache_dir, load_model
from tempo_search.testing import tiny_model, tiny_tokenizer


@pytest.fixture
def saved_tiny_llama(tmp_path) -> tuple[LoadedModel, Path]:
    """A tiny llama saved with save_pretrained (safetensors, tokenizer, chat template)."""
    loaded = tiny_model("llama")
    folder = tmp_path / "tiny-llama"
    loaded.model.save_pretrained(folder)
    loaded.tokenizer.save_pretrained(folder)
    return loaded, folder


# ----------------------------------------------------------------- accepted inputs


def test_load_model_passes_loaded_model_through(get_tiny_model):
    loaded = get_tiny_model("llama")

    assert load_model(loaded) is loaded


def test_load_model_wraps_model_and_tokenizer(get_tiny_model):
    net = get_tiny_model("gpt2").model
    tokenizer = tiny_tokenizer()

    for loaded in (load_model(net, tokenizer=tokenizer), load_model((net, tokenizer))):
        assert isinstance(loaded, LoadedModel)
        assert loaded.model is net
        assert loaded.tokenizer is tokenizer


@pytest.mark.parametrize("attn_implementation", ["sdpa", "eager"])
def test_load_model_from_folder_same_logits(attn_implementation, saved_tiny_llama):
    original, folder = saved_tiny_llama
    ids = torch.tensor([[258, 262, 268]])

    loaded = load_model(str(folder), attn_implementation=attn_implementation)

    assert loaded.name == str(folder)
    assert loaded.attn_implementation == attn_implementation
    assert not loaded.model.training
    with torch.no_grad():
        expected = original.model(input_ids=ids).logits
        actual = loaded.model(input_ids=ids).logits
    assert torch.allclose(actual, expected, atol=1e-5)


def test_load_model_pickle_checkpoint_with_allow_pickle(tmp_path):
    original = tiny_model("llama")
    original.model.config.save_pretrained(tmp_path)
    original.tokenizer.save_pretrained(tmp_path)
    torch.save(original.model.state_dict(), tmp_path / "pytorch_model.bin")

    loaded = load_model(tmp_path, allow_pickle=True)

    assert torch.equal(loaded.model.lm_head.weight, original.model.lm_head.weight)


# ----------------------------------------------------------------- rejected inputs


def test_load_model_missing_path(tmp_path):
    missing = tmp_path / "no-such-model"

    with pytest.raises(ValueError, match="does not exist") as error:
        load_model(str(missing))

    assert str(missing) in str(error.value)


def test_load_model_folder_without_config(tmp_path):
    with pytest.raises(ValueError, match=r"has no config\.json") as error:
        load_model(str(tmp_path))

    assert str(tmp_path) in str(error.value)


def test_load_model_pickle_checkpoint_needs_allow_pickle(tmp_path):
    tiny_model("llama").model.config.save_pretrained(tmp_path)
    (tmp_path / "pytorch_model.bin").write_bytes(b"not loaded")

    with pytest.raises(ValueError, match="allow_pickle=True"):
        load_model(str(tmp_path))


def test_load_model_corrupt_safetensors(saved_tiny_llama):
    # A truncated download: the error should be the documented ValueError naming the folder.
    _, folder = saved_tiny_llama
    (folder / "model.safetensors").write_bytes(b"truncated")

    with pytest.raises(ValueError, match="could not load the model") as error:
        load_model(str(folder))

    assert str(folder) in str(error.value)


def test_load_model_file_that_is_not_gguf(tmp_path):
    weights = tmp_path / "weights.pt"
    weights.write_bytes(b"x")

    with pytest.raises(ValueError, match=r"not a \.gguf file"):
        load_model(str(weights))


def test_load_model_corrupt_gguf(tmp_path):
    gguf = tmp_path / "broken.gguf"
    gguf.write_bytes(b"not a gguf file at all")

    with pytest.raises(ValueError, match="could not load the GGUF file") as error:
        load_model(str(gguf))

    assert str(gguf) in str(error.value)


def test_load_model_hub_id_offline_without_local_copy(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    model_id = "tempo-search-tests/no-such-model"

    with pytest.raises(
        ValueError, match="could not be loaded from the Hugging Face cache"
    ) as error:
        load_model(model_id)

    assert repr(model_id) in str(error.value)


@pytest.mark.parametrize("attn_implementation", ["flash", "flash_attention_2", "SDPA"])
def test_load_model_rejects_attn_implementation(attn_implementation, get_tiny_model):
    with pytest.raises(ValueError, match=f"attn_implementation={attn_implementation!r}"):
        load_model(get_tiny_model("llama"), attn_implementation=attn_implementation)


def test_load_model_rejects_dtype(get_tiny_model):
    with pytest.raises(ValueError, match="dtype='float64'"):
        load_model(get_tiny_model("llama"), dtype="float64")


def test_load_model_model_without_tokenizer(get_tiny_model):
    with pytest.raises(ValueError, match="needs its tokenizer"):
        load_model(get_tiny_model("llama").model)


def test_load_model_rejects_other_objects():
    with pytest.raises(TypeError, match="got dict"):
        load_model({"model": "llama"})


# ----------------------------------------------------------------- LoadedModel


def test_loaded_model_properties(get_tiny_model):
    llama = get_tiny_model("llama")
    gpt2 = get_tiny_model("gpt2")

    assert llama.max_length == 256
    assert gpt2.max_length == 256  # from n_positions
    assert llama.vocab_size == len(tiny_tokenizer())
    assert llama.eos_token_ids == {0}
    assert llama.dtype == torch.float32
    assert llama.device == torch.device("cpu")
    assert llama.decode([258, 262]) == "the cat"


def test_eos_token_ids_joins_generation_config_and_tokenizer():
    loaded = tiny_model("llama")
    loaded.model.generation_config.eos_token_id = [7, 9]

    assert loaded.eos_token_ids == {0, 7, 9}


@pytest.mark.parametrize("prompt", ["", "   \n"])
def test_encode_prompt_rejects_empty_text(prompt, get_tiny_model):
    with pytest.raises(ValueError, match="prompt is empty"):
        get_tiny_model("llama").encode_prompt(prompt)


def test_encode_prompt_plain_text(get_tiny_model):
    assert get_tiny_model("llama").encode_prompt("the cat sat") == [258, 262, 268]


def test_encode_prompt_chat_messages_use_template(get_tiny_model):
    loaded = get_tiny_model("llama")
    messages = [
        {"role": "system", "content": "be brief"},
        {"role": "user", "content": "the cat"},
    ]
    # tiny_tokenizer's template: "<|role|>content\n" per message, then "<|assistant|>".
    rendered = "<|system|>be brief\n<|user|>the cat\n<|assistant|>"

    ids = loaded.encode_prompt(messages)

    assert ids == loaded.tokenizer(rendered)["input_ids"]


def test_encode_prompt_chat_flag_wraps_text_as_user(get_tiny_model):
    loaded = get_tiny_model("llama")

    ids = loaded.encode_prompt("the cat", chat=True)

    assert ids == loaded.encode_prompt([{"role": "user", "content": "the cat"}])


@pytest.mark.parametrize(
    ("messages", "message"),
    [
        ([], "non-empty list"),
        ({"role": "user", "content": "hi"}, "non-empty list"),
        (["hi"], "chat message 0 is 'hi'"),
        ([{"role": "user"}], "'role' and 'content' keys"),
        ([{"role": "user", "content": "hi"}, {"content": "x"}], "chat message 1"),
        ([{"role": "user", "content": "  "}], "every chat message is empty"),
    ],
)
def test_encode_prompt_rejects_malformed_messages(messages, message, get_tiny_model):
    with pytest.raises(ValueError, match=message):
        get_tiny_model("llama").encode_prompt(messages)


def test_encode_prompt_chat_without_template(monkeypatch, get_tiny_model):
    loaded = get_tiny_model("llama")
    monkeypatch.setattr(loaded.tokenizer, "chat_template", None)

    with pytest.raises(ValueError, match="has no chat template"):
        loaded.encode_prompt("the cat", chat=True)


# ----------------------------------------------------------------- cache folder


def test_default_cache_dir_from_tempo_search_cache(monkeypatch, tmp_path):
    monkeypatch.setenv("TEMPO_SEARCH_CACHE", str(tmp_path / "converted"))

    assert default_cache_dir() == tmp_path / "converted"


def test_default_cache_dir_under_xdg_cache_home(monkeypatch, tmp_path):
    monkeypatch.delenv("TEMPO_SEARCH_CACHE", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))

    assert default_cache_dir() == tmp_path / "tempo_search"


@pytest.mark.smollm2
def test_load_model_default_is_smollm2(smollm2):
    config = json.loads(smollm2.model.config.to_json_string())

    assert smollm2.name == "SmolLM2-135M-Instruct"
    assert config["model_type"] == "llama"
    assert smollm2.attn_implementation == "sdpa"
    assert smollm2.dtype == torch.float32
