"""Blocksworld with a hand, in the classic four-operator form, and plans one action per line.

Blocks are single capital letters. A state is a set of stacks on the table plus the block in the
hand, if any. The actions:

- `pick up X`: the hand is empty, X is on the table and clear. Afterwards the hand holds X.
- `put down X`: the hand holds X; then X is on the table.
- `unstack X from Y`: the hand is empty, X is clear and directly on Y; then the hand holds X.
- `stack X on Y`: the hand holds X and Y is clear; then X is on Y.

A goal is a list of stacks, bottom block first: each goal stack's bottom block must be on the
table and each other block directly on the one listed before it, with the hand empty. Blocks that
no goal stack names may be anywhere.

Instance files are JSON objects:

    {"name": "bw4-2-0", "initial": [["A", "C"], ["B"], ["D"]], "goal": [["B", "A"], ["C"], ["D"]],
     "optimal_length": 2}

`initial` lists every block once; `blocks` (optional) must then name the same set, and
`optimal_length` (optional) is the length of a shortest plan.
"""

from __future__ import annotations

import collections
import importlib.resources
import itertools
import json
import logging
import random
import re
from collections.abc import Hashable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tempo_search.tasks.base import MoveTask

logger = logging.getLogger(__name__)

__all__ = [
    "Action",
    "BlocksState",
    "BlocksworldInstance",
    "BlocksworldTask",
    "PlanParseError",
    "PlanVerdict",
    "apply_action",
    "generate_instances",
    "goal_reached",
    "legal_actions",
    "load_instance",
    "load_instances",
    "optimal_plan",
    "parse_plan",
    "save_instances",
    "verify_plan",
]

_BLOCK_NAME = re.compile(r"[A-Z]")
# Breadth-first search visits every state; 6 blocks have about 20,000 states with the hand,
# 7 blocks several hundred thousand, which takes minutes in Python.
MAX_GENERATED_BLOCKS = 6
_PACKAGED_INSTANCES = "blocksworld_instances.json"

Stacks = tuple[tuple[str, ...], ...]


def _check_stacks(stacks: Any, what: str) -> Stacks:
    """Validate a list of stacks (bottom block first) of single capital letters."""
    if isinstance(stacks, str) or not isinstance(stacks, Iterable):
        raise ValueError(
            f"{what} must be a list of stacks such as [['A', 'B'], ['C']], got {stacks!r}"
        )
    result = []
    seen: set[str] = set()
    for stack in stacks:
        if isinstance(stack, str) or not isinstance(stack, Iterable):
            raise ValueError(
                f"{what} stack {stack!r} is not a list of blocks; write it like ['A', 'B'] "
                "(bottom block first)"
            )
        stack = tuple(stack)
        if not stack:
            raise ValueError(f"{what} contains an empty stack; leave it out")
        for block in stack:
            if not isinstance(block, str) or not _BLOCK_NAME.fullmatch(block):
                raise ValueError(
                    f"{what} block {block!r} is not a single capital letter; name blocks A to Z"
                )
            if block in seen:
                raise ValueError(f"{what} lists block {block!r} twice; list each block once")
            seen.add(block)
        result.append(stack)
    return tuple(sorted(result))


@dataclass(frozen=True)
class BlocksState:
    """Stacks on the table (bottom block first, sorted by bottom block) and the held block."""

    stacks: Stacks
    holding: str | None = None

    def __post_init__(self) -> None:
        stacks = _check_stacks(self.stacks, "stacks")
        if self.holding is not None:
            if not isinstance(self.holding, str) or not _BLOCK_NAME.fullmatch(self.holding):
                raise ValueError(f"holding {self.holding!r} is not a single capital letter or None")
            if any(self.holding in stack for stack in stacks):
                raise ValueError(f"block {self.holding!r} is both held and in a stack")
        object.__setattr__(self, "stacks", stacks)

    @property
    def blocks(self) -> tuple[str, ...]:
        held = (self.holding,) if self.holding else ()
        return tuple(sorted([b for stack in self.stacks for b in stack] + list(held)))

    def below(self) -> dict[str, str]:
        """Map from each block in a stack to the block under it, or "table"."""
        result = {}
        for stack in self.stacks:
            result[stack[0]] = "table"
            for lower, upper in itertools.pairwise(stack):
                result[upper] = lower
        return result

    def clear_blocks(self) -> tuple[str, ...]:
        return tuple(sorted(stack[-1] for stack in self.stacks))


@dataclass(frozen=True)
class Action:
    """One action: `kind` is "pick up", "put down", "stack" or "unstack"; `other` is the block
    below for "stack" and "unstack"."""

    kind: str
    block: str
    other: str | None = None

    def __str__(self) -> str:
        if self.kind == "stack":
            return f"stack {self.block} on {self.other}"
        if self.kind == "unstack":
            return f"unstack {self.block} from {self.other}"
        return f"{self.kind} {self.block}"


def legal_actions(state: BlocksState) -> list[Action]:
    """Return every action legal in `state`, in a fixed order."""
    if state.holding is not None:
        held = state.holding
        actions = [Action("put down", held)]
        actions += [Action("stack", held, top) for top in state.clear_blocks()]
        return actions
    actions = []
    for stack in sorted(state.stacks, key=lambda s: s[-1]):
        if len(stack) == 1:
            actions.append(Action("pick up", stack[0]))
        else:
            actions.append(Action("unstack", stack[-1], stack[-2]))
    return actions


def apply_action(state: BlocksState, action: Action) -> BlocksState:
    """Return the state after `action`.

    Raises:
        ValueError: when the action is not legal in `state`; the message gives the reason.
    """
    stacks = [list(stack) for stack in state.stacks]
    block, other = action.block, action.other
    where = {b: i for i, stack in enumerate(stacks) for b in stack}

    if action.kind in ("pick up", "unstack"):
        if state.holding is not None:
            raise ValueError(f"cannot {action}: the hand holds {state.holding}")
        if block not in where:
            raise ValueError(f"cannot {action}: there is no block {block} on the table")
        stack = stacks[where[block]]
        if stack[-1] != block:
            raise ValueError(f"cannot {action}: {block} is not clear ({stack[-1]} is on top)")
        below = stack[-2] if len(stack) > 1 else "table"
        if action.kind == "pick up" and below != "table":
            raise ValueError(f"cannot {action}: {block} is on {below}, not on the table")
        if action.kind == "unstack" and below != other:
            raise ValueError(f"cannot {action}: {block} is on {below}, not on {other}")
        stack.pop()
        return BlocksState(tuple(tuple(s) for s in stacks if s), block)

    if action.kind in ("put down", "stack"):
        if state.holding != block:
            held = state.holding or "nothing"
            raise ValueError(f"cannot {action}: the hand holds {held}, not {block}")
        if action.kind == "put down":
            stacks.append([block])
        else:
            if other not in where:
                raise ValueError(f"cannot {action}: there is no block {other} on the table")
            target = stacks[where[other]]
            if target[-1] != other:
                raise ValueError(f"cannot {action}: {other} is not clear ({target[-1]} is on it)")
            target.append(block)
        return BlocksState(tuple(tuple(s) for s in stacks), None)

    raise ValueError(f"unknown action kind {action.kind!r}; use pick up, put down, stack, unstack")


def goal_reached(state: BlocksState, goal: Stacks) -> bool:
    """Return whether the hand is empty and every goal stack is built as listed, with its bottom
    block on the table."""
    if state.holding is not None:
        return False
    below = state.below()
    for stack in goal:
        if below.get(stack[0]) != "table":
            return False
        for lower, upper in itertools.pairwise(stack):
            if below.get(upper) != lower:
                return False
    return True


def _describe(stacks: Stacks) -> str:
    facts = []
    for stack in stacks:
        facts.append(f"{stack[0]} is on the table")
        facts += [f"{upper} is on {lower}" for lower, upper in itertools.pairwise(stack)]
    return ", ".join(facts)


# ----------------------------------------------------------------------------------------------
# Instances


@dataclass(frozen=True)
class BlocksworldInstance:
    """A start state (hand empty), goal stacks, and optionally the length of a shortest plan."""

    initial: BlocksState
    goal: Stacks
    optimal_length: int | None = None
    name: str = ""

    def __post_init__(self) -> None:
        if not isinstance(self.initial, BlocksState):
            raise TypeError(f"initial must be a BlocksState, got {type(self.initial).__name__}")
        if self.initial.holding is not None:
            raise ValueError(
                f"initial state holds {self.initial.holding}; instances start with an empty hand"
            )
        goal = _check_stacks(self.goal, "goal")
        unknown = {b for stack in goal for b in stack} - set(self.initial.blocks)
        if unknown:
            raise ValueError(
                f"goal names blocks {sorted(unknown)} that are not in the initial state "
                f"{list(self.initial.blocks)}; use only blocks of the initial state"
            )
        object.__setattr__(self, "goal", goal)
        if self.optimal_length is not None and (
            isinstance(self.optimal_length, bool)
            or not isinstance(self.optimal_length, int)
            or self.optimal_length < 0
        ):
            raise ValueError(
                f"optimal_length must be a non-negative int or None, got {self.optimal_length!r}"
            )

    @property
    def blocks(self) -> tuple[str, ...]:
        return self.initial.blocks

    @classmethod
    def from_dict(cls, data: Any, *, source: str = "instance") -> BlocksworldInstance:
        """Build an instance from its JSON object.

        Raises:
            ValueError: naming the missing or invalid key and the expected form.
        """
        if not isinstance(data, dict):
            raise ValueError(
                f"{source} must be a JSON object with keys 'initial' and 'goal', got "
                f"{type(data).__name__}"
            )
        for key in ("initial", "goal"):
            if key not in data:
                raise ValueError(
                    f"{source} is missing key {key!r}; give 'initial' and 'goal' as lists of "
                    "stacks, bottom block first, like [['A', 'B'], ['C']]"
                )
        known = {"name", "blocks", "initial", "goal", "optimal_length"}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"{source} has unknown keys {unknown}; the keys are {sorted(known)}")
        try:
            initial = BlocksState(_check_stacks(data["initial"], f"{source} key 'initial'"))
            goal = _check_stacks(data["goal"], f"{source} key 'goal'")
        except TypeError as error:
            raise ValueError(f"{source}: {error}") from error
        if "blocks" in data:
            blocks = data["blocks"]
            if not isinstance(blocks, list) or sorted(blocks) != list(initial.blocks):
                raise ValueError(
                    f"{source} key 'blocks' is {blocks!r} but 'initial' holds "
                    f"{list(initial.blocks)}; list the same blocks or leave 'blocks' out"
                )
        name = data.get("name", "")
        if not isinstance(name, str):
            raise ValueError(f"{source} key 'name' must be a string, got {name!r}")
        optimal_length = data.get("optimal_length")
        try:
            return cls(initial, goal, optimal_length, name)
        except ValueError as error:
            raise ValueError(f"{source}: {error}") from error

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "name": self.name,
            "blocks": list(self.blocks),
            "initial": [list(stack) for stack in self.initial.stacks],
            "goal": [list(stack) for stack in self.goal],
        }
        if self.optimal_length is not None:
            data["optimal_length"] = self.optimal_length
        return data


def load_instance(path: str | Path) -> BlocksworldInstance:
    """Read one instance from a JSON file (the format in this module's docstring).

    Raises:
        ValueError: for invalid JSON or a missing or invalid key, naming the file and the key.
    """
    path = Path(path)
    if not path.is_file():
        what = "a folder" if path.is_dir() else "missing"
        raise ValueError(
            f"Blocksworld instance file {str(path)!r} is {what}; pass a JSON instance file, "
            "or --generate N to generate instances."
        )
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as error:
        raise ValueError(f"{path} is not valid JSON: {error}") from error
    except UnicodeDecodeError as error:
        raise ValueError(
            f"{path} is not a UTF-8 text file ({error}); pass a JSON instance file."
        ) from error
    return BlocksworldInstance.from_dict(data, source=str(path))


def load_instances(path: str | Path | None = None) -> list[BlocksworldInstance]:
    """Read a JSON list of instances (or an object with key "instances").

    With no path, return the instances packaged with tempo_search: ten each with optimal plan
    length 2, 4 and 6 over four blocks, made by `generate_instances(10, steps, seed=0)`.
    """
    if path is None:
        resource = importlib.resources.files("tempo_search") / "data" / _PACKAGED_INSTANCES
        text, source = resource.read_text(encoding="utf-8"), _PACKAGED_INSTANCES
    else:
        text, source = Path(path).read_text(encoding="utf-8"), str(path)
    try:
        data = json.loads(text)
    except json.JSONDecodeError as error:
        raise ValueError(f"{source} is not valid JSON: {error}") from error
    if isinstance(data, dict) and "instances" in data:
        data = data["instances"]
    if not isinstance(data, list):
        raise ValueError(
            f"{source} must hold a JSON list of instances or an object with key 'instances'"
        )
    return [
        BlocksworldInstance.from_dict(item, source=f"{source} instance {i}")
        for i, item in enumerate(data)
    ]


def save_instances(path: str | Path, instances: Sequence[BlocksworldInstance]) -> None:
    """Write instances as a JSON list that `load_instances` reads back."""
    lines = [json.dumps(instance.to_dict()) for instance in instances]
    Path(path).write_text("[\n" + ",\n".join(lines) + "\n]\n", encoding="utf-8")


# ----------------------------------------------------------------------------------------------
# Search


def _successors(state: BlocksState) -> list[tuple[Action, BlocksState]]:
    return [(action, apply_action(state, action)) for action in legal_actions(state)]


def optimal_plan(initial: BlocksState, goal: Stacks) -> list[Action] | None:
    """Return a shortest plan from `initial` to `goal` by breadth-first search, or None."""
    goal = _check_stacks(goal, "goal")
    parents: dict[BlocksState, tuple[BlocksState, Action] | None] = {initial: None}
    queue = collections.deque([initial])
    while queue:
        state = queue.popleft()
        if goal_reached(state, goal):
            plan: list[Action] = []
            while (link := parents[state]) is not None:
                state, action = link
                plan.append(action)
            return plan[::-1]
        for action, child in _successors(state):
            if child not in parents:
                parents[child] = (state, action)
                queue.append(child)
    return None


def _distances(start: BlocksState) -> dict[BlocksState, int]:
    distances = {start: 0}
    queue = collections.deque([start])
    while queue:
        state = queue.popleft()
        for _, child in _successors(state):
            if child not in distances:
                distances[child] = distances[state] + 1
                queue.append(child)
    return distances


def _random_stacks(blocks: Sequence[str], rng: random.Random) -> Stacks:
    order = list(blocks)
    rng.shuffle(order)
    stacks: list[list[str]] = []
    for block in order:
        choice = rng.randrange(len(stacks) + 1)
        if choice == len(stacks):
            stacks.append([block])
        else:
            stacks[choice].append(block)
    return tuple(sorted(tuple(stack) for stack in stacks))


def generate_instances(
    n: int, steps: int, seed: int, *, num_blocks: int = 4
) -> list[BlocksworldInstance]:
    """Generate `n` distinct instances whose shortest plan has exactly `steps` actions.

    Each instance draws a random start, finds every full configuration at distance `steps` by
    breadth-first search, and draws the goal among them. The same arguments give the same list.

    Raises:
        ValueError: when `steps` is not a positive even number (every block move takes two
            actions, so shortest plans between hand-empty states are even), `num_blocks` is
            outside 2..MAX_GENERATED_BLOCKS, or `n` such instances do not exist.
    """
    for name, value in (("n", n), ("steps", steps), ("seed", seed), ("num_blocks", num_blocks)):
        if isinstance(value, bool) or not isinstance(value, int):
            raise TypeError(f"{name} must be an int, got {value!r}")
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    if steps < 2 or steps % 2:
        raise ValueError(
            f"steps must be a positive even number such as 2, 4 or 6, got {steps}; shortest "
            "plans between states with an empty hand are even"
        )
    if not 2 <= num_blocks <= MAX_GENERATED_BLOCKS:
        raise ValueError(f"num_blocks must be from 2 to {MAX_GENERATED_BLOCKS}, got {num_blocks}")
    rng = random.Random(seed)
    blocks = [chr(ord("A") + i) for i in range(num_blocks)]
    instances: list[BlocksworldInstance] = []
    seen: set[tuple[Stacks, Stacks]] = set()
    for _ in range(50 * n):
        initial = BlocksState(_random_stacks(blocks, rng))
        distances = _distances(initial)
        goals = sorted(
            state.stacks
            for state, distance in distances.items()
            if distance == steps and state.holding is None
        )
        if not goals:
            continue
        goal = rng.choice(goals)
        if (initial.stacks, goal) in seen:
            continue
        seen.add((initial.stacks, goal))
        name = f"bw{num_blocks}-{steps}-{len(instances)}"
        instances.append(BlocksworldInstance(initial, goal, steps, name))
        if len(instances) == n:
            return instances
    raise ValueError(
        f"found only {len(instances)} of {n} instances with {num_blocks} blocks and shortest plan "
        f"length {steps}; pass a smaller steps or n, or more blocks"
    )


# ----------------------------------------------------------------------------------------------
# Plans


class PlanParseError(ValueError):
    """A plan line that is not an action; `line_number` counts from 1."""

    def __init__(self, message: str, line_number: int) -> None:
        super().__init__(message)
        self.line_number = line_number


_NUMBERING = re.compile(r"^\s*(?:\d+\s*[.):]|[-*•])\s*")
_ACTION_PATTERNS = (
    (re.compile(r"pick\s+up\s+([a-z])", re.IGNORECASE), "pick up"),
    (re.compile(r"put\s+down\s+([a-z])", re.IGNORECASE), "put down"),
    (re.compile(r"stack\s+([a-z])\s+on\s+(?:top\s+of\s+)?([a-z])", re.IGNORECASE), "stack"),
    (
        re.compile(r"unstack\s+([a-z])\s+from\s+(?:on\s+top\s+of\s+)?([a-z])", re.IGNORECASE),
        "unstack",
    ),
)
_SKIPPED_LINES = {"[plan]", "[plan end]", "plan:", "plan"}


def parse_plan(text: str) -> list[Action]:
    """Read one action per line, such as `unstack A from B`, `put down A`, `pick up C`,
    `stack C on A`.

    Case, leading numbering ("1.", "-"), a trailing period, blank lines and `[PLAN]` /
    `[PLAN END]` markers are tolerated.

    Raises:
        PlanParseError: for a line that is not one of the four actions, naming the line.
    """
    actions = []
    for line_number, raw in enumerate(text.splitlines(), start=1):
        line = _NUMBERING.sub("", raw).strip().rstrip(".").strip()
        if not line or line.lower() in _SKIPPED_LINES:
            continue
        for pattern, kind in _ACTION_PATTERNS:
            match = pattern.fullmatch(line)
            if match:
                names = [name.upper() for name in match.groups()]
                actions.append(Action(kind, names[0], names[1] if len(names) > 1 else None))
                break
        else:
            raise PlanParseError(
                f"line {line_number} ({raw.strip()!r}) is not an action; write one of "
                "'pick up X', 'put down X', 'stack X on Y', 'unstack X from Y'",
                line_number,
            )
    return actions


@dataclass(frozen=True)
class PlanVerdict:
    """Result of running a plan in the simulator.

    Attributes:
        correct: every action is legal and the goal holds after the last one.
        legal: every action could be executed.
        reaches_goal: the goal holds after the last legal action.
        num_actions: actions read from the text.
        optimal_length: shortest plan length of the instance, when known.
        plan: the actions read, written in the canonical form.
        error: why the plan is not correct, or None.
    """

    correct: bool
    legal: bool
    reaches_goal: bool
    num_actions: int
    optimal_length: int | None
    plan: tuple[str, ...] = field(default=())
    error: str | None = None


def verify_plan(instance: BlocksworldInstance, text: str) -> PlanVerdict:
    """Parse and execute a plan; problems are reported in the verdict, not raised."""
    try:
        actions = parse_plan(text)
    except PlanParseError as error:
        return PlanVerdict(False, False, False, 0, instance.optimal_length, (), str(error))
    plan = tuple(str(action) for action in actions)
    state = instance.initial
    for number, action in enumerate(actions, start=1):
        try:
            state = apply_action(state, action)
        except ValueError as error:
            reached = goal_reached(state, instance.goal)
            return PlanVerdict(
                False,
                False,
                reached,
                len(actions),
                instance.optimal_length,
                plan,
                f"action {number} is illegal: {error}",
            )
    reached = goal_reached(state, instance.goal)
    error = None if reached else "the goal does not hold after the last action"
    return PlanVerdict(reached, True, reached, len(actions), instance.optimal_length, plan, error)


# ----------------------------------------------------------------------------------------------
# Task


_SYSTEM = """You solve Blocksworld problems. Blocks stand in stacks on a table, and one hand \
moves them one at a time. The actions are:
pick up X: take block X from the table. X must have nothing on it and the hand must be empty.
put down X: put the held block X on the table.
unstack X from Y: take block X from the top of block Y. X must have nothing on it and the hand \
must be empty.
stack X on Y: put the held block X on block Y. Y must have nothing on it.
Write the plan with one action per line and nothing else. Stop when the goal holds and the hand \
is empty.

Example:
{example}"""

_EXAMPLE = BlocksworldInstance(BlocksState((("A", "C"), ("B",))), (("B", "A"),), 4, "example")


def _describe_instance(instance: BlocksworldInstance) -> str:
    return (
        f"Initial state: {_describe(instance.initial.stacks)}. The hand is empty.\n"
        f"Goal: {_describe(instance.goal)}."
    )


class BlocksworldTask(MoveTask):
    """Plan for one Blocksworld instance, one action per line; the mask proposes only actions
    that are legal in the state reached.

    Args:
        instance: the instance to solve.
        max_actions: plan length after which only EOS is allowed. Default: 4 per block, enough
            for any instance (put every block on the table, two actions each, then build the
            goal stacks, two actions each).
        use_solver_progress: give `progress` from breadth-first search (the shortest plan length
            divided by the actions taken plus the distance left, so 1.0 on a shortest plan). Off by
            default because it gives the answer away.
    """

    def __init__(
        self,
        instance: BlocksworldInstance,
        *,
        max_actions: int | None = None,
        use_solver_progress: bool = False,
    ) -> None:
        super().__init__()
        if not isinstance(instance, BlocksworldInstance):
            raise TypeError(
                f"instance must be a BlocksworldInstance (see load_instance), got "
                f"{type(instance).__name__}"
            )
        if max_actions is None:
            max_actions = 4 * len(instance.blocks)
        if isinstance(max_actions, bool) or not isinstance(max_actions, int) or max_actions < 1:
            raise ValueError(f"max_actions must be a positive int or None, got {max_actions!r}")
        self.instance = instance
        self.max_actions = max_actions
        self.use_solver_progress = bool(use_solver_progress)
        self._goal_distances: dict[BlocksState, int] | None = None

    def __repr__(self) -> str:
        return f"BlocksworldTask({self.instance.name or self.instance.to_dict()!r})"

    @property
    def prompt(self) -> list[dict[str, str]]:
        """System message with the rules and a worked example, then the instance."""
        return [
            {"role": "system", "content": _SYSTEM.format(example=_example())},
            {"role": "user", "content": _describe_instance(self.instance)},
        ]

    def initial_state(self) -> Hashable:
        return (self.instance.initial, 0)

    def legal_moves(self, state: Hashable) -> list[tuple[str, Hashable]]:
        blocks, taken = state  # type: ignore[misc]
        if goal_reached(blocks, self.instance.goal) or taken >= self.max_actions:
            return []
        return [(f"{action}\n", (child, taken + 1)) for action, child in _successors(blocks)]

    def state_is_success(self, state: Hashable) -> bool:
        return goal_reached(state[0], self.instance.goal)  # type: ignore[index]

    def _distance_to_goal(self, blocks: BlocksState) -> int | None:
        if self._goal_distances is None:
            # Every action has an inverse (pick up / put down, unstack / stack), so the distance
            # from a goal state equals the distance to it. Search from every reachable goal state.
            reachable = _distances(self.instance.initial)
            goals = [s for s in reachable if goal_reached(s, self.instance.goal)]
            distances: dict[BlocksState, int] = dict.fromkeys(goals, 0)
            queue = collections.deque(goals)
            while queue:
                state = queue.popleft()
                for _, child in _successors(state):
                    if child not in distances:
                        distances[child] = distances[state] + 1
                        queue.append(child)
            self._goal_distances = distances
        return self._goal_distances.get(blocks)

    def state_can_succeed(self, state: Hashable) -> bool:
        blocks, taken = state  # type: ignore[misc]
        distance = self._distance_to_goal(blocks)
        return distance is not None and taken + distance <= self.max_actions

    def solution_lines(self) -> list[str] | None:
        """Return a shortest plan, one `action\\n` line each, or None when the goal is unreachable."""
        plan = optimal_plan(self.instance.initial, self.instance.goal)
        if plan is None or len(plan) > self.max_actions:
            return None
        return [f"{action}\n" for action in plan]

    def verify(self, text: str) -> PlanVerdict:
        return verify_plan(self.instance, text)

    def reward(self, text: str) -> float:
        """1.0 when the plan is legal and reaches the goal, else 0.0."""
        return 1.0 if self.verify(text).correct else 0.0

    def progress(self, text: str) -> float | None:
        if not self.use_solver_progress:
            return None
        parse = self.parse(text)
        if not parse.valid:
            return 0.0
        blocks, taken = parse.state  # type: ignore[misc]
        distance = self._distance_to_goal(blocks)
        if distance is None:
            return 0.0
        shortest = self._distance_to_goal(self.instance.initial) or 0
        total = taken + distance
        return 1.0 if total == 0 else shortest / total

    def is_satisfied(self, text: str) -> bool:
        return self.is_finished(text) and self.verify(text).correct

    def report(self, text: str) -> dict[str, Any]:
        """Report the plan: `solved` (the text is a finished plan), `verified` (the simulator
        accepts it and the goal is met), `answer` (the actions read, one per line), its length
        and the error."""
        verdict = self.verify(text)
        return {
            "solved": self.is_finished(text),
            "answer": "\n".join(verdict.plan) if verdict.plan else None,
            "verified": verdict.correct,
            "num_actions": verdict.num_actions,
            "optimal_length": verdict.optimal_length,
            "error": verdict.error,
        }


def _example() -> str:
    """Write the worked example of the prompt, with its plan from the breadth-first search."""
    plan = optimal_plan(_EXAMPLE.initial, _EXAMPLE.goal)
    assert plan is not None
    assert len(plan) == _EXAMPLE.optimal_length
    lines = "\n".join(str(action) for action in plan)
    return f"{_describe_instance(_EXAMPLE)}\n{lines}"
