"""Tests of the benchmark suite (`benchmarks.suite`) and `tempo-search bench`, on a tiny model."""

from __future__ import annotations

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

from benchmarks import suite  # noqa: E402

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
)

DOC_TEXT = """# Benchmarks

## Quality against peers

Text written by hand stays.

<!-- bench:quality:start -->
OLD QUALITY TABLE
<!-- bench:quality:end -->

## Engine

<!-- bench:engine:start -->
OLD ENGINE TABLE
<!-- bench:engine:end -->

Closing text stays.
"""


@pytest.fixture(scope="module")
def suite_run(tmp_path_factory):
    """One suite run of every benchmark on a tiny Llama, with a temporary doc and out folder."""
    folder = tmp_path_factory.mktemp("suite")
    doc = folder / "benchmarks.md"
    doc.write_text(DOC_TEXT, encoding="utf-8")
    threads = torch.get_num_threads()
    try:
        path = suite.run_suite(
            only=suite.BENCHMARKS,
            quick=True,
            out=folder / "out",
            threads=1,
            model=tiny_model("llama"),
            budget=TINY_BUDGET,
            doc=doc,
            image_dir=folder / "img",
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


def test_run_suite_replaces_quality_block(suite_run):
    text = suite_run["doc"].read_text(encoding="utf-8")
    assert "OLD QUALITY TABLE" not in text


def test_run_suite_writes_quality_table(suite_run):
    text = suite_run["doc"].read_text(encoding="utf-8")
    start, end = suite.marker_pair("quality")
    block = text.split(start, 1)[1].split(end, 1)[0]
    assert "| TEMPO superposition |" in block


def test_run_suite_replaces_engine_block(suite_run):
    text = suite_run["doc"].read_text(encoding="utf-8")
    assert "OLD ENGINE TABLE" not in text


def test_run_suite_keeps_text_before_markers(suite_run):
    text = suite_run["doc"].read_text(encoding="utf-8")
    assert "Text written by hand stays." in text


def test_run_suite_keeps_text_after_markers(suite_run):
    text = suite_run["doc"].read_text(encoding="utf-8")
    assert "Closing text stays." in text


def test_run_suite_appends_blocks_without_markers(suite_run):
    text = suite_run["doc"].read_text(encoding="utf-8")
    assert text.count(suite.marker_pair("mcts")[0]) == 1


def test_run_suite_writes_pareto_png(suite_run):
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
