"""Constraints on free text: keywords, banned words, a regular expression, length limits.

Words here are maximal runs of letters and digits (`str.isalnum`), compared case-insensitively with
`str.lower`. Apostrophes, hyphens and underscores separate words, so "cat's" and "cat-like" contain
the word "cat" while "cats" and "catalog" do not. `Length` counts words differently, as
whitespace-separated chunks (like `wc -w`).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import numpy as np
import regex
import torch

from tempo_search.tasks._vocab import (
    LruCache,
    TokenTable,
    TrieNode,
    build_trie,
    character_classes,
    to_tensor,
    token_table,
    trailing_word,
    word_runs,
)
from tempo_search.tasks.base import AllOf, Constraint, sentence_ended

logger = logging.getLogger(__name__)

__all__ = [
    "BannedWords",
    "Keywords",
    "Length",
    "Regex",
    "constraints_task",
    "inflected_forms",
]

_MASK_CACHE_SIZE = 4096
_VOWELS = frozenset("aeiou")


def _words_of(text: str) -> set[str]:
    return {text[start:end].lower() for start, end in word_runs(text)}


def _word_list(words: str | Iterable[str], parameter: str) -> tuple[str, ...]:
    """Validate a word list: a str is split on commas and whitespace; duplicates are dropped."""
    if isinstance(words, str):
        items = [w for w in regex.split(r"[\s,]+", words) if w]
    elif isinstance(words, Iterable):
        items = list(words)
    else:
        raise TypeError(
            f"{parameter} must be a list of words such as ['cat', 'dog'], got "
            f"{type(words).__name__}"
        )
    if not items:
        raise ValueError(f"{parameter} is empty; pass at least one word, such as ['cat']")
    result: list[str] = []
    for item in items:
        if not isinstance(item, str):
            raise TypeError(f"{parameter} must contain str words, got {item!r}")
        word = item.strip().lower()
        if not word or not word.isalnum():
            raise ValueError(
                f"{parameter} entry {item!r} is not one word of letters or digits; split phrases "
                "into words, or use Regex for phrases and punctuation"
            )
        if word not in result:
            result.append(word)
    return tuple(result)


def inflected_forms(word: str) -> frozenset[str]:
    """Simple English inflections of `word` (lower case), the word itself included.

    Rule: plural or third person `-s`, `-es`, consonant + `y` -> `-ies`; past `-ed`, `-d` after
    a final `e`, consonant + `y` -> `-ied`; `-ing`, with a final `e` dropped (`make` -> `making`)
    and `ie` -> `ying`; comparative or agent `-er`, `-r` after a final `e`, consonant + `y` ->
    `-ier`. A final consonant-vowel-consonant (not w, x or y) is also doubled before `-ed`, `-ing`
    and `-er` (`run` -> `running`). Words with digits have no inflections. The rule over-generates
    ("sheeps") rather than misses, which is harmless for coverage.
    """
    word = word.lower()
    forms = {word}
    if not word.isalpha():
        return frozenset(forms)
    forms.update({word + "s", word + "es", word + "ed", word + "ing", word + "er"})
    if word.endswith("e"):
        forms.update({word + "d", word + "r"})
        if not word.endswith("ee") and len(word) > 2:
            forms.add(word[:-1] + "ing")
        if word.endswith("ie"):
            forms.add(word[:-2] + "ying")
    if len(word) > 1 and word.endswith("y") and word[-2] not in _VOWELS:
        stem = word[:-1]
        forms.update({stem + "ies", stem + "ied", stem + "ier"})
    if (
        len(word) >= 3
        and word[-1] not in _VOWELS
        and word[-1] not in "wxy"
        and word[-2] in _VOWELS
        and word[-3] not in _VOWELS
    ):
        forms.update({word + word[-1] + suffix for suffix in ("ed", "ing", "er")})
    return frozenset(forms)


class _RunIndex:
    """Token ids grouped by the first word run of their string (lower case), for `Keywords`
    guides.

    `ids` maps `(spaced, bounded, run)` to an id array. `spaced` is True when non-word
    characters come before the run (" ride", '"ride') rather than the run starting the string.
    `bounded` is True when a non-word character follows the run inside the token, so the word is
    complete. Otherwise the word may go on in the next token.
    """

    def __init__(self, strings: list[str], usable: np.ndarray) -> None:
        groups: dict[tuple[bool, bool, str], list[int]] = {}
        for token_id in np.flatnonzero(usable):
            text = strings[token_id]
            runs = word_runs(text)
            if not runs:
                continue
            start, end = runs[0]
            key = (start > 0, end < len(text), text[start:end].lower())
            groups.setdefault(key, []).append(int(token_id))
        self.ids = {key: np.asarray(ids, dtype=np.int64) for key, ids in groups.items()}

    def spelling(self, word: str, *, spaced: bool) -> list[np.ndarray]:
        """Id arrays of the tokens that spell a prefix of `word`, or all of it with a non-word
        character after it, as the start of the next token."""
        arrays = []
        for end in range(1, len(word) + 1):
            for bounded in (False, True) if end == len(word) else (False,):
                ids = self.ids.get((spaced, bounded, word[:end]))
                if ids is not None:
                    arrays.append(ids)
        return arrays


class Keywords(Constraint):
    """Each listed word appears as a whole word (case-insensitive).

    With `inflections=True` the forms of `inflected_forms` count too. There is no mask: coverage
    is a soft goal, so reward and progress are the fraction of words covered. The constraint is met
    once all are covered.

    Guide (`guide_tokens`): the tokens that start a missing word at a word boundary or go on
    with one that the text ends in, however the tokenizer splits it. The search mixes the LM's
    prior over these tokens into its prior, so that a missing word gets proposed where the LM
    alone would rarely open it.
    """

    def __init__(self, words: str | Iterable[str], *, inflections: bool = False) -> None:
        self.words = _word_list(words, "keywords")
        self.inflections = bool(inflections)
        self._forms = [
            inflected_forms(word) if self.inflections else frozenset({word}) for word in self.words
        ]
        self._table: TokenTable | None = None
        self._run_indexes: dict[bool, _RunIndex] = {}

    def bind(self, tokenizer: Any, vocab_size: int) -> None:
        self._table = token_table(tokenizer, vocab_size)
        self._run_indexes = {False: _RunIndex(self._table.strings, self._table.usable)}
        if self._table.start_strings is not self._table.strings:
            self._run_indexes[True] = _RunIndex(self._table.start_strings, self._table.usable)

    def guide_tokens(self, token_ids: Sequence[int], text: str) -> torch.Tensor | None:
        table = self._table
        if table is None:
            raise RuntimeError("Keywords.guide_tokens() needs bind(tokenizer, vocab_size) first")
        missing = sorted(
            {
                form
                for forms, hit in zip(self._forms, self.covered(text), strict=True)
                if not hit
                for form in forms
            }
        )
        if not missing:
            return None
        index = self._run_indexes.get(len(token_ids) == 0, self._run_indexes[False])
        pending = trailing_word(text).lower()
        arrays: list[np.ndarray] = []
        for form in missing:
            # A new word: after a space-like token start, or glued on at a word boundary.
            arrays.extend(index.spelling(form, spaced=True))
            if not pending:
                arrays.extend(index.spelling(form, spaced=False))
            # The rest of a word that the text ends in.
            elif form.startswith(pending) and len(form) > len(pending):
                arrays.extend(index.spelling(form[len(pending) :], spaced=False))
        if not arrays:
            return None
        mask = table.empty_mask()
        mask[np.concatenate(arrays)] = True
        return to_tensor(mask)

    def __repr__(self) -> str:
        return f"Keywords({list(self.words)!r}, inflections={self.inflections})"

    def covered(self, text: str) -> list[bool]:
        """`[len(words)]` whether each keyword appears in `text`."""
        present = _words_of(text)
        return [not forms.isdisjoint(present) for forms in self._forms]

    def allowed_tokens(self, token_ids: Sequence[int], text: str) -> torch.Tensor | None:
        return None

    def holds(self, text: str) -> bool:
        return all(self.covered(text))

    def reward(self, text: str) -> float:
        covered = self.covered(text)
        return sum(covered) / len(covered)

    def progress(self, text: str) -> float | None:
        return self.reward(text)

    def names(self) -> list[str]:
        return [f"keyword:{word}" for word in self.words]

    def report(self, text: str) -> dict[str, Any]:
        return {"constraints": dict(zip(self.names(), self.covered(text), strict=True))}

    def conflict(self, other: Constraint) -> str | None:
        if isinstance(other, BannedWords):
            for word in self.words:
                if word in other.words:
                    return (
                        f"keyword {word!r} is also a banned word; remove it from the keywords "
                        "or from the banned words"
                    )
        return None


class _BannedIndex:
    """Per-token facts for `BannedWords` over one string list (`[vocab_size]` arrays)."""

    def __init__(self, table: TokenTable, strings: list[str], banned: tuple[str, ...]) -> None:
        banned_set = set(banned)
        remainders = {word[k:] for word in banned for k in range(1, len(word))}
        size = table.vocab_size
        self.allowed_base = table.usable.copy()  # minus tokens that contain a whole banned word
        self.completes_at_start = np.zeros(size, dtype=bool)  # begins with "<banned><non-word>"
        self.starts_with_non_word = np.zeros(size, dtype=bool)
        by_remainder: dict[str, list[int]] = {}

        for token_id in np.flatnonzero(table.usable):
            text = strings[token_id]
            runs = word_runs(text)
            lead_end = runs[0][1] if runs and runs[0][0] == 0 else 0
            lead = text[:lead_end].lower()
            bounded = lead_end < len(text)  # a non-word character follows the leading run
            if lead_end == 0:
                self.starts_with_non_word[token_id] = True
            elif bounded:
                if lead in banned_set:
                    self.completes_at_start[token_id] = True
                if lead in remainders:
                    by_remainder.setdefault(lead, []).append(int(token_id))
            for start, end in runs:
                if start > 0 and end < len(text) and text[start:end].lower() in banned_set:
                    self.allowed_base[token_id] = False

        self.by_remainder = {r: np.asarray(ids, dtype=np.int64) for r, ids in by_remainder.items()}


class BannedWords(Constraint):
    """None of the listed words is ever produced as a whole word (case-insensitive).

    The mask forbids every token that would complete a banned word, however the tokens spell it:
    one token (" cat."), pieces ("c" + "at" + " "), a leading-space variant or capitals. A word is
    complete once a non-word character or the end of text follows it, so

    - after "...ca", tokens "t " and "t." are masked but "t" and "tal" are allowed;
    - after "...cat", tokens that begin with a non-word character, EOS and the other special tokens
      are masked, while "alog" (making "catalog") is allowed;
    - tokens that contain a whole banned word inside them (" cat ") are always masked.

    NOTE: a multi-byte character split over byte tokens is judged by its decoded pieces, so a
    token that finishes such a character and also ends the word can slip through; ASCII words
    are exact.
    """

    def __init__(self, words: str | Iterable[str]) -> None:
        self.words = _word_list(words, "banned words")
        self._prefixes: dict[str, list[str]] = {}
        for word in self.words:
            for k in range(1, len(word) + 1):
                self._prefixes.setdefault(word[:k], []).append(word)
        self._table: TokenTable | None = None
        self._indexes: dict[bool, _BannedIndex] = {}

    def __repr__(self) -> str:
        return f"BannedWords({list(self.words)!r})"

    def bind(self, tokenizer: Any, vocab_size: int) -> None:
        self._table = token_table(tokenizer, vocab_size)
        self._indexes = {False: _BannedIndex(self._table, self._table.strings, self.words)}
        if self._table.start_strings is not self._table.strings:
            self._indexes[True] = _BannedIndex(self._table, self._table.start_strings, self.words)

    def allowed_tokens(self, token_ids: Sequence[int], text: str) -> torch.Tensor | None:
        table = self._table
        if table is None:
            raise RuntimeError(
                "BannedWords.allowed_tokens() needs bind(tokenizer, vocab_size) first"
            )
        index = self._indexes.get(len(token_ids) == 0, self._indexes[False])

        # 1. Tokens that hold a whole banned word inside them are never allowed.
        mask = index.allowed_base.copy()
        eos_allowed = True

        # 2. The word the text ends in may be completed by the next token.
        pending = trailing_word(text).lower()
        if not pending:
            mask &= ~index.completes_at_start
        for word in self._prefixes.get(pending, []):
            remainder = word[len(pending) :]
            if remainder:
                ids = index.by_remainder.get(remainder)
                if ids is not None:
                    mask[ids] = False
            else:
                mask &= ~index.starts_with_non_word
                eos_allowed = False

        if table.eos_token_id is not None:
            mask[table.eos_token_id] = eos_allowed
        return to_tensor(mask)

    def present(self, text: str) -> list[bool]:
        """`[len(words)]` whether each banned word occurs in `text` as a whole word."""
        words = _words_of(text)
        return [word in words for word in self.words]

    def holds(self, text: str) -> bool:
        return not any(self.present(text))

    def reward(self, text: str) -> float:
        present = self.present(text)
        return 1.0 - sum(present) / len(present)

    def names(self) -> list[str]:
        return [f"banned:{word}" for word in self.words]

    def report(self, text: str) -> dict[str, Any]:
        absent = [not p for p in self.present(text)]
        return {"constraints": dict(zip(self.names(), absent, strict=True))}


# ----------------------------------------------------------------------------------------------
# Regex


def _pattern_atoms(pattern: str, flags: int) -> list[Callable[[str], bool]] | None:
    """Single-character tests that together decide how `pattern` treats any character.

    Returns None when the pattern uses something the standard-library parser does not read the
    way the `regex` package does (POSIX classes, `\\p{...}`, fuzzy matching, backreferences);
    the caller then tests every distinct token string.
    """
    try:
        import re._parser as sre_parse
    except ImportError:  # Python 3.10 names the module without the underscore.
        try:
            import sre_parse  # type: ignore[no-redef]
        except ImportError:
            return None
    if "[:" in pattern or flags & ~(regex.I | regex.M | regex.S | regex.X | regex.U | regex.A):
        return None
    try:
        tree = sre_parse.parse(pattern, flags & ~regex.U)
    except Exception:  # any syntax the standard library rejects: fall back to plain testing
        return None

    sources: set[str] = {r"\n", r"\w", r"\s", r"\d"}
    scoped_flags: list[bool] = []
    category_source = {"DIGIT": r"\d", "SPACE": r"\s", "WORD": r"\w", "LINEBREAK": r"\n"}

    def visit(items: Any) -> bool:
        for op, av in items:
            name = str(op)
            if name in ("LITERAL", "NOT_LITERAL"):
                sources.add(regex.escape(chr(av)))
            elif name == "IN":
                for item_op, item_av in av:
                    item = str(item_op)
                    if item == "LITERAL":
                        sources.add(regex.escape(chr(item_av)))
                    elif item == "RANGE":
                        low, high = (regex.escape(chr(v)) for v in item_av)
                        sources.add(f"[{low}-{high}]")
                    elif item == "CATEGORY":
                        key = next((k for k in category_source if k in str(item_av)), None)
                        if key is None:
                            return False
                        sources.add(category_source[key])
                    elif item != "NEGATE":
                        return False
            elif name in ("ANY", "AT"):
                continue
            elif name == "SUBPATTERN":
                if av[1] or av[2]:
                    scoped_flags.append(True)
                if not visit(av[-1]):
                    return False
            elif name in ("MAX_REPEAT", "MIN_REPEAT", "POSSESSIVE_REPEAT"):
                if not visit(av[2]):
                    return False
            elif name in ("ASSERT", "ASSERT_NOT"):
                if not visit(av[1]):
                    return False
            elif name == "ATOMIC_GROUP":
                if not visit(av):
                    return False
            elif name == "BRANCH":
                if not all(visit(branch) for branch in av[1]):
                    return False
            elif name == "GROUPREF_EXISTS":
                if not all(visit(branch) for branch in av[1:] if branch is not None):
                    return False
            else:  # backreferences and anything unknown
                return False
        return True

    if not visit(tree):
        return None

    # Flags that change how one character is tested. Flags scoped to a group, such as (?i:...),
    # apply to a part of the pattern only, so both settings are tested. Extra tests only refine
    # the classes.
    character_flags = regex.I | regex.A
    flag_sets = {tree.state.flags & character_flags}
    if scoped_flags:
        flag_sets |= {f ^ regex.I for f in flag_sets}
        flag_sets |= {f ^ regex.A for f in flag_sets}
    atoms: list[Callable[[str], bool]] = []
    for source in sorted(sources):
        for atom_flags in sorted(flag_sets):
            compiled = regex.compile(source, atom_flags)
            atoms.append(lambda char, c=compiled: c.fullmatch(char) is not None)
    return atoms


class Regex(Constraint):
    """The generated text fully matches `pattern` (the `regex` package's syntax).

    The mask admits a token when the text with it is still a prefix of a match
    (`regex.fullmatch(pattern, text, partial=True)`), and EOS only when the text matches in full.
    For speed, each character of the token strings is replaced by a representative of its class
    (the characters that pass the same character tests of the pattern), and the class strings are
    walked as a trie. One regex call then covers every token with the same class string, and a
    failed prefix prunes all tokens that extend it.

    NOTE: a pattern whose syntax the standard-library parser does not read (`\\p{...}`, POSIX
    classes, backreferences) gets no classes, so every distinct token string is tested. Measured
    on the 49,152-token SmolLM2 vocabulary (2-core machine under load): 5 to 75 ms per call, where
    most patterns with classes take under 2 ms.

    Raises:
        ValueError: when the pattern does not compile; the message names the pattern and the
            `regex` package's error.
    """

    decides_end = True

    def __init__(self, pattern: str, *, flags: int = 0) -> None:
        if not isinstance(pattern, str):
            raise TypeError(f"pattern must be a str, got {type(pattern).__name__}")
        try:
            self.compiled = regex.compile(pattern, flags)
        except regex.error as error:
            raise ValueError(
                f"regex pattern {pattern!r} is invalid: {error}; pass a pattern that the regex "
                "package compiles"
            ) from error
        self.pattern = pattern
        self.flags = flags
        self._table: TokenTable | None = None
        self._tries: dict[bool, TrieNode] = {}
        self._mask_cache: LruCache[tuple[str, bool], np.ndarray] = LruCache(_MASK_CACHE_SIZE)

    def __repr__(self) -> str:
        return f"Regex({self.pattern!r})"

    def bind(self, tokenizer: Any, vocab_size: int) -> None:
        table = token_table(tokenizer, vocab_size)
        table.require_eos("Regex")
        self._table = table
        self._mask_cache.clear()

        # 1. Character classes that the pattern cannot tell apart.
        atoms = _pattern_atoms(self.pattern, self.flags)
        translation = None
        if atoms is not None:
            characters = set("".join(table.strings)) | set("".join(table.start_strings))
            translation = character_classes(atoms, characters)
        else:
            logger.info("Regex %r: no character classes, testing each token string", self.pattern)

        # 2. A trie over the class strings of the tokens.
        self._tries = {False: build_trie(table.strings, table.usable, translation)}
        if table.start_strings is not table.strings:
            self._tries[True] = build_trie(table.start_strings, table.usable, translation)

    def allowed_tokens(self, token_ids: Sequence[int], text: str) -> torch.Tensor | None:
        if self._table is None:
            raise RuntimeError("Regex.allowed_tokens() needs bind(tokenizer, vocab_size) first")
        at_start = len(token_ids) == 0 and True in self._tries
        mask = self._mask_cache.get_or_compute(
            (text, at_start), lambda: self._compute_mask(text, at_start)
        )
        return to_tensor(mask)

    def _compute_mask(self, text: str, at_start: bool) -> np.ndarray:
        table = self._table
        assert table is not None
        mask = table.empty_mask()
        match = self.compiled.fullmatch(text, partial=True)
        if match is None:
            return mask
        if not match.partial:
            mask[table.eos_token_id] = True

        allowed: list[int] = []
        stack: list[tuple[TrieNode, str]] = [(self._tries[at_start], text)]
        while stack:
            node, prefix = stack.pop()
            for label, child in node.children.items():
                candidate = prefix + label
                if self.compiled.fullmatch(candidate, partial=True) is None:
                    continue
                allowed.extend(child.token_ids)
                if child.children:
                    stack.append((child, candidate))
        mask[allowed] = True
        return mask

    def holds(self, text: str) -> bool:
        return self.compiled.fullmatch(text) is not None

    def reward(self, text: str) -> float:
        return 1.0 if self.holds(text) else 0.0

    def progress(self, text: str) -> float | None:
        return 1.0 if self.compiled.fullmatch(text, partial=True) is not None else 0.0

    def names(self) -> list[str]:
        return [f"regex:{self.pattern}"]

    def report(self, text: str) -> dict[str, Any]:
        return {"constraints": {self.names()[0]: self.holds(text)}}


# ----------------------------------------------------------------------------------------------
# Length


def _check_limit(name: str, value: int | None) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int or None, got {value!r}")
    if value < 0:
        raise ValueError(f"{name} must be >= 0, got {value}; pass a non-negative count or None")
    return value


class Length(Constraint):
    """Limits on the number of words (whitespace-separated chunks) and of generated tokens.

    Mask: EOS is masked until `min_words` and `min_tokens` are reached. Tokens that would make
    more than `max_words` words are masked. Once the text has `max_words` words and its sentence
    has ended, or has `max_tokens` tokens, only EOS is allowed.

    Reward: the product over the given limits of `min(1, count / min)` and `min(1, max / count)`.

    NOTE: `reward`, `holds` and `report` see only text, so they count tokens by re-encoding it with
    the bound tokenizer; a text generated in a non-canonical tokenization can count one or two
    tokens differently from the mask, which counts the generated ids.

    Raises:
        ValueError: for a negative limit, a maximum of 0, a minimum above its maximum, or no
            limit at all.
    """

    def __init__(
        self,
        min_words: int | None = None,
        max_words: int | None = None,
        min_tokens: int | None = None,
        max_tokens: int | None = None,
    ) -> None:
        self.min_words = _check_limit("min_words", min_words)
        self.max_words = _check_limit("max_words", max_words)
        self.min_tokens = _check_limit("min_tokens", min_tokens)
        self.max_tokens = _check_limit("max_tokens", max_tokens)
        if all(v is None for v in (min_words, max_words, min_tokens, max_tokens)):
            raise ValueError(
                "Length() got no limit; pass at least one of min_words, max_words, min_tokens, "
                "max_tokens"
            )
        for unit in ("words", "tokens"):
            low, high = getattr(self, f"min_{unit}"), getattr(self, f"max_{unit}")
            if high == 0:
                raise ValueError(f"max_{unit}=0 admits only empty text; pass max_{unit} >= 1")
            if low is not None and high is not None and low > high:
                raise ValueError(
                    f"min_{unit}={low} is greater than max_{unit}={high}; pass "
                    f"min_{unit} <= max_{unit}"
                )
        self._table: TokenTable | None = None
        self._tokenizer: Any = None
        self._word_arrays: dict[bool, tuple[np.ndarray, np.ndarray]] = {}

    def __repr__(self) -> str:
        limits = {
            n: getattr(self, n) for n in ("min_words", "max_words", "min_tokens", "max_tokens")
        }
        given = ", ".join(f"{n}={v}" for n, v in limits.items() if v is not None)
        return f"Length({given})"

    def bind(self, tokenizer: Any, vocab_size: int) -> None:
        table = token_table(tokenizer, vocab_size)
        table.require_eos("Length")
        self._table = table
        self._tokenizer = tokenizer
        self._word_arrays = {False: self._words_per_token(table.strings)}
        if table.start_strings is not table.strings:
            self._word_arrays[True] = self._words_per_token(table.start_strings)

    @staticmethod
    def _words_per_token(strings: list[str]) -> tuple[np.ndarray, np.ndarray]:
        """`[vocab_size]` word counts of the token strings, and whether each starts with a
        non-space character (and so continues a word that the text ends in)."""
        words = np.fromiter((len(s.split()) for s in strings), dtype=np.int64, count=len(strings))
        glued = np.fromiter(
            (bool(s) and not s[0].isspace() for s in strings), dtype=bool, count=len(strings)
        )
        return words, glued

    def count_tokens(self, text: str) -> int | None:
        if self._tokenizer is None:
            return None
        return len(self._tokenizer.encode(text, add_special_tokens=False))

    def allowed_tokens(self, token_ids: Sequence[int], text: str) -> torch.Tensor | None:
        table = self._table
        if table is None:
            raise RuntimeError("Length.allowed_tokens() needs bind(tokenizer, vocab_size) first")
        num_tokens = len(token_ids)
        num_words = len(text.split())

        # 1. A limit reached: the text ends.
        if self.max_tokens is not None and num_tokens >= self.max_tokens:
            return to_tensor(table.eos_only_mask())
        if self.max_words is not None and num_words >= self.max_words and sentence_ended(text):
            return to_tensor(table.eos_only_mask())

        # 2. Tokens that keep the word count within max_words.
        mask = table.usable.copy()
        if self.max_words is not None:
            words, glued = self._word_arrays.get(num_tokens == 0, self._word_arrays[False])
            continues_word = bool(text) and not text[-1].isspace()
            new_count = num_words + words - (glued & continues_word)
            mask &= new_count <= self.max_words

        # 3. EOS once the minimums are met.
        eos_allowed = (self.min_words is None or num_words >= self.min_words) and (
            self.min_tokens is None or num_tokens >= self.min_tokens
        )
        mask[table.eos_token_id] = eos_allowed
        return to_tensor(mask)

    def checks(self, text: str) -> dict[str, bool]:
        num_words = len(text.split())
        num_tokens = self.count_tokens(text)
        result = {}
        if self.min_words is not None:
            result[f"min_words:{self.min_words}"] = num_words >= self.min_words
        if self.max_words is not None:
            result[f"max_words:{self.max_words}"] = num_words <= self.max_words
        if self.min_tokens is not None and num_tokens is not None:
            result[f"min_tokens:{self.min_tokens}"] = num_tokens >= self.min_tokens
        if self.max_tokens is not None and num_tokens is not None:
            result[f"max_tokens:{self.max_tokens}"] = num_tokens <= self.max_tokens
        return result

    def holds(self, text: str) -> bool:
        return all(self.checks(text).values())

    def must_end(self, text: str) -> bool:
        if self.max_tokens is None:
            return False
        num_tokens = self.count_tokens(text)
        return num_tokens is not None and num_tokens >= self.max_tokens

    def reward(self, text: str) -> float:
        score = 1.0
        counts = {"words": len(text.split()), "tokens": self.count_tokens(text)}
        for unit, count in counts.items():
            low, high = getattr(self, f"min_{unit}"), getattr(self, f"max_{unit}")
            if count is None:
                continue
            if low:
                score *= min(1.0, count / low)
            if high is not None and count > high:
                score *= high / count
        return score

    def progress(self, text: str) -> float | None:
        if not self.min_words:
            return None
        return min(1.0, len(text.split()) / self.min_words)

    def names(self) -> list[str]:
        limits = ("min_words", "max_words", "min_tokens", "max_tokens")
        return [
            f"{name}:{getattr(self, name)}" for name in limits if getattr(self, name) is not None
        ]

    def report(self, text: str) -> dict[str, Any]:
        return {"constraints": self.checks(text)}

    def conflict(self, other: Constraint) -> str | None:
        if not isinstance(other, Length):
            return None
        for unit in ("words", "tokens"):
            low, high = getattr(self, f"min_{unit}"), getattr(other, f"max_{unit}")
            if low is not None and high is not None and low > high:
                return (
                    f"min_{unit}={low} of one Length is greater than max_{unit}={high} of "
                    f"another; pass min_{unit} <= max_{unit}"
                )
        return None


def constraints_task(
    *,
    keywords: str | Iterable[str] | None = None,
    banned: str | Iterable[str] | None = None,
    regex: str | None = None,
    min_words: int | None = None,
    max_words: int | None = None,
    min_tokens: int | None = None,
    max_tokens: int | None = None,
    inflections: bool = False,
) -> AllOf:
    """Build the `AllOf` of the constraints given (the CLI's entry point for free text).

    Raises:
        ValueError: when no constraint is given, or the constraints contradict each other (a
            keyword that is also banned, min_words > max_words, a negative limit, an empty
            word list).
    """
    tasks: list[Constraint] = []
    if keywords is not None:
        tasks.append(Keywords(keywords, inflections=inflections))
    if banned is not None:
        tasks.append(BannedWords(banned))
    if regex is not None:
        tasks.append(Regex(regex))
    if any(v is not None for v in (min_words, max_words, min_tokens, max_tokens)):
        tasks.append(Length(min_words, max_words, min_tokens, max_tokens))
    if not tasks:
        raise ValueError(
            "constraints_task() got no constraint; pass keywords, banned, regex or a length limit"
        )
    return AllOf(*tasks)
