"""Monte Carlo tree search over tokens, one parallel-token step per expansion.

The loop is the field's standard one: select leaves by PUCT with the LM prior (several per
iteration, spread by a virtual loss), expand them in one forward pass of the shared tree state
(every admitted child of every selected leaf), evaluate the new children (path likelihood,
task reward, optional rollout that is rewound afterwards), and back the values up.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import torch

from tempo_search.coherence import (
    PruneConfig,
    aggregate_attention,
    keep_weights,
    layer_weights,
    member_scores,
    prune_decision,
    relative_scores,
)
from tempo_search.models import LoadedModel, Prompt, load_model
from tempo_search.policies.priors import prior_from_logits, top_candidates
from tempo_search.policies.selection import DEFAULT_C_PUCT, SELECTION_RULES, select_child
from tempo_search.policies.values import ValueWeights, likelihood_value
from tempo_search.rollouts import RolloutConfig, run_rollouts
from tempo_search.schedules import DEFAULT_WIDENING_SCHEDULE, BezierSchedule, Schedule
from tempo_search.tree import SearchNode, visit_distribution
from tempo_search.tree_state import ROOT, TreeState

logger = logging.getLogger(__name__)

COMMIT_MODES = ("once", "step")
BACKUP_MODES = ("mean", "max")
PRIORS = ("lm", "uniform")
ACTIONS = ("tokens", "moves")
DEFAULT_GUIDE = 0.2
"""Default `guide`: a fifth of the prior mass of a node goes to the tokens that the task's guide
marks (the start of a missing keyword), shared in proportion to the LM's probabilities. Chosen
by hand in exploratory runs (not recorded) on keyword sets 1 to 30 of `benchmarks/keywords.py`
at 60 simulations. There 0.5 covered every word of sets 1 to 10 but put words at awkward places
(mean perplexity 2.79 against 2.05 with 0.2), and 0.1 covered fewer sets."""
MOVE_MAX_WIDTH = 512
"""Default `max_width` of the move search: above the legal lines of any node of the shipped
puzzles (a Game of 24 start has at most 12 ordered pairs times 4 operations), so every line can
be opened."""


@dataclass(frozen=True)
class SearchConfig:
    """Hyperparameters of `search`; see `search` for each field.

    Where the defaults come from:

    - `c_puct` 1.25 is the AlphaZero pseudocode's value (Silver et al., 2018).
    - `num_simulations` 200, `batch_size` 4 and `max_width` 8 are the settings of the project's
      MCTS benchmark (`docs/benchmarks.md`), chosen by hand and not tuned.
    - The widening schedule is documented at `DEFAULT_WIDENING_SCHEDULE`.
    - A virtual loss of 1 counts each in-flight selection as one visit with value 0.
    - Temperature 1 and top-p 1 leave the LM's probabilities as they are.
    """

    num_simulations: int = 200
    c_puct: float = DEFAULT_C_PUCT
    selection: str = "puct"
    widening: Schedule = DEFAULT_WIDENING_SCHEDULE
    root_widening: Schedule | None = None
    max_width: int = 8
    batch_size: int = 4
    rollout: RolloutConfig = field(default_factory=RolloutConfig)
    value: ValueWeights = field(default_factory=ValueWeights)
    max_depth: int | None = None
    max_new_tokens: int = 32
    commit: str = "once"
    backup: str = "mean"
    time_limit: float | None = None
    max_nodes: int | None = None
    temperature: float = 1.0
    top_p: float = 1.0
    virtual_loss: float = 1.0
    num_completions: int = 5
    prior: str = "lm"
    guide: float = DEFAULT_GUIDE
    stop_when_solved: bool = True
    seed: int = 0
    coherence: PruneConfig | None = None
    prune_children: bool = False
    actions: str = "tokens"

    def __post_init__(self) -> None:
        for name in ("c_puct", "temperature", "top_p", "virtual_loss", "guide"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise TypeError(f"{name}={value!r} must be a number, got {type(value).__name__}.")
        _check_int("num_simulations", self.num_simulations, 1, "such as 200")
        if not isinstance(self.c_puct, (int, float)) or not self.c_puct >= 0:
            raise ValueError(
                f"c_puct={self.c_puct!r} must be >= 0; 1.25 (the AlphaZero value) is the default."
            )
        if self.selection not in SELECTION_RULES:
            raise ValueError(
                f"selection={self.selection!r} is not supported; pass one of "
                f"{sorted(SELECTION_RULES)}."
            )
        if not callable(getattr(self.widening, "at_visits", None)):
            raise TypeError(
                f"widening must be a schedule such as BezierSchedule(1.0, 0.25, 0.05, 0.01), "
                f"got {self.widening!r}."
            )
        if self.root_widening is not None and not callable(
            getattr(self.root_widening, "at_visits", None)
        ):
            raise TypeError(
                f"root_widening must be a schedule such as BezierSchedule(1.0, 0.25, 0.05, "
                f"0.002), or None for the widening schedule, got {self.root_widening!r}."
            )
        _check_int("max_width", self.max_width, 1, "such as 8")
        _check_int("batch_size", self.batch_size, 1, "such as 4")
        _check_int("max_new_tokens", self.max_new_tokens, 1, "such as 32")
        if self.max_depth is not None:
            _check_int("max_depth", self.max_depth, 1, "or None for max_new_tokens")
        if self.commit not in COMMIT_MODES:
            raise ValueError(f"commit={self.commit!r} is not supported; pass 'once' or 'step'.")
        if self.backup not in BACKUP_MODES:
            raise ValueError(f"backup={self.backup!r} is not supported; pass 'mean' or 'max'.")
        if self.backup == "max" and self.selection != "puct":
            raise ValueError(
                f"backup='max' works with selection='puct' only, got selection="
                f"{self.selection!r}; pass selection='puct' or backup='mean'."
            )
        if self.time_limit is not None and not (
            isinstance(self.time_limit, (int, float)) and self.time_limit > 0
        ):
            raise ValueError(
                f"time_limit={self.time_limit!r} must be a number of seconds above 0, or None."
            )
        if self.max_nodes is not None:
            _check_int("max_nodes", self.max_nodes, 1, "or None for no limit")
        if not self.temperature > 0:
            raise ValueError(f"temperature={self.temperature!r} must be above 0, such as 1.0.")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"top_p={self.top_p!r} must be in (0, 1], such as 1.0.")
        if not self.virtual_loss >= 0:
            raise ValueError(f"virtual_loss={self.virtual_loss!r} must be >= 0, such as 1.0.")
        _check_int("num_completions", self.num_completions, 1, "such as 5")
        if self.prior not in PRIORS:
            raise ValueError(
                f"prior={self.prior!r} is not supported; pass 'lm' (the model's probabilities) "
                "or 'uniform' (equal priors over the allowed tokens, to measure what the LM adds)."
            )
        if not 0 <= self.guide < 1:
            raise ValueError(
                f"guide={self.guide!r} must be in [0, 1): the share of the prior given to the "
                "task's guide tokens; pass 0 to turn the guide off or 0.2 (the default)."
            )
        if self.coherence is not None and not isinstance(self.coherence, PruneConfig):
            raise TypeError(
                f"coherence={self.coherence!r} is not a PruneConfig; pass PruneConfig() for the "
                "defaults or None."
            )
        if not isinstance(self.prune_children, bool):
            raise TypeError(f"prune_children={self.prune_children!r} must be True or False.")
        if self.prune_children and self.coherence is None:
            raise ValueError(
                "prune_children=True needs the attention settings; pass coherence=PruneConfig()."
            )
        if self.actions not in ACTIONS:
            raise ValueError(
                f"actions={self.actions!r} is not supported; pass 'tokens' (a node per token) or "
                "'moves' (a node per legal line of a puzzle task)."
            )
        if self.uses_coherence and self.value.likelihood <= 0:
            raise ValueError(
                f"value={self.value!r} gives likelihood no weight, but with coherence a new "
                "node's value can have no other part; pass ValueWeights(likelihood=1.0, ...)."
            )

    def widening_for(self, at_root: bool) -> Schedule:
        """Return the widening schedule of a node: `root_widening` at the root when it is
        set, else `widening`."""
        if at_root and self.root_widening is not None:
            return self.root_widening
        return self.widening

    @property
    def uses_coherence(self) -> bool:
        """Whether expansions capture attention: a coherence value or pruning is enabled."""
        return self.coherence is not None and (self.value.coherence > 0 or self.prune_children)


def _check_int(name: str, value: Any, minimum: int, example: str) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name}={value!r} must be an integer of at least {minimum}, {example}.")


@dataclass(frozen=True)
class Completion:
    """A distinct completion found by the search: its `text`, `score` (mean value) and
    `visits`, with `token_ids` and whether it `finished` (end-of-sequence or task done)."""

    text: str
    score: float
    visits: int
    token_ids: list[int]
    finished: bool


@dataclass(frozen=True)
class SearchStats:
    """Cost and size of a search.

    Attributes:
        simulations: leaves selected and expanded (or evaluated again when finished). A leaf
            that opens k children backs up k values, so visit counts grow faster.
        nodes: tree nodes forwarded (each exactly once).
        forward_passes: model forwards, prefill and rollouts included.
        tokens_forwarded: tokens sent through the model, prompt and rollouts included.
        rollout_tokens: tokens forwarded by rollouts (then rewound).
        tokens_forwarded_per_node: tree tokens forwarded per tree node; 1.0 means no token
            was forwarded twice (prompt and rollouts excluded).
        seconds: wall time of the search.
        model_seconds: wall time inside model forwards.
        peak_cache_length: largest KV cache length, prompt included.
        prompt_tokens: tokens of the prompt.
        evicted_nodes: nodes dropped to stay under `max_nodes`.
        pruned_nodes: children pruned for low coherence (`prune_children`); the descendants
            that leave the cache with them are not counted.
        committed_tokens: tokens committed with `commit="step"`.
        reused_rollouts: new nodes that took the rest of their parent's rollout, because its
            first token was theirs, instead of running a rollout (no forward).
        forward_sizes: forwards after the prefill, by the number of tokens each sent through
            the model, `{tokens: forwards}`. A tree forward sends the new children and rollout
            steps side by side, so its size is the rows a batched forward would have.
        stopped_by: "simulations", "time_limit", "max_nodes", "exhausted", "finished",
            "solved" (a task was satisfied) or "interrupted".
    """

    simulations: int
    nodes: int
    forward_passes: int
    tokens_forwarded: int
    rollout_tokens: int
    tokens_forwarded_per_node: float
    seconds: float
    model_seconds: float
    peak_cache_length: int
    prompt_tokens: int
    evicted_nodes: int
    committed_tokens: int
    pruned_nodes: int
    stopped_by: str
    reused_rollouts: int = 0
    forward_sizes: dict[int, int] = field(default_factory=dict)


@dataclass(frozen=True)
class SearchResult:
    """Output of `search`.

    Attributes:
        text: the chosen continuation.
        token_ids: its token ids.
        completions: the top distinct completions, best first.
        visit_distribution: the root's children with visit counts and shares.
        tree: the search tree's root (`SearchNode`; render with `tempo_search.render_tree`).
        stats: `SearchStats`.
        task_report: the task's report on `text` (which constraints hold, or whether a
            puzzle is solved), or None without a task.
        interrupted: the search was stopped by Ctrl-C, and the result is the best so far.
        solved: a task was given and `text` satisfies it.
    """

    text: str
    token_ids: list[int]
    completions: list[Completion]
    visit_distribution: list
    tree: SearchNode = field(repr=False)
    stats: SearchStats
    task_report: dict | None = None
    interrupted: bool = False
    solved: bool = False

    def to_dict(self) -> dict:
        """JSON-ready dict with `text`, `completions`, `visit_distribution` and `stats`."""
        return {
            "text": self.text,
            "token_ids": self.token_ids,
            "completions": [asdict(c) for c in self.completions],
            "visit_distribution": [asdict(v) for v in self.visit_distribution],
            "stats": asdict(self.stats),
            "task": self.task_report,
            "solved": self.solved,
            "interrupted": self.interrupted,
        }


def _as_schedule(name: str, value: Schedule | Sequence[float] | str) -> Schedule:
    """Return `value` as a schedule: a schedule as it is, four control points, or a string
    "p0,p1,p2,p3". `name` is the argument's name in the error message."""
    if hasattr(value, "at_visits"):
        return value
    try:
        if isinstance(value, str):
            return BezierSchedule.from_string(value)
        points = list(value)
        if len(points) != 4:
            raise ValueError(f"it has {len(points)} control points instead of four")
        return BezierSchedule(*points)
    except (TypeError, ValueError) as error:
        raise type(error)(
            f"{name}={value!r} is invalid ({error}); pass four control points in "
            '[0, 1], such as (1.0, 0.25, 0.05, 0.01) or "1.0,0.25,0.05,0.01".'
        ) from None


def search(
    model,
    prompt: Prompt | None = None,
    *,
    task=None,
    num_simulations: int = 200,
    c_puct: float = DEFAULT_C_PUCT,
    selection: str = "puct",
    widening: Schedule | Sequence[float] | str | None = None,
    root_widening: Schedule | Sequence[float] | str | None = None,
    max_width: int | None = None,
    batch_size: int = 4,
    rollout: str | RolloutConfig | None = None,
    rollout_depth: int = 8,
    num_rollouts: int | None = None,
    value: ValueWeights | None = None,
    max_depth: int | None = None,
    max_new_tokens: int = 32,
    commit: str = "once",
    backup: str = "mean",
    time_limit: float | None = None,
    max_nodes: int | None = None,
    temperature: float = 1.0,
    top_p: float = 1.0,
    logits_processors: Sequence[Callable] | None = None,
    num_completions: int = 5,
    prior: str = "lm",
    guide: float = DEFAULT_GUIDE,
    stop_when_solved: bool = True,
    chat: bool = False,
    seed: int = 0,
    on_simulation: Callable[[int], None] | None = None,
    coherence: PruneConfig | None = None,
    prune_children: bool = False,
    actions: str = "tokens",
    _engine_factory: Callable[..., Any] | None = None,
) -> SearchResult:
    """Search for a continuation of `prompt` with MCTS over tokens, or over a puzzle's moves.

    Args:
        model: the object from `load_model`, a model path, or None for the default model.
        prompt: text or chat messages; None takes the task's prompt.
        task: a `tempo_search.tasks.Task` (constraints or a puzzle), or None.
        num_simulations: leaves selected and evaluated (per committed token with
            `commit="step"`). 200 is the budget of the project's benchmarks.
        c_puct: PUCT exploration constant; 1.25 is the AlphaZero value (Silver et al., 2018).
        selection: "puct", "uct", or "gumbel" (Gumbel noise at the root, PUCT below).
        widening: progressive-widening schedule: the prior a child needs to be admitted, as a
            function of the node's visit count (a `BezierSchedule`, four control points, or a
            string "p0,p1,p2,p3"). None means `DEFAULT_WIDENING_SCHEDULE`, or
            `move_search.DEFAULT_MOVE_WIDENING` with `actions="moves"`.
        root_widening: the schedule of the current root only, in the same forms as `widening`.
            None means `widening`. A lower floor at the root lets the search try first tokens
            the LM ranks low (such as "This" in "This sentence uses all of the words ...")
            without opening such tokens deep in the tree.
        max_width: most children of one node; None means 8 with `actions="tokens"` and
            `MOVE_MAX_WIDTH` (every legal line of the shipped puzzles) with `actions="moves"`.
        batch_size: leaves selected per iteration (with a virtual loss) and expanded in one
            forward pass.
        rollout: "none", "greedy" or "sample", or a `RolloutConfig` (default "none"); with
            `actions="moves"`, "random" (random legal lines played by the task's simulator,
            the default) or "none".
        rollout_depth: tokens per rollout when `rollout` is a string.
        num_rollouts: random rollouts per new node with `actions="moves"`; None means
            `move_search.DEFAULT_MOVE_ROLLOUTS`. Token searches run one rollout per node.
        value: weights of the value parts (likelihood, coherence, reward); default
            `ValueWeights()`, or `move_search.DEFAULT_MOVE_VALUE` with `actions="moves"`.
        max_depth: deepest node below the current root; None means `max_new_tokens`.
        max_new_tokens: most generated tokens on any path.
        commit: "once" (one deep search, return the best path) or "step" (search, commit
            the most visited child, keep its subtree, repeat).
        backup: "mean" (a child's Q is the mean value of the simulations through it, as in
            AlphaZero) or "max" (its Q is the best value found below it, rescaled to [0, 1]
            over the visited children of the node, as MuZero rescales Q by the tree's minimum
            and maximum; for searches that keep one best text, such as keyword constraints
            with `stop_when_solved=False`). "max" needs `selection="puct"`. With "max",
            selection skips finished texts and subtrees with nothing left to open, because
            visiting them again would repeat a known value. So every simulation opens a
            node, and a node whose opened children are all finished opens its next candidate.
        time_limit: seconds after which the search stops and returns what it has.
        max_nodes: most tree nodes in the cache at once (prompt excluded); the least visited
            leaves are evicted to stay under it.
        temperature: temperature of the prior.
        top_p: nucleus filter of the prior.
        logits_processors: transformers `LogitsProcessor` objects applied to the prior.
        num_completions: distinct completions returned.
        prior: "lm" (the model's next-token probabilities) or "uniform" (equal priors over
            the allowed tokens, in a seeded random order; a baseline that shows what the LM
            prior adds).
        guide: share of each node's prior given to the tokens that the task's guide marks
            (`Task.guide_tokens`, such as the start of a missing keyword), spread over them in
            proportion to the LM's probabilities: `prior = (1 - guide) * p + guide * p[g] /
            sum(p[g])`. 0 turns it off; it has no effect without a task that has a guide, with
            `prior="uniform"`, or with `actions="moves"`. The likelihood value keeps the LM's
            own probabilities.
        stop_when_solved: with a task, stop as soon as a finished path satisfies it. Without
            it the search spends its whole budget, and `text` is the most likely satisfying
            text it found (highest mean token log-probability, a closing end-of-sequence
            token left out as in `metrics.perplexity`).
        chat: encode a plain-text prompt as a user message through the chat template.
        seed: seed of sampling rollouts and Gumbel noise; the same seed on the same machine
            gives the same tree.
        on_simulation: called with the number of simulations done, after each iteration.
        coherence: attention settings (layers, head reduction, sigmoid steepness and cut,
            pruning floor) of the coherence value, or None for none. Attention is captured
            only when `value.coherence > 0` or `prune_children`, and then only from the
            layers of `coherence.layers`; otherwise the search is the same as with None.
        prune_children: prune children whose coherence falls below `coherence.floor`.
        actions: "tokens" (a tree node per token, any task) or "moves" (a tree node per legal
            line of a `MoveTask` such as Game of 24 or Blocksworld: the task proposes the lines,
            the LM ranks them; see `tempo_search.move_search`). With "moves", `max_width`,
            `widening` and `max_depth` count lines, and `commit`, `max_nodes`, coherence,
            `logits_processors`, `top_p` and the "uct"/"gumbel" rules are not available.

    Coherence (with `coherence` given and in use):
        A node's attention score is the mean attention, over the configured layers (deeper
        weigh more) and heads, that the rows of its children pay to its KV-cache slot, in the
        forward that first expands it (`coherence.member_scores`). Its coherence
        (`SearchNode.coherence`) is `sigmoid(steepness * (score / mean - 1 - cut))`, with `mean`
        the mean score of the scored children of its parent, itself included; pruned children
        stay in that mean. Each newly scored child updates the coherence of its live scored
        siblings, and a pruned child keeps the coherence it was pruned with. A node with no
        scored sibling, and the prompt root, keep coherence None.
        The value of a new child uses its parent's coherence, just updated by the forward that
        created the child; None leaves the part out (`ValueWeights.combine`). Values already
        backed up are not revised when a coherence changes.

    Pruning (`prune_children=True`): after each expansion, the live scored children of a
    node whose coherence is below `coherence.floor` are pruned: marked `pruned`, kept in the
    tree as leaves that selection skips, their descendants dropped from the tree and
    compacted out of the KV cache. The most coherent live scored child is never pruned
    (`coherence.prune_decision`), so a node never loses its last child this way. A pruned
    token is never admitted again at that node. `stats.pruned_nodes` counts them.

    Ctrl-C stops the search and returns the best result so far with `interrupted=True`.
    """
    model = load_model(model)
    if widening is None:
        from tempo_search.move_search import DEFAULT_MOVE_WIDENING

        widening = DEFAULT_MOVE_WIDENING if actions == "moves" else DEFAULT_WIDENING_SCHEDULE
    widening = _as_schedule("widening", widening)
    if root_widening is not None:
        root_widening = _as_schedule("root_widening", root_widening)
    if max_width is None:
        max_width = MOVE_MAX_WIDTH if actions == "moves" else 8
    move_rollout = None
    if num_rollouts is not None and actions != "moves":
        raise ValueError(
            f"num_rollouts={num_rollouts!r} is only used with actions='moves'; token searches "
            "run one rollout per node, so leave num_rollouts=None."
        )
    if actions == "moves":
        from tempo_search.move_search import DEFAULT_MOVE_ROLLOUTS

        move_rollout = _move_rollout(rollout)
        if num_rollouts is None:
            num_rollouts = DEFAULT_MOVE_ROLLOUTS
        _check_int("num_rollouts", num_rollouts, 1, "such as 16")
        rollout = RolloutConfig()
        if value is None:
            from tempo_search.move_search import DEFAULT_MOVE_VALUE

            value = DEFAULT_MOVE_VALUE
    elif rollout is None:
        rollout = "none"
    elif rollout == "random":
        raise ValueError(
            "rollout='random' plays random legal lines and needs actions='moves' with a puzzle "
            "task; with actions='tokens' pass 'none', 'greedy' or 'sample'."
        )
    if isinstance(rollout, str):
        rollout = RolloutConfig(kind=rollout, depth=rollout_depth)
    config = SearchConfig(
        num_simulations=num_simulations,
        c_puct=c_puct,
        selection=selection,
        widening=widening,
        root_widening=root_widening,
        max_width=max_width,
        batch_size=batch_size,
        rollout=rollout,
        value=value if value is not None else ValueWeights(),
        max_depth=max_depth,
        max_new_tokens=max_new_tokens,
        commit=commit,
        backup=backup,
        time_limit=time_limit,
        max_nodes=max_nodes,
        temperature=temperature,
        top_p=top_p,
        num_completions=num_completions,
        prior=prior,
        guide=guide,
        stop_when_solved=stop_when_solved,
        seed=seed,
        coherence=coherence,
        prune_children=prune_children,
        actions=actions,
    )
    if actions == "moves":
        _check_move_options(config, task, logits_processors)
    if coherence is not None and not config.uses_coherence:
        logger.warning(
            "coherence is given but value.coherence is 0 and prune_children is False, so no "
            "attention is captured; pass value=ValueWeights(coherence=...) or prune_children=True"
        )
    if prompt is None:
        prompt = getattr(task, "prompt", None)
        if prompt is None:
            raise ValueError("prompt is missing; pass a prompt or a task that has one.")
    prompt_ids = model.encode_prompt(prompt, chat=chat)
    if actions == "moves":
        from tempo_search.generate import check_position_ids
        from tempo_search.move_search import MoveSearch

        # NOTE: only the prompt is checked against the context length. A move path grows by
        # whole lines, and only the task bounds their number (4 lines for Game of 24).
        model.check_context(len(prompt_ids), 1)
        check_position_ids(model)
        task.bind(model.tokenizer, model.vocab_size)
        engine = (_engine_factory or TreeState)(model.model, prompt_ids)
        search_moves = MoveSearch(
            model, prompt_ids, config, task, engine, move_rollout, num_rollouts
        )
        return search_moves.run(on_simulation)
    model.check_context(len(prompt_ids), max_new_tokens)
    if max_nodes is not None and max_nodes < max_width:
        raise ValueError(
            f"max_nodes={max_nodes} cannot hold one expansion of max_width={max_width} "
            f"children; pass max_nodes >= {max_width} (and more for deep searches)."
        )
    from tempo_search.generate import check_position_ids

    check_position_ids(model)
    if task is not None:
        task.bind(model.tokenizer, model.vocab_size)
    engine_factory = _engine_factory or TreeState
    engine = engine_factory(model.model, prompt_ids)
    mcts = _MCTS(model, prompt_ids, config, task, engine, list(logits_processors or []))
    return mcts.run(on_simulation)


def _move_rollout(rollout: Any) -> str:
    from tempo_search.move_search import MOVE_ROLLOUTS

    if rollout is None:
        return "random"
    if rollout not in MOVE_ROLLOUTS:
        raise ValueError(
            f"rollout={rollout!r} is not supported with actions='moves'; pass 'random' (random "
            "legal lines from the task's simulator) or 'none'."
        )
    return rollout


def _check_move_options(config: SearchConfig, task: Any, logits_processors) -> None:
    """Reject the options the move search does not implement, naming each one."""
    from tempo_search.tasks.base import MoveTask

    if not isinstance(task, MoveTask):
        raise ValueError(
            f"actions='moves' needs a task that proposes legal lines (Game24Task, CountdownTask, "
            f"BlocksworldTask or another MoveTask), got task={task!r}; pass such a task or "
            "actions='tokens'."
        )
    unsupported = {
        "commit": (config.commit != "once", "'once'"),
        "backup": (config.backup != "mean", "'mean'"),
        "max_nodes": (config.max_nodes is not None, "None"),
        "coherence": (config.coherence is not None, "None"),
        "prune_children": (config.prune_children, "False"),
        "top_p": (config.top_p != 1.0, "1.0"),
        "selection": (config.selection != "puct", "'puct'"),
        "logits_processors": (bool(logits_processors), "None"),
    }
    for name, (used, default) in unsupported.items():
        if used:
            value = logits_processors if name == "logits_processors" else getattr(config, name)
            raise ValueError(
                f"{name}={value!r} is not available with actions='moves'; pass {name}={default} "
                "or actions='tokens'."
            )


@dataclass
class _Leaf:
    node: SearchNode
    path: list[SearchNode]
    new_tokens: list[int]
    new_priors: list[float]


class _MCTS:
    """State of one search: the tree, per-node candidates and the statistics."""

    def __init__(self, model: LoadedModel, prompt_ids, config, task, engine, processors):
        self.model = model
        self.tokenizer = model.tokenizer
        self.prompt_ids = list(prompt_ids)
        self.config = config
        self.task = task
        self.engine = engine
        self.processors = processors
        self.eos = model.eos_token_ids
        self.generator = torch.Generator().manual_seed(config.seed)
        self.start = time.perf_counter()
        self.model_seconds = 0.0
        self.simulations = 0
        self.nodes_created = 0
        self.rollout_tokens = 0
        self.evicted = 0
        self.committed = 0
        self.pruned = 0
        # Coherence: the layers captured in every expansion (none when coherence is off) and,
        # per scored node id, the attention its children paid to its slot.
        self.capture_layers: list[int] = []
        if config.uses_coherence:
            num_layers = int(model.model.config.num_hidden_layers)
            self.capture_layers = config.coherence.resolve_layers(num_layers)
        self.attention_scores: dict[int, float] = {}
        self.stopped_by = "simulations"
        self.interrupted = False
        # Token ids of the most likely generated text that satisfies the task so far (a
        # terminal node's path, or a path completed by a rollout), and its mean log-probability.
        self.solution: list[int] | None = None
        self.solution_score = -math.inf

        # Per node id: the candidate tokens (sorted by prior), their priors and the model's
        # log-probabilities, and how many of them are admitted as children so far.
        self.candidates: dict[int, tuple[list[int], list[float], list[float]]] = {}
        self.opened: dict[int, int] = {}
        self.path_log_prob: dict[int, float] = {ROOT: 0.0}
        # Per node id: the rollout that evaluated it. A child whose token is the first token of
        # its parent's rollout takes the rest of that rollout instead of running its own.
        self.rollout_of: dict[int, Any] = {}
        self.reused_rollouts = 0
        # With the max backup: ids of nodes whose subtree has nothing left to open, because
        # every candidate is opened and each child is finished or itself exhausted.
        self.exhausted: set[int] = set()
        self.nodes: dict[int, SearchNode] = {}

        self.root = SearchNode(node_id=ROOT, depth=0)
        self.nodes[ROOT] = self.root
        self.current_root = self.root
        self._set_candidates(self.root, engine.prompt_logits)
        self.gumbel = None
        if config.selection == "gumbel":
            from tempo_search.policies.selection import sample_gumbel

            self.gumbel = sample_gumbel(config.max_width, generator=self.generator)

    # ------------------------------------------------------------------ driver

    def run(self, on_simulation) -> SearchResult:
        try:
            if self.config.commit == "once":
                self._simulate(self.config.num_simulations, on_simulation)
            else:
                self._run_step_commits(on_simulation)
        except KeyboardInterrupt:
            self.interrupted = True
            self.stopped_by = "interrupted"
            logger.warning("search interrupted; returning the best result so far")
        return self._result()

    def _run_step_commits(self, on_simulation) -> None:
        while True:
            self._simulate(self.config.num_simulations, on_simulation)
            if self.stopped_by in ("time_limit", "interrupted", "solved", "max_nodes"):
                return
            child = self._most_visited_child(self.current_root)
            if child is None:
                self.stopped_by = "exhausted"
                return
            self._commit(child)
            text_ids = child.token_ids()
            if child.token_id in self.eos or len(text_ids) >= self.config.max_new_tokens:
                self.stopped_by = "finished"
                return
            if self.task is not None and self.task.is_satisfied(self._decode(text_ids)):
                self.stopped_by = "finished"
                return
            if child.is_terminal:
                self.stopped_by = "finished"
                return

    def _simulate(self, budget: int, on_simulation) -> None:
        done = 0
        while done < budget:
            if self._out_of_time():
                self.stopped_by = "time_limit"
                return
            leaves = self._select_batch(min(self.config.batch_size, budget - done))
            if not leaves:
                self.stopped_by = "exhausted"
                return
            done += len(leaves)
            self.simulations += len(leaves)
            if not self._expand_and_evaluate(leaves):
                self.stopped_by = "max_nodes"
                return
            if self.solution is not None and self.config.stop_when_solved:
                self.stopped_by = "solved"
                return
            if on_simulation is not None:
                on_simulation(self.simulations)
        self.stopped_by = "simulations"

    def _out_of_time(self) -> bool:
        limit = self.config.time_limit
        return limit is not None and time.perf_counter() - self.start >= limit

    # ------------------------------------------------------------------ select

    def _select_batch(self, count: int) -> list[_Leaf]:
        return select_batch(self._select_one, count, lambda leaf: bool(leaf.new_tokens))

    def _select_one(self, claimed: set[int]) -> _Leaf | None:
        node = self.current_root
        path = [node]
        max_depth = self.config.max_depth or self.config.max_new_tokens
        skip_finished = self.config.backup == "max"
        while True:
            # The depth limit counts from the current root, so it moves with each commit.
            if self._at_end(node, max_depth):
                return _Leaf(node, path, [], [])
            tokens, priors, _ = self.candidates[node.node_id]
            admitted = self._admitted(node, priors)
            opened = self.opened.get(node.node_id, 0)
            if admitted > opened and node.node_id not in claimed:
                return _Leaf(node, path, tokens[opened:admitted], priors[opened:admitted])
            children = [c for c in node.children if not c.pruned]
            if skip_finished:
                # The max backup keeps the value of a finished text in its ancestors, so
                # visiting it again would only repeat that value. Selection goes elsewhere.
                children = [c for c in children if not self._is_exhausted(c, max_depth)]
                if not children:
                    if opened < len(tokens):
                        if node.node_id in claimed:
                            return None
                        # Every opened child is finished, so the node opens its next candidate.
                        return _Leaf(
                            node, path, tokens[opened : opened + 1], priors[opened : opened + 1]
                        )
                    self.exhausted.add(node.node_id)
                    if node is self.current_root:
                        return None
                    node = self.current_root
                    path = [node]
                    continue
            if not children:
                # Every admitted child is in flight in this batch, or the node is a dead end.
                return None
            node = self._choose_child(node, children)
            path.append(node)

    def _at_end(self, node: SearchNode, max_depth: int) -> bool:
        """Return whether the path ends at `node`: a finished text or the depth limit."""
        return node.is_terminal or node.depth - self.current_root.depth >= max_depth

    def _is_exhausted(self, node: SearchNode, max_depth: int) -> bool:
        """Return whether the max backup's selection skips `node`, because its text is
        finished or its subtree is marked exhausted."""
        return self._at_end(node, max_depth) or node.node_id in self.exhausted

    def _admitted(self, node: SearchNode, priors: list[float]) -> int:
        if not priors:
            return 0
        schedule = self.config.widening_for(node is self.current_root)
        threshold = schedule.at_visits(node.visit_count)
        count = sum(1 for p in priors if p >= threshold)
        return max(1, min(count, self.config.max_width, len(priors)))

    def _choose_child(self, node: SearchNode, children: list[SearchNode]) -> SearchNode:
        config = self.config
        if config.selection == "puct" or (config.selection == "gumbel" and node is not self.root):
            if config.backup == "max":
                return _puct_max_choice(node, children, config.c_puct, config.virtual_loss)
            return _puct_choice(node, children, config.c_puct, config.virtual_loss)
        visits = [c.visit_count for c in children]
        kwargs: dict[str, Any] = {}
        if config.selection == "gumbel":
            kwargs["gumbel"] = self.gumbel[: len(children)]
        else:
            kwargs["c_uct"] = config.c_puct if config.c_puct > 0 else math.sqrt(2.0)
        index = select_child(
            config.selection,
            [c.prior for c in children],
            visits,
            [c.q_value for c in children],
            node.visit_count,
            virtual_loss=[c.virtual_loss for c in children],
            virtual_loss_value=config.virtual_loss,
            **kwargs,
        )
        return children[index]

    # ------------------------------------------------------------------ expand and evaluate

    def _expand_and_evaluate(self, leaves: list[_Leaf]) -> bool:
        expanding = [leaf for leaf in leaves if leaf.new_tokens]
        terminal = [leaf for leaf in leaves if not leaf.new_tokens]

        # 1. Terminal leaves are evaluated again from their cached value.
        for leaf in terminal:
            self._backup(leaf.path, leaf.node.value or 0.0)
        if not expanding:
            return True

        # 2. Room in the cache for the children and the rollouts, evicting cold leaves.
        num_new = sum(len(leaf.new_tokens) for leaf in expanding)
        rollout_room = (
            num_new * (self.config.rollout.depth - 1) if self.config.rollout.enabled else 0
        )
        if not self._make_room(num_new + rollout_room, expanding):
            rollout_room = 0
            # Without room for the whole batch, expand as many leaves as fit.
            while expanding and not self._make_room(num_new, expanding):
                expanding.pop()
                num_new = sum(len(leaf.new_tokens) for leaf in expanding)
            if not expanding:
                return False

        # 3. One parallel-token step for every admitted child of every selected leaf.
        parents = [leaf.node.node_id for leaf in expanding for _ in leaf.new_tokens]
        tokens = [t for leaf in expanding for t in leaf.new_tokens]
        output = self._forward(parents, tokens)
        self.nodes_created += len(tokens)
        if self.capture_layers:
            self._score_expanded(expanding, output)

        # 4. New nodes: statistics, candidates, terminal flags.
        children: list[tuple[_Leaf, SearchNode, torch.Tensor]] = []
        index = 0
        for leaf in expanding:
            _, _, log_probs = self.candidates[leaf.node.node_id]
            opened = self.opened.get(leaf.node.node_id, 0)
            for offset, (token, prior) in enumerate(
                zip(leaf.new_tokens, leaf.new_priors, strict=True)
            ):
                node_id = output.node_ids[index]
                logits = output.logits[index]
                index += 1
                child = SearchNode(
                    node_id=node_id,
                    token_id=token,
                    text=self.tokenizer.decode([token], skip_special_tokens=False),
                    prior=prior,
                    log_prob=log_probs[opened + offset],
                    parent=leaf.node,
                )
                child.slot = self.engine.slot(node_id)
                self.nodes[node_id] = child
                self.path_log_prob[node_id] = self.path_log_prob[leaf.node.node_id] + child.log_prob
                self._classify(child, logits)
                children.append((leaf, child, logits))
            self.opened[leaf.node.node_id] = opened + len(leaf.new_tokens)
            leaf.node.is_expanded = True

        # 5. Coherence of the expanded leaves and their siblings, and the children to prune.
        to_prune: list[SearchNode] = []
        if self.capture_layers:
            groups = {leaf.node.parent for leaf in expanding if leaf.node.parent is not None}
            for parent in sorted(groups, key=lambda n: n.node_id):
                to_prune.extend(self._update_coherence(parent))

        # 6. Values, with rollouts from the children that are not terminal.
        rollouts = self._rollouts(children, rollout_room)
        for (leaf, child, _), extra in zip(children, rollouts, strict=True):
            child.value = self._evaluate(child, extra)
            self._backup([*leaf.path, child], child.value)

        # 7. Pruning after the backup, so that the batch's statistics are complete.
        if to_prune:
            self._prune(to_prune)
        return True

    def _forward(self, parents: list[int], tokens: list[int]):
        began = time.perf_counter()
        output = self.engine.expand(parents, tokens, capture_layers=self.capture_layers)
        self.model_seconds += time.perf_counter() - began
        return output

    # ------------------------------------------------------------------ coherence and pruning

    def _score_expanded(self, expanding: list[_Leaf], output) -> None:
        """Score each leaf expanded for the first time by its new children's attention."""
        stacked = torch.stack(
            [output.attentions[layer].float().cpu() for layer in self.capture_layers]
        )  # [layers, heads, num_new, kv_len]
        attention = aggregate_attention(
            stacked,
            layer_weights=layer_weights(
                len(self.capture_layers), scheme=self.config.coherence.layer_scheme
            ),
            head_reduce=self.config.coherence.head_reduce,
        )  # [num_new, kv_len]
        row = 0
        for leaf in expanding:
            rows = list(range(row, row + len(leaf.new_tokens)))
            row += len(leaf.new_tokens)
            node_id = leaf.node.node_id
            if node_id == ROOT or node_id in self.attention_scores:
                continue
            slot = self.engine.slot(node_id)
            self.attention_scores[node_id] = float(member_scores(attention, [slot], rows)[0])

    def _update_coherence(self, parent: SearchNode) -> list[SearchNode]:
        """Set the coherence of `parent`'s scored children; return the live ones to prune."""
        scored = [c for c in parent.children if c.node_id in self.attention_scores]
        if len(scored) < 2:
            return []
        config = self.config.coherence
        scores = torch.tensor([self.attention_scores[c.node_id] for c in scored])
        weights = keep_weights(
            relative_scores(scores), steepness=config.steepness, cut=config.cut
        ).tolist()
        live = []
        for child, weight in zip(scored, weights, strict=True):
            # A pruned child keeps the coherence it was pruned with.
            if not child.pruned:
                child.coherence = weight
                live.append(child)
        if not self.config.prune_children or not live:
            return []
        keep = prune_decision(torch.tensor([c.coherence for c in live]), floor=config.floor)
        return [child for child, kept in zip(live, keep.tolist(), strict=True) if not kept]

    def _prune(self, nodes: list[SearchNode]) -> None:
        """Mark `nodes` pruned, drop their descendants and compact them out of the cache."""
        for node in nodes:
            node.pruned = True
            for child in list(node.children):
                for below in _subtree(child):
                    self._forget(below.node_id)
                child.parent = None
            # The pruned node stays in the tree as a leaf that selection skips.
            self.nodes.pop(node.node_id, None)
            self.candidates.pop(node.node_id, None)
            self.opened.pop(node.node_id, None)
            node.slot = -1
        self.pruned += len(nodes)
        self.engine.compact([n for n in self.nodes if n != ROOT])
        self._refresh_slots()
        logger.debug("pruned %d children for low coherence", len(nodes))

    def _classify(self, child: SearchNode, logits: torch.Tensor) -> None:
        """Set the candidates of a new node and decide whether it is terminal."""
        generated = child.token_ids()
        if (
            child.token_id in self.eos
            or len(generated) >= self.config.max_new_tokens
            or (self.task is not None and self.task.is_finished(self._decode(generated)))
        ):
            child.is_terminal = True
        if child.is_terminal:
            self.candidates[child.node_id] = ([], [], [])
            if self.task is not None:
                text = self._decode(generated)
                child.reward = float(self.task.reward(text))
                if self.task.is_satisfied(text):
                    self._offer_solution(
                        generated, self.path_log_prob[child.node_id], child.log_prob
                    )
            return
        self._set_candidates(child, logits)
        if not self.candidates[child.node_id][0]:
            # Dead end: the task allows no next token here.
            child.is_terminal = True
            child.reward = 0.0

    def _set_candidates(self, node: SearchNode, logits: torch.Tensor) -> None:
        generated = node.token_ids()
        text = self._decode(generated) if self.task is not None else ""
        mask = None
        if self.task is not None:
            mask = self.task.allowed_tokens(generated, text)
            if mask is not None:
                mask = mask[None]
        input_ids = None
        if self.processors:
            input_ids = torch.tensor([self.prompt_ids + generated], dtype=torch.long)
        probs = prior_from_logits(
            logits[None],
            temperature=self.config.temperature,
            top_p=self.config.top_p,
            allowed_mask=mask,
            logits_processors=self.processors or None,
            input_ids=input_ids,
        )[0]
        if self.config.prior == "uniform":
            ids, priors = self._uniform_candidates(probs)
        else:
            if self.config.guide > 0 and self.task is not None:
                probs = self._guided(probs, generated, text)
            ids, priors = top_candidates(probs, self.config.max_width)
        log_probs = torch.log_softmax(logits.float(), dim=-1)
        self.candidates[node.node_id] = (
            ids.tolist(),
            priors.tolist(),
            log_probs[ids].tolist(),
        )

    def _guided(self, probs: torch.Tensor, generated: list[int], text: str) -> torch.Tensor:
        """Return the `[vocab_size]` prior with the share `guide` moved onto the task's guide
        tokens after `generated` (decoded as `text`)."""
        guide = self.task.guide_tokens(generated, text)
        if guide is None:
            return probs
        guided = torch.where(guide, probs, torch.zeros_like(probs))
        mass = float(guided.sum())
        if mass <= 0:
            return probs
        weight = self.config.guide
        return (1 - weight) * probs + (weight / mass) * guided

    def _uniform_candidates(self, probs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Up to max_width allowed tokens in a seeded random order, each with prior 1/k."""
        allowed = torch.nonzero(probs > 0).flatten()
        if allowed.numel() == 0:
            return allowed, probs.new_zeros(0)
        order = torch.randperm(allowed.numel(), generator=self.generator)
        ids = allowed[order[: self.config.max_width]]
        return ids, torch.full((ids.numel(),), 1.0 / allowed.numel())

    def _rollouts(self, children, room: int):
        config = self.config.rollout
        starts = []
        owners = []
        extras: list = [None] * len(children)
        for position, (_, child, logits) in enumerate(children):
            if not config.enabled or child.is_terminal:
                continue
            reused = self._reused_rollout(child)
            if reused is not None:
                extras[position] = reused
                self.rollout_of[child.node_id] = reused
                self.reused_rollouts += 1
                continue
            starts.append((child.node_id, logits))
            owners.append(position)
        if not starts:
            return extras

        allowed = None
        if self.task is not None:

            def allowed(index: int, rollout_ids: list[int]):
                child = children[owners[index]][1]
                generated = child.token_ids() + rollout_ids
                return self.task.allowed_tokens(generated, self._decode(generated))

        before = self.engine.tokens_forwarded
        began = time.perf_counter()
        results = run_rollouts(
            self.engine,
            starts,
            config,
            eos_token_ids=self.eos,
            generator=self.generator,
            allowed_mask=allowed,
            max_tokens=room,
            # A rollout ends where the path reaches max_new_tokens, as a tree path does.
            limits=[
                self.config.max_new_tokens - len(children[owner][1].token_ids()) for owner in owners
            ],
        )
        self.model_seconds += time.perf_counter() - began
        self.rollout_tokens += self.engine.tokens_forwarded - before
        for owner, result in zip(owners, results, strict=True):
            extras[owner] = result
            self.rollout_of[children[owner][1].node_id] = result
        return extras

    def _reused_rollout(self, child: SearchNode):
        """Return the rest of the parent's rollout when it began with `child`'s token and
        ended (end-of-sequence or the length limit), else None.

        The rollout policy would pick from the same text again and stop at the same place, so
        the rest is a rollout of the child (the same tokens for greedy rollouts, up to
        floating-point ties), at no forward. A rollout cut short by `rollout.depth` or by the
        node budget is not reused: the child's own rollout would go one token further.
        """
        parent = child.parent
        rollout = self.rollout_of.get(parent.node_id) if parent is not None else None
        if (
            rollout is None
            or not rollout.finished
            or len(rollout.token_ids) < 2
            or rollout.token_ids[0] != child.token_id
        ):
            return None
        return rollout.after_first()

    def _evaluate(self, child: SearchNode, rollout) -> float:
        """Combine the value parts of a new node (and its rollout) into a value in [0, 1]."""
        generated = child.token_ids()
        sum_log_prob = self.path_log_prob[child.node_id]
        reward = child.reward
        if rollout is not None and rollout.token_ids:
            generated = generated + rollout.token_ids
            sum_log_prob += rollout.sum_log_prob
        likelihood = likelihood_value(sum_log_prob, len(generated))
        if self.task is not None and reward is None:
            text = self._decode(generated)
            if self.task.is_finished(text) or (rollout is not None and rollout.finished):
                reward = float(self.task.reward(text))
                if self.task.is_satisfied(text):
                    last_log_prob = None
                    if rollout is not None and rollout.log_probs:
                        last_log_prob = rollout.log_probs[-1]
                    self._offer_solution(generated, sum_log_prob, last_log_prob)
            else:
                progress = self.task.progress(text)
                reward = None if progress is None else float(progress)
        # A new child has no coherence of its own yet; its parent's is the path's latest.
        parent = child.parent
        coherence = parent.coherence if parent is not None and self.capture_layers else None
        return self.config.value.combine(likelihood, coherence, reward)

    def _offer_solution(
        self, token_ids: list[int], sum_log_prob: float, last_log_prob: float | None = None
    ) -> None:
        """Keep `token_ids` (a satisfying text) when it is more likely per token than the
        solution so far.

        `last_log_prob` is the log-probability of the last token. A closing end-of-sequence
        token counts in neither the sum nor the length, as in `metrics.perplexity`, so the
        search keeps the text of lowest perplexity.
        """
        if token_ids and token_ids[-1] in self.eos and last_log_prob is not None:
            token_ids = token_ids[:-1]
            sum_log_prob -= last_log_prob
        score = sum_log_prob / max(1, len(token_ids))
        if score > self.solution_score:
            self.solution = [t for t in token_ids if t not in self.eos]
            self.solution_score = score

    def _backup(self, path: list[SearchNode], value: float) -> None:
        for node in path:
            node.visit_count += 1
            node.value_sum += value
            node.best_value = max(node.best_value, value)
        # The committed chain above the current root counts the simulation too.
        node = self.current_root.parent
        while node is not None:
            node.visit_count += 1
            node.value_sum += value
            node.best_value = max(node.best_value, value)
            node = node.parent

    # ------------------------------------------------------------------ budget and commit

    def _make_room(self, needed: int, pending: list[_Leaf]) -> bool:
        """Evict the least visited subtrees until `needed` more nodes fit under max_nodes."""
        limit = self.config.max_nodes
        if limit is None or self.engine.num_nodes + needed <= limit:
            return True

        # 1. Candidates: subtrees off the selected paths and off the committed chain, coldest
        #    first. A node on such a path is protected, so no candidate contains a pending leaf.
        protected = {ROOT}
        for leaf in pending:
            protected.update(n.node_id for n in leaf.path)
        for node in self.current_root.path():
            protected.add(node.node_id)
        candidates = [n for n in self.nodes.values() if n.node_id not in protected and not n.pruned]
        candidates.sort(key=lambda n: (n.visit_count, n.q_value, -n.node_id))

        # 2. Choose subtrees until enough nodes are freed. Every node keeps one live child: a
        #    node whose children were all evicted is a dead end where selection stops.
        excess = self.engine.num_nodes + needed - limit
        live_children: dict[int, int] = {}
        evicted: set[int] = set()
        chosen: list[SearchNode] = []
        freed = 0
        for node in candidates:
            if freed >= excess:
                break
            if any(a.node_id in evicted for a in node.path()):
                continue
            parent = node.parent
            left = live_children.get(
                parent.node_id, sum(1 for c in parent.children if not c.pruned)
            )
            if left <= 1:
                continue
            live_children[parent.node_id] = left - 1
            # A colder subtree chosen earlier may lie inside this one; count its nodes once.
            subtree = [
                n for n in _subtree(node) if n.node_id in self.nodes and n.node_id not in evicted
            ]
            evicted.update(n.node_id for n in subtree)
            chosen.append(node)
            freed += len(subtree)
        if freed < excess:
            return False

        # 3. Detach them from the tree and compact the cache.
        for node in chosen:
            for member in _subtree(node):
                self._forget(member.node_id)
            node.pruned = True
            node.parent = None
        self.evicted += freed
        self.engine.compact([n for n in self.nodes if n != ROOT])
        self._refresh_slots()
        return True

    def _forget(self, node_id: int) -> None:
        self.rollout_of.pop(node_id, None)
        self.attention_scores.pop(node_id, None)
        self.nodes.pop(node_id, None)
        self.candidates.pop(node_id, None)
        self.opened.pop(node_id, None)
        self.path_log_prob.pop(node_id, None)

    def _refresh_slots(self) -> None:
        for node_id, node in self.nodes.items():
            if node_id != ROOT:
                node.slot = self.engine.slot(node_id)

    def _commit(self, child: SearchNode) -> None:
        """Make `child` the new root: drop its siblings' subtrees from the tree and cache."""
        parent = self.current_root
        for sibling in list(parent.children):
            if sibling is child:
                continue
            for node in _subtree(sibling):
                self._forget(node.node_id)
            sibling.parent = None
        self.current_root = child
        self.committed += 1
        # The depth limit moves with the root, so a subtree cut off by it may open again.
        self.exhausted.clear()
        self.engine.compact([n for n in self.nodes if n != ROOT])
        self._refresh_slots()

    # ------------------------------------------------------------------ result

    def _most_visited_child(self, node: SearchNode) -> SearchNode | None:
        children = [c for c in node.children if not c.pruned]
        if not children:
            return None
        return max(children, key=lambda c: (c.visit_count, c.q_value, -c.node_id))

    def _best_path_node(self) -> SearchNode:
        node = self.current_root
        while True:
            child = self._most_visited_child(node)
            if child is None:
                return node
            node = child

    def _completions(self) -> list[Completion]:
        seen: dict[str, Completion] = {}
        candidates = [
            n
            for n in _subtree(self.root)
            if n.node_id != ROOT and not n.pruned and (n.is_terminal or not n.children)
        ]
        for node in candidates:
            ids = [t for t in node.token_ids() if t not in self.eos]
            text = self._decode(ids)
            score = node.q_value if node.visit_count else (node.value or 0.0)
            completion = Completion(text, score, node.visit_count, ids, node.is_terminal)
            best = seen.get(text)
            if best is None or (completion.score, completion.visits) > (best.score, best.visits):
                seen[text] = completion
        ranked = sorted(seen.values(), key=lambda c: (-c.score, -c.visits, c.text))
        return ranked[: self.config.num_completions]

    def _result(self) -> SearchResult:
        if self.solution is not None:
            ids = [t for t in self.solution if t not in self.eos]
        else:
            ids = [t for t in self._best_path_node().token_ids() if t not in self.eos]
        text = self._decode(ids)
        seconds = time.perf_counter() - self.start
        engine = self.engine
        tree_tokens = engine.tokens_forwarded - len(self.prompt_ids) - self.rollout_tokens
        stats = SearchStats(
            simulations=self.simulations,
            nodes=self.nodes_created,
            forward_passes=engine.forward_passes,
            tokens_forwarded=engine.tokens_forwarded,
            rollout_tokens=self.rollout_tokens,
            tokens_forwarded_per_node=tree_tokens / max(1, self.nodes_created),
            seconds=seconds,
            model_seconds=self.model_seconds,
            peak_cache_length=engine.peak_cache_length,
            prompt_tokens=len(self.prompt_ids),
            evicted_nodes=self.evicted,
            committed_tokens=self.committed,
            pruned_nodes=self.pruned,
            stopped_by=self.stopped_by,
            reused_rollouts=self.reused_rollouts,
            forward_sizes=dict(sorted(engine.forward_sizes.items())),
        )
        logger.info(
            "search: %d simulations, %d nodes, %d forward passes, %.2f s (%s)",
            stats.simulations,
            stats.nodes,
            stats.forward_passes,
            stats.seconds,
            stats.stopped_by,
        )
        report = self.task.report(text) if self.task is not None else None
        return SearchResult(
            text=text,
            token_ids=ids,
            completions=self._completions(),
            visit_distribution=visit_distribution(self.current_root),
            tree=self.root,
            stats=stats,
            task_report=report,
            interrupted=self.interrupted,
            solved=self.task is not None and self.task.is_satisfied(text),
        )

    def _decode(self, token_ids: list[int]) -> str:
        # The same decoding as the tasks' token tables, so that masks and texts agree.
        return self.tokenizer.decode(
            token_ids, skip_special_tokens=True, clean_up_tokenization_spaces=False
        )


def select_batch(select_one: Callable, count: int, expands: Callable) -> list:
    """Select up to `count` leaves, each under the virtual loss of those selected before it.

    `select_one(claimed)` returns a leaf (with `node` and `path`) or None, skipping the node ids
    in `claimed`. A leaf for which `expands(leaf)` is true claims its node, so one batch never
    expands a node twice. The virtual loss is removed again before returning.
    """
    leaves = []
    claimed: set[int] = set()
    for _ in range(count):
        leaf = select_one(claimed)
        if leaf is None:
            break
        for node in leaf.path:
            node.virtual_loss += 1
        if expands(leaf):
            claimed.add(leaf.node.node_id)
        leaves.append(leaf)
    for leaf in leaves:
        for node in leaf.path:
            node.virtual_loss -= 1
    return leaves


def _subtree(root: SearchNode):
    stack = [root]
    while stack:
        node = stack.pop()
        yield node
        stack.extend(node.children)


def _puct_choice(
    node: SearchNode, children: list[SearchNode], c_puct: float, virtual_loss: float
) -> SearchNode:
    """Pick the child with the highest PUCT score; the same formula as `puct_scores`.

    Written out in Python because it runs once per tree level per simulation and the
    children are few; `tests/test_search.py` checks it against `puct_scores`.
    """
    pending = sum(c.virtual_loss for c in children) * virtual_loss
    sqrt_parent = math.sqrt(node.visit_count + pending)
    best = children[0]
    best_score = -math.inf
    for child in children:
        visits = child.visit_count + child.virtual_loss * virtual_loss
        q = child.value_sum / visits if visits > 0 else 0.0
        score = q + c_puct * child.prior * sqrt_parent / (1.0 + visits)
        if score > best_score:
            best, best_score = child, score
    return best


def _puct_max_choice(
    node: SearchNode, children: list[SearchNode], c_puct: float, virtual_loss: float
) -> SearchNode:
    """Pick the child with the highest PUCT score when Q is the best value below each child
    (`backup="max"`).

    Q is `best_value`, discounted by in-flight selections as a virtual loss of value 0
    discounts a mean, then rescaled to [0, 1] by the lowest and highest Q of the visited
    children (0.5 for all when they are equal). Unvisited children keep Q = 0, the
    first-play value, so the rescaled Q spans the full range of the exploration term.
    """
    pending = sum(c.virtual_loss for c in children) * virtual_loss
    sqrt_parent = math.sqrt(node.visit_count + pending)
    visits = [c.visit_count + c.virtual_loss * virtual_loss for c in children]
    qs = [
        c.best_value * c.visit_count / n if c.visit_count > 0 else None
        for c, n in zip(children, visits, strict=True)
    ]
    known = [q for q in qs if q is not None]
    low, high = (min(known), max(known)) if known else (0.0, 0.0)
    best = children[0]
    best_score = -math.inf
    for child, n, q in zip(children, visits, qs, strict=True):
        if q is None:
            scaled = 0.0
        elif high > low:
            scaled = (q - low) / (high - low)
        else:
            scaled = 0.5
        score = scaled + c_puct * child.prior * sqrt_parent / (1.0 + n)
        if score > best_score:
            best, best_score = child, score
    return best


from tempo_search._callable import make_module_callable  # noqa: E402

make_module_callable(__name__, search)
