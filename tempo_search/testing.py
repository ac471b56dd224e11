"""Tiny randomly initialised models and a tokenizer, built in-process for tests and examples.

Nothing here downloads anything: configs are written below, weights are drawn from a seeded
generator, and the tokenizer is a byte-level BPE over a small vocabulary made here.
"""

from __future__ import annotations

import functools

import torch

from tempo_search.models import LoadedModel

# A few whole words so that tiny models produce multi-character tokens, with and without the
# leading space that byte-level BPE keeps in front of a word.
_WORDS = [
    "the",
    "cat",
    "dog",
    "sat",
    "ran",
    "on",
    "a",
    "mat",
    "and",
    "then",
    "it",
    "was",
    "big",
    "small",
    "red",
    "blue",
    "tree",
    "house",
    "four",
    "nine",
    "ten",
    "plus",
    "minus",
    "times",
    "left",
    "answer",
    "step",
]

_CHAT_TEMPLATE = (
    "{% for message in messages %}<|{{ message['role'] }}|>{{ message['content'] }}\n"
    "{% endfor %}{% if add_generation_prompt %}<|assistant|>{% endif %}"
)

ARCHITECTURES = ("llama", "qwen2", "mistral", "gpt2", "gemma", "qwen3", "phi3", "gemma2")
"""Architectures `tiny_model` builds. The first five are the ones the exactness tests require."""


@functools.lru_cache(maxsize=1)
def tiny_tokenizer():
    """Return a byte-level BPE tokenizer (`PreTrainedTokenizerFast`) with about 300 tokens.

    Every string can be encoded (the 256 byte symbols are in the vocabulary), `<|endoftext|>`
    is the end-of-sequence and padding token, and a small chat template is set.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    alphabet = pre_tokenizers.ByteLevel.alphabet()
    vocab: dict[str, int] = {"<|endoftext|>": 0}
    for symbol in sorted(alphabet):
        vocab[symbol] = len(vocab)
    merges: list[tuple[str, str]] = []
    space = "Ġ"  # the byte-level symbol for " "
    for word in _WORDS:
        # Merge the word left to right ("c"+"a" -> "ca", "ca"+"t" -> "cat"), then the
        # leading-space variant as one more merge ("Ġ"+"cat" -> "Ġcat").
        current = word[0]
        for char in word[1:]:
            merged = current + char
            if merged not in vocab:
                vocab[merged] = len(vocab)
                merges.append((current, char))
            current = merged
        if space + word not in vocab:
            vocab[space + word] = len(vocab)
            merges.append((space, word))

    tokenizer = Tokenizer(models.BPE(vocab=vocab, merges=merges))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        eos_token="<|endoftext|>",
        pad_token="<|endoftext|>",
        bos_token=None,
    )
    fast.chat_template = _CHAT_TEMPLATE
    return fast


def _config(arch: str, vocab_size: int, attn_implementation: str):
    import transformers

    common = {
        "vocab_size": vocab_size,
        "hidden_size": 64,
        "intermediate_size": 128,
        "num_hidden_layers": 3,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "max_position_embeddings": 256,
        "eos_token_id": 0,
        "bos_token_id": 0,
        "pad_token_id": 0,
        "tie_word_embeddings": False,
        "attn_implementation": attn_implementation,
    }
    if arch == "llama":
        return transformers.LlamaConfig(**common)
    if arch == "qwen2":
        return transformers.Qwen2Config(**common, use_sliding_window=False)
    if arch == "qwen3":
        return transformers.Qwen3Config(**common, head_dim=16)
    if arch == "mistral":
        return transformers.MistralConfig(**common, sliding_window=4096)
    if arch == "gemma":
        return transformers.GemmaConfig(**common, head_dim=16)
    if arch == "gemma2":
        return transformers.Gemma2Config(**common, head_dim=16, sliding_window=4096)
    if arch == "phi3":
        return transformers.Phi3Config(**common)
    if arch == "gpt2":
        return transformers.GPT2Config(
            vocab_size=vocab_size,
            n_embd=64,
            n_layer=3,
            n_head=4,
            n_positions=256,
            eos_token_id=0,
            bos_token_id=0,
            pad_token_id=0,
            attn_implementation=attn_implementation,
        )
    raise ValueError(f"arch={arch!r} is not one of {ARCHITECTURES}.")


def tiny_model(
    arch: str = "llama", *, attn_implementation: str = "sdpa", seed: int = 0
) -> LoadedModel:
    """Build a tiny randomly initialised causal LM of `arch` with `tiny_tokenizer()`.

    The weights are scaled up from the default initialisation so that next-token
    distributions are far from uniform, which makes tie-breaking and thresholds meaningful.
    """
    from transformers import AutoModelForCausalLM

    tokenizer = tiny_tokenizer()
    if arch == "gemma2":
        # Gemma 2 has no sdpa path in transformers 5.x because of its attention soft-capping.
        attn_implementation = "eager"
    config = _config(arch, len(tokenizer), attn_implementation)
    generator_state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    try:
        model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
        with torch.no_grad():
            for parameter in model.parameters():
                if parameter.dim() >= 2:
                    parameter.normal_(0.0, 0.2)
    finally:
        torch.random.set_rng_state(generator_state)
    model.generation_config.pad_token_id = 0
    model.generation_config.eos_token_id = 0
    model.eval()
    return LoadedModel(model=model, tokenizer=tokenizer, name=f"tiny-{arch}")
