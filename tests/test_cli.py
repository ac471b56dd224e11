"""The tempo-search command line, run in-process on a tiny model saved to disk."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tempo_search.cli import EXIT_INTERRUPTED, EXIT_INVALID, EXIT_OK, main
from tempo_search.testing import tiny_model
from tempo_search.tree import iter_nodes, load_tree_json
from tempo_search.tree_state import TreeState

PROMPT = "the cat sat"


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> str:
    """A tiny Llama with its tokenizer, saved as a model folder."""
    folder = tmp_path_factory.mktemp("tiny-llama")
    loaded = tiny_model("llama")
    loaded.model.save_pretrained(folder)
    loaded.tokenizer.save_pretrained(folder)
    return str(folder)


@pytest.fixture(scope="module")
def puzzle_model_dir(tmp_path_factory) -> str:
    """The tiny Llama with room for the puzzle prompts (about 460 tokens; rotary positions
    have no built-in limit)."""
    folder = tmp_path_factory.mktemp("tiny-llama-puzzles")
    loaded = tiny_model("llama")
    loaded.model.config.max_position_embeddings = 1024
    loaded.model.save_pretrained(folder)
    loaded.tokenizer.save_pretrained(folder)
    return str(folder)


def run_cli(argv: list[str], capsys) -> tuple[int, str, str]:
    """Run `main(argv)` and return the exit code, stdout and stderr.

    argparse reports its own errors by raising SystemExit, the rest by returning the code.
    """
    try:
        code = main(argv)
    except SystemExit as exit_error:
        code = exit_error.code
    except KeyboardInterrupt:
        pytest.fail("KeyboardInterrupt escaped main()")
    captured = capsys.readouterr()
    return code, captured.out, captured.err


# ----------------------------------------------------------------- generate


def test_generate_json_fields(model_dir, capsys):
    code, out, err = run_cli(
        ["generate", PROMPT, "--model", model_dir, "--max-new-tokens", "4", "--json"], capsys
    )
    assert code == EXIT_OK, err
    data = json.loads(out)
    assert isinstance(data["text"], str)
    assert isinstance(data["best_text"], str)
    assert len(data["steps"]) == 4
    for step in data["steps"]:
        assert isinstance(step["position"], int)
        assert step["tokens"]
        for token in step["tokens"]:
            assert isinstance(token["token"], str)
            assert isinstance(token["id"], int)
            assert 0.0 < token["prob"] <= 1.0
    for key in ("forward_passes", "tokens_forwarded", "seconds", "cache_length", "live_tokens"):
        assert key in data["stats"], key
    assert data["stats"]["forward_passes"] >= 1


def test_generate_positions_follow_prompt(model_dir, capsys):
    code, out, _ = run_cli(
        ["generate", PROMPT, "--model", model_dir, "--max-new-tokens", "3", "--json"], capsys
    )
    assert code == EXIT_OK
    data = json.loads(out)
    prompt_length = data["stats"]["prompt_tokens"]
    positions = [step["position"] for step in data["steps"]]
    assert positions == [prompt_length, prompt_length + 1, prompt_length + 2]


def test_generate_text_output(model_dir, capsys):
    code, out, _ = run_cli(
        ["generate", PROMPT, "--model", model_dir, "--max-new-tokens", "3"], capsys
    )
    assert code == EXIT_OK
    assert out.startswith(PROMPT)
    assert "best path: " + PROMPT in out
    assert "forward passes" in out


# ----------------------------------------------------------------- search


SEARCH_STATS_KEYS = (
    "simulations",
    "nodes",
    "forward_passes",
    "tokens_forwarded",
    "rollout_tokens",
    "seconds",
)


def test_search_json_fields(model_dir, capsys):
    code, out, err = run_cli(
        ["search", PROMPT, "--model", model_dir, "--simulations", "12", "--json"], capsys
    )
    assert code == EXIT_OK, err
    data = json.loads(out)
    assert isinstance(data["text"], str)
    assert data["completions"]
    for completion in data["completions"]:
        assert isinstance(completion["text"], str)
        assert isinstance(completion["score"], float)
        assert isinstance(completion["visits"], int)
    for key in SEARCH_STATS_KEYS:
        assert key in data["stats"], key
    assert data["stats"]["simulations"] == 12
    assert data["interrupted"] is False


def test_search_json_with_rollouts(model_dir, capsys):
    code, out, _ = run_cli(
        [
            "search",
            PROMPT,
            "--model",
            model_dir,
            "--simulations",
            "8",
            "--rollout",
            "greedy",
            "--rollout-depth",
            "3",
            "--json",
        ],
        capsys,
    )
    assert code == EXIT_OK
    assert json.loads(out)["stats"]["rollout_tokens"] > 0


def test_search_text_output(model_dir, capsys):
    code, out, _ = run_cli(["search", PROMPT, "--model", model_dir, "--simulations", "8"], capsys)
    assert code == EXIT_OK
    assert out.startswith(PROMPT)
    assert "1. score=" in out
    assert "8 simulations" in out
    assert "stopped by simulations" in out


def test_search_tree_json_file(model_dir, capsys, tmp_path):
    path = tmp_path / "out.json"
    code, out, _ = run_cli(
        [
            "search",
            PROMPT,
            "--model",
            model_dir,
            "--simulations",
            "10",
            "--tree",
            str(path),
            "--json",
        ],
        capsys,
    )
    assert code == EXIT_OK
    root = load_tree_json(path)
    stats = json.loads(out)["stats"]
    assert len(list(iter_nodes(root))) == stats["nodes"] + 1
    assert root.visit_count > 0


def test_search_tree_dot_file(model_dir, capsys, tmp_path):
    path = tmp_path / "out.dot"
    code, _, _ = run_cli(
        ["search", PROMPT, "--model", model_dir, "--simulations", "10", "--tree", str(path)],
        capsys,
    )
    assert code == EXIT_OK
    text = Path(path).read_text(encoding="utf-8")
    assert text.startswith("digraph")
    assert "->" in text
    assert text.rstrip().endswith("}")


def test_search_tree_unknown_suffix(model_dir, capsys, tmp_path):
    path = tmp_path / "out.txt"
    code, out, err = run_cli(
        ["search", PROMPT, "--model", model_dir, "--simulations", "4", "--tree", str(path)],
        capsys,
    )
    assert code == EXIT_INVALID
    assert out == ""
    assert "out.txt" in err
    assert not path.exists()


# ----------------------------------------------------------------- check-model


def test_check_model_passes(model_dir, capsys):
    code, out, _ = run_cli(["check-model", "--model", model_dir], capsys)
    assert code == EXIT_OK
    assert "passed" in out


def test_check_model_json(model_dir, capsys):
    code, out, _ = run_cli(["check-model", "--model", model_dir, "--json"], capsys)
    assert code == EXIT_OK
    data = json.loads(out)
    assert data["passed"] is True
    assert data["max_abs_diff"] <= data["tolerance"]


def test_check_model_fails_below_tolerance(model_dir, capsys):
    # Shared-cache forwards and plain forwards differ by about 1e-5 on this model, never by 0.
    code, out, _ = run_cli(
        ["check-model", "--model", model_dir, "--tolerance", "1e-12", "--json"], capsys
    )
    assert code == 1
    assert json.loads(out)["passed"] is False


# ----------------------------------------------------------------- invalid input


INVALID_CASES = [
    (["generate", ""], ["prompt is empty", "''"]),
    (["search", ""], ["prompt is empty", "''"]),
    (["generate", PROMPT, "--threshold", "0"], ["threshold", "0.0"]),
    (["generate", PROMPT, "--threshold", "1.5"], ["threshold", "1.5"]),
    (["generate", PROMPT, "--threshold", "abc"], ["--threshold", "'abc'"]),
    (["generate", PROMPT, "--max-new-tokens", "0"], ["max_new_tokens", "0"]),
    (["generate", PROMPT, "--max-width", "0"], ["max_width", "0"]),
    (["search", PROMPT, "--simulations", "0"], ["simulations", "0"]),
    (["search", PROMPT, "--c-puct", "-1"], ["c_puct", "-1"]),
    (["search", PROMPT, "--widening", "1,2"], ["'1,2'"]),
    (["search", PROMPT, "--widening", "0.5,1.5,0,0"], ["1.5"]),
    (["search", PROMPT, "--root-widening", "1,2"], ["root_widening='1,2'"]),
    (["search", PROMPT, "--batch-size", "0"], ["batch_size", "0"]),
    (["search", PROMPT, "--time-limit", "0"], ["time_limit", "0"]),
    (["search", PROMPT, "--time-limit", "-1"], ["time_limit", "-1"]),
    (["search", PROMPT, "--max-nodes", "2"], ["max_nodes", "2"]),
    (["search", PROMPT, "--max-new-tokens", "300"], ["max_new_tokens", "300"]),
    (["search", PROMPT, "--selection", "foo"], ["--selection", "'foo'"]),
    (["search", PROMPT, "--commit", "twice"], ["--commit", "'twice'"]),
    (["search", PROMPT, "--rollout", "foo"], ["--rollout", "'foo'"]),
    (["search", PROMPT, "--simulations", "many"], ["--simulations", "'many'"]),
    (["search", PROMPT, "--likelihood-weight", "-1"], ["--likelihood-weight -1.0", ">= 0"]),
    (["search", PROMPT, "--reward-weight", "nan"], ["--reward-weight nan", ">= 0"]),
    (
        ["search", PROMPT, "--likelihood-weight", "0", "--reward-weight", "0"],
        ["--likelihood-weight 0.0", "all 0"],
    ),
]


@pytest.mark.parametrize(
    ("argv", "fragments"),
    INVALID_CASES,
    ids=[" ".join(argv[2:]) or argv[0] for argv, _ in INVALID_CASES],
)
def test_invalid_input_exits_2_with_one_line(model_dir, capsys, argv, fragments):
    code, out, err = run_cli([*argv, "--model", model_dir], capsys)
    assert code == EXIT_INVALID
    assert out == ""
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    for fragment in fragments:
        assert fragment in lines[0]


@pytest.mark.parametrize("command", ["generate", "search", "check-model"])
def test_missing_model_path_exits_2(capsys, command):
    prompt = [] if command == "check-model" else [PROMPT]
    code, out, err = run_cli([command, *prompt, "--model", "/does/not/exist"], capsys)
    assert code == EXIT_INVALID
    assert out == ""
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert "/does/not/exist" in lines[0]


# ----------------------------------------------------------------- Ctrl-C


@pytest.fixture
def interrupt_third_expand(monkeypatch):
    """Make the third `TreeState.expand` call of the search raise KeyboardInterrupt."""
    original_expand = TreeState.expand
    calls = []

    def expand(self, *args, **kwargs):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return original_expand(self, *args, **kwargs)

    monkeypatch.setattr(TreeState, "expand", expand)
    return calls


def test_search_interrupted_prints_result(model_dir, capsys, interrupt_third_expand):
    code, out, err = run_cli(
        ["search", PROMPT, "--model", model_dir, "--simulations", "50", "--batch-size", "1"],
        capsys,
    )
    assert len(interrupt_third_expand) == 3
    assert code != EXIT_OK
    assert code != EXIT_INVALID
    assert "Traceback" not in err
    assert "interrupted" in err
    assert out.startswith(PROMPT)
    assert "stopped by interrupted" in out


def test_search_interrupted_json(model_dir, capsys, interrupt_third_expand):
    code, out, err = run_cli(
        [
            "search",
            PROMPT,
            "--model",
            model_dir,
            "--simulations",
            "50",
            "--batch-size",
            "1",
            "--json",
        ],
        capsys,
    )
    assert code != EXIT_OK
    assert "Traceback" not in err
    assert "interrupted" in err
    data = json.loads(out)
    assert data["interrupted"] is True
    assert data["stats"]["stopped_by"] == "interrupted"
    # Two expansions of one node each finished before the interrupt.
    assert data["stats"]["nodes"] == 2


def test_search_interrupted_inside_forward(model_dir, capsys, monkeypatch):
    """Ctrl-C mostly lands inside a model forward, and the search must still print its result."""
    original_forward = TreeState._forward
    calls = []

    def forward(self, *args, **kwargs):
        calls.append(1)
        if len(calls) == 4:
            raise KeyboardInterrupt
        return original_forward(self, *args, **kwargs)

    monkeypatch.setattr(TreeState, "_forward", forward)
    code, out, err = run_cli(
        ["search", PROMPT, "--model", model_dir, "--simulations", "50", "--json"], capsys
    )
    assert code != EXIT_OK
    assert "Traceback" not in err
    assert json.loads(out)["interrupted"] is True


def test_interrupt_while_loading_exits_130(model_dir, capsys, monkeypatch):
    def load_model(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr("tempo_search.models.load_model", load_model)
    code, out, err = run_cli(["search", PROMPT, "--model", model_dir], capsys)
    assert code == EXIT_INTERRUPTED
    assert out == ""
    assert "Traceback" not in err
    assert "interrupted" in err


def test_search_prune_flags_build_coherence(model_dir, monkeypatch, capsys):
    captured = {}
    import tempo_search.search as search_module

    original = search_module.search

    def spy(*args, **kwargs):
        captured.update(kwargs)
        return original(*args, **kwargs)

    monkeypatch.setattr(search_module, "search", spy)
    code = main(
        [
            "search", "the cat", "--model", str(model_dir), "--simulations", "4",
            "--prune", "--prune-cut", "-0.2", "--prune-steepness", "5",
            "--threshold-schedule", "flat:0.5,0.01,0.2",
        ]
    )  # fmt: skip

    assert code == 0
    assert captured["prune_children"] is True
    assert captured["coherence"].cut == -0.2
    assert captured["coherence"].steepness == 5.0
    assert captured["widening"].start == 0.5


def test_search_prune_cut_without_prune_exits_2(model_dir, capsys):
    code = main(["search", "the cat", "--model", str(model_dir), "--prune-cut", "-0.2"])

    assert code == 2
    assert "--prune-cut" in capsys.readouterr().err


def test_generate_ctrl_c_prints_partial_sets(model_dir, monkeypatch, capsys):
    from tempo_search.tree_state import TreeState

    calls = {"count": 0}
    original = TreeState.expand

    def interrupt_third(self, *args, **kwargs):
        calls["count"] += 1
        if calls["count"] == 3:
            raise KeyboardInterrupt
        return original(self, *args, **kwargs)

    monkeypatch.setattr(TreeState, "expand", interrupt_third)
    code = main(["generate", "the cat", "--model", model_dir, "--max-new-tokens", "8", "--json"])
    output = capsys.readouterr()

    assert code == 130
    data = json.loads(output.out)
    assert data["interrupted"] is True
    assert len(data["steps"]) == 3
    assert "Traceback" not in output.err


def test_search_unsatisfied_constraint_exits_1(model_dir, capsys):
    code = main(
        [
            "search", "the cat", "--model", model_dir, "--simulations", "8",
            "--max-new-tokens", "4", "--keywords", "zebra", "--json",
        ]
    )  # fmt: skip
    data = json.loads(capsys.readouterr().out)

    assert code == 1
    assert data["solved"] is False
    assert data["task"]["constraints"]
    assert data["stats"]["simulations"] <= 8


def test_solve_game24_json_verified(puzzle_model_dir, capsys):
    code, out, _ = run_cli(
        ["solve", "game24", "1 2 3 4", "--model", puzzle_model_dir, "--json"], capsys
    )
    data = json.loads(out)
    assert code == 0
    assert data["solved"] is True
    assert data["verified"] is True


def test_solve_game24_answer_uses_each_number(puzzle_model_dir, capsys):
    from tempo_search.tasks.game24 import verify_game24

    _, out, _ = run_cli(
        ["solve", "game24", "1 2 3 4", "--model", puzzle_model_dir, "--json"], capsys
    )
    assert verify_game24([1, 2, 3, 4], f"Answer: {json.loads(out)['answer']}").correct


def test_solve_blocksworld_generated_text_output(puzzle_model_dir, capsys):
    code, out, _ = run_cli(
        [
            "solve", "blocksworld", "--generate", "1", "--steps", "2",
            "--model", puzzle_model_dir,
        ],
        capsys,
    )  # fmt: skip
    assert code == 0
    assert "verified=True" in out


def test_solve_token_actions_budget_too_small_exits_1(puzzle_model_dir, capsys):
    code, out, _ = run_cli(
        [
            "solve", "game24", "1 2 3 4", "--model", puzzle_model_dir, "--actions", "tokens",
            "--simulations", "4", "--json",
        ],
        capsys,
    )  # fmt: skip
    assert code == 1
    assert json.loads(out)["solved"] is False


def test_solve_rollouts_zero_exits_2(puzzle_model_dir, capsys):
    code, _, err = run_cli(
        ["solve", "game24", "1 2 3 4", "--model", puzzle_model_dir, "--rollouts", "0"], capsys
    )
    assert code == 2
    assert "num_rollouts=0" in err


def test_solve_unsolvable_game24_says_every_line_searched(puzzle_model_dir, capsys):
    code, out, _ = run_cli(
        ["solve", "game24", "1 1 1 1", "--model", puzzle_model_dir, "--simulations", "2000"],
        capsys,
    )
    assert code == 1
    assert "no solution exists: every legal line was searched" in out


def test_solve_blocksworld_text_gives_plan_length(puzzle_model_dir, capsys):
    _, out, _ = run_cli(
        [
            "solve", "blocksworld", "--generate", "1", "--steps", "2",
            "--model", puzzle_model_dir,
        ],
        capsys,
    )  # fmt: skip
    assert "(optimal 2)" in out


def test_cli_guide_default_is_search_default():
    from tempo_search.cli import build_parser
    from tempo_search.search import DEFAULT_GUIDE

    args = build_parser().parse_args(["search", "the cat"])
    assert args.guide == DEFAULT_GUIDE


def test_cli_stop_when_solved_default_on():
    from tempo_search.cli import build_parser

    assert build_parser().parse_args(["search", "the cat"]).stop_when_solved is True


def test_cli_no_stop_when_solved_flag():
    from tempo_search.cli import build_parser

    args = build_parser().parse_args(["search", "the cat", "--no-stop-when-solved"])
    assert args.stop_when_solved is False


@pytest.fixture
def search_kwargs(monkeypatch) -> dict:
    """Return the dict that receives the keyword arguments of each `search` call the CLI makes."""
    import tempo_search.search as search_module

    captured: dict = {}
    original = search_module.search

    def spy(*args, **kwargs):
        captured.update(kwargs)
        return original(*args, **kwargs)

    monkeypatch.setattr(search_module, "search", spy)
    return captured


def test_cli_backup_default_mean():
    from tempo_search.cli import build_parser

    assert build_parser().parse_args(["search", "the cat"]).backup == "mean"


def test_search_backup_flag_reaches_search(model_dir, search_kwargs):
    code = main(
        ["search", "the cat", "--model", str(model_dir), "--simulations", "4", "--backup", "max"]
    )
    assert code == 0
    assert search_kwargs["backup"] == "max"


def test_search_root_widening_reaches_search(model_dir, search_kwargs):
    argv = ["search", "the cat", "--model", str(model_dir), "--simulations", "4"]
    code = main([*argv, "--root-widening", "1.0,0.25,0.05,0.002"])
    assert code == 0
    assert search_kwargs["root_widening"] == "1.0,0.25,0.05,0.002"


def test_search_no_weight_flags_passes_none(model_dir, search_kwargs):
    code = main(["search", "the cat", "--model", str(model_dir), "--simulations", "4"])
    assert code == 0
    assert search_kwargs["value"] is None


def test_search_weight_flags_reach_search(model_dir, search_kwargs):
    from tempo_search.policies.values import ValueWeights

    argv = ["search", "the cat", "--model", str(model_dir), "--simulations", "4"]
    code = main([*argv, "--likelihood-weight", "3"])
    assert code == 0
    assert search_kwargs["value"] == ValueWeights(likelihood=3.0, reward=1.0)


def test_solve_reward_weight_keeps_move_default(puzzle_model_dir, search_kwargs):
    from tempo_search.move_search import DEFAULT_MOVE_VALUE
    from tempo_search.policies.values import ValueWeights

    argv = ["solve", "game24", "4 9 10 13", "--model", str(puzzle_model_dir)]
    main([*argv, "--simulations", "2", "--reward-weight", "2"])
    expected = ValueWeights(likelihood=DEFAULT_MOVE_VALUE.likelihood, reward=2.0)
    assert search_kwargs["value"] == expected
