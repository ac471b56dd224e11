"""MCTS over whole lines: the task proposes the legal moves, the LM ranks them.

`search(..., actions="moves")` runs this search for a `MoveTask` (Game of 24, Countdown,
Blocksworld). A tree node is one legal line instead of one token. Each line is spelled once,
by the tokenizer's own encoding of the line, so the search never branches on two spellings of
the same text.

Expanding a node is a parallel-token step over the trie of its legal lines:

1. *Scoring.* The trie nodes shared by two or more lines are forwarded in one pass, with their
   parents in the same batch, so every branching point has next-token logits. The pass starts
   with the tokens of the node's own line that are not in the cache yet, since the first
   branching point reads the logits after that line. A line's prior is the product, over the
   branching points on its path, of the LM's probability of the line's token renormalised over
   the tokens the legal lines allow there: the probability that masked sampling writes this
   line. Tokens after the last branching point are forced and add nothing. With
   `prior="uniform"` every line gets `1 / num_lines` in a seeded random order, and no pass runs.
2. *Opening.* Progressive widening admits the lines whose prior passes the Bezier threshold at
   the node's visit count (at least one, at most `max_width`), and each admitted line becomes a
   child. Opening forwards nothing: a child's value comes from the simulator, and its line's
   forced tokens are forwarded only when the child is first expanded, in that scoring pass. A
   node visited more later opens its next lines the same way.

Leaves of one batch share the scoring pass. Every token is forwarded once. A line whose node
is never expanded costs only the branching points it shares with other lines, and nothing
under the uniform prior, which reads no logits.

NOTE: the cache keeps every forwarded line, because the move search has no `max_nodes`
eviction. It grows by the lines and branching points of each expanded node.

The value of a new child is `ValueWeights.combine` of the path's likelihood (the geometric mean
of its line priors), no coherence, and a reward. The reward is the verifier's when the text is
finished. Otherwise it is the mean reward of `num_rollouts` rollouts, which play random legal
lines to the end in the task's own simulator without a model forward, or the task's `progress`
without rollouts. A rollout
that solves the task ends the search with `stop_when_solved`; its lines are part of the
returned text.
"""

from __future__ import annotations

import logging
import math
import random
import time
from dataclasses import dataclass, field
from typing import Any

import torch

from tempo_search.policies.values import ValueWeights
from tempo_search.schedules import BezierSchedule
from tempo_search.tree import SearchNode, visit_distribution
from tempo_search.tree_state import ROOT

logger = logging.getLogger(__name__)

MOVE_ROLLOUTS = ("random", "none")

DEFAULT_MOVE_ROLLOUTS = 16
"""Random rollouts per new node of the move search. They run in the task's simulator, without
the model, so many are cheap; 16 was chosen by hand on 12 Game of 24 puzzles, not tuned."""

DEFAULT_MOVE_WIDENING = BezierSchedule(0.5, 0.05, 0.0, 0.0, horizon=8)
"""Widening of the move search: lines with prior >= 0.5 open at once, and every line is open
by a node's 8th visit, so PUCT weighs all legal moves early. A line costs its forced tokens
(about 14 in a Game of 24 step), and a small LM ranks arithmetic moves poorly, so the token
search's slow default (reaching 0.01 after 32 visits) starved the other moves. Chosen by hand
on 12 Game of 24 puzzles, not tuned."""

DEFAULT_MOVE_VALUE = ValueWeights(likelihood=0.1, coherence=0.0, reward=1.0)
"""Value weights of the move search. The verifier's reward decides, and the path likelihood
breaks ties and is the only part where no reward exists yet (no rollout, unfinished text)."""


class MoveNode(SearchNode):
    """A node of the move search: one legal line with its tokens and the task state it reaches.

    `token_id` is the line's last token (the node whose KV entry ends the line), `text` the
    line, `line_token_ids` all of its tokens and `token_ids()` the tokens of every line on the
    path.
    """

    __slots__ = ("exhausted", "kv_id", "line_token_ids", "state")

    def __init__(self, *, line_token_ids: list[int], state: Any, kv_id: int, **kwargs) -> None:
        super().__init__(**kwargs)
        self.line_token_ids = list(line_token_ids)
        self.state = state
        self.kv_id = kv_id
        # True when every line of this node is open and every child is finished or exhausted,
        # so selection has nothing left to learn below it and skips it.
        self.exhausted = False

    def token_ids(self) -> list[int]:
        ids: list[int] = []
        for node in self.path():
            ids.extend(getattr(node, "line_token_ids", ()))
        return ids


@dataclass
class _Lines:
    """The legal lines of an expanded node, best prior first, and how many are open."""

    lines: list[str]
    priors: list[float]
    opened: int = 0


@dataclass
class _Trie:
    """Trie of one node's legal lines: per trie node its token, parent and line count."""

    tokens: list[int] = field(default_factory=list)
    parents: list[int] = field(default_factory=list)  # -1: the expanded node itself
    counts: list[int] = field(default_factory=list)
    children: list[dict[int, int]] = field(default_factory=list)
    root_children: dict[int, int] = field(default_factory=dict)
    ends: dict[str, int] = field(default_factory=dict)  # line -> its last trie node
    kv: dict[int, int] = field(default_factory=dict)  # trie node -> TreeState node id

    def add(self, line: str, token_ids: list[int]) -> None:
        branches = self.root_children
        parent = -1
        for token in token_ids:
            index = branches.get(token)
            if index is None:
                index = len(self.tokens)
                self.tokens.append(token)
                self.parents.append(parent)
                self.counts.append(0)
                self.children.append({})
                branches[token] = index
            self.counts[index] += 1
            parent = index
            branches = self.children[index]
        self.ends[line] = parent

    def path(self, index: int) -> list[int]:
        nodes = []
        while index >= 0:
            nodes.append(index)
            index = self.parents[index]
        nodes.reverse()
        return nodes


@dataclass
class _Leaf:
    node: MoveNode
    path: list[MoveNode]
    score: bool  # the node's lines are not listed yet
    open_lines: list[str] = field(default_factory=list)


class MoveSearch:
    """State of one move search; built and run by `tempo_search.search(actions="moves")`."""

    def __init__(
        self, model, prompt_ids, config, task, engine, rollout: str, num_rollouts: int = 1
    ) -> None:
        self.model = model
        self.tokenizer = model.tokenizer
        self.prompt_ids = list(prompt_ids)
        self.config = config
        self.task = task
        self.engine = engine
        self.rollout = rollout
        self.num_rollouts = num_rollouts
        self.rng = random.Random(config.seed)
        self.start = time.perf_counter()
        self.model_seconds = 0.0
        self.simulations = 0
        self.stopped_by = "simulations"
        self.interrupted = False
        self.solution: str | None = None
        self.line_ids: dict[str, list[int]] = {}
        self.lines: dict[int, _Lines] = {}
        self.tries: dict[int, _Trie] = {}
        # Log-probabilities the LM gives each node's first-token candidates, from the logits of
        # the node's last token: {node_id: {token: log_prob}}.
        self.first_log_probs: dict[int, dict[int, float]] = {}
        self.next_id = 0
        self.root = MoveNode(
            node_id=ROOT, depth=0, line_token_ids=[], state=task.initial_state(), kv_id=ROOT
        )
        self._store_first(self.root, engine.prompt_logits)

    # ------------------------------------------------------------------ driver

    def run(self, on_simulation):
        from tempo_search.search import SearchResult

        try:
            self._simulate(on_simulation)
        except KeyboardInterrupt:
            self.interrupted = True
            self.stopped_by = "interrupted"
            logger.warning("search interrupted; returning the best result so far")
        text = self.solution if self.solution is not None else self._best_path_text()
        ids = self._encode_text(text)
        return SearchResult(
            text=text,
            token_ids=ids,
            completions=self._completions(),
            visit_distribution=visit_distribution(self.root),
            tree=self.root,
            stats=self._stats(),
            task_report=self.task.report(text),
            interrupted=self.interrupted,
            solved=self.task.is_satisfied(text),
        )

    def _simulate(self, on_simulation) -> None:
        config = self.config
        while self.simulations < config.num_simulations:
            if config.time_limit is not None and (
                time.perf_counter() - self.start >= config.time_limit
            ):
                self.stopped_by = "time_limit"
                return
            leaves = self._select_batch(
                min(config.batch_size, config.num_simulations - self.simulations)
            )
            if not leaves:
                self.stopped_by = "exhausted"
                return
            self.simulations += len(leaves)
            self._expand_and_evaluate(leaves)
            if self.solution is not None and config.stop_when_solved:
                self.stopped_by = "solved"
                return
            if on_simulation is not None:
                on_simulation(self.simulations)

    # ------------------------------------------------------------------ select

    def _select_batch(self, count: int) -> list[_Leaf]:
        from tempo_search.search import select_batch

        return select_batch(
            self._select_one, count, lambda leaf: leaf.score or bool(leaf.open_lines)
        )

    def _select_one(self, claimed: set[int]) -> _Leaf | None:
        # A descent that ends in a node with nothing left to try marks it exhausted, and the
        # selection starts again from the root. Each restart marks one more node, so it ends.
        while not self.root.exhausted:
            leaf = self._descend(claimed)
            if leaf is not _RESTART:
                return leaf
        return None

    def _descend(self, claimed: set[int]):
        from tempo_search.search import _puct_choice

        node = self.root
        path = [node]
        max_depth = self.config.max_depth
        while True:
            if node.is_terminal or (max_depth is not None and node.depth >= max_depth):
                if node is self.root or node.is_terminal:
                    node.exhausted = True
                    return _RESTART
                # A node at the depth limit is evaluated once more, then left alone.
                node.exhausted = True
                return _Leaf(node, path, score=False)
            listed = self.lines.get(node.node_id)
            if listed is None:
                if node.node_id in claimed:
                    return None
                return _Leaf(node, path, score=True)
            live = [c for c in node.children if not c.exhausted]
            admitted = self._admitted(node, listed.priors)
            limit = min(len(listed.lines), self.config.max_width)
            if not live and listed.opened < limit:
                # Widening never leaves a node without a live child while lines remain.
                admitted = max(admitted, listed.opened + 1)
            if admitted > listed.opened and node.node_id not in claimed:
                return _Leaf(node, path, False, listed.lines[listed.opened : admitted])
            if not live:
                if listed.opened >= limit:
                    node.exhausted = True
                    return _RESTART
                return None
            node = _puct_choice(node, live, self.config.c_puct, self.config.virtual_loss)
            path.append(node)

    def _admitted(self, node: MoveNode, priors: list[float]) -> int:
        if not priors:
            return 0
        schedule = self.config.widening_for(node is self.root)
        threshold = schedule.at_visits(node.visit_count)
        count = sum(1 for p in priors if p >= threshold)
        return max(1, min(count, self.config.max_width, len(priors)))

    # ------------------------------------------------------------------ expand

    def _expand_and_evaluate(self, leaves: list[_Leaf]) -> None:
        for leaf in leaves:
            if not (leaf.score or leaf.open_lines):
                # A finished node: its cached value is backed up again.
                self._backup(leaf.path, leaf.node.value or 0.0)

        scoring = [leaf for leaf in leaves if leaf.score]
        if scoring:
            self._score(scoring)
            for leaf in scoring:
                listed = self.lines[leaf.node.node_id]
                admitted = self._admitted(leaf.node, listed.priors)
                leaf.open_lines = listed.lines[:admitted]
                if not listed.lines:
                    # No legal line: a finished text (the task ends here).
                    self._finish(leaf.node)
                    self._backup(leaf.path, leaf.node.value or 0.0)

        opening = [leaf for leaf in leaves if leaf.open_lines]
        if not opening:
            return
        children = self._open(opening)
        for leaf, child in children:
            child.value = self._evaluate(child)
            self._backup([*leaf.path, child], child.value)

    def _score(self, leaves: list[_Leaf]) -> None:
        """List each leaf's legal lines with their priors (one forward for the LM prior)."""
        parents: list[int] = []
        tokens: list[int] = []
        pending: list[tuple[_Trie, int]] = []
        forwarded_lines: list[MoveNode] = []  # leaves whose own line this pass forwards
        for leaf in leaves:
            node = leaf.node
            moves = self.task.moves(node.state)
            trie = _Trie()
            for line in moves:
                trie.add(line, self._line_token_ids(line))
            self.tries[node.node_id] = trie
            if self.config.prior == "uniform":
                continue
            if node.kv_id == _NOT_FORWARDED:
                # The node's own line is forwarded first, in the same pass.
                self._append_line(node, parents, tokens)
                forwarded_lines.append(node)
            # Shared trie nodes (two or more lines pass) hold the branching logits.
            for index in range(len(trie.tokens)):
                if trie.counts[index] >= 2:
                    parent = trie.parents[index]
                    trie.kv[index] = self.engine.next_node_id + len(tokens)
                    parents.append(node.kv_id if parent < 0 else trie.kv[parent])
                    tokens.append(trie.tokens[index])
                    pending.append((trie, index))

        log_probs: dict[tuple[int, int], dict[int, float]] = {}
        if tokens:
            # Row r of the pass is the node with id `first + r`.
            first = self.engine.next_node_id
            logits = self._forward(parents, tokens)
            for node in forwarded_lines:
                node.slot = self.engine.slot(node.kv_id)
                self._store_first(node, logits[node.kv_id - first])
            # Only the tokens the trie allows next are read from each row.
            for trie, index in pending:
                row = trie.kv[index] - first
                allowed = list(trie.children[index])
                if len(allowed) >= 2:
                    values = torch.log_softmax(logits[row].float(), dim=-1)[allowed].tolist()
                    log_probs[(id(trie), index)] = dict(zip(allowed, values, strict=True))

        for leaf in leaves:
            node = leaf.node
            trie = self.tries[node.node_id]
            lines = list(trie.ends)
            if self.config.prior == "uniform":
                self.rng.shuffle(lines)
                priors = [1.0 / len(lines)] * len(lines) if lines else []
            else:
                scores = [self._line_log_prior(node, trie, line, log_probs) for line in lines]
                priors = _normalise(scores, self.config.temperature)
                order = sorted(range(len(lines)), key=lambda i: (-priors[i], lines[i]))
                lines = [lines[i] for i in order]
                priors = [priors[i] for i in order]
            self.lines[node.node_id] = _Lines(lines, priors)
            node.is_expanded = True

    def _line_log_prior(self, node, trie: _Trie, line: str, log_probs) -> float:
        """Sum, over the branching points on `line`'s trie path, of the renormalised log-prob."""
        total = 0.0
        previous = -1
        for index in trie.path(trie.ends[line]):
            siblings = trie.root_children if previous < 0 else trie.children[previous]
            if len(siblings) >= 2:
                if previous < 0:
                    table = self.first_log_probs.get(node.node_id, {})
                    scores = {t: table.get(t, -math.inf) for t in siblings}
                else:
                    scores = log_probs[(id(trie), previous)]
                total += scores[trie.tokens[index]] - _log_sum_exp(list(scores.values()))
            previous = index
        return total

    def _append_line(self, node: MoveNode, parents: list[int], tokens: list[int]) -> None:
        """Add the tokens of `node`'s line that are not in the cache yet to a pass.

        They are the trie nodes after the last branching point that its parent's scoring pass
        forwarded. `node.kv_id` becomes the id its last token will have.
        """
        parent = node.parent
        assert isinstance(parent, MoveNode)
        trie = self.tries[parent.node_id]
        for index in trie.path(trie.ends[node.text]):
            if index in trie.kv:
                continue
            above = trie.parents[index]
            trie.kv[index] = self.engine.next_node_id + len(tokens)
            parents.append(parent.kv_id if above < 0 else trie.kv[above])
            tokens.append(trie.tokens[index])
        node.kv_id = trie.kv[trie.ends[node.text]]

    def _open(self, leaves: list[_Leaf]) -> list[tuple[_Leaf, MoveNode]]:
        """Make one child per line to open. No forward: a child's line is forwarded when the
        child itself is first expanded (`_score`), since only its children's priors need it."""
        children: list[tuple[_Leaf, MoveNode]] = []
        for leaf in leaves:
            node = leaf.node
            listed = self.lines[node.node_id]
            moves = self.task.moves(node.state)
            for line in leaf.open_lines:
                prior = listed.priors[listed.lines.index(line)]
                line_ids = self._line_token_ids(line)
                child = MoveNode(
                    node_id=self.next_id,
                    token_id=line_ids[-1],
                    text=line,
                    prior=prior,
                    log_prob=math.log(prior) if prior > 0 else -math.inf,
                    parent=node,
                    line_token_ids=line_ids,
                    state=moves[line],
                    kv_id=_NOT_FORWARDED,
                )
                self.next_id += 1
                if not self.task.moves(child.state):
                    self._finish(child)
                children.append((leaf, child))
            listed.opened += len(leaf.open_lines)
        return children

    def _store_first(self, node: MoveNode, logits: torch.Tensor) -> None:
        """Keep the LM's log-probs of the first tokens of `node`'s legal lines."""
        if self.config.prior == "uniform":
            return
        firsts = {self._line_token_ids(line)[0] for line in self.task.moves(node.state)}
        if not firsts:
            return
        ordered = sorted(firsts)
        values = torch.log_softmax(logits.float(), dim=-1)[ordered].tolist()
        self.first_log_probs[node.node_id] = dict(zip(ordered, values, strict=True))

    def _forward(self, parents: list[int], tokens: list[int]) -> torch.Tensor:
        began = time.perf_counter()
        output = self.engine.expand(parents, tokens)
        self.model_seconds += time.perf_counter() - began
        return output.logits

    # ------------------------------------------------------------------ evaluate

    def _finish(self, node: MoveNode) -> None:
        node.is_terminal = True
        node.exhausted = True
        text = node.path_text()
        node.reward = float(self.task.reward(text))
        node.value = self.config.value.combine(self._likelihood(node), None, node.reward)
        if self.solution is None and self.task.is_satisfied(text):
            self.solution = text

    def _evaluate(self, child: MoveNode) -> float:
        if child.is_terminal:
            return child.value
        text = child.path_text()
        reward: float | None
        if self.rollout == "random":
            rewards = []
            for _ in range(self.num_rollouts):
                ending = self._random_rollout(child.state)
                rewards.append(float(self.task.reward(text + ending)))
                if self.solution is None and self.task.is_satisfied(text + ending):
                    self.solution = text + ending
            reward = sum(rewards) / len(rewards)
        else:
            progress = self.task.progress(text)
            reward = None if progress is None else float(progress)
        return self.config.value.combine(self._likelihood(child), None, reward)

    def _random_rollout(self, state) -> str:
        """Play uniformly random legal lines from `state` until the task ends; return them."""
        written = []
        for _ in range(_MAX_ROLLOUT_LINES):
            moves = self.task.moves(state)
            if not moves:
                break
            line = self.rng.choice(sorted(moves))
            written.append(line)
            state = moves[line]
        return "".join(written)

    def _likelihood(self, node: MoveNode) -> float:
        lines = [n for n in node.path() if n.node_id != ROOT]
        if not lines:
            return 1.0
        return math.exp(sum(n.log_prob for n in lines) / len(lines))

    def _backup(self, path: list[MoveNode], value: float) -> None:
        for node in path:
            node.visit_count += 1
            node.value_sum += value

    # ------------------------------------------------------------------ result

    def _line_token_ids(self, line: str) -> list[int]:
        ids = self.line_ids.get(line)
        if ids is None:
            ids = self.tokenizer.encode(line, add_special_tokens=False)
            decoded = self.tokenizer.decode(
                ids, skip_special_tokens=True, clean_up_tokenization_spaces=False
            )
            if not ids or decoded != line:
                raise ValueError(
                    f"the tokenizer spells the line {line!r} as {decoded!r}; actions='moves' "
                    "needs a tokenizer that encodes a line on its own without changing it (a "
                    "byte-level BPE such as GPT-2's or SmolLM2's); pass actions='tokens'."
                )
            self.line_ids[line] = ids
        return ids

    def _encode_text(self, text: str) -> list[int]:
        # The text is a sequence of legal lines; each keeps the spelling the search used.
        parse = self.task.parse(text)
        ids = [t for line in parse.lines for t in self._line_token_ids(line)]
        if parse.rest:
            ids.extend(self.tokenizer.encode(parse.rest, add_special_tokens=False))
        return ids

    def _best_path_text(self) -> str:
        node = self.root
        while True:
            children = [c for c in node.children if not c.pruned]
            if not children:
                return node.path_text()
            node = max(children, key=lambda c: (c.visit_count, c.q_value, -c.node_id))

    def _completions(self):
        from tempo_search.search import Completion
        from tempo_search.tree import iter_nodes

        seen: dict[str, Completion] = {}
        for node in iter_nodes(self.root):
            if node.node_id == ROOT or node.children:
                continue
            text = node.path_text()
            score = node.q_value if node.visit_count else (node.value or 0.0)
            completion = Completion(
                text, score, node.visit_count, node.token_ids(), bool(node.is_terminal)
            )
            best = seen.get(text)
            if best is None or (completion.score, completion.visits) > (best.score, best.visits):
                seen[text] = completion
        ranked = sorted(seen.values(), key=lambda c: (-c.score, -c.visits, c.text))
        return ranked[: self.config.num_completions]

    def _stats(self):
        from tempo_search.search import SearchStats

        engine = self.engine
        tree_tokens = engine.tokens_forwarded - len(self.prompt_ids)
        stats = SearchStats(
            simulations=self.simulations,
            nodes=engine.num_nodes,
            forward_passes=engine.forward_passes,
            tokens_forwarded=engine.tokens_forwarded,
            rollout_tokens=0,
            tokens_forwarded_per_node=tree_tokens / max(1, engine.num_nodes),
            seconds=time.perf_counter() - self.start,
            model_seconds=self.model_seconds,
            peak_cache_length=engine.peak_cache_length,
            prompt_tokens=len(self.prompt_ids),
            evicted_nodes=0,
            committed_tokens=0,
            pruned_nodes=0,
            stopped_by=self.stopped_by,
            forward_sizes=dict(sorted(engine.forward_sizes.items())),
        )
        logger.info(
            "move search: %d simulations, %d lines, %d forward passes, %.2f s (%s)",
            stats.simulations,
            self.next_id,
            stats.forward_passes,
            stats.seconds,
            stats.stopped_by,
        )
        return stats


_NOT_FORWARDED = -2
"""`MoveNode.kv_id` of a node whose line is not in the cache yet (`ROOT` is -1)."""

_RESTART = object()
"""Returned by `_descend` after it marks a node exhausted: select again from the root."""

_MAX_ROLLOUT_LINES = 1000
"""Bound on a random rollout's length; every shipped task ends far sooner (Blocksworld stops
at `max_actions`, the number puzzles after one line per number)."""


def _log_sum_exp(values: list[float]) -> float:
    top = max(values)
    if top == -math.inf:
        return -math.inf
    return top + math.log(sum(math.exp(v - top) for v in values))


def _normalise(log_scores: list[float], temperature: float) -> list[float]:
    """Softmax of `log_scores / temperature`; uniform when every score is -inf."""
    if not log_scores:
        return []
    scaled = [s / temperature for s in log_scores]
    top = max(scaled)
    if top == -math.inf:
        return [1.0 / len(scaled)] * len(scaled)
    weights = [math.exp(s - top) for s in scaled]
    total = sum(weights)
    return [w / total for w in weights]
