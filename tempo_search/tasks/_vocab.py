"""Token strings of a vocabulary, precomputed once per (tokenizer, vocab_size) and shared by tasks.

A token's string is the text it adds when appended to earlier generated text. Byte-level BPE
tokenizers (GPT-2, SmolLM2, Llama 3, Qwen2) decode a token alone to exactly that. SentencePiece
tokenizers with a Metaspace decoder drop the leading space of the first token of a sequence. For
them the strings are read after an anchor token, and the bare decodings are kept as the strings of
the first generated token (`TokenTable.start_strings`).
"""

from __future__ import annotations

import bisect
import logging
import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

import numpy as np
import torch

logger = logging.getLogger(__name__)

_DECODE_KWARGS = {"skip_special_tokens": False, "clean_up_tokenization_spaces": False}


@dataclass(eq=False)
class StringIndex:
    """Lookups over the usable token strings of one string list (see `TokenTable`)."""

    strings: list[str]  # [vocab_size]
    by_string: dict[str, np.ndarray]  # string -> token ids with that string, usable ids only
    sorted_strings: list[str]  # distinct usable strings, sorted, for prefix tests

    def has_prefix(self, prefix: str) -> bool:
        """Return whether some usable token string starts with `prefix`."""
        i = bisect.bisect_left(self.sorted_strings, prefix)
        return i < len(self.sorted_strings) and self.sorted_strings[i].startswith(prefix)


@dataclass(eq=False)
class TokenTable:
    """Decoded token strings of a vocabulary and which ids a mask may ever admit.

    Ids at or above `len(tokenizer)` (padding rows of a wider logits matrix) and special tokens are
    not usable as text, so their string is "" in `strings`. Masks never admit them, except EOS
    where a task allows the text to end.
    """

    vocab_size: int
    strings: list[str]  # [vocab_size] text the token adds after earlier text
    start_strings: list[str]  # [vocab_size] text it adds as the first generated token
    usable: np.ndarray  # [vocab_size] bool: non-special id below len(tokenizer) with non-empty text
    special: np.ndarray  # [vocab_size] bool: special tokens below len(tokenizer), EOS included
    eos_token_id: int | None
    _indexes: dict[bool, StringIndex] = field(default_factory=dict, repr=False)

    def strings_for(self, at_start: bool) -> list[str]:
        return self.start_strings if at_start else self.strings

    def index(self, at_start: bool = False) -> StringIndex:
        """Lookup index over `start_strings` (at_start) or `strings`, built on first use."""
        if at_start and self.start_strings is self.strings:
            at_start = False
        if at_start not in self._indexes:
            self._indexes[at_start] = _build_index(self.strings_for(at_start), self.usable)
        return self._indexes[at_start]

    def empty_mask(self) -> np.ndarray:
        return np.zeros(self.vocab_size, dtype=bool)

    def eos_only_mask(self) -> np.ndarray:
        mask = self.empty_mask()
        if self.eos_token_id is not None:
            mask[self.eos_token_id] = True
        return mask

    def require_eos(self, task_name: str) -> None:
        if self.eos_token_id is None:
            raise ValueError(
                f"{task_name} needs the tokenizer's eos_token_id to end the text, but it is None; "
                "set tokenizer.eos_token before calling bind()"
            )


def _build_index(strings: list[str], usable: np.ndarray) -> StringIndex:
    groups: dict[str, list[int]] = {}
    for token_id in np.flatnonzero(usable):
        groups.setdefault(strings[token_id], []).append(int(token_id))
    by_string = {text: np.asarray(ids, dtype=np.int64) for text, ids in groups.items()}
    return StringIndex(strings=strings, by_string=by_string, sorted_strings=sorted(by_string))


# Tables are shared by every task bound to the same tokenizer object and width.
_TABLE_CACHE: OrderedDict[tuple[int, int], tuple[Any, TokenTable]] = OrderedDict()
_TABLE_CACHE_SIZE = 4
_TABLE_LOCK = threading.Lock()


def token_table(tokenizer: Any, vocab_size: int) -> TokenTable:
    """Return the `TokenTable` of `tokenizer` for logits `vocab_size` wide, built once and cached."""
    if isinstance(vocab_size, bool) or not isinstance(vocab_size, int) or vocab_size <= 0:
        raise ValueError(
            f"vocab_size must be a positive int (the logits width), got {vocab_size!r}"
        )
    key = (id(tokenizer), vocab_size)
    with _TABLE_LOCK:
        cached = _TABLE_CACHE.get(key)
        # The tokenizer is kept in the entry, so its id cannot be reused while cached.
        if cached is not None and cached[0] is tokenizer:
            _TABLE_CACHE.move_to_end(key)
            return cached[1]
    table = _build_table(tokenizer, vocab_size)
    with _TABLE_LOCK:
        _TABLE_CACHE[key] = (tokenizer, table)
        while len(_TABLE_CACHE) > _TABLE_CACHE_SIZE:
            _TABLE_CACHE.popitem(last=False)
    return table


def _build_table(tokenizer: Any, vocab_size: int) -> TokenTable:
    for name in ("batch_decode", "decode", "encode"):
        if not callable(getattr(tokenizer, name, None)):
            raise TypeError(
                f"tokenizer must be a transformers tokenizer with {name}(), got "
                f"{type(tokenizer).__name__}"
            )
    num_tokens = min(len(tokenizer), vocab_size)
    if len(tokenizer) > vocab_size:
        logger.warning(
            "tokenizer has %d tokens but the logits are %d wide; ids from %d on are never allowed",
            len(tokenizer),
            vocab_size,
            vocab_size,
        )

    # 1. Bare decodings, then strings after an anchor where the bare ones lose leading spaces.
    bare = tokenizer.batch_decode([[i] for i in range(num_tokens)], **_DECODE_KWARGS)
    anchored = _drops_leading_space(tokenizer)
    strings = _anchored_strings(tokenizer, num_tokens, bare) if anchored else bare

    # 2. Special tokens: EOS and the tokenizer's control tokens are never text.
    special = np.zeros(vocab_size, dtype=bool)
    for token_id in getattr(tokenizer, "all_special_ids", []) or []:
        if 0 <= token_id < num_tokens:
            special[token_id] = True
    eos_token_id = getattr(tokenizer, "eos_token_id", None)
    if eos_token_id is not None and not 0 <= eos_token_id < vocab_size:
        raise ValueError(
            f"tokenizer.eos_token_id {eos_token_id} is outside the logits width {vocab_size}"
        )
    if eos_token_id is not None:
        special[eos_token_id] = True

    usable = np.zeros(vocab_size, dtype=bool)
    usable[:num_tokens] = [bool(text) for text in strings]
    usable &= ~special
    padding = [""] * (vocab_size - num_tokens)
    strings = [text if ok else "" for text, ok in zip(strings, usable[:num_tokens], strict=True)]
    strings = strings + padding
    start_strings = strings
    if anchored:
        start_strings = [text if ok else "" for text, ok in zip(bare, usable, strict=False)]
        start_strings = start_strings + padding
    return TokenTable(
        vocab_size=vocab_size,
        strings=strings,
        start_strings=start_strings,
        usable=usable,
        special=special,
        eos_token_id=eos_token_id,
    )


def _drops_leading_space(tokenizer: Any) -> bool:
    """Return whether decoding token by token loses text that decoding the sequence keeps."""
    ids = tokenizer.encode("a b c", add_special_tokens=False)
    joined = "".join(tokenizer.batch_decode([[i] for i in ids], **_DECODE_KWARGS))
    return joined != tokenizer.decode(ids, **_DECODE_KWARGS)


def _anchored_strings(tokenizer: Any, num_tokens: int, bare: list[str]) -> list[str]:
    anchor_ids = tokenizer.encode("a", add_special_tokens=False)
    if not anchor_ids:
        return bare
    anchor = anchor_ids[-1]
    anchor_text = tokenizer.decode([anchor], **_DECODE_KWARGS)
    pairs = tokenizer.batch_decode([[anchor, i] for i in range(num_tokens)], **_DECODE_KWARGS)
    return [
        pair[len(anchor_text) :] if pair.startswith(anchor_text) else alone
        for pair, alone in zip(pairs, bare, strict=True)
    ]


def to_tensor(mask: np.ndarray) -> torch.Tensor:
    """Copy a numpy bool mask into a fresh `[vocab_size]` bool tensor the caller may modify."""
    return torch.from_numpy(mask.copy())


K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class LruCache(Generic[K, V]):
    """A small least-recently-used map; masks and parses are cached by text with it."""

    def __init__(self, max_size: int) -> None:
        self.max_size = max_size
        self._data: OrderedDict[K, V] = OrderedDict()
        self._lock = threading.Lock()

    def get_or_compute(self, key: K, compute: Callable[[], V]) -> V:
        with self._lock:
            if key in self._data:
                self._data.move_to_end(key)
                return self._data[key]
        value = compute()
        with self._lock:
            self._data[key] = value
            while len(self._data) > self.max_size:
                self._data.popitem(last=False)
        return value

    def clear(self) -> None:
        with self._lock:
            self._data.clear()


def is_word_char(char: str) -> bool:
    """Word characters of the word constraints: letters and digits (`str.isalnum`)."""
    return char.isalnum()


def word_runs(text: str) -> list[tuple[int, int]]:
    """`(start, end)` spans of the maximal runs of word characters in `text`."""
    spans = []
    start = None
    for i, char in enumerate(text):
        if char.isalnum():
            if start is None:
                start = i
        elif start is not None:
            spans.append((start, i))
            start = None
    if start is not None:
        spans.append((start, len(text)))
    return spans


def trailing_word(text: str) -> str:
    """Return the run of word characters at the end of `text` ("" when it ends otherwise)."""
    i = len(text)
    while i > 0 and text[i - 1].isalnum():
        i -= 1
    return text[i:]


# ----------------------------------------------------------------------------------------------
# Token tries, optionally over strings whose characters are replaced by a class representative.


@dataclass(eq=False)
class TrieNode:
    """One node of a radix trie of token strings: children by edge label, and the ids ending here.

    Chains of nodes without branches or token ends are merged into one edge, so a walk tests one
    string per branch point instead of one per character.
    """

    children: dict[str, TrieNode] = field(default_factory=dict)
    token_ids: list[int] = field(default_factory=list)


def build_trie(
    strings: list[str], usable: np.ndarray, translation: dict[int, str] | None
) -> TrieNode:
    """Radix trie of the usable token strings, each passed through `str.translate` first.

    With a translation that maps every character to a representative of its class, tokens that
    differ only within classes share one path, so a walk tests each class string once.
    """
    # 1. A character trie.
    root = TrieNode()
    for token_id in np.flatnonzero(usable):
        text = strings[token_id]
        if translation is not None:
            text = text.translate(translation)
        node = root
        for char in text:
            child = node.children.get(char)
            if child is None:
                child = node.children[char] = TrieNode()
            node = child
        node.token_ids.append(int(token_id))

    # 2. Merge single-child chains into labelled edges.
    stack = [root]
    while stack:
        node = stack.pop()
        merged: dict[str, TrieNode] = {}
        for label, child in node.children.items():
            while len(child.children) == 1 and not child.token_ids:
                ((next_label, grandchild),) = child.children.items()
                label, child = label + next_label, grandchild
            merged[label] = child
            stack.append(child)
        node.children = merged
    return root


def character_classes(atoms: list[Callable[[str], bool]], characters: set[str]) -> dict[int, str]:
    """Translation table that maps each character to the first character with the same signature.

    The signature of a character is which of the membership tests in `atoms` it passes. Two
    characters with one signature are interchangeable for any test built only from those atoms.
    """
    representative_of: dict[tuple[bool, ...], str] = {}
    translation: dict[int, str] = {}
    for char in sorted(characters):
        signature = tuple(atom(char) for atom in atoms)
        representative = representative_of.setdefault(signature, char)
        if representative != char:
            translation[ord(char)] = representative
    return translation
