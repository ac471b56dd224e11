"""The task contract the search calls, and the combinators and base classes built on it.

A search calls `Task.bind(tokenizer, vocab_size)` once, then at every node `allowed_tokens` for
the mask of admissible next tokens, `is_finished` / `is_satisfied` to recognise terminal text, and
`reward` / `progress` for the value of a node. `token_ids` and `text` always describe the generated
part only, the prompt excluded.

- `Constraint`: a requirement on free text (keywords, banned words, a regex, length limits).
- `AllOf`: all member tasks at once (mask = AND, reward = mean).
- `MoveTask`: a puzzle answered line by line, each line chosen from the legal moves of the state
  reached so far; its mask admits exactly the tokens that keep the text a prefix of a legal
  continuation.
"""

from __future__ import annotations

import abc
import logging
from collections.abc import Hashable, Sequence
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

import numpy as np
import torch

from tempo_search.tasks._vocab import LruCache, TokenTable, to_tensor, token_table

logger = logging.getLogger(__name__)

__all__ = ["AllOf", "Constraint", "MoveParse", "MoveTask", "Task", "Verdict"]

Prompt = str | list[dict[str, str]] | None

# Masks and parses are cached by text; a search revisits texts when it selects through a node.
_CACHE_SIZE = 4096

_SENTENCE_END = ".!?"
_CLOSERS = "\"')]}”’»"


def sentence_ended(text: str) -> bool:
    """Return whether `text` ends a sentence: `.`, `!` or `?`, then optional closing quotes or brackets
    and whitespace, after at least one letter or digit."""
    stripped = text.rstrip().rstrip(_CLOSERS)
    return bool(stripped) and stripped[-1] in _SENTENCE_END and any(c.isalnum() for c in stripped)


class Task(abc.ABC):
    """The goal of a search. The search calls bind() once, then the other methods per node.

    `prompt` is text or a list of chat messages (`{"role": ..., "content": ...}`); None means the
    search uses the user's prompt.
    """

    prompt: Prompt = None

    def bind(self, tokenizer: Any, vocab_size: int) -> None:
        """Precompute token strings for `tokenizer` with logits `vocab_size` wide
        (which may exceed `len(tokenizer)`). Tasks without a mask need nothing."""
        return

    @abc.abstractmethod
    def allowed_tokens(self, token_ids: Sequence[int], text: str) -> torch.Tensor | None:
        """`[vocab_size]` bool mask of the tokens allowed next after the generated `token_ids`
        (prompt excluded) whose decoded text is `text`; None means no restriction."""

    def guide_tokens(self, token_ids: Sequence[int], text: str) -> torch.Tensor | None:
        """`[vocab_size]` bool mask of the tokens that advance an unmet goal of the task after
        the generated `token_ids` (such as the start of a missing keyword), or None when the task
        has no such tokens here. The search mixes the LM's prior restricted to them into the
        prior (`search(guide=...)`); a guide never restricts what is allowed."""
        return None

    @abc.abstractmethod
    def reward(self, text: str) -> float:
        """Reward in [0, 1] of finished text."""

    def progress(self, text: str) -> float | None:
        """Partial progress in [0, 1] of unfinished text, or None when the task gives none."""
        return None

    @abc.abstractmethod
    def is_finished(self, text: str) -> bool:
        """Return whether the text is complete for this task."""

    def is_satisfied(self, text: str) -> bool:
        """Return whether the text is finished and meets every hard requirement, so the search
        can stop."""
        return self.is_finished(text) and self.reward(text) >= 1.0

    @abc.abstractmethod
    def report(self, text: str) -> dict[str, Any]:
        """JSON-ready summary of how the text does on this task."""


class Constraint(Task):
    """A requirement on free text that combines with others in `AllOf`.

    Free text is finished when every requirement is met and the text may end. It may end when a
    member requires the end now (`must_end`, such as a token limit reached), or when a member
    decides where the text ends (`decides_end`, such as a regex that has to match in full).
    Otherwise the last sentence must have ended (`.`, `!` or `?`).
    """

    decides_end: bool = False

    @abc.abstractmethod
    def holds(self, text: str) -> bool:
        """Return whether the requirement is met if the text ends here."""

    @abc.abstractmethod
    def names(self) -> list[str]:
        """Names of the checks in `report()["constraints"]`."""

    def must_end(self, text: str) -> bool:
        """Return whether the text has to end here (only EOS is allowed next)."""
        return False

    def conflict(self, other: Constraint) -> str | None:
        """Why this constraint and `other` cannot hold together, or None."""
        return None

    def is_finished(self, text: str) -> bool:
        return self.holds(text) and can_end([self], text)

    def is_satisfied(self, text: str) -> bool:
        return self.is_finished(text)


def can_end(constraints: Sequence[Constraint], text: str) -> bool:
    if any(constraint.must_end(text) for constraint in constraints):
        return True
    if any(constraint.decides_end for constraint in constraints):
        return True
    return sentence_ended(text)


class AllOf(Task):
    """All member tasks at once.

    Mask: the AND of the members' masks (None when no member restricts). The AND can be empty
    when members disagree (a puzzle line that spells a banned word), so the search must treat
    an all-False mask as a dead end. Reward: the mean of the
    members' rewards. Progress: the mean of the progress values that members give. Finished: every
    puzzle member is finished and every constraint holds; with only constraints, the text must
    also be allowed to end (see `Constraint`). Report: the members' reports merged, with the
    `"constraints"` maps joined.

    Raises:
        ValueError: when no task is given, when two members contradict each other (a keyword
            that is also banned, a minimum length above another member's maximum), or when two
            members bring different prompts.
    """

    def __init__(self, *tasks: Task) -> None:
        if not tasks:
            raise ValueError("AllOf() needs at least one task, got none; pass AllOf(task, ...)")
        flat: list[Task] = []
        for task in tasks:
            if isinstance(task, AllOf):
                flat.extend(task.tasks)
            elif isinstance(task, Task):
                flat.append(task)
            else:
                raise TypeError(
                    f"AllOf() takes Task instances, got {type(task).__name__} ({task!r})"
                )
        self.tasks: tuple[Task, ...] = tuple(flat)
        self.constraints = [t for t in self.tasks if isinstance(t, Constraint)]
        self.puzzles = [t for t in self.tasks if not isinstance(t, Constraint)]

        # Contradictions are checked in both orders because each constraint checks only its own
        # kind against the other.
        for i, first in enumerate(self.constraints):
            for second in self.constraints[i + 1 :]:
                reason = first.conflict(second) or second.conflict(first)
                if reason is not None:
                    raise ValueError(reason)

        prompts = []
        for task in self.tasks:
            if task.prompt is not None and task.prompt not in prompts:
                prompts.append(task.prompt)
        if len(prompts) > 1:
            raise ValueError(
                f"AllOf() members bring {len(prompts)} different prompts; give a prompt to one "
                "member only"
            )
        self.prompt = prompts[0] if prompts else None

    def __repr__(self) -> str:
        return f"AllOf({', '.join(repr(t) for t in self.tasks)})"

    def bind(self, tokenizer: Any, vocab_size: int) -> None:
        for task in self.tasks:
            task.bind(tokenizer, vocab_size)

    def allowed_tokens(self, token_ids: Sequence[int], text: str) -> torch.Tensor | None:
        # The AND runs in numpy: torch splits ops on tensors this size over its intra-op threads,
        # which measured 28 ms per op instead of 8 us on a 2-core machine under load.
        combined: np.ndarray | None = None
        for task in self.tasks:
            mask = task.allowed_tokens(token_ids, text)
            if mask is None:
                continue
            array = mask.detach().cpu().numpy()
            if combined is None:
                combined = array.copy()
            else:
                np.logical_and(combined, array, out=combined)
        return None if combined is None else torch.from_numpy(combined)

    def guide_tokens(self, token_ids: Sequence[int], text: str) -> torch.Tensor | None:
        """Return the OR of the members' guides (None when no member has one)."""
        combined: np.ndarray | None = None
        for task in self.tasks:
            guide = task.guide_tokens(token_ids, text)
            if guide is None:
                continue
            array = guide.detach().cpu().numpy()
            if combined is None:
                combined = array.copy()
            else:
                np.logical_or(combined, array, out=combined)
        return None if combined is None else torch.from_numpy(combined)

    def reward(self, text: str) -> float:
        return sum(task.reward(text) for task in self.tasks) / len(self.tasks)

    def progress(self, text: str) -> float | None:
        values = [task.progress(text) for task in self.tasks]
        given = [value for value in values if value is not None]
        return sum(given) / len(given) if given else None

    def is_finished(self, text: str) -> bool:
        if not all(constraint.holds(text) for constraint in self.constraints):
            return False
        if self.puzzles:
            return all(task.is_finished(text) for task in self.puzzles)
        return can_end(self.constraints, text)

    def is_satisfied(self, text: str) -> bool:
        return self.is_finished(text) and all(task.is_satisfied(text) for task in self.puzzles)

    def report(self, text: str) -> dict[str, Any]:
        merged: dict[str, Any] = {}
        checks: dict[str, bool] = {}
        for task in self.tasks:
            part = dict(task.report(text))
            for name, value in part.pop("constraints", {}).items():
                unique, n = name, 2
                while unique in checks:
                    unique, n = f"{name}#{n}", n + 1
                checks[unique] = value
            merged.update(part)
        if checks:
            merged["constraints"] = checks
        merged["satisfied"] = self.is_satisfied(text)
        return merged


@dataclass(frozen=True)
class Verdict:
    """Result of checking a puzzle answer exactly.

    Attributes:
        correct: the answer reaches the goal under the puzzle's rules.
        answer: the answer expression read from the text, or None when none was found.
        value: exact value of the answer expression, or None when it did not evaluate.
        legal: every step line in the text is a legal move (True when there are no step lines).
        error: why the answer is not correct or a step not legal; None when both are fine.
    """

    correct: bool
    answer: str | None
    value: Fraction | None
    legal: bool
    error: str | None


@dataclass(frozen=True)
class MoveParse:
    """A text read as moves: the lines consumed, the state reached and the unfinished rest.

    `valid` is False when the text leaves the legal moves; `rest` then starts where it does.
    """

    state: Hashable
    lines: tuple[str, ...]
    rest: str
    valid: bool


class MoveTask(Task):
    """A puzzle whose answer is written line by line, each line a legal move of the state so far.

    Subclasses give `initial_state()` and `legal_moves(state)`. Each move is a line of text with
    the state it leads to. A line ends with a newline, except a line after which no move follows
    (such as a final answer line), which may end without one. Lines of one state must be distinct,
    and no line may be a prefix of another, so a text reads as moves in exactly one way. When a
    state has no moves, the text is finished and only EOS may follow.

    NOTE: the mask admits a token when the text with it is a prefix of a legal line; it does not
    check that the rest of the line can be spelled by the vocabulary. Byte-level vocabularies
    (and SentencePiece with byte fallback) contain every character, so this holds for them.
    """

    def __init__(self) -> None:
        self._table: TokenTable | None = None
        self._moves_cache: LruCache[Hashable, dict[str, Hashable]] = LruCache(_CACHE_SIZE)
        self._parse_cache: LruCache[str, MoveParse] = LruCache(_CACHE_SIZE)
        self._mask_cache: LruCache[tuple[str, bool], np.ndarray] = LruCache(_CACHE_SIZE)
        self._warned_invalid = False

    @abc.abstractmethod
    def initial_state(self) -> Hashable:
        """Return the state before any line is written."""

    @abc.abstractmethod
    def legal_moves(self, state: Hashable) -> list[tuple[str, Hashable]]:
        """Legal next lines in `state`, each with the state it leads to; [] when the text ends."""

    def moves(self, state: Hashable) -> dict[str, Hashable]:
        """Return `legal_moves(state)` as a map from line to next state.

        A repeated line keeps its first state. Repeats happen when two equal numbers with
        different histories print the same line."""

        def compute() -> dict[str, Hashable]:
            lines: dict[str, Hashable] = {}
            for line, next_state in self.legal_moves(state):
                lines.setdefault(line, next_state)
            return lines

        return self._moves_cache.get_or_compute(state, compute)

    def parse(self, text: str) -> MoveParse:
        """Read `text` as a sequence of legal lines plus an unfinished rest."""
        return self._parse_cache.get_or_compute(text, lambda: self._parse(text))

    def _parse(self, text: str) -> MoveParse:
        state = self.initial_state()
        lines: list[str] = []
        position = 0
        while True:
            moves = self.moves(state)
            rest = text[position:]
            if not rest:
                return MoveParse(state, tuple(lines), "", True)

            # A newline-terminated line is found by its end; a last line by its whole text.
            newline = rest.find("\n")
            line = rest[: newline + 1] if newline >= 0 else None
            if line is None or line not in moves:
                line = next(
                    (m for m in moves if not m.endswith("\n") and rest.startswith(m)),
                    None,
                )
            if line is not None:
                lines.append(line)
                position += len(line)
                state = moves[line]
                continue

            valid = any(move.startswith(rest) for move in moves)
            return MoveParse(state, tuple(lines), rest, valid)

    def bind(self, tokenizer: Any, vocab_size: int) -> None:
        table = token_table(tokenizer, vocab_size)
        table.require_eos(type(self).__name__)
        table.index(at_start=False)
        table.index(at_start=True)
        self._table = table
        self._mask_cache.clear()

    def _require_table(self) -> TokenTable:
        if self._table is None:
            raise RuntimeError(
                f"{type(self).__name__}.allowed_tokens() needs the vocabulary; call "
                "bind(tokenizer, vocab_size) first"
            )
        return self._table

    def allowed_tokens(self, token_ids: Sequence[int], text: str) -> torch.Tensor | None:
        table = self._require_table()
        at_start = len(token_ids) == 0
        mask = self._mask_cache.get_or_compute(
            (text, at_start), lambda: self._compute_mask(table, text, at_start)
        )
        return to_tensor(mask)

    def _compute_mask(self, table: TokenTable, text: str, at_start: bool) -> np.ndarray:
        parse = self.parse(text)
        if not parse.valid:
            if not self._warned_invalid:
                logger.warning(
                    "%s: text %r leaves the legal moves at %r; only EOS is allowed after it",
                    type(self).__name__,
                    text[-200:],
                    parse.rest[:50],
                )
                self._warned_invalid = True
            return table.eos_only_mask()
        if not parse.rest and not self.moves(parse.state):
            return table.eos_only_mask()

        index = table.index(at_start)
        allowed = self._allowed_strings(index, parse)
        mask = table.empty_mask()
        if allowed:
            mask[np.concatenate([index.by_string[s] for s in allowed])] = True
        return mask

    def _allowed_strings(self, index: Any, parse: MoveParse) -> set[str]:
        """Token strings that are prefixes of a legal continuation of `parse`.

        Walks the legal lines from the current state, extending the candidate token text one
        character at a time while some token string still starts with it. A candidate that spans
        a whole line continues into the moves of the next state.
        """
        allowed: set[str] = set()
        is_prefix: dict[str, bool] = {}
        stack: list[tuple[Hashable, str, str]] = [(parse.state, "", parse.rest)]
        while stack:
            state, piece_before, written = stack.pop()
            for line, next_state in self.moves(state).items():
                if not line.startswith(written):
                    continue
                piece = piece_before
                spans_line = True
                for char in line[len(written) :]:
                    piece += char
                    known = is_prefix.get(piece)
                    if known is None:
                        known = is_prefix[piece] = index.has_prefix(piece)
                    if not known:
                        spans_line = False
                        break
                    if piece in index.by_string:
                        allowed.add(piece)
                if spans_line and piece != piece_before:
                    stack.append((next_state, piece, ""))
        return allowed

    def is_finished(self, text: str) -> bool:
        parse = self.parse(text)
        return parse.valid and not parse.rest and not self.moves(parse.state)

    def solution_lines(self) -> list[str] | None:
        """Lines of one solved text in this task's format, found by depth-first search over the
        legal moves, or None when there is none. Subclasses prune with `state_can_succeed`."""
        path: list[str] = []
        failed: set[Hashable] = set()

        def search(state: Hashable) -> bool:
            moves = self.moves(state)
            if not moves:
                return self.state_is_success(state)
            if state in failed or not self.state_can_succeed(state):
                return False
            for line, next_state in moves.items():
                path.append(line)
                if search(next_state):
                    return True
                path.pop()
            failed.add(state)
            return False

        return list(path) if search(self.initial_state()) else None

    def solution_text(self) -> str | None:
        """Return one solved text in this task's format (the joined `solution_lines`), or None."""
        lines = self.solution_lines()
        return None if lines is None else "".join(lines)

    def state_is_success(self, state: Hashable) -> bool:
        """Return whether a state without moves is a solved end; subclasses override this."""
        return False

    def state_can_succeed(self, state: Hashable) -> bool:
        """Return whether a solved end may still be reachable from `state` (True if unknown)."""
        return True
