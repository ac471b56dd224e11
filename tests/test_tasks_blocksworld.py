"""Tests of the Blocksworld simulator, plan parser and verifier, generator, files, and mask."""

import json
import random

import pytest
import torch
from tokenizers import Tokenizer, decoders, models
from transformers import PreTrainedTokenizerFast

from tempo_search.tasks import (
    Action,
    BlocksState,
    BlocksworldInstance,
    BlocksworldTask,
    PlanParseError,
    apply_action,
    generate_instances,
    goal_reached,
    legal_actions,
    load_instance,
    load_instances,
    optimal_plan,
    parse_plan,
    save_instances,
    verify_plan,
)

EOS = "<eos>"


def make_tokenizer(pieces):
    """A tokenizer whose ids decode to exactly the given pieces, id 0 being EOS."""
    vocab = {EOS: 0, "<unk>": 1}
    for piece in pieces:
        vocab.setdefault(piece, len(vocab))
    model = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    model.decoder = decoders.Fuse()
    return PreTrainedTokenizerFast(tokenizer_object=model, eos_token=EOS, unk_token="<unk>")


# Every character of the actions is a piece too, as in byte-level vocabularies; the mask assumes
# that each legal line can be spelled.
PIECES = [*sorted(set("pick up put down stack unstack from on\nABCD")), "pick", " up", "put",
          " down", "stack", "un", "unstack", " from", " on", " A", " B", " C", " D", "A\n", " A\n",
          "pick up", "\nput", "x"]  # fmt: skip


@pytest.fixture(scope="module")
def tokenizer():
    return make_tokenizer(PIECES)


# C on A, A and B on the table; goal: A on B.
EXAMPLE = BlocksworldInstance(BlocksState((("A", "C"), ("B",))), (("B", "A"),), 4, "example")


# ----------------------------------------------------------------------------------------------
# Simulator


def test_legal_actions_hand_empty():
    actions = [str(a) for a in legal_actions(EXAMPLE.initial)]
    assert actions == ["pick up B", "unstack C from A"]


def test_legal_actions_holding():
    state = BlocksState((("A",), ("B",)), holding="C")
    actions = [str(a) for a in legal_actions(state)]
    assert actions == ["put down C", "stack C on A", "stack C on B"]


@pytest.mark.parametrize(
    ("action", "message"),
    [
        (Action("pick up", "A"), "A is not clear (C is on top)"),
        (Action("unstack", "C", "B"), "C is on A, not on B"),
        (Action("stack", "C", "B"), "the hand holds nothing, not C"),
        (Action("put down", "B"), "the hand holds nothing, not B"),
        (Action("pick up", "Z"), "no block Z"),
        (Action("fly", "A"), "unknown action kind"),
    ],
)
def test_apply_action_illegal(action, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        apply_action(EXAMPLE.initial, action)


def test_apply_action_sequence():
    state = apply_action(EXAMPLE.initial, Action("unstack", "C", "A"))
    assert state.holding == "C"
    assert state.stacks == (("A",), ("B",))
    state = apply_action(state, Action("stack", "C", "B"))
    assert state == BlocksState((("A",), ("B", "C")))


def test_pick_up_needs_table():
    state = BlocksState((("A", "C"),))
    with pytest.raises(ValueError, match="C is on A, not on the table"):
        apply_action(state, Action("pick up", "C"))


def test_stack_needs_clear_target():
    state = BlocksState((("A", "C"),), holding="B")
    with pytest.raises(ValueError, match="A is not clear"):
        apply_action(state, Action("stack", "B", "A"))


def test_goal_reached_partial_goal():
    state = BlocksState((("B", "A"), ("C",), ("D",)))
    assert goal_reached(state, (("B", "A"),))
    assert not goal_reached(state, (("A", "B"),))
    assert not goal_reached(BlocksState((("B",), ("C",)), holding="A"), (("B",),))


def test_blocks_state_invalid():
    with pytest.raises(ValueError, match="twice"):
        BlocksState((("A", "B"), ("A",)))
    with pytest.raises(ValueError, match="single capital letter"):
        BlocksState((("a",),))
    with pytest.raises(ValueError, match="both held and in a stack"):
        BlocksState((("A",),), holding="A")


def test_optimal_plan_example():
    plan = [str(a) for a in optimal_plan(EXAMPLE.initial, EXAMPLE.goal)]
    assert plan == ["unstack C from A", "put down C", "pick up A", "stack A on B"]


# ----------------------------------------------------------------------------------------------
# Plans


def test_parse_plan_lenient_forms():
    text = "[PLAN]\n1. Unstack c from A.\n2) put down C\n- pick up a\n\nSTACK A ON TOP OF B\n[PLAN END]"
    actions = [str(a) for a in parse_plan(text)]
    assert actions == ["unstack C from A", "put down C", "pick up A", "stack A on B"]


def test_parse_plan_error_names_line():
    with pytest.raises(PlanParseError, match="line 2") as info:
        parse_plan("pick up A\nmove A to B\n")
    assert info.value.line_number == 2


def test_verify_plan_correct():
    verdict = verify_plan(EXAMPLE, "unstack C from A\nput down C\npick up A\nstack A on B")
    assert verdict.correct
    assert verdict.num_actions == 4
    assert verdict.optimal_length == 4


def test_verify_plan_illegal_action():
    verdict = verify_plan(EXAMPLE, "pick up A\nstack A on B")
    assert not verdict.correct
    assert not verdict.legal
    assert "action 1 is illegal" in verdict.error


def test_verify_plan_goal_not_reached():
    verdict = verify_plan(EXAMPLE, "unstack C from A\nput down C")
    assert verdict.legal
    assert not verdict.reaches_goal
    assert "goal does not hold" in verdict.error


def test_verify_plan_unparsable():
    verdict = verify_plan(EXAMPLE, "teleport A")
    assert not verdict.correct
    assert "not an action" in verdict.error


# ----------------------------------------------------------------------------------------------
# Generator and files


@pytest.mark.parametrize("steps", [2, 4, 6])
def test_generate_instances_optimal_length(steps):
    instances = generate_instances(5, steps, seed=3)
    assert len({(i.initial, i.goal) for i in instances}) == 5
    for instance in instances:
        assert len(optimal_plan(instance.initial, instance.goal)) == steps
        assert instance.optimal_length == steps


def test_generate_instances_deterministic():
    assert generate_instances(4, 4, seed=7) == generate_instances(4, 4, seed=7)
    assert generate_instances(4, 4, seed=7) != generate_instances(4, 4, seed=8)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"n": 2, "steps": 3, "seed": 0}, "positive even number"),
        ({"n": 2, "steps": 0, "seed": 0}, "positive even number"),
        ({"n": 0, "steps": 2, "seed": 0}, "n must be >= 1"),
        ({"n": 1, "steps": 2, "seed": 0, "num_blocks": 9}, "num_blocks must be from 2 to 6"),
        ({"n": 1, "steps": 12, "seed": 0, "num_blocks": 2}, "found only 0 of 1"),
    ],
)
def test_generate_instances_invalid(kwargs, message):
    with pytest.raises(ValueError, match=message):
        generate_instances(**kwargs)


def test_packaged_instances_match_generator():
    expected = [i for steps in (2, 4, 6) for i in generate_instances(10, steps, seed=0)]
    assert load_instances() == expected


def test_save_and_load_round_trip(tmp_path):
    path = tmp_path / "instances.json"
    instances = generate_instances(3, 2, seed=1)
    save_instances(path, instances)
    assert load_instances(path) == instances


def test_load_instance_file(tmp_path):
    path = tmp_path / "one.json"
    path.write_text(json.dumps(EXAMPLE.to_dict()))
    assert load_instance(path) == EXAMPLE


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"goal": [["A"]]}, "missing key 'initial'"),
        ({"initial": [["A"]]}, "missing key 'goal'"),
        ({"initial": [["A"]], "goal": [["A"]], "colour": 1}, "unknown keys ['colour']"),
        ({"initial": "A B", "goal": [["A"]]}, "key 'initial' must be a list of stacks"),
        ({"initial": [["A", "A"]], "goal": [["A"]]}, "lists block 'A' twice"),
        ({"initial": [["A"]], "goal": [["B"]]}, "goal names blocks ['B']"),
        ({"initial": [["a"]], "goal": [["a"]]}, "single capital letter"),
        ({"initial": [["A"]], "goal": [["A"]], "blocks": ["A", "B"]}, "key 'blocks'"),
        ({"initial": [["A"]], "goal": [["A"]], "optimal_length": -2}, "optimal_length"),
        ([["A"]], "must be a JSON object"),
    ],
)
def test_load_instance_invalid(tmp_path, data, message):
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(data))
    with pytest.raises(ValueError, match=message.replace("[", r"\[").replace("]", r"\]")) as info:
        load_instance(path)
    assert str(path) in str(info.value)


def test_load_instance_invalid_json(tmp_path):
    path = tmp_path / "bad.json"
    path.write_text("{")
    with pytest.raises(ValueError, match="not valid JSON"):
        load_instance(path)


# ----------------------------------------------------------------------------------------------
# Task


def random_walk(task, tokenizer, rng, prefer=None, limit=400):
    ids: list[int] = []
    text = ""
    for _ in range(limit):
        choices = torch.nonzero(task.allowed_tokens(ids, text)).flatten().tolist()
        assert choices, text
        if prefer is not None:
            rest = prefer[len(text) :]
            along = [i for i in choices if i != 0 and rest.startswith(tokenizer.decode([i]))]
            choices = [max(along, key=lambda i: len(tokenizer.decode([i])))] if along else choices
        choice = rng.choice(choices)
        if choice == tokenizer.eos_token_id:
            return text, True
        ids.append(choice)
        text = tokenizer.decode(ids)
    return text, False


def test_task_mask_proposes_legal_actions(tokenizer):
    task = BlocksworldTask(EXAMPLE)
    task.bind(tokenizer, 64)
    mask = task.allowed_tokens([], "")
    pieces = {tokenizer.convert_ids_to_tokens(i) for i in torch.nonzero(mask).flatten().tolist()}
    assert pieces == {"p", "pick", "pick up", "u", "un", "unstack"}
    mask = task.allowed_tokens([5], "unstack")
    pieces = {tokenizer.convert_ids_to_tokens(i) for i in torch.nonzero(mask).flatten().tolist()}
    assert pieces == {" ", " C"}


def test_task_random_walk_is_always_legal(tokenizer):
    rng = random.Random(0)
    for instance in load_instances()[::6]:
        task = BlocksworldTask(instance, max_actions=12)
        task.bind(tokenizer, 64)
        for _ in range(5):
            text, ended = random_walk(task, tokenizer, rng)
            verdict = verify_plan(instance, text)
            assert ended
            assert verdict.legal, (text, verdict)
            assert verdict.num_actions <= 12
            assert task.reward(text) == float(verdict.correct)


def test_task_greedy_walk_along_solver_solves(tokenizer):
    for instance in load_instances()[::5]:
        task = BlocksworldTask(instance)
        task.bind(tokenizer, 64)
        solution = task.solution_text()
        text, ended = random_walk(task, tokenizer, random.Random(0), prefer=solution)
        assert ended
        assert text == solution
        assert task.is_satisfied(text)
        assert verify_plan(instance, text).num_actions == instance.optimal_length


def test_task_goal_reached_allows_only_eos(tokenizer):
    task = BlocksworldTask(EXAMPLE)
    task.bind(tokenizer, 64)
    text = "unstack C from A\nput down C\npick up A\nstack A on B\n"
    mask = task.allowed_tokens([5], text)
    assert torch.nonzero(mask).flatten().tolist() == [tokenizer.eos_token_id]
    assert task.is_finished(text)


def test_task_max_actions_ends_text():
    task = BlocksworldTask(EXAMPLE, max_actions=2)
    assert task.is_finished("pick up B\nput down B\n")
    assert task.reward("pick up B\nput down B\n") == 0.0


def test_task_report():
    task = BlocksworldTask(EXAMPLE)
    report = task.report("unstack C from A\nput down C\npick up A\nstack A on B\n")
    assert report["solved"] is True
    assert report["verified"] is True
    assert report["num_actions"] == 4
    assert report["answer"] == "unstack C from A\nput down C\npick up A\nstack A on B"


def test_task_progress_switch():
    assert BlocksworldTask(EXAMPLE).progress("") is None
    task = BlocksworldTask(EXAMPLE, use_solver_progress=True)
    assert task.progress("") == 1.0
    assert task.progress("unstack C from A\n") == 1.0
    detour = "pick up B\nput down B\n"  # two wasted actions: 4 / (2 + 4)
    assert task.progress(detour) == pytest.approx(4 / 6)


def test_task_prompt():
    prompt = BlocksworldTask(EXAMPLE).prompt
    assert [m["role"] for m in prompt] == ["system", "user"]
    assert prompt[1]["content"] == (
        "Initial state: A is on the table, C is on A, B is on the table. The hand is empty.\n"
        "Goal: B is on the table, A is on B."
    )
    assert "unstack C from A\nput down C\npick up A\nstack A on B" in prompt[0]["content"]


def test_task_invalid():
    with pytest.raises(TypeError, match="BlocksworldInstance"):
        BlocksworldTask({"initial": [["A"]]})
    with pytest.raises(ValueError, match="max_actions"):
        BlocksworldTask(EXAMPLE, max_actions=0)
