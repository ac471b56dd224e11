"""`tempo-search sweep`, run in-process on YAML configs over a tiny model saved to disk."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from tempo_search.cli import EXIT_FAILED, EXIT_INTERRUPTED, EXIT_INVALID, EXIT_OK, main
from tempo_search.sweep import register_runner
from tempo_search.sweep_cli import default_cache_dir
from tempo_search.testing import tiny_model

# Items on which `run_interruptible` raises KeyboardInterrupt, as Ctrl-C would.
INTERRUPT_ON: set[str] = set()


@register_runner("test-sweep-cli-interruptible")
def run_interruptible(params: dict, item: str) -> dict:
    """Return the item's length times params["scale"]; raise KeyboardInterrupt on INTERRUPT_ON."""
    if item in INTERRUPT_ON:
        raise KeyboardInterrupt
    if item == "fail":
        raise ValueError("this item fails on purpose")
    return {"score": params["scale"] * len(item)}


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> str:
    """A tiny Llama with its tokenizer, saved as a model folder."""
    folder = tmp_path_factory.mktemp("tiny-llama")
    loaded = tiny_model("llama")
    loaded.model.save_pretrained(folder)
    loaded.tokenizer.save_pretrained(folder)
    return str(folder)


def run_cli(argv: list[str], capsys) -> tuple[int, str, str]:
    """Run `main(argv)` and return the exit code, stdout and stderr."""
    try:
        code = main(argv)
    except SystemExit as exit_error:
        code = exit_error.code
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def write_search_config(folder: Path, model_dir: str) -> Path:
    config = folder / "sweep.yaml"
    config.write_text(
        f"""task: search
grid:
  model: [{json.dumps(model_dir)}]
  c_puct: [0.5, 2.0]
  num_simulations: [3]
  max_new_tokens: [3]
prompts:
  - "the cat"
  - "a dog ran"
out: results/sweep.csv
""",
        encoding="utf-8",
    )
    return config


def test_sweep_writes_csv(tmp_path, model_dir, capsys):
    config = write_search_config(tmp_path, model_dir)
    code, out, err = run_cli(["sweep", str(config)], capsys)
    assert code == EXIT_OK, err
    table = pd.read_csv(tmp_path / "results" / "sweep.csv")
    assert len(table) == 4
    assert table["simulations"].tolist() == [3, 3, 3, 3]
    assert table["c_puct"].tolist() == [0.5, 0.5, 2.0, 2.0]
    assert "wrote 4 rows to" in out
    assert "0 loaded from the cache" in out


def test_sweep_rerun_reports_cached(tmp_path, model_dir, capsys):
    config = write_search_config(tmp_path, model_dir)
    first_code, _, _ = run_cli(["sweep", str(config)], capsys)
    code, out, err = run_cli(["sweep", str(config), "--json"], capsys)
    assert first_code == EXIT_OK
    assert code == EXIT_OK, err
    data = json.loads(out)
    assert data["cached"] == 4
    assert data["jobs"] == 4
    assert all(row["cached"] for row in data["rows"])
    assert Path(data["cache_dir"]) == default_cache_dir(config)


def test_sweep_options_override_file(tmp_path, model_dir, capsys):
    config = write_search_config(tmp_path, model_dir)
    out_path = tmp_path / "other.json"
    code, _, err = run_cli(
        ["sweep", str(config), "--no-cache", "--seed", "7", "--out", str(out_path)], capsys
    )
    assert code == EXIT_OK, err
    rows = json.loads(out_path.read_text(encoding="utf-8"))
    assert len(rows) == 4
    assert not default_cache_dir(config).exists()


def test_sweep_text_table_lists_columns(tmp_path, model_dir, capsys):
    config = write_search_config(tmp_path, model_dir)
    code, out, _ = run_cli(["sweep", str(config), "--no-cache"], capsys)
    assert code == EXIT_OK
    header = out.splitlines()[0].split()
    for column in ("c_puct", "item", "value", "distinct_2", "seconds", "cached"):
        assert column in header, column


def write_toy_config(folder: Path, items: list[str]) -> Path:
    config = folder / "toy.yaml"
    config.write_text(
        "task: test-sweep-cli-interruptible\n"
        "grid:\n  scale: [1, 10]\n"
        f"items: {json.dumps(items)}\n",
        encoding="utf-8",
    )
    return config


def test_sweep_interrupt_keeps_finished(tmp_path, capsys):
    config = write_toy_config(tmp_path, ["ab", "abc", "stop"])
    INTERRUPT_ON.add("stop")
    try:
        code, out, err = run_cli(["sweep", str(config)], capsys)
    finally:
        INTERRUPT_ON.discard("stop")
    assert code == EXIT_INTERRUPTED
    assert "2 of 6 jobs finished" in out
    assert "interrupted" in err
    assert str(default_cache_dir(config)) in err


def test_sweep_resumes_after_interrupt(tmp_path, capsys):
    config = write_toy_config(tmp_path, ["ab", "abc", "stop"])
    INTERRUPT_ON.add("stop")
    try:
        run_cli(["sweep", str(config)], capsys)
    finally:
        INTERRUPT_ON.discard("stop")
    code, out, err = run_cli(["sweep", str(config), "--json"], capsys)
    assert code == EXIT_OK, err
    data = json.loads(out)
    assert data["cached"] == 2
    assert [row["score"] for row in data["rows"]] == [2, 3, 4, 20, 30, 40]


def test_sweep_failed_job_exits_1(tmp_path, capsys):
    config = write_toy_config(tmp_path, ["ab", "fail"])
    code, out, err = run_cli(["sweep", str(config), "--no-cache"], capsys)
    assert code == EXIT_FAILED
    assert "2 failed" in out
    assert "2 of 4 jobs failed" in err


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("task: search\ngrid: {c_puct: [1.0]}\nn_job: 2\n", "did you mean 'n_jobs'"),
        ("task: no-such-task\ngrid: {c_puct: [1.0]}\n", "unknown task 'no-such-task'"),
        ("task: search\ngrid: {c_puct: []}\n", "'c_puct' has an empty list"),
        ("task: search\ngrid: {c_puct: 1.0}\n", "wrap a single value in a list"),
        ("task: search\ngrid: [c_puct: 1.0\n", "invalid YAML at line"),
        ("grid: {c_puct: [1.0]}\n", "missing key 'task'"),
    ],
)
def test_sweep_invalid_config_one_line(tmp_path, capsys, text, expected):
    config = tmp_path / "bad.yaml"
    config.write_text(text, encoding="utf-8")
    code, out, err = run_cli(["sweep", str(config)], capsys)
    assert code == EXIT_INVALID
    assert out == ""
    assert len(err.strip().splitlines()) == 1, err
    assert expected in err


@pytest.mark.parametrize(
    ("options", "expected"),
    [
        (["--n-jobs", "0"], "--n-jobs"),
        (["--scheduler", "tcp://127.0.0.1:1"], "--scheduler"),
        (["--out", "table.txt"], "unsupported suffix"),
    ],
)
def test_sweep_invalid_option_one_line(tmp_path, capsys, options, expected):
    config = write_toy_config(tmp_path, ["ab"])
    code, _, err = run_cli(["sweep", str(config), "--no-cache", *options], capsys)
    assert code == EXIT_INVALID
    assert len(err.strip().splitlines()) == 1, err
    assert expected in err


def test_sweep_missing_config_file(tmp_path, capsys):
    code, _, err = run_cli(["sweep", str(tmp_path / "absent.yaml")], capsys)
    assert code == EXIT_INVALID
    assert "not found" in err
