"""TEMPO parallel-token generation: every token above a threshold, in one forward per step."""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

import torch

from tempo_search.models import LoadedModel, Prompt, load_model
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
    count = int((probs >= threshold).sum())
    count = max(1, min(count, max_width))
    if exclude:
        probs = probs.clone()
        probs[list(exclude)] = -1.0
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
    context = model.max_length
    if context is not None and len(prompt_ids) + max_new_tokens > context:
        raise ValueError(
            f"max_new_tokens={max_new_tokens} with a prompt of {len(prompt_ids)} tokens passes "
            f"the model's context length of {context}; pass max_new_tokens <= "
            f"{max(0, context - len(prompt_ids))} or a shorter prompt."
        )
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
        on_step: called with each `Step` as it is chosen (for progress display).
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
    check_position_ids(model)
    start = time.perf_counter()
    if mode == "superposition":
        return _generate_superposition(
            model, prompt_ids, threshold, max_new_tokens, max_width, isolate, start, on_step
        )
    return _generate_tree(
        model, prompt_ids, threshold, max_new_tokens, max_width, max_paths, start, on_step
    )


def _decode_token(model: LoadedModel, token_id: int) -> str:
    return model.tokenizer.decode([token_id], skip_special_tokens=False)


def _generate_superposition(
    model: LoadedModel,
    prompt_ids: list[int],
    threshold: float,
    max_new_tokens: int,
    max_width: int,
    isolate: bool,
    start: float,
    on_step: Callable[[Step], None] | None,
) -> GenerationResult:
    state = TreeState(model.model, prompt_ids, mode="superposition", isolate=isolate)
    eos = model.eos_token_ids
    probs = torch.softmax(state.prompt_logits, dim=-1)
    steps: list[Step] = []
    best_ids: list[int] = []
    parent = ROOT
    for depth in range(1, max_new_tokens + 1):
        # 1. The parallel set; a top end-of-sequence token ends generation.
        top = int(torch.argmax(probs))
        if top in eos:
            break
        ids, member_probs = select_parallel_set(
            probs, threshold=threshold, max_width=max_width, exclude=eos
        )
        step = Step(
            position=len(prompt_ids) + depth - 1,
            tokens=[
                TokenChoice(_decode_token(model, i), i, p)
                for i, p in zip(ids, member_probs, strict=True)
            ],
        )
        steps.append(step)
        best_ids.append(ids[0])
        if on_step is not None:
            on_step(step)
        if depth == max_new_tokens:
            break

        # 2. One forward at one logical position; the mixture is the next distribution.
        output = state.expand([parent] * len(ids), ids)
        parent = output.node_ids[0]
        weights = torch.tensor(member_probs, dtype=torch.float32)
        weights = weights / weights.sum()
        member_dists = torch.softmax(output.logits, dim=-1)  # [members, vocab]
        probs = (weights[:, None] * member_dists).sum(dim=0)

    text = bracket_text([s.tokens for s in steps])
    stats = GenerationStats(
        forward_passes=state.forward_passes,
        tokens_forwarded=state.tokens_forwarded,
        prompt_tokens=len(prompt_ids),
        generated_steps=len(steps),
        seconds=time.perf_counter() - start,
        cache_length=state.cache_length,
        peak_cache_length=state.peak_cache_length,
        live_tokens=state.num_nodes,
    )
    return GenerationResult(
        text=text,
        best_text=model.tokenizer.decode(best_ids, skip_special_tokens=True),
        best_token_ids=best_ids,
        steps=steps,
        stats=stats,
        mode="superposition",
        prompt_token_ids=prompt_ids,
    )


@dataclass
class _Path:
    node_id: int  # ROOT before the first token
    token_ids: list[int]
    log_prob: float
    finished: bool = False


def _generate_tree(
    model: LoadedModel,
    prompt_ids: list[int],
    threshold: float,
    max_new_tokens: int,
    max_width: int,
    max_paths: int,
    start: float,
    on_step: Callable[[Step], None] | None,
) -> GenerationResult:
    state = TreeState(model.model, prompt_ids, mode="tree")
    eos = model.eos_token_ids
    live = [_Path(ROOT, [], 0.0)]
    next_log_probs = {ROOT: torch.log_softmax(state.prompt_logits, dim=-1)}
    finished: list[_Path] = []
    steps: list[Step] = []
    for depth in range(1, max_new_tokens + 1):
        # 1. Candidates: each live path's parallel set, ranked by path log-probability.
        candidates: list[tuple[float, _Path, int, float]] = []
        for path in live:
            log_probs = next_log_probs[path.node_id]
            ids, member_probs = select_parallel_set(
                log_probs.exp(), threshold=threshold, max_width=max_width
            )
            for token_id, prob in zip(ids, member_probs, strict=True):
                score = path.log_prob + math.log(max(prob, 1e-45))
                candidates.append((score, path, token_id, prob))
        candidates.sort(key=lambda c: -c[0])
        chosen = candidates[:max_paths]

        # 2. The step's parallel set: distinct tokens over the chosen branches, best first.
        seen: dict[int, float] = {}
        for _, _, token_id, prob in chosen:
            seen[token_id] = max(prob, seen.get(token_id, 0.0))
        step = Step(
            position=len(prompt_ids) + depth - 1,
            tokens=[TokenChoice(_decode_token(model, i), i, p) for i, p in seen.items()],
        )
        steps.append(step)
        if on_step is not None:
            on_step(step)

        # 3. Finished branches leave; the rest are forwarded together.
        growing = []
        for score, path, token_id, _ in chosen:
            child = _Path(path.node_id, [*path.token_ids, token_id], score)
            if token_id in eos:
                child.finished = True
                finished.append(child)
            else:
                growing.append(child)
        if not growing or depth == max_new_tokens:
            live = growing
            break
        output = state.expand([c.node_id for c in growing], [c.token_ids[-1] for c in growing])
        next_log_probs = {}
        for child, node_id, logits in zip(growing, output.node_ids, output.logits, strict=True):
            child.node_id = node_id
            next_log_probs[node_id] = torch.log_softmax(logits, dim=-1)
        live = growing

        # 4. Drop dead branches from the cache: keep the paths of live nodes only.
        keep: set[int] = set()
        for path in live:
            keep.update(state.path(path.node_id))
        if len(keep) < state.num_nodes:
            state.compact(keep)

    everything = finished + live
    best = max(everything, key=lambda p: p.log_prob / max(1, len(p.token_ids)))
    text = bracket_text([s.tokens for s in steps])
    stats = GenerationStats(
        forward_passes=state.forward_passes,
        tokens_forwarded=state.tokens_forwarded,
        prompt_tokens=len(prompt_ids),
        generated_steps=len(steps),
        seconds=time.perf_counter() - start,
        cache_length=state.cache_length,
        peak_cache_length=state.peak_cache_length,
        live_tokens=state.num_nodes,
    )
    return GenerationResult(
        text=text,
        best_text=model.tokenizer.decode(best.token_ids, skip_special_tokens=True),
        best_token_ids=best.token_ids,
        steps=steps,
        stats=stats,
        mode="tree",
        prompt_token_ids=prompt_ids,
    )


def bracket_text(sets: list[list[TokenChoice]], *, show_pruned: bool = False) -> str:
    """Join parallel sets into TEMPO-style text: `The [cat|dog] sat`.

    A set of one token is written as it is. Whitespace that every member of a set starts with
    is written once, before the bracket. Pruned members are left out unless `show_pruned`,
    which writes them struck through as `~token~`.
    """
    pieces = []
    for members in sets:
        texts = [
            f"~{m.token}~" if m.pruned else m.token
            for m in members
            if show_pruned or not m.pruned
        ]
        if not texts:
            continue
        if len(texts) == 1:
            pieces.append(texts[0])
            continue
        prefix = _common_whitespace_prefix(texts)
        inner = "|".join(t[len(prefix) :] for t in texts)
        pieces.append(f"{prefix}[{inner}]")
    return "".join(pieces)


def _common_whitespace_prefix(texts: list[str]) -> str:
    prefix = ""
    for chars in zip(*texts, strict=False):
        if len(set(chars)) == 1 and chars[0].isspace():
            prefix += chars[0]
        else:
            break
    return prefix
