"""Tests for tempo_search.sweep: grids, seeds, job errors, the disk cache, resume, backends, configs."""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import os
import time
from pathlib import Path

import joblib
import pandas as pd
import pytest

from tempo_search.sweep import (
    RUNNERS,
    SweepConfig,
    clear_worker_cache,
    expand_grid,
    load_sweep_config,
    point_seed,
    register_runner,
    run_sweep_config,
    sweep,
    worker_cache,
    write_results,
)

# Run functions live at module level so that loky and Dask workers can import them by name.


@register_runner("toy-metrics")
def toy_metrics(params: dict, item: object) -> dict:
    """Return metrics computed from the params and the item, with no randomness."""
    return {
        "score": params["c_puct"] * 10 + len(str(item)),
        "label": f"{params['policy']}-{item}",
        "seed_is_even": params["seed"] % 2 == 0,
    }


def _count_call(counter_path: str | None, text: str = "call") -> int:
    """Append one line to the counter file and return the number of lines, across processes."""
    if counter_path is None:
        return 0
    with open(counter_path, "a", encoding="utf-8") as file:
        file.write(text + "\n")
    return _read_count(counter_path)


def _read_count(counter_path: str | Path) -> int:
    if not os.path.exists(counter_path):
        return 0
    with open(counter_path, encoding="utf-8") as file:
        return sum(1 for _ in file)


@register_runner("toy-flaky")
def toy_flaky(
    params: dict, item: object, *, fail_item: object = "bad", counter_path: str | None = None
) -> dict:
    """Sleep briefly and fail on `fail_item`; count calls in `counter_path`."""
    _count_call(counter_path)
    time.sleep(0.005)
    if item == fail_item:
        raise ValueError(f"cannot solve {item}")
    return {"value": params["c_puct"] * 2, "item_length": len(str(item))}


def interrupting_run(params: dict, item: object, *, counter_path: str, flag_path: str) -> dict:
    """Raise KeyboardInterrupt on the 5th call while `flag_path` exists, as Ctrl+C would."""
    calls = _count_call(counter_path)
    if os.path.exists(flag_path) and calls == 5:
        raise KeyboardInterrupt
    return {"value": params["c_puct"] + item}


def process_report(params: dict, item: object, *, counter_path: str) -> dict:
    """Return the worker's pid and torch thread count; load a fake model through worker_cache."""
    import torch

    model = worker_cache(("toy-model", counter_path), lambda: _count_call(counter_path, "load"))
    return {"pid": os.getpid(), "torch_threads": torch.get_num_threads(), "model": model}


def clashing_run(params: dict, item: object) -> dict:
    return {"c_puct": 1.0}


GRID = {"c_puct": [0.5, 1.0, 2.0], "policy": ["puct", "greedy"]}
ITEMS = ["a", "bb", "bad", "dddd"]


@pytest.fixture(scope="module", autouse=True)
def _shut_down_loky_workers():
    yield
    from joblib.externals.loky import get_reusable_executor

    get_reusable_executor().shutdown(wait=True)


def _without_timing(table: pd.DataFrame) -> pd.DataFrame:
    return table.drop(columns=["seconds"])


# --- grid expansion and seeds ----------------------------------------------------------------


def test_expand_grid_product_order():
    grid = {"c_puct": [1.0, 2.0], "policy": ["puct", "greedy"], "num_simulations": [8, 16, 32]}

    points = expand_grid(grid)

    expected = []
    for c_puct in grid["c_puct"]:
        for policy in grid["policy"]:
            for num_simulations in grid["num_simulations"]:
                expected.append(
                    {"c_puct": c_puct, "policy": policy, "num_simulations": num_simulations}
                )
    assert points == expected


def test_expand_grid_explicit_points():
    points = [{"c_puct": 1.0, "widening": (0.0, 0.2, 0.8, 1.0)}, {"policy": "greedy"}]

    expanded = expand_grid(points)

    assert expanded[0] == {"c_puct": 1.0, "widening": [0.0, 0.2, 0.8, 1.0]}
    assert expanded[1] == {"policy": "greedy"}


@pytest.mark.parametrize(
    ("grid", "error", "match"),
    [
        ({}, ValueError, "grid is empty"),
        ([], ValueError, "empty list of points"),
        ({"c_puct": 1.5}, ValueError, r"'c_puct' must map to a list.*\[1\.5\]"),
        ({"c_puct": "1.5"}, ValueError, "'c_puct' must map to a list"),
        ({"c_puct": []}, ValueError, "'c_puct' has an empty list"),
        ({"c-puct": [1.0]}, ValueError, "'c-puct' is not a Python identifier"),
        ({"item": [1]}, ValueError, "'item' is reserved"),
        ({"seed": [1.5]}, ValueError, "seed values must be integers"),
        ({"c_puct": [object()]}, TypeError, "'c_puct'.*not JSON-serialisable"),
        ([{"c_puct": 1.0}, 3], TypeError, "grid point 1 must be a dict"),
    ],
)
def test_expand_grid_invalid(grid, error, match):
    with pytest.raises(error, match=match):
        expand_grid(grid)


def test_point_seed_hash_of_base_seed_and_point():
    point = {"c_puct": 1.5, "policy": "puct"}
    canonical = json.dumps({"base_seed": 7, "params": point}, sort_keys=True, separators=(",", ":"))
    expected = int.from_bytes(hashlib.sha256(canonical.encode()).digest()[:4], "big") & 0x7FFFFFFF

    assert point_seed(point, seed=7) == expected
    assert point_seed(point, seed=8) != expected
    assert point_seed({"c_puct": 1.5, "policy": "puct", "seed": 3}, seed=7) == 3


# --- sequential sweeps -----------------------------------------------------------------------


def test_sweep_rows_and_columns():
    table = sweep(GRID, toy_metrics, items=ITEMS, seed=11, progress=False)

    points = expand_grid(GRID)
    assert list(table.columns) == [
        "point_index",
        "item_index",
        "c_puct",
        "policy",
        "seed",
        "item",
        "score",
        "label",
        "seed_is_even",
        "seconds",
        "cached",
        "error",
    ]
    assert len(table) == len(points) * len(ITEMS)
    for row in table.itertuples():
        point = points[row.point_index]
        item = ITEMS[row.item_index]
        assert (row.c_puct, row.policy, row.item) == (point["c_puct"], point["policy"], item)
        assert row.seed == point_seed(point, seed=11)
        assert row.score == point["c_puct"] * 10 + len(item)
        assert row.label == f"{point['policy']}-{item}"
    assert table["error"].isna().all()
    assert not table["cached"].any()


def test_sweep_without_items_runs_each_point_once():
    table = sweep([{"c_puct": 1.0, "policy": "puct"}], toy_metrics, progress=False)

    assert len(table) == 1
    assert table.loc[0, "item"] is None
    assert table.loc[0, "score"] == 1.0 * 10 + len("None")


def test_sweep_records_job_errors(caplog):
    with caplog.at_level(logging.WARNING, logger="tempo_search.sweep"):
        table = sweep(GRID, toy_flaky, items=ITEMS, progress=False)

    failed = table[table["item"] == "bad"]
    succeeded = table[table["item"] != "bad"]
    assert (failed["error"] == "ValueError: cannot solve bad").all()
    assert failed["value"].isna().all()
    assert succeeded["error"].isna().all()
    assert (succeeded["value"] == succeeded["c_puct"] * 2).all()
    assert "job failed at point 0" in caplog.text
    assert "item 2 'bad'" in caplog.text


def test_sweep_metric_name_clash_is_job_error():
    table = sweep({"c_puct": [1.0]}, clashing_run, progress=False)

    assert table.loc[0, "error"].startswith("ValueError: run returned metric 'c_puct'")


def test_sweep_rejects_lambda_with_process_backend():
    with pytest.raises(TypeError, match=r"run is a lambda.*top-level function"):
        sweep(GRID, lambda params, item: {}, items=ITEMS, n_jobs=2, progress=False)


def test_sweep_rejects_lambda_with_cache_dir(tmp_path):
    with pytest.raises(TypeError, match=r"run is a lambda.*cache_dir"):
        sweep(GRID, lambda params, item: {}, cache_dir=tmp_path, progress=False)


@pytest.mark.parametrize(
    ("options", "match"),
    [
        ({"n_jobs": 0}, "n_jobs must be an integer >= 1"),
        ({"backend": "ray"}, "backend must be one of loky, threading, dask"),
        ({"torch_threads": 0}, "torch_threads must be an integer >= 1"),
        ({"scheduler": "tcp://127.0.0.1:8786"}, "pass backend='dask'"),
        ({"items": []}, "items is an empty list"),
    ],
)
def test_sweep_invalid_options(options, match):
    with pytest.raises(ValueError, match=match):
        sweep(GRID, toy_metrics, progress=False, **options)


# --- disk cache and resume -------------------------------------------------------------------


def test_sweep_cache_rerun_skips_finished_jobs(tmp_path):
    counter = tmp_path / "calls.txt"
    run = functools.partial(toy_flaky, counter_path=str(counter))
    options = {"items": ITEMS, "n_jobs": 2, "cache_dir": tmp_path / "cache", "progress": False}
    jobs = len(expand_grid(GRID)) * len(ITEMS)
    failing = len(expand_grid(GRID))

    first = sweep(GRID, run, **options)
    calls_after_first = _read_count(counter)
    second = sweep(GRID, run, **options)

    assert calls_after_first == jobs
    # Only the failed jobs run again: errors are not cached.
    assert _read_count(counter) == jobs + failing
    assert (second["cached"] == (second["item"] != "bad")).all()
    assert (second["error"].notna() == (second["item"] == "bad")).all()
    pd.testing.assert_frame_equal(
        _without_timing(first).drop(columns=["cached"]),
        _without_timing(second).drop(columns=["cached"]),
    )
    # A cached row keeps the seconds that the job took when it ran.
    assert (first["seconds"][second["cached"]] == second["seconds"][second["cached"]]).all()


def test_sweep_cache_key_includes_partial_arguments(tmp_path):
    counter = tmp_path / "calls.txt"
    options = {"items": ["a"], "cache_dir": tmp_path / "cache", "progress": False}

    sweep({"c_puct": [1.0]}, functools.partial(toy_flaky, counter_path=str(counter)), **options)
    second = sweep(
        {"c_puct": [1.0]},
        functools.partial(toy_flaky, counter_path=str(counter), fail_item="x"),
        **options,
    )

    assert _read_count(counter) == 2
    assert not second.loc[0, "cached"]


def test_sweep_resume_after_keyboard_interrupt(tmp_path):
    counter = tmp_path / "calls.txt"
    flag = tmp_path / "interrupt"
    flag.touch()
    run = functools.partial(interrupting_run, counter_path=str(counter), flag_path=str(flag))
    grid = {"c_puct": [0.5, 1.0, 2.0]}
    items = [0, 1, 2]
    cache_dir = tmp_path / "cache"

    with pytest.raises(KeyboardInterrupt):
        sweep(grid, run, items=items, cache_dir=cache_dir, progress=False)
    flag.unlink()
    stored = len(list(cache_dir.glob("*/*.json")))
    table = sweep(grid, run, items=items, cache_dir=cache_dir, progress=False)

    assert stored == 4
    assert table["cached"].tolist() == [True] * 4 + [False] * 5
    # 5 calls in the interrupted run, then the 5 jobs that were not stored.
    assert _read_count(counter) == 5 + 5
    assert table["error"].isna().all()
    assert table["value"].tolist() == [c + i for c in grid["c_puct"] for i in items]


def test_sweep_cache_ignores_corrupt_file(tmp_path, caplog):
    cache_dir = tmp_path / "cache"
    sweep({"c_puct": [1.0]}, toy_flaky, items=["a"], cache_dir=cache_dir, progress=False)
    (path,) = cache_dir.glob("*/*.json")
    path.write_text("{not json", encoding="utf-8")

    with caplog.at_level(logging.WARNING, logger="tempo_search.sweep"):
        table = sweep(
            {"c_puct": [1.0]}, toy_flaky, items=["a"], cache_dir=cache_dir, progress=False
        )

    assert not table.loc[0, "cached"]
    assert "unreadable cache file" in caplog.text
    assert json.loads(path.read_text(encoding="utf-8"))["metrics"] == {
        "value": 2.0,
        "item_length": 1,
    }


# --- parallel backends -----------------------------------------------------------------------


def test_sweep_loky_matches_sequential():
    sequential = sweep(GRID, toy_flaky, items=ITEMS, progress=False)
    parallel = sweep(GRID, toy_flaky, items=ITEMS, n_jobs=2, backend="loky", progress=False)

    pd.testing.assert_frame_equal(_without_timing(sequential), _without_timing(parallel))


def test_sweep_threading_matches_sequential():
    sequential = sweep(GRID, toy_metrics, items=ITEMS, progress=False)
    threaded = sweep(GRID, toy_metrics, items=ITEMS, n_jobs=2, backend="threading", progress=False)

    pd.testing.assert_frame_equal(_without_timing(sequential), _without_timing(threaded))


def test_sweep_loky_worker_cache_and_torch_threads(tmp_path):
    counter = tmp_path / "loads.txt"
    run = functools.partial(process_report, counter_path=str(counter))
    items = list(range(8))

    explicit = sweep({"c_puct": [1.0]}, run, items=items, n_jobs=2, torch_threads=3, progress=False)
    default = sweep({"c_puct": [2.0]}, run, items=items, n_jobs=2, progress=False)

    assert (explicit["torch_threads"] == 3).all()
    assert (default["torch_threads"] == max(1, joblib.cpu_count() // 2)).all()
    # Each worker process builds the cached value once, for all its jobs.
    assert _read_count(counter) == pd.concat([explicit, default])["pid"].nunique()


def test_worker_cache_builds_once_per_key():
    clear_worker_cache()
    calls = []

    def build(name):
        calls.append(name)
        return f"model {name}"

    first = worker_cache(("model", "tiny"), lambda: build("tiny"))
    second = worker_cache(("model", "tiny"), lambda: build("tiny"))
    other = worker_cache(("model", "other"), lambda: build("other"))

    assert (first, second, other) == ("model tiny", "model tiny", "model other")
    assert calls == ["tiny", "other"]
    with pytest.raises(TypeError, match="must be hashable"):
        worker_cache(["model"], lambda: None)
    clear_worker_cache()


def test_sweep_dask_client_matches_loky():
    distributed = pytest.importorskip("distributed")
    loky = sweep(GRID, toy_flaky, items=ITEMS, n_jobs=2, progress=False)

    with (
        distributed.LocalCluster(
            n_workers=2,
            threads_per_worker=1,
            processes=False,
            protocol="tcp",
            host="127.0.0.1",
            dashboard_address=None,
        ) as cluster,
        distributed.Client(cluster) as client,
    ):
        from_client = sweep(
            GRID, toy_flaky, items=ITEMS, backend="dask", scheduler=client, progress=False
        )
        from_address = sweep(
            GRID,
            toy_flaky,
            items=ITEMS,
            backend="dask",
            scheduler=cluster.scheduler_address,
            progress=False,
        )

    pd.testing.assert_frame_equal(_without_timing(loky), _without_timing(from_client))
    pd.testing.assert_frame_equal(_without_timing(loky), _without_timing(from_address))


@pytest.mark.slow
def test_sweep_dask_local_cluster_closes_workers():
    pytest.importorskip("distributed")
    psutil = pytest.importorskip("psutil")
    children_before = {child.pid for child in psutil.Process().children(recursive=True)}

    table = sweep(GRID, toy_flaky, items=ITEMS, n_jobs=2, backend="dask", progress=False)

    sequential = sweep(GRID, toy_flaky, items=ITEMS, progress=False)
    pd.testing.assert_frame_equal(_without_timing(sequential), _without_timing(table))
    left = [
        child
        for child in psutil.Process().children(recursive=True)
        if child.pid not in children_before and child.is_running()
    ]
    assert left == []


# --- config files ----------------------------------------------------------------------------


def _write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def test_load_sweep_config_yaml(tmp_path):
    path = _write(
        tmp_path / "sweep.yaml",
        "task: toy-metrics\n"
        "grid:\n"
        "  c_puct: [0.5, 1.0]\n"
        "  policy: [puct]\n"
        "prompts: [a, bb]\n"
        "n_jobs: 2\n"
        "cache_dir: cache\n"
        "out: results/table.csv\n",
    )

    config = load_sweep_config(path)

    assert config.task == "toy-metrics"
    assert config.grid == {"c_puct": [0.5, 1.0], "policy": ["puct"]}
    assert config.items == ["a", "bb"]
    assert config.n_jobs == 2
    assert config.cache_dir == str(tmp_path / "cache")
    assert config.out == str(tmp_path / "results" / "table.csv")


def test_load_sweep_config_json_points(tmp_path):
    path = _write(
        tmp_path / "sweep.json",
        json.dumps({"task": "toy-flaky", "points": [{"c_puct": 1.0}], "puzzles": [[1, 2, 3, 4]]}),
    )

    config = load_sweep_config(path)

    assert config.points == [{"c_puct": 1.0}]
    assert config.items == [[1, 2, 3, 4]]


@pytest.mark.parametrize(
    ("text", "error", "match"),
    [
        (
            "task: toy-metrics\ngrid: {c_puct: [1.0]}\nn_job: 2\n",
            ValueError,
            "unknown key 'n_job'; did you mean 'n_jobs'",
        ),
        (
            "task: toy-metrics\ngrid: {c_puct: [1.0]}\nn_jobs: two\n",
            ValueError,
            "n_jobs must be an integer >= 1.*'two'",
        ),
        ("task: toy-metrics\ngrid: {c_puct: 1.0}\n", ValueError, r"'c_puct' must map to a list"),
        ("task: toy-metrics\ngrid: {}\n", ValueError, "grid is empty"),
        ("task: toy-metrics\ngrid: [1, 2]\n", TypeError, "key 'grid' must be a mapping"),
        (
            "task: toy-metrics\ngrid: {c_puct: [1.0]}\npoints: [{c_puct: 1.0}]\n",
            ValueError,
            "exactly one of the keys 'grid'",
        ),
        (
            "task: toy-metrics\ngrid: {c_puct: [1.0]}\nitems: [a]\nprompts: [b]\n",
            ValueError,
            "'items' and 'prompts' both set",
        ),
        (
            "task: toy-metrics\ngrid: {c_puct: [1.0]}\nscheduler: tcp://127.0.0.1:8786\n",
            ValueError,
            "set backend: dask",
        ),
        (
            "task: no-such-task\ngrid: {c_puct: [1.0]}\n",
            ValueError,
            "unknown task 'no-such-task'; known tasks: .*toy-metrics",
        ),
        ("grid: {c_puct: [1.0]}\n", ValueError, "missing key 'task'"),
        (
            "task: toy-metrics\ngrid:\n  c_puct: [1.0\n  policy: [puct]\n",
            ValueError,
            "invalid YAML at line 4",
        ),
        ("- task\n- grid\n", ValueError, "must contain a mapping"),
    ],
)
def test_load_sweep_config_errors(tmp_path, text, error, match):
    path = _write(tmp_path / "sweep.yaml", text)

    with pytest.raises(error, match=match):
        load_sweep_config(path)


def test_load_sweep_config_error_names_file(tmp_path):
    path = _write(tmp_path / "sweep.yaml", "task: toy-metrics\ngrid: {c_puct: [1.0]}\nseeds: 3\n")

    with pytest.raises(ValueError, match=r"sweep\.yaml: unknown key 'seeds'; did you mean 'seed'"):
        load_sweep_config(path)


def test_load_sweep_config_bad_json_line(tmp_path):
    path = _write(tmp_path / "sweep.json", '{\n  "task": "toy-metrics",\n  "grid": {,}\n}\n')

    with pytest.raises(ValueError, match="invalid JSON at line 3"):
        load_sweep_config(path)


def test_load_sweep_config_missing_file_and_suffix(tmp_path):
    with pytest.raises(FileNotFoundError, match="sweep config not found"):
        load_sweep_config(tmp_path / "missing.yaml")
    with pytest.raises(ValueError, match=r"unsupported config suffix '\.toml'"):
        load_sweep_config(_write(tmp_path / "sweep.toml", "task = 1\n"))


def test_load_sweep_config_warns_on_yaml_float_string(tmp_path, caplog):
    path = _write(tmp_path / "sweep.yaml", "task: toy-metrics\ngrid: {c_puct: [1e-3]}\n")

    with caplog.at_level(logging.WARNING, logger="tempo_search._sweep_config"):
        load_sweep_config(path)

    assert "write 1.0e-3" in caplog.text


def test_register_runner_rejects_second_function():
    with pytest.raises(ValueError, match=r"already registered to .*toy_metrics"):
        register_runner("toy-metrics")(toy_flaky)
    assert RUNNERS["toy-metrics"] is toy_metrics


def test_run_sweep_config_writes_out(tmp_path):
    config = SweepConfig(
        task="toy-flaky",
        grid={"c_puct": [1.0, 2.0]},
        items=["a", "bad"],
        backend="dask",
        scheduler="tcp://127.0.0.1:1",
        out=str(tmp_path / "unused.csv"),
    )
    out = tmp_path / "out" / "table.json"

    table = run_sweep_config(config, progress=False, backend="loky", out=str(out), n_jobs=None)

    written = json.loads(out.read_text(encoding="utf-8"))
    assert len(written) == len(table) == 4
    assert written[1]["error"] == "ValueError: cannot solve bad"
    assert written[2]["value"] == 4.0
    assert not (tmp_path / "unused.csv").exists()


def test_run_sweep_config_unknown_override():
    config = SweepConfig(task="toy-metrics", grid={"c_puct": [1.0]})

    with pytest.raises(ValueError, match="unknown override 'njobs'"):
        run_sweep_config(config, njobs=2)


# --- writing results -------------------------------------------------------------------------


def test_write_results_csv_round_trip(tmp_path):
    table = sweep(
        {"c_puct": [1.0], "widening": [[0.0, 0.5, 1.0]]},
        toy_flaky,
        items=[[1, 2], "bad"],
        progress=False,
    )

    path = write_results(table, tmp_path / "table.csv")
    read = pd.read_csv(path)

    assert read["widening"].tolist() == ["[0.0, 0.5, 1.0]"] * 2
    assert read["item"].tolist() == ["[1, 2]", "bad"]
    assert read["error"].tolist()[1] == "ValueError: cannot solve bad"


def test_write_results_rejects_suffix(tmp_path):
    table = pd.DataFrame({"a": [1]})

    with pytest.raises(ValueError, match=r"unsupported suffix '\.xlsx'"):
        write_results(table, tmp_path / "table.xlsx")


def test_write_results_parquet_needs_pyarrow(tmp_path):
    try:
        import pyarrow  # noqa: F401
    except ImportError:
        with pytest.raises(ImportError, match=r"'\.parquet' needs pyarrow"):
            write_results(pd.DataFrame({"a": [1]}), tmp_path / "table.parquet")
    else:
        path = write_results(pd.DataFrame({"a": [1]}), tmp_path / "table.parquet")
        assert pd.read_parquet(path)["a"].tolist() == [1]


def killing_run(
    params: dict, item: object, *, counter_path: str, flag_path: str, cache_dir: str
) -> dict:
    """Kill the worker process on item 3 while `flag_path` exists, as the OOM killer would.

    Before it dies, it waits until the parent has stored a finished job in `cache_dir`.
    """
    _count_call(counter_path)
    if item == 3 and os.path.exists(flag_path):
        deadline = time.monotonic() + 30.0
        while not list(Path(cache_dir).glob("*/*.json")) and time.monotonic() < deadline:
            time.sleep(0.01)
        os._exit(1)
    return {"value": params["c_puct"] + item}


@pytest.mark.slow
def test_sweep_resume_after_killed_worker(tmp_path):
    counter = tmp_path / "calls.txt"
    flag = tmp_path / "kill"
    flag.touch()
    cache_dir = tmp_path / "cache"
    run = functools.partial(
        killing_run, counter_path=str(counter), flag_path=str(flag), cache_dir=str(cache_dir)
    )
    grid = {"c_puct": [0.5, 1.0]}
    items = [0, 1, 2, 3, 4, 5]
    options = {"items": items, "n_jobs": 2, "cache_dir": cache_dir, "progress": False}

    with pytest.raises(joblib.externals.loky.process_executor.TerminatedWorkerError):
        sweep(grid, run, **options)
    flag.unlink()
    stored = len(list(cache_dir.glob("*/*.json")))
    calls_before = _read_count(counter)
    table = sweep(grid, run, **options)

    assert 0 < stored < len(table)
    assert table["cached"].sum() == stored
    assert _read_count(counter) - calls_before == len(table) - stored
    assert table["error"].isna().all()
    assert table["value"].tolist() == [c + i for c in grid["c_puct"] for i in items]
