"""Tests of the benchmark suite (`benchmarks.suite`) and `tempo-search bench`, on a tiny model."""

from __future__ import annotations

import inspect
import json
import sys
from pathlib import Path

import pytest
import torch

from tempo_search import bench_cli, cli
from tempo_search.testing import tiny_model

# `benchmarks` is a folder of the repository, not part of the installed package.
_REPOSITORY = str(Path(__file__).resolve().parent.parent)
if _REPOSITORY not in sys.path:
    sys.path.insert(0, _REPOSITORY)

from benchmarks import (  # noqa: E402
    budget,
    coherence,
    engine,
    engine_extra,
    keywords,
    mcts,
    pruning,
    quality,
    suite,
    tasks,
)

_DOC = Path(_REPOSITORY) / "docs" / "benchmarks.md"

TINY_BUDGET = suite.Budget(
    engine_repetitions=1,
    engine_warmup=0,
    engine_max_new_tokens=2,
    engine_eager=False,
    mcts_simulations=4,
    mcts_max_new_tokens=3,
    mcts_rollout_depth=None,
    mcts_profile_simulations=4,
    mcts_profile_max_new_tokens=3,
    pruning_prompts=1,
    pruning_max_new_tokens=3,
    pruning_variants=2,
    quality_prompts=2,
    quality_mcts_simulations=4,
    engine_extra_eager=False,
    engine_extra_tree_sizes=(12,),
    engine_extra_repetitions=1,
    engine_extra_warmup=0,
    engine_extra_simulations=(3,),
    engine_extra_max_nodes=8,
    engine_extra_max_new_tokens=4,
    budget_simulations=20,
    budget_max_nodes=8,
    budget_max_new_tokens=4,
    coherence_sets=1,
    coherence_simulations=2,
    coherence_max_new_tokens=3,
    keywords_sets=1,
    keywords_simulations=2,
    keywords_max_new_tokens=3,
    tasks_puzzles=1,
    tasks_simulations=2,
    tasks_no_rollout_puzzles=0,
    tasks_blocksworld_instances=1,
    tasks_countdown_puzzles=1,
    rollout_reuse_sets=1,
    rollout_reuse_simulations=2,
    rollout_reuse_max_new_tokens=3,
)

# Every block of every benchmark, each with an old body that a run must replace. The tiny
# budget has no rollouts, so `mcts.rollout` is not written and must stay as it is.
ALL_BLOCKS = [block for name in suite.BENCHMARKS for block in suite.block_names(name)]
UNWRITTEN_BLOCKS = {"mcts.rollout"}
DOC_TEXT = (
    "# Benchmarks\n\nText written by hand stays.\n\n"
    + "".join(
        f"## {block}\n\n{suite.marker_pair(block)[0]}\nOLD {block} TABLE\n"
        f"{suite.marker_pair(block)[1]}\n\n"
        for block in ALL_BLOCKS
    )
    + "Closing text stays.\n"
)


def _block_body(text: str, block: str) -> str:
    start, end = suite.marker_pair(block)
    return text.split(start, 1)[1].split(end, 1)[0]


@pytest.fixture(scope="module")
def suite_run(tmp_path_factory):
    """One suite run of every benchmark on a tiny Llama, with a temporary doc and out folder.

    No `image_dir` is passed, so the plots go to `img/` next to the doc.
    """
    folder = tmp_path_factory.mktemp("suite")
    doc = folder / "benchmarks.md"
    doc.write_text(DOC_TEXT, encoding="utf-8")
    threads = torch.get_num_threads()
    model = tiny_model("llama")
    # The puzzle prompts are longer than the tiny config's 256 positions; rotary positions
    # have no built-in limit (as in tests/test_benchmarks_tasks.py).
    model.model.config.max_position_embeddings = 1024
    try:
        path = suite.run_suite(
            only=suite.BENCHMARKS,
            quick=True,
            out=folder / "out",
            threads=1,
            model=model,
            budget=TINY_BUDGET,
            doc=doc,
            command="pytest",
            show_progress=False,
        )
    finally:
        torch.set_num_threads(threads)
    record = json.loads(path.read_text(encoding="utf-8"))
    return {"folder": folder, "doc": doc, "path": path, "record": record}


def test_run_suite_record_has_top_level_keys(suite_run):
    expected = {"command", "commit", "machine", "versions", "wall_seconds", "results", "budget"}
    assert expected <= set(suite_run["record"])


def test_run_suite_record_has_every_benchmark(suite_run):
    assert set(suite_run["record"]["results"]) == set(suite.BENCHMARKS)


def test_run_suite_record_is_in_out_folder(suite_run):
    assert suite_run["path"].parent == suite_run["folder"] / "out"


def test_run_suite_record_quality_has_every_method(suite_run):
    from benchmarks.quality import METHODS

    assert list(suite_run["record"]["results"]["quality"]["methods"]) == list(METHODS)


def test_run_suite_record_quality_counts_prompts(suite_run):
    rows = suite_run["record"]["results"]["quality"]["methods"]["beam search"]["rows"]
    assert len(rows) == TINY_BUDGET.quality_prompts


def test_run_suite_record_versions_name_torch(suite_run):
    assert suite_run["record"]["versions"]["torch"] is not None


@pytest.mark.parametrize("block", sorted(set(ALL_BLOCKS) - UNWRITTEN_BLOCKS))
def test_run_suite_replaces_block(suite_run, block):
    text = suite_run["doc"].read_text(encoding="utf-8")
    assert f"OLD {block} TABLE" not in text


@pytest.mark.parametrize("block", ALL_BLOCKS)
def test_run_suite_keeps_one_block_each(suite_run, block):
    text = suite_run["doc"].read_text(encoding="utf-8")
    assert text.count(suite.marker_pair(block)[0]) == 1


def test_run_suite_appends_nothing(suite_run):
    text = suite_run["doc"].read_text(encoding="utf-8")
    assert "## Suite tables" not in text


def test_run_suite_keeps_unwritten_block(suite_run):
    text = suite_run["doc"].read_text(encoding="utf-8")
    assert "OLD mcts.rollout TABLE" in text


def test_run_suite_writes_quality_table(suite_run):
    block = _block_body(suite_run["doc"].read_text(encoding="utf-8"), "quality")
    assert "| TEMPO superposition |" in block


def test_run_suite_writes_budget_table(suite_run):
    block = _block_body(suite_run["doc"].read_text(encoding="utf-8"), "budget")
    assert "| 20 of 20 |" in block


def test_run_suite_writes_keywords_table(suite_run):
    block = _block_body(suite_run["doc"].read_text(encoding="utf-8"), "keywords")
    assert "| beam search + rerank |" in block


def test_run_suite_writes_coherence_table(suite_run):
    block = _block_body(suite_run["doc"].read_text(encoding="utf-8"), "coherence")
    assert "| coherence+prune |" in block


def test_run_suite_writes_engine_capture_table(suite_run):
    block = _block_body(suite_run["doc"].read_text(encoding="utf-8"), "engine.capture")
    assert "| variant | layers captured |" in block


def test_run_suite_writes_engine_extra_memory_table(suite_run):
    block = _block_body(suite_run["doc"].read_text(encoding="utf-8"), "engine_extra.memory")
    assert "| simulations | max_nodes |" in block


def test_run_suite_block_names_run(suite_run):
    block = _block_body(suite_run["doc"].read_text(encoding="utf-8"), "mcts.outside")
    assert f"record `{suite_run['path'].name}`" in block


def test_run_suite_turns_headings_into_captions(suite_run):
    text = suite_run["doc"].read_text(encoding="utf-8")
    assert "### " not in text


def test_run_suite_keeps_text_before_markers(suite_run):
    text = suite_run["doc"].read_text(encoding="utf-8")
    assert "Text written by hand stays." in text


def test_run_suite_keeps_text_after_markers(suite_run):
    text = suite_run["doc"].read_text(encoding="utf-8")
    assert "Closing text stays." in text


def test_run_suite_record_budget_counts_simulations(suite_run):
    figures = suite_run["record"]["results"]["budget"]
    assert figures["simulations_done"] == TINY_BUDGET.budget_simulations


def test_run_suite_record_budget_held(suite_run):
    assert suite_run["record"]["results"]["budget"]["budget_held"] is True


def test_run_suite_record_keywords_counts_sets(suite_run):
    settings = suite_run["record"]["results"]["keywords"]["settings"]
    assert settings["num_sets_done"] == TINY_BUDGET.keywords_sets


def test_run_suite_record_coherence_runs_every_variant(suite_run):
    from benchmarks.coherence import VARIANTS

    runs = suite_run["record"]["results"]["coherence"]["runs"]
    assert [run["variant"] for run in runs] == list(VARIANTS) * TINY_BUDGET.coherence_sets


def test_engine_extra_checks_every_model(suite_run):
    from benchmarks.engine_extra import tiny_models
    from tempo_search.testing import ARCHITECTURES

    rows = suite_run["record"]["results"]["engine_extra"]["exactness"]["rows"]
    # The tiny models of every architecture, then the suite's own model.
    assert len(rows) == len(tiny_models(ARCHITECTURES)) + 1


def test_run_suite_record_engine_extra_passes(suite_run):
    rows = suite_run["record"]["results"]["engine_extra"]["exactness"]["rows"]
    assert all(row["passed"] for row in rows)


def test_run_suite_record_wall_seconds_every_benchmark(suite_run):
    assert set(suite_run["record"]["wall_seconds"]) == set(suite.BENCHMARKS)


def test_run_suite_writes_pareto_png_next_to_doc(suite_run):
    png = suite_run["folder"] / "img" / "quality_pareto.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_run_suite_writes_engine_png(suite_run):
    assert (suite_run["folder"] / "img" / "engine_parallel_step.png").is_file()


def test_replace_block_second_run_keeps_one_block():
    once = suite.replace_block("# T\n", "pruning", "first")
    twice = suite.replace_block(once, "pruning", "second")
    assert twice.count("<!-- bench:pruning:start -->") == 1


def test_replace_block_second_run_drops_old_body():
    once = suite.replace_block("# T\n", "pruning", "first")
    twice = suite.replace_block(once, "pruning", "second")
    assert "first" not in twice


def test_parse_only_keeps_suite_order():
    assert suite.parse_only("quality,engine") == ["engine", "quality"]


def test_parse_only_rejects_unknown_name():
    with pytest.raises(ValueError, match="speed"):
        suite.parse_only("speed")


def test_budget_rejects_zero_prompts():
    with pytest.raises(ValueError, match="quality_prompts"):
        suite.Budget(quality_prompts=0)


def test_tree_paths_first_path_is_generate_best():
    from benchmarks.quality import tree_paths
    from tempo_search.generate import generate

    model = tiny_model("llama")
    result = generate(model, "the cat", mode="tree", max_paths=4, max_new_tokens=6)
    paths = tree_paths(model, result.prompt_token_ids, max_new_tokens=6)
    assert paths[0] == result.best_token_ids


def test_bench_command_without_checkout_exits_2(monkeypatch, capsys):
    monkeypatch.setattr(bench_cli, "suite_root", lambda: None)
    code = cli.main(["bench", "--quick"])
    assert code == 2
    assert "source checkout" in capsys.readouterr().err


def test_budget_rejects_empty_tree_sizes():
    with pytest.raises(ValueError, match="engine_extra_tree_sizes"):
        suite.Budget(engine_extra_tree_sizes=())


def test_budget_rejects_tree_size_one():
    with pytest.raises(ValueError, match="engine_extra_tree_sizes"):
        suite.Budget(engine_extra_tree_sizes=(1,))


def test_budget_rejects_integer_eager_flag():
    with pytest.raises(TypeError, match="engine_extra_eager"):
        suite.Budget(engine_extra_eager=1)


def test_budget_accepts_zero_warmup():
    assert suite.Budget(engine_extra_warmup=0).engine_extra_warmup == 0


def _default(function, parameter: str):
    return inspect.signature(function).parameters[parameter].default


# Each FULL size and the module's own default that it must equal.
FULL_DEFAULTS = [
    ("engine_repetitions", engine.DEFAULT_REPETITIONS),
    ("engine_warmup", engine.DEFAULT_WARMUP),
    ("engine_max_new_tokens", _default(engine.run_benchmarks, "max_new_tokens")),
    ("mcts_simulations", mcts.DEFAULT_SIMULATIONS),
    ("mcts_max_new_tokens", mcts.DEFAULT_MAX_NEW_TOKENS),
    ("mcts_rollout_depth", mcts.DEFAULT_ROLLOUT_DEPTH),
    ("mcts_profile_simulations", mcts.DEFAULT_PROFILE_SIMULATIONS),
    ("mcts_profile_max_new_tokens", mcts.DEFAULT_PROFILE_MAX_NEW_TOKENS),
    ("pruning_variants", len(pruning.VARIANTS)),
    ("quality_prompts", quality.FULL_PROMPTS),
    ("quality_mcts_simulations", quality.MCTS_SIMULATIONS),
    ("engine_extra_tree_sizes", engine_extra.DEFAULT_TREE_SIZES),
    ("engine_extra_repetitions", engine_extra.DEFAULT_REPETITIONS),
    ("engine_extra_warmup", engine_extra.DEFAULT_WARMUP),
    ("engine_extra_simulations", engine_extra.DEFAULT_SIMULATIONS),
    ("engine_extra_max_nodes", engine_extra.DEFAULT_MAX_NODES[1]),
    ("engine_extra_max_new_tokens", _default(engine_extra.memory, "max_new_tokens")),
    ("budget_simulations", budget.DEFAULT_SIMULATIONS),
    ("budget_max_nodes", budget.DEFAULT_MAX_NODES),
    ("budget_max_new_tokens", budget.DEFAULT_MAX_NEW_TOKENS),
    ("coherence_sets", coherence.DEFAULT_SETS),
    ("coherence_simulations", coherence.DEFAULT_SIMULATIONS),
    ("coherence_max_new_tokens", coherence.MAX_NEW_TOKENS),
    ("keywords_sets", keywords.FULL_SETS),
    ("keywords_simulations", keywords.MCTS_SIMULATIONS),
    ("keywords_max_new_tokens", keywords.MAX_NEW_TOKENS),
    ("tasks_puzzles", tasks.DEFAULT_PUZZLES),
    ("tasks_simulations", tasks.DEFAULT_SIMULATIONS),
    ("tasks_no_rollout_puzzles", tasks.DEFAULT_NO_ROLLOUT_PUZZLES),
]


@pytest.mark.parametrize(("field", "expected"), FULL_DEFAULTS)
def test_full_budget_matches_module_default(field, expected):
    assert getattr(suite.FULL, field) == expected


@pytest.mark.parametrize("block", ALL_BLOCKS)
def test_doc_has_one_start_marker(block):
    text = _DOC.read_text(encoding="utf-8")
    assert text.count(suite.marker_pair(block)[0]) == 1


@pytest.mark.parametrize("block", ALL_BLOCKS)
def test_doc_end_marker_follows_start(block):
    text = _DOC.read_text(encoding="utf-8")
    start, end = suite.marker_pair(block)
    assert text.find(start) < text.find(end)


@pytest.mark.parametrize("block", ALL_BLOCKS)
def test_doc_block_holds_one_table(block):
    body = _block_body(_DOC.read_text(encoding="utf-8"), block)
    assert body.count("\n|---") + body.count("\n|:--") == 1


def test_captioned_tables_groups_caption_with_table():
    markdown = "First:\n\n| a |\n|---|\n| 1 |\n\nSecond:\n\n| b |\n|---|\n| 2 |"
    assert suite._captioned_tables(markdown) == [
        "First:\n\n| a |\n|---|\n| 1 |",
        "Second:\n\n| b |\n|---|\n| 2 |",
    ]


def test_captioned_tables_turns_heading_into_caption():
    markdown = "\n### Time outside the model\n\n| a |\n|---|"
    assert suite._captioned_tables(markdown) == ["Time outside the model:\n\n| a |\n|---|"]


def test_run_budget_progress_adds_up_to_steps():
    steps = []
    context = suite.RunContext(
        model=tiny_model("llama"),
        model_arg=None,
        budget=TINY_BUDGET,
        image_dir=Path("unused"),
        progress=steps.append,
    )
    suite.REGISTRY["budget"].run(context)
    assert sum(steps) == suite.REGISTRY["budget"].steps(TINY_BUDGET)


@pytest.mark.parametrize("name", suite.BENCHMARKS)
def test_bench_help_lists_benchmark(name, capsys):
    with pytest.raises(SystemExit):
        cli.main(["bench", "--help"])
    assert f"  {name}  " in capsys.readouterr().out


@pytest.mark.parametrize("name", suite.BENCHMARKS)
def test_suite_help_lists_benchmark(name, capsys):
    with pytest.raises(SystemExit):
        suite.main(["--help"])
    assert f"  {name}  " in capsys.readouterr().out
