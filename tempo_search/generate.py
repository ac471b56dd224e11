"""TEMPO parallel-token generation: every token above a threshold, in one forward per step."""

from __future__ import annotations

import dataclasses
import logging
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

import torch

from tempo_search.coherence import (
    PruneConfig,
    aggregate_attention,
    keep_weights,
    layer_weights,
    member_keep_weights,
    member_scores,
    prune_decision,
    relative_scores,
)
from tempo_search.models import LoadedModel, Prompt, load_model
from tempo_search.schedules import BezierSchedule, FlatLinearSchedule, Schedule
from tempo_search.tree_state import ROOT, TreeState

logger = logging.getLogger(__name__)

GENERATION_MODES = ("superposition", "tree")


@dataclass(frozen=True)
class TokenChoice:
    """One member of a parallel set: `token` (decoded text), `id` and `prob`."""

    token: str
    id: int
    prob: float
    pruned: bool = False
    keep_weight: float | None = None


@dataclass(frozen=True)
class Step:
    """The parallel set chosen at one logical position."""

    position: int
    tokens: list[TokenChoice]


@dataclass(frozen=True)
class GenerationStats:
    """Cost of a generation.

    Attributes:
        forward_passes: model forwards, prefill included.
        tokens_forwarded: tokens sent through the model, prompt included.
        prompt_tokens: tokens of the prompt.
        generated_steps: logical steps generated.
        seconds: wall time of the generation, model loading excluded.
        cache_length: KV cache entries at the end (prompt included).
        peak_cache_length: largest KV cache length reached.
        live_tokens: generated tokens still in the cache at the end.
        pruned_tokens: tokens removed by retroactive pruning.
    """

    forward_passes: int
    tokens_forwarded: int
    prompt_tokens: int
    generated_steps: int
    seconds: float
    cache_length: int
    peak_cache_length: int
    live_tokens: int
    pruned_tokens: int = 0

    @property
    def tokens_forwarded_per_step(self) -> float:
        generated = self.tokens_forwarded - self.prompt_tokens
        return generated / max(1, self.generated_steps)


@dataclass(frozen=True)
class GenerationResult:
    """Output of `generate`.

    Attributes:
        text: TEMPO-style text with each parallel set in brackets, `The [cat|dog] sat`.
        best_text: the most likely single path as plain text.
        best_token_ids: token ids of that path.
        steps: each step's parallel set, token strings and probabilities.
        stats: forwards, tokens, time and cache sizes.
        mode: "superposition" or "tree".
        prompt_token_ids: the encoded prompt.
    """

    text: str
    best_text: str
    best_token_ids: list[int]
    steps: list[Step]
    stats: GenerationStats
    mode: str
    prompt_token_ids: list[int] = field(repr=False)

    def to_dict(self) -> dict:
        """JSON-ready dict with `text`, `best_text`, `steps` and `stats`."""
        data = asdict(self)
        data["stats"]["tokens_forwarded_per_step"] = self.stats.tokens_forwarded_per_step
        data.pop("prompt_token_ids")
        return data


def select_parallel_set(
    probs: torch.Tensor, *, threshold: float, max_width: int, exclude: set[int] | None = None
) -> tuple[list[int], list[float]]:
    """Return the token ids and probabilities with `prob >= threshold`, highest first.

    At least the top token is returned and at most `max_width`. Ties keep the lower token id
    first (the order of `torch.argmax`), so threshold 1.0 selects exactly the greedy token.
    `probs` is `[vocab_size]`.
    """
    if exclude:
        probs = probs.clone()
        probs[list(exclude)] = -1.0
    count = int((probs >= threshold).sum())
    count = max(1, min(count, max_width))
    # A stable sort on the negated values keeps equal probabilities in token-id order.
    order = torch.sort(-probs, stable=True).indices[:count]
    ids = [int(i) for i in order]
    return ids, [float(probs[i]) for i in ids]


def _validate(
    model: LoadedModel,
    prompt_ids: list[int],
    *,
    threshold: float,
    max_new_tokens: int,
    max_width: int,
    mode: str,
    max_paths: int,
) -> None:
    if not isinstance(threshold, (int, float)) or not 0.0 < threshold <= 1.0:
        raise ValueError(
            f"threshold={threshold!r} is outside (0, 1]; pass a probability such as 0.1 "
            "(1.0 selects only the top token, which is greedy decoding)."
        )
    if not isinstance(max_new_tokens, int) or max_new_tokens < 1:
        raise ValueError(f"max_new_tokens={max_new_tokens!r} must be an integer of at least 1.")
    model.check_context(len(prompt_ids), max_new_tokens)
    if not isinstance(max_width, int) or max_width < 1:
        raise ValueError(f"max_width={max_width!r} must be an integer of at least 1.")
    if mode not in GENERATION_MODES:
        raise ValueError(f"mode={mode!r} is not supported; pass 'superposition' or 'tree'.")
    if not isinstance(max_paths, int) or max_paths < 1:
        raise ValueError(f"max_paths={max_paths!r} must be an integer of at least 1.")


def check_position_ids(model: LoadedModel) -> None:
    """Raise ValueError when the model's logits do not depend on `position_ids`.

    Parallel-token steps give siblings one logical position through `position_ids`; a model
    that ignores them would treat every sibling as sitting at its physical slot. The probe is
    one forward of the same two tokens at positions (0, 1) and (0, 6): rotary embeddings are
    relative, so only the distance between tokens can show. Its result is remembered.
    """
    import inspect

    if model._position_check is not None:
        if not model._position_check:
            raise ValueError(_IGNORES_POSITIONS.format(name=model.name))
        return
    net = model.model
    if "position_ids" not in inspect.signature(net.forward).parameters:
        model._position_check = False
        raise ValueError(_IGNORES_POSITIONS.format(name=model.name))
    pair = [min(5, model.vocab_size - 1), min(7, model.vocab_size - 1)]
    token = torch.tensor([pair, pair], device=model.device)
    positions = torch.tensor([[0, 1], [0, 6]], device=model.device)
    with torch.no_grad():
        logits = net(input_ids=token, position_ids=positions).logits[:, -1].float()
    model._position_check = bool((logits[0] - logits[1]).abs().max() > 1e-6)
    if not model._position_check:
        raise ValueError(_IGNORES_POSITIONS.format(name=model.name))


_IGNORES_POSITIONS = (
    "model {name!r} ignores position_ids (its logits do not change with the position), so "
    "parallel tokens cannot share a logical position; use a model with rotary or learned "
    "position embeddings, such as the default SmolLM2-135M-Instruct."
)


def parse_threshold_schedule(text: str) -> Schedule:
    """Parse `"bezier:p0,p1,p2,p3"` or `"flat:start,end,flat_fraction"` into a schedule.

    The values are probability thresholds in `[0, 1]` over generation progress
    (`(step - 1) / max_new_tokens` for steps counted from 1), as on the
    `--threshold-schedule` command-line flag.
    """
    if not isinstance(text, str):
        raise TypeError(f"threshold schedule must be a str, got {type(text).__name__}")
    kind, _, values = text.partition(":")
    kind = kind.strip().lower()
    if kind == "bezier":
        return BezierSchedule.from_string(values)
    if kind == "flat":
        return FlatLinearSchedule.from_string(values)
    raise ValueError(
        f"threshold schedule {text!r} is invalid; pass 'bezier:p0,p1,p2,p3' or "
        "'flat:start,end,flat_fraction', for example bezier:0.3,0.2,0.1,0.05"
    )


def _check_pruning(
    model: LoadedModel,
    prune: PruneConfig | None,
    threshold_schedule: Schedule | None,
    mode: str,
    isolate: bool,
) -> list[int]:
    """Validate the pruning arguments and return the layers whose attention is captured."""
    if threshold_schedule is not None and not callable(threshold_schedule):
        raise TypeError(
            f"threshold_schedule={threshold_schedule!r} is not a schedule; pass a "
            "BezierSchedule, a FlatLinearSchedule or None."
        )
    if prune is None:
        return []
    if not isinstance(prune, PruneConfig):
        raise TypeError(
            f"prune={prune!r} is not a PruneConfig; pass PruneConfig() for the defaults or None."
        )
    if mode == "superposition" and not isolate:
        raise ValueError(
            "prune with isolate=False is not supported: a kept member would have been computed "
            "while seeing a pruned sibling; pass isolate=True (the default)."
        )
    return prune.resolve_layers(int(model.model.config.num_hidden_layers))


def generate(
    model,
    prompt: Prompt,
    *,
    threshold: float = 0.1,
    max_new_tokens: int = 32,
    max_width: int = 8,
    mode: str = "superposition",
    isolate: bool = True,
    max_paths: int = 8,
    chat: bool = False,
    seed: int | None = None,
    on_step: Callable[[Step], None] | None = None,
    prune: PruneConfig | None = None,
    threshold_schedule: Schedule | None = None,
    cut_schedule: Schedule | None = None,
) -> GenerationResult:
    """Generate with TEMPO parallel-token steps.

    At each logical step every token whose probability reaches `threshold` is selected (at
    least the top token, at most `max_width`), and the set is forwarded in one pass at one
    logical position, its members hidden from each other.

    Modes:
        "superposition": one trunk. The next step's distribution is the mixture
            `sum_i w_i * p(. | member_i)` with `w_i = p_i / sum_j p_j` over the members'
            probabilities `p_i`. A member sees every member of every earlier set, so the
            distributions are approximations by design. Generation stops when the top token
            of a step is end-of-sequence; other end-of-sequence members are left out of a set.
        "tree": each member branches into its own path, which is exact; at most `max_paths`
            live paths are kept, the most likely by path log-probability, and the others are
            compacted out of the cache. A path that selects end-of-sequence is finished.

    Retroactive pruning (`prune`):
        "superposition": the forward of set `S_{t+1}` captures the attention of
            `prune.layers`, and the attention that the rows of `S_{t+1}` pay to the slots of
            `S_t`'s members scores those members (`coherence.member_keep_weights`). Members whose
            keep weight is below `prune.floor` are removed: `S_{t+1}` is rewound, the removed
            members are compacted out of the cache, the mixture that chose `S_{t+1}` is
            recomputed over the kept members with `w_i` proportional to `p_i * keep_i`, and
            `S_{t+1}` is selected again from it and forwarded again. The following steps are
            then exactly what they would be had the removed tokens never existed. The soft
            keep weight enters the mixture only in this recomputation; a set without removals
            keeps `w_i` proportional to `p_i`. Each set is scored once, by the first forward
            of the set after it; the last set is forwarded only to score the one before it and
            is then rewound. Needs `isolate=True`.
        "tree": siblings (children of one node, within one step) are compared through the
            attention their own children pay back to them. A pruned branch and its
            descendants leave the live paths, the finished paths and the cache; the other
            paths never saw it, so nothing is recomputed.
        At least one member of each scored set is kept (`coherence.prune_decision`). Each
        token records `pruned` and `keep_weight` (None when its set was not scored, such as a
        set of one member), `stats.pruned_tokens` counts the removed members (in tree mode,
        the descendants that leave with them are not counted), and `stats.forward_passes`
        includes the recomputations.

    Args:
        model: the object from `load_model`, a model path, or None for the default model.
        prompt: text, or chat messages (a list of `{"role", "content"}` dicts).
        threshold: selection probability in (0, 1]; 1.0 is greedy decoding.
        max_new_tokens: most logical steps.
        max_width: most tokens in one parallel set.
        mode: "superposition" or "tree".
        isolate: hide members of a parallel set from each other (the TEMPO rule). With False,
            a member also sees the earlier members of its own set (superposition only).
        max_paths: most live paths in tree mode.
        chat: encode a plain-text prompt as one user message through the chat template.
        seed: seed for torch's generator. Generation is deterministic without it; it is
            accepted so that callers can pass one seed to every entry point.
        on_step: called with each `Step` as it is chosen (for progress display). Pruning marks
            and reselections after a removal change the returned steps, not the calls made.
        prune: retroactive pruning settings, or None for no pruning.
        threshold_schedule: a schedule of the selection threshold over generation progress
            `(step - 1) / max_new_tokens`; it replaces the constant `threshold`. A threshold
            of 0 selects `max_width` tokens.
        cut_schedule: a schedule of the pruning cut over the same progress, replacing
            `prune.cut`. Its values in [0, 1] are the fraction below the set's mean at which a
            member's keep weight is 0.5, so a value v gives `cut = -v` (0.5 is the default cut
            of -0.5). Needs `prune`.
    """
    model = load_model(model)
    if seed is not None:
        torch.manual_seed(seed)
    prompt_ids = model.encode_prompt(prompt, chat=chat)
    _validate(
        model,
        prompt_ids,
        threshold=threshold,
        max_new_tokens=max_new_tokens,
        max_width=max_width,
        mode=mode,
        max_paths=max_paths,
    )
    layers = _check_pruning(model, prune, threshold_schedule, mode, isolate)
    if cut_schedule is not None and prune is None:
        raise ValueError("cut_schedule needs prune; pass prune=PruneConfig() as well.")
    if cut_schedule is not None and not callable(cut_schedule):
        raise TypeError(f"cut_schedule={cut_schedule!r} must be a schedule such as BezierSchedule.")
    check_position_ids(model)
    options = _Options(
        threshold=threshold,
        threshold_schedule=threshold_schedule,
        max_new_tokens=max_new_tokens,
        max_width=max_width,
        isolate=isolate,
        max_paths=max_paths,
        prune=prune,
        prune_layers=layers,
        cut_schedule=cut_schedule,
        on_step=on_step,
        start=time.perf_counter(),
    )
    if mode == "superposition":
        return _generate_superposition(model, prompt_ids, options)
    return _generate_tree(model, prompt_ids, options)


@dataclass(frozen=True)
class _Options:
    threshold: float
    threshold_schedule: Schedule | None
    max_new_tokens: int
    max_width: int
    isolate: bool
    max_paths: int
    prune: PruneConfig | None
    prune_layers: list[int]
    cut_schedule: Schedule | None
    on_step: Callable[[Step], None] | None
    start: float

    def prune_at(self, depth: int) -> PruneConfig | None:
        """Pruning settings of logical step `depth`, with the cut from `cut_schedule`."""
        if self.prune is None or self.cut_schedule is None:
            return self.prune
        cut = -float(self.cut_schedule((depth - 1) / self.max_new_tokens))
        return dataclasses.replace(self.prune, cut=cut)

    def threshold_at(self, depth: int) -> float:
        """Selection threshold of logical step `depth` (1-based)."""
        if self.threshold_schedule is None:
            return self.threshold
        return float(self.threshold_schedule((depth - 1) / self.max_new_tokens))


def _decode_token(model: LoadedModel, token_id: int) -> str:
    return model.tokenizer.decode([token_id], skip_special_tokens=False)


def _stats(state: TreeState, prompt_ids: list[int], steps: list[Step], start: float, pruned: int):
    return GenerationStats(
        forward_passes=state.forward_passes,
        tokens_forwarded=state.tokens_forwarded,
        prompt_tokens=len(prompt_ids),
        generated_steps=len(steps),
        seconds=time.perf_counter() - start,
        cache_length=state.cache_length,
        peak_cache_length=state.peak_cache_length,
        live_tokens=state.num_nodes,
        pruned_tokens=pruned,
    )


@dataclass
class _ForwardedSet:
    """A superposition set in the cache: what the next set's mixture and scoring need."""

    step_index: int
    token_ids: list[int]
    weights: list[float]  # unnormalised mixture weights, p_i (times keep_i after a removal)
    node_ids: list[int]
    member_dists: torch.Tensor  # [members, vocab]

    def mixture(self) -> torch.Tensor:
        """Return the `[vocab]` next-step distribution `sum_i w_i * p(. | member_i)`."""
        weights = torch.tensor(self.weights, dtype=torch.float32)
        weights = weights / weights.sum()
        return (weights[:, None] * self.member_dists).sum(dim=0)


def _stack_attention(attentions: dict[int, torch.Tensor], layers: list[int]) -> torch.Tensor:
    """Stack captured attention into `[layers, heads, q, k]`, shallow to deep."""
    return torch.stack([attentions[layer].float().cpu() for layer in layers])


def _mark_pruned(step: Step, marks: dict[int, tuple[bool, float]]) -> Step:
    """Return `step` with `pruned` and `keep_weight` set for the member ids in `marks`."""
    tokens = [
        TokenChoice(t.token, t.id, t.prob, pruned=marks[t.id][0], keep_weight=marks[t.id][1])
        if t.id in marks
        else t
        for t in step.tokens
    ]
    return Step(position=step.position, tokens=tokens)


def _generate_superposition(
    model: LoadedModel, prompt_ids: list[int], options: _Options
) -> GenerationResult:
    state = TreeState(model.model, prompt_ids, mode="superposition", isolate=options.isolate)
    eos = model.eos_token_ids
    prune = options.prune
    probs = torch.softmax(state.prompt_logits, dim=-1)
    steps: list[Step] = []
    best_ids: list[int] = []
    parent = ROOT
    previous: _ForwardedSet | None = None
    pruned_count = 0
    last = options.max_new_tokens
    for depth in range(1, last + 1):
        threshold = options.threshold_at(depth)

        # 1. The parallel set; a top end-of-sequence token ends generation.
        if int(torch.argmax(probs)) in eos:
            break
        ids, member_probs = select_parallel_set(
            probs, threshold=threshold, max_width=options.max_width, exclude=eos
        )
        steps.append(_make_step(model, prompt_ids, depth, ids, member_probs))
        best_ids.append(ids[0])
        if options.on_step is not None:
            options.on_step(steps[-1])

        # 2. One forward at one logical position. With pruning, it also scores the previous
        # set, so the last set is forwarded too when the previous one has several members.
        scoring = prune is not None and previous is not None and len(previous.node_ids) > 1
        if depth == last and not scoring:
            break
        output = state.expand(
            [parent] * len(ids), ids, capture_layers=options.prune_layers if scoring else ()
        )

        # 3. Retroactive pruning of the previous set.
        if scoring:
            attention = _stack_attention(output.attentions, options.prune_layers)
            slots = [state.slot(n) for n in previous.node_ids]
            weights = member_keep_weights(attention, slots, config=options.prune_at(depth))
            keep = prune_decision(weights, floor=prune.floor)
            marks = {
                token_id: (not bool(kept), float(weight))
                for token_id, kept, weight in zip(previous.token_ids, keep, weights, strict=True)
            }
            index = previous.step_index
            steps[index] = _mark_pruned(steps[index], marks)
            if depth == last:
                # The last set was forwarded only to score the previous one.
                state.rewind(len(ids))
            if not bool(keep.all()):
                if depth < last:
                    state.rewind(len(ids))
                removed = {n for n, kept in zip(previous.node_ids, keep, strict=True) if not kept}
                pruned_count += len(removed)
                state.compact([n for n in state.node_ids() if n not in removed])
                previous = _keep_members(previous, keep, weights)
                best_ids[index] = previous.token_ids[0]
                parent = previous.node_ids[0]
                logger.debug("step %d: pruned %d members of step %d", depth, len(removed), index)

                # The mixture without the removed members selects this step's set again.
                probs = previous.mixture()
                if int(torch.argmax(probs)) in eos:
                    steps.pop()
                    best_ids.pop()
                    break
                ids, member_probs = select_parallel_set(
                    probs, threshold=threshold, max_width=options.max_width, exclude=eos
                )
                steps[-1] = _make_step(model, prompt_ids, depth, ids, member_probs)
                best_ids[-1] = ids[0]
                if depth < last:
                    output = state.expand([parent] * len(ids), ids)
            if depth == last:
                break

        # 4. The mixture of this set's members is the next distribution.
        parent = output.node_ids[0]
        previous = _ForwardedSet(
            step_index=len(steps) - 1,
            token_ids=ids,
            weights=member_probs,
            node_ids=output.node_ids,
            member_dists=torch.softmax(output.logits, dim=-1),  # [members, vocab]
        )
        probs = previous.mixture()

    return GenerationResult(
        text=bracket_text([s.tokens for s in steps]),
        best_text=model.tokenizer.decode(best_ids, skip_special_tokens=True),
        best_token_ids=best_ids,
        steps=steps,
        stats=_stats(state, prompt_ids, steps, options.start, pruned_count),
        mode="superposition",
        prompt_token_ids=prompt_ids,
    )


def _make_step(
    model: LoadedModel, prompt_ids: list[int], depth: int, ids: list[int], probs: list[float]
) -> Step:
    return Step(
        position=len(prompt_ids) + depth - 1,
        tokens=[
            TokenChoice(_decode_token(model, i), i, p) for i, p in zip(ids, probs, strict=True)
        ],
    )


def _keep_members(
    members: _ForwardedSet, keep: torch.Tensor, weights: torch.Tensor
) -> _ForwardedSet:
    """Return the kept members, with mixture weights `p_i * keep_i`."""
    rows = [i for i, kept in enumerate(keep.tolist()) if kept]
    return _ForwardedSet(
        step_index=members.step_index,
        token_ids=[members.token_ids[i] for i in rows],
        weights=[members.weights[i] * float(weights[i]) for i in rows],
        node_ids=[members.node_ids[i] for i in rows],
        member_dists=members.member_dists[rows],
    )


@dataclass
class _Path:
    node_id: int  # ROOT before the first token
    token_ids: list[int]
    log_prob: float
    finished: bool = False
    nodes: tuple[int, ...] = ()  # forwarded nodes of the path, first to last


def _generate_tree(
    model: LoadedModel, prompt_ids: list[int], options: _Options
) -> GenerationResult:
    state = TreeState(model.model, prompt_ids, mode="tree")
    eos = model.eos_token_ids
    max_paths = options.max_paths
    live = [_Path(ROOT, [], 0.0)]
    next_log_probs = {ROOT: torch.log_softmax(state.prompt_logits, dim=-1)}
    finished: list[_Path] = []
    steps: list[Step] = []
    pruned_count = 0
    for depth in range(1, options.max_new_tokens + 1):
        threshold = options.threshold_at(depth)

        # 1. Candidates: each live path's parallel set, ranked by path log-probability.
        candidates: list[tuple[float, _Path, int, float]] = []
        for path in live:
            log_probs = next_log_probs[path.node_id]
            ids, member_probs = select_parallel_set(
                log_probs.exp(), threshold=threshold, max_width=options.max_width
            )
            for token_id, prob in zip(ids, member_probs, strict=True):
                score = path.log_prob + math.log(max(prob, 1e-45))
                candidates.append((score, path, token_id, prob))
        candidates.sort(key=lambda c: -c[0])
        chosen = candidates[:max_paths]

        # 2. The step's parallel set: distinct tokens over the chosen branches, best first.
        #    End-of-sequence ends a branch and is not text, as in superposition mode, so a
        #    step whose branches all end adds no set.
        seen: dict[int, float] = {}
        for _, _, token_id, prob in chosen:
            if token_id not in eos:
                seen[token_id] = max(prob, seen.get(token_id, 0.0))
        if seen:
            step = Step(
                position=len(prompt_ids) + depth - 1,
                tokens=[TokenChoice(_decode_token(model, i), i, p) for i, p in seen.items()],
            )
            steps.append(step)
            if options.on_step is not None:
                options.on_step(step)

        # 3. Finished branches leave; the rest are forwarded together.
        growing = []
        for score, path, token_id, _ in chosen:
            child = _Path(path.node_id, [*path.token_ids, token_id], score, nodes=path.nodes)
            if token_id in eos:
                child.finished = True
                finished.append(child)
            else:
                growing.append(child)
        if not growing or depth == options.max_new_tokens:
            live = growing
            break
        scoring = options.prune is not None and depth > 1
        output = state.expand(
            [c.node_id for c in growing],
            [c.token_ids[-1] for c in growing],
            capture_layers=options.prune_layers if scoring else (),
        )
        next_log_probs = {}
        for child, node_id, logits in zip(growing, output.node_ids, output.logits, strict=True):
            child.node_id = node_id
            child.nodes = (*child.nodes, node_id)
            next_log_probs[node_id] = torch.log_softmax(logits, dim=-1)
        live = growing

        # 4. Retroactive pruning of the previous step's branches, scored by their children.
        if scoring:
            removed = _prune_siblings(state, options, output, growing, steps, depth)
            if removed:
                pruned_count += len(removed)
                live = [p for p in live if not removed.intersection(p.nodes)]
                finished = [p for p in finished if not removed.intersection(p.nodes)]

        # 5. Drop dead branches from the cache: keep the paths of live nodes only.
        keep: set[int] = set()
        for path in live:
            keep.update(state.path(path.node_id))
        if len(keep) < state.num_nodes:
            state.compact(keep)

    everything = finished + live
    best = max(everything, key=lambda p: p.log_prob / max(1, len(p.token_ids)))
    best_ids = [t for t in best.token_ids if t not in eos]
    return GenerationResult(
        text=bracket_text([s.tokens for s in steps]),
        best_text=model.tokenizer.decode(best_ids, skip_special_tokens=True),
        best_token_ids=best_ids,
        steps=steps,
        stats=_stats(state, prompt_ids, steps, options.start, pruned_count),
        mode="tree",
        prompt_token_ids=prompt_ids,
    )


def _prune_siblings(
    state: TreeState,
    options: _Options,
    output,
    growing: list[_Path],
    steps: list[Step],
    depth: int,
) -> set[int]:
    """Score the nodes of depth `depth - 1` by their children's attention; return those removed.

    Siblings are the depth `depth - 1` nodes with one parent that have children in `output`.
    A node's score is the mean attention its own children's rows pay to its slot.
    """
    prune = options.prune
    attention = aggregate_attention(
        _stack_attention(output.attentions, options.prune_layers),
        layer_weights=layer_weights(len(options.prune_layers), scheme=prune.layer_scheme),
        head_reduce=prune.head_reduce,
    )  # [q, k]
    rows: dict[int, list[int]] = {}
    for row, child in enumerate(growing):
        rows.setdefault(state.parent(child.node_id), []).append(row)
    groups: dict[int, list[int]] = {}
    for node_id in rows:
        groups.setdefault(state.parent(node_id), []).append(node_id)

    removed: set[int] = set()
    node_marks: list[tuple[int, bool, float]] = []  # (token id, pruned, keep weight)
    for members in groups.values():
        if len(members) < 2:
            continue
        scores = torch.stack(
            [member_scores(attention, [state.slot(n)], rows[n])[0] for n in members]
        )
        cut = options.prune_at(depth).cut
        weights = keep_weights(relative_scores(scores), steepness=prune.steepness, cut=cut)
        keep = prune_decision(weights, floor=prune.floor)
        for node_id, kept, weight in zip(members, keep.tolist(), weights.tolist(), strict=True):
            node_marks.append((state.token(node_id), not kept, weight))
            if not kept:
                removed.add(node_id)
    if not node_marks:
        return removed

    # A token of the step is marked pruned when every scored branch that chose it was pruned
    # and no unscored branch chose it; its keep weight is the highest among its branches.
    scored_ids = {token_id for token_id, _, _ in node_marks}
    survivors = {
        state.token(n) for n in state.node_ids() if state.depth(n) == depth - 1 and n not in removed
    }
    marks: dict[int, tuple[bool, float]] = {}
    for token_id in scored_ids:
        weight = max(w for t, _, w in node_marks if t == token_id)
        marks[token_id] = (token_id not in survivors, weight)
    steps[depth - 2] = _mark_pruned(steps[depth - 2], marks)
    return removed


def bracket_text(sets: list[list[TokenChoice]], *, show_pruned: bool = False) -> str:
    """Join parallel sets into TEMPO-style text: `The [cat|dog] sat`.

    A set of one token is written as it is. Whitespace that every member of a set starts with
    is written once, before the bracket. Pruned members are left out unless `show_pruned`,
    which writes them struck through as `~token~`.
    """
    pieces = []
    for members in sets:
        shown = [m for m in members if show_pruned or not m.pruned]
        if not shown:
            continue
        if len(shown) == 1:
            member = shown[0]
            pieces.append(f"~{member.token}~" if member.pruned else member.token)
            continue
        prefix = _common_whitespace_prefix([m.token for m in shown])
        inner = []
        for member in shown:
            # A line break inside a bracket would split the set over two lines, so it is escaped.
            text = member.token[len(prefix) :].replace("\n", "\\n")
            inner.append(f"~{text}~" if member.pruned else text)
        pieces.append(f"{prefix}[{'|'.join(inner)}]")
    return "".join(pieces)


def _common_whitespace_prefix(texts: list[str]) -> str:
    prefix = ""
    for chars in zip(*texts, strict=False):
        if len(set(chars)) == 1 and chars[0].isspace():
            prefix += chars[0]
        else:
            break
    return prefix


from tempo_search._callable import make_module_callable  # noqa: E402

make_module_callable(__name__, generate)
