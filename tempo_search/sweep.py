"""Parameter sweeps: run a function over every (point, item) pair, in parallel, with a disk cache.

A *point* is one dict of search parameters (c_puct, widening curves, thresholds,
num_simulations, rollout depth, ...); an *item* is one prompt or puzzle. Each (point, item) pair
is one *job*: `run(params, item) -> {metric: value}`. `sweep` runs the jobs in-process, with
joblib (loky processes or threads) or on a Dask cluster, and returns one table row per job,
ordered by (point_index, item_index) whatever the completion order.

Seeds: every job's params contain "seed". If the point sets "seed" itself, that value is passed
unchanged. Otherwise it is `point_seed(point, seed=seed)`, a hash of the base seed and the point's
parameter values, so it does not depend on the backend, the completion order, the point's
position in the grid or the item. All items of one point get the same seed.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import inspect
import json
import logging
import os
import tempfile
import threading
import time
import traceback
from collections.abc import Callable, Hashable, Iterable, Mapping
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any, TypeVar

import joblib
import pandas as pd
from tqdm import tqdm

from tempo_search._sweep_config import (
    BACKENDS,
    RESERVED_COLUMNS,
    RUNNERS,
    RunFunction,
    SweepConfig,
    check_items,
    check_run_options,
    expand_grid,
    get_runner,
    load_sweep_config,
    register_runner,
)

__all__ = [
    "BACKENDS",
    "RUNNERS",
    "SweepConfig",
    "clear_worker_cache",
    "expand_grid",
    "get_runner",
    "load_sweep_config",
    "point_seed",
    "register_runner",
    "run_sweep_config",
    "sweep",
    "worker_cache",
    "write_results",
]

logger = logging.getLogger(__name__)

T = TypeVar("T")

# Error tracebacks logged at WARNING per sweep; later errors go to DEBUG and into the summary.
_MAX_LOGGED_ERRORS = 10
_CACHE_FORMAT = 1


# --- worker cache ----------------------------------------------------------------------------

_WORKER_CACHE: dict[Hashable, Any] = {}
_WORKER_CACHE_LOCK = threading.Lock()
_WORKER_CACHE_KEY_LOCKS: dict[Hashable, threading.Lock] = {}


def worker_cache(key: Hashable, factory: Callable[[], T]) -> T:
    """Return the value stored under `key` in this process, calling `factory()` the first time.

    A run function loads its model through this, so each worker process loads it once and keeps
    it for every later job:
    `model = worker_cache(("model", name), lambda: load_model(name))`.
    The store is a module-level dict, one per process, and threads of one process share it
    (`factory` runs once per key even under the threading backend). A factory that raises stores
    nothing. `clear_worker_cache()` empties the store.
    """
    try:
        hash(key)
    except TypeError:
        raise TypeError(
            f"worker_cache key must be hashable, got {type(key).__name__} {key!r}; "
            "use a tuple such as ('model', name)"
        ) from None
    if key in _WORKER_CACHE:
        return _WORKER_CACHE[key]

    with _WORKER_CACHE_LOCK:
        key_lock = _WORKER_CACHE_KEY_LOCKS.setdefault(key, threading.Lock())
    with key_lock:
        if key not in _WORKER_CACHE:
            start = time.perf_counter()
            _WORKER_CACHE[key] = factory()
            logger.debug(
                "worker_cache: built %r in %.2f s (pid %d)",
                key,
                time.perf_counter() - start,
                os.getpid(),
            )
        return _WORKER_CACHE[key]


def clear_worker_cache() -> None:
    """Empty this process's `worker_cache`, releasing the models it kept."""
    with _WORKER_CACHE_LOCK:
        _WORKER_CACHE.clear()
        _WORKER_CACHE_KEY_LOCKS.clear()


# --- seeds and cache keys --------------------------------------------------------------------


def point_seed(point: Mapping[str, Any], *, seed: int = 0) -> int:
    """Return the seed that `sweep` passes in params["seed"] for `point`, in [0, 2**31).

    A point that sets "seed" keeps it. Otherwise the seed is the first 31 bits of the SHA-256
    of the canonical JSON of {"base_seed": seed, "params": point}, so it changes with the base
    seed and with any parameter value (1 and 1.0 count as different values).
    """
    if "seed" in point:
        return point["seed"]
    digest = hashlib.sha256(_canonical_json({"base_seed": seed, "params": dict(point)}).encode())
    return int.from_bytes(digest.digest()[:4], "big") & 0x7FFFFFFF


def _canonical_json(value: Any) -> str:
    # Non-JSON values (possible only in functools.partial arguments) enter through repr.
    return json.dumps(value, sort_keys=True, separators=(",", ":"), default=repr)


def _unwrap_partial(run: Callable[..., Any]) -> tuple[Any, tuple[Any, ...], dict[str, Any]]:
    func, args, keywords = run, (), {}
    while isinstance(func, functools.partial):
        args = func.args + args
        keywords = {**func.keywords, **keywords}
        func = func.func
    return func, args, keywords


def _run_identity(run: Callable[..., Any]) -> dict[str, Any]:
    # NOTE: the identity names the function but not its code, so an edited run function still
    # hits the jobs cached by its previous version.
    func, args, keywords = _unwrap_partial(run)
    name = f"{getattr(func, '__module__', '?')}.{getattr(func, '__qualname__', repr(func))}"
    identity = {"run": name, "args": list(args), "keywords": keywords}
    text = _canonical_json(identity)
    if " at 0x" in text:
        logger.warning(
            "sweep: the functools.partial arguments of %s include an object whose repr contains a "
            "memory address, so its cache key changes between runs and cache_dir never hits; "
            "pass JSON values (names, paths, numbers) to the partial instead",
            name,
        )
    return identity


def _check_run_callable(run: Any, *, backend_label: str | None, cached: bool) -> None:
    """Raise TypeError unless `run` can be sent to worker processes and named in a cache key."""
    if not callable(run):
        raise TypeError(f"run must be a callable run(params, item) -> dict, got {run!r}")
    if backend_label is None and not cached:
        return

    func, _, _ = _unwrap_partial(run)
    qualname = getattr(func, "__qualname__", "")
    if inspect.isfunction(func) and "<" not in qualname:
        return
    if getattr(func, "__name__", "") == "<lambda>":
        what = "a lambda"
    elif "<locals>" in qualname:
        what = f"a function defined inside another function ({qualname})"
    else:
        what = f"a {type(func).__name__}"
    reason = (
        f"{backend_label} sends run to worker processes by name"
        if backend_label
        else "cache_dir keys the cache by the run function's qualified name"
    )
    raise TypeError(
        f"run is {what}; {reason}, so it must be a top-level function or a functools.partial "
        "of one. Define it with def at module level (use functools.partial for fixed arguments)."
    )


# --- jobs ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Job:
    index: int
    point_index: int
    item_index: int
    params: dict[str, Any]  # the point plus "seed"
    item: Any
    key: str  # cache key, "" without cache_dir


def _build_jobs(
    points: list[dict[str, Any]],
    items: list[Any] | None,
    *,
    seed: int,
    identity: dict[str, Any] | None,
) -> list[_Job]:
    jobs = []
    for point_index, point in enumerate(points):
        params = {**point, "seed": point_seed(point, seed=seed)}
        for item_index, item in enumerate(items if items is not None else [None]):
            key = ""
            if identity is not None:
                material = {**identity, "params": params, "item": item, "seed": params["seed"]}
                key = hashlib.sha256(_canonical_json(material).encode()).hexdigest()[:32]
            jobs.append(_Job(len(jobs), point_index, item_index, params, item, key))
    return jobs


def _execute_job(
    index: int,
    run: RunFunction,
    params: dict[str, Any],
    item: Any,
    threads: int | dict[str, int] | None,
) -> tuple[int, dict[str, Any]]:
    """Run one job in a worker and return (index, outcome), with any exception as the error."""
    torch_threads = _resolve_torch_threads(threads)
    if torch_threads is not None:
        _limit_torch_threads(torch_threads)

    start = time.perf_counter()
    try:
        metrics = _check_metrics(run(dict(params), item))
        error, trace = None, None
    except Exception as exc:
        metrics, error, trace = {}, f"{type(exc).__name__}: {exc}", traceback.format_exc()
    seconds = time.perf_counter() - start

    if torch_threads is not None:
        _limit_torch_threads(torch_threads)  # again, in case run imported torch itself
    return index, {"metrics": metrics, "seconds": seconds, "error": error, "traceback": trace}


def _check_metrics(metrics: Any) -> dict[str, Any]:
    if not isinstance(metrics, Mapping):
        raise TypeError(
            f"run must return a dict of metric name -> float, int, str or bool, got "
            f"{type(metrics).__name__}"
        )
    checked = {}
    for name, value in metrics.items():
        if not isinstance(name, str):
            raise TypeError(f"run returned a metric name {name!r} that is not a string")
        if type(value).__module__ == "numpy" and getattr(value, "ndim", None) == 0:
            value = value.item()
        if value is not None and not isinstance(value, (bool, int, float, str)):
            raise TypeError(
                f"run returned metric {name!r} of type {type(value).__name__}; return a float, "
                "int, str, bool or None (call .item() on a tensor)"
            )
        checked[name] = value
    return checked


def _failed_outcome(exc: BaseException) -> dict[str, Any]:
    trace = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    return {
        "metrics": {},
        "seconds": float("nan"),
        "error": f"{type(exc).__name__}: {exc}",
        "traceback": trace,
    }


# --- torch threads ---------------------------------------------------------------------------


def _resolve_torch_threads(threads: int | dict[str, int] | None) -> int | None:
    """Return the thread count for this worker: a fixed count, or CPUs // threads on this host."""
    if threads is None or isinstance(threads, int):
        return threads
    from distributed import get_worker
    from distributed.comm import get_address_host

    worker = get_worker()
    try:
        host_threads = threads.get(get_address_host(worker.address))
    except ValueError:
        host_threads = None
    if not host_threads:  # a worker that joined after the sweep started
        host_threads = worker.state.nthreads
    return max(1, joblib.cpu_count() // host_threads)


def _limit_torch_threads(count: int) -> None:
    # The environment covers libraries that read it at import; torch is set directly, because
    # a worker's first job may import it before or after this point.
    os.environ["OMP_NUM_THREADS"] = str(count)
    os.environ["MKL_NUM_THREADS"] = str(count)
    import torch

    if torch.get_num_threads() != count:
        torch.set_num_threads(count)


@contextlib.contextmanager
def _torch_threads_in_process(count: int | None):
    """Set torch's thread count in this process for the sweep, then restore it."""
    if count is None:
        yield
        return
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


# --- disk cache ------------------------------------------------------------------------------


class _ResultStore:
    """Finished jobs as JSON files, `<cache_dir>/<key[:2]>/<key>.json`, one per job."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def _path(self, key: str) -> Path:
        return self.root / key[:2] / f"{key}.json"

    def load(self, key: str) -> dict[str, Any] | None:
        path = self._path(key)
        try:
            record = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as exc:
            logger.warning(
                "sweep: ignoring unreadable cache file %s (%s); the job reruns", path, exc
            )
            return None
        if record.get("format") != _CACHE_FORMAT or not isinstance(record.get("metrics"), dict):
            logger.warning(
                "sweep: ignoring cache file %s with an unknown layout; the job reruns", path
            )
            return None
        return record

    def save(self, key: str, job: _Job, identity: dict[str, Any], outcome: dict[str, Any]) -> None:
        record = {
            "format": _CACHE_FORMAT,
            **identity,
            "params": job.params,
            "item": job.item,
            "metrics": outcome["metrics"],
            "seconds": outcome["seconds"],
        }
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)

        # Write then rename, so that an interrupted write leaves no partial file.
        descriptor, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{key}.", suffix=".tmp")
        try:
            with os.fdopen(descriptor, "w", encoding="utf-8") as file:
                json.dump(record, file, default=repr)
            os.replace(temporary, path)
        except BaseException:
            Path(temporary).unlink(missing_ok=True)
            raise


# --- backends --------------------------------------------------------------------------------

OnResult = Callable[[_Job, dict[str, Any]], None]


def _run_in_process(jobs: list[_Job], run: RunFunction, on_result: OnResult) -> None:
    for job in jobs:
        _, outcome = _execute_job(job.index, run, job.params, job.item, None)
        on_result(job, outcome)


def _run_with_joblib(
    jobs: list[_Job],
    run: RunFunction,
    *,
    backend: str,
    n_jobs: int,
    threads: int | None,
    on_result: OnResult,
) -> None:
    by_index = {job.index: job for job in jobs}
    parallel = joblib.Parallel(n_jobs=n_jobs, backend=backend, return_as="generator_unordered")
    results = parallel(
        joblib.delayed(_execute_job)(job.index, run, job.params, job.item, threads) for job in jobs
    )
    try:
        for index, outcome in results:
            on_result(by_index[index], outcome)
    finally:
        results.close()  # aborts the jobs not yet started when the loop stops early


def _run_with_dask(
    jobs: list[_Job],
    run: RunFunction,
    *,
    n_jobs: int,
    scheduler: Any,
    torch_threads: int | None,
    on_result: OnResult,
) -> None:
    try:
        import distributed
    except ImportError as exc:
        raise ImportError(
            "backend='dask' needs dask.distributed; install it with pip install 'tempo-search[dask]'"
        ) from exc

    with contextlib.ExitStack() as stack:
        client = _open_dask_client(distributed, scheduler, n_jobs, stack)
        threads = torch_threads if torch_threads is not None else _threads_by_host(client)
        futures = {
            client.submit(
                _execute_job, job.index, run, job.params, job.item, threads, pure=False
            ): job
            for job in jobs
        }
        try:
            for future in distributed.as_completed(futures):
                try:
                    _, outcome = future.result()
                except Exception as exc:  # KilledWorker, or run not importable on the worker
                    outcome = _failed_outcome(exc)
                on_result(futures[future], outcome)
        finally:
            client.cancel(list(futures))


def _open_dask_client(
    distributed: Any, scheduler: Any, n_jobs: int, stack: contextlib.ExitStack
) -> Any:
    if isinstance(scheduler, distributed.Client):
        return scheduler
    if isinstance(scheduler, str):
        logger.info("sweep: connecting to the Dask scheduler at %s", scheduler)
        return stack.enter_context(distributed.Client(scheduler))
    if scheduler is not None:
        raise TypeError(
            f"scheduler must be None, an address such as 'tcp://host:8786' or a "
            f"distributed.Client, got {type(scheduler).__name__}"
        )

    logger.info("sweep: starting a local Dask cluster with %d worker processes", n_jobs)
    cluster = stack.enter_context(
        distributed.LocalCluster(
            n_workers=n_jobs,
            threads_per_worker=1,
            processes=True,
            host="127.0.0.1",
            dashboard_address=None,
        )
    )
    return stack.enter_context(distributed.Client(cluster))


def _threads_by_host(client: Any) -> dict[str, int]:
    """Return the total Dask worker threads per host, to share each host's CPUs among them."""
    # NOTE: tested on local clusters (one host) only, not on a cluster of several machines.
    if "n_workers" in inspect.signature(client.scheduler_info).parameters:
        info = client.scheduler_info(n_workers=-1)
    else:
        info = client.scheduler_info()
    totals: dict[str, int] = {}
    for worker in info.get("workers", {}).values():
        totals[worker["host"]] = totals.get(worker["host"], 0) + int(worker["nthreads"])
    return totals


# --- the sweep -------------------------------------------------------------------------------


def sweep(
    grid: Mapping[str, Any] | Iterable[Mapping[str, Any]],
    run: RunFunction,
    *,
    items: list[Any] | None = None,
    n_jobs: int = 1,
    backend: str = "loky",
    scheduler: Any = None,
    cache_dir: str | os.PathLike[str] | None = None,
    seed: int = 0,
    progress: bool = True,
    torch_threads: int | None = None,
) -> pd.DataFrame:
    """Run `run(params, item)` for every point of `grid` and every item; return one row per job.

    Args:
        grid: name -> list of values (Cartesian product, first name slowest; see `expand_grid`)
            or a list of parameter dicts.
        run: a top-level function or a functools.partial of one, returning a dict of metric
            name -> float, int, str, bool or None. Its params contain the point and "seed".
        items: the prompts or puzzles (JSON values) that each point runs over; None runs each
            point once with item None.
        n_jobs: parallel jobs; -1 means one per CPU. With loky or threading, 1 runs the jobs
            sequentially in this process. With dask it is the local cluster's worker count.
        backend: "loky" (joblib processes), "threading" (joblib threads) or "dask".
        scheduler: dask only. None starts a LocalCluster on 127.0.0.1 and closes it afterwards;
            an address string ("tcp://host:8786") connects a Client; a distributed.Client is used.
        cache_dir: folder of finished jobs, one JSON file each. Jobs found there are not run
            again (column cached=True). Failed jobs are not stored, so they rerun.
        seed: base seed; see `point_seed` for the seed each job receives.
        progress: show a tqdm bar of finished jobs on stderr.
        torch_threads: torch threads per worker. None means joblib.cpu_count() // n_jobs for
            loky and threading, and a host's CPUs // its Dask worker threads for dask. A
            sequential sweep leaves torch's setting alone unless this is set.

    Returns:
        A DataFrame ordered by (point_index, item_index) with the columns point_index,
        item_index, the parameters, seed, item, the metrics, seconds, cached and error. The
        error is None on success, else "ExceptionType: message", and the sweep goes on after a
        failed job.

    Raises:
        ValueError, TypeError: invalid arguments, naming the argument.
        KeyboardInterrupt, joblib's TerminatedWorkerError: the sweep stopped early; jobs that
            finished before are in cache_dir, so a rerun with the same arguments resumes.
    """
    # 1. Check the arguments and build the jobs.
    check_run_options(
        n_jobs=n_jobs, backend=backend, seed=seed, torch_threads=torch_threads, cache_dir=cache_dir
    )
    if scheduler is not None and backend != "dask":
        raise ValueError(
            f"scheduler is set ({scheduler!r}) but backend is {backend!r}; pass backend='dask'"
        )
    if n_jobs == -1:
        n_jobs = joblib.cpu_count()
    points = expand_grid(grid)
    item_list = check_items(items)
    in_process = backend != "dask" and (n_jobs == 1 or backend == "threading")
    backend_label = None if in_process else f"backend={backend!r} with n_jobs={n_jobs}"
    _check_run_callable(run, backend_label=backend_label, cached=cache_dir is not None)
    identity = _run_identity(run) if cache_dir is not None else None
    jobs = _build_jobs(points, item_list, seed=seed, identity=identity)

    # 2. Load finished jobs from the cache.
    store = _ResultStore(Path(cache_dir)) if cache_dir is not None else None
    outcomes: dict[int, dict[str, Any]] = {}
    if store is not None:
        for job in jobs:
            record = store.load(job.key)
            if record is not None:
                outcomes[job.index] = {**record, "error": None, "cached": True}
    pending = [job for job in jobs if job.index not in outcomes]
    logger.info(
        "sweep: %d jobs (%d points x %d items); %d loaded from cache_dir, %d to run with %s",
        len(jobs),
        len(points),
        len(item_list) if item_list is not None else 1,
        len(outcomes),
        len(pending),
        "sequential" if n_jobs == 1 and backend != "dask" else f"{backend} (n_jobs={n_jobs})",
    )

    # 3. Run the rest; each result is stored as soon as it arrives.
    errors = 0
    bar = tqdm(
        total=len(jobs), initial=len(outcomes), disable=not progress, unit="job", desc="sweep"
    )

    def on_result(job: _Job, outcome: dict[str, Any]) -> None:
        nonlocal errors
        outcome = _check_metric_names(job, outcome)
        outcomes[job.index] = {**outcome, "cached": False}
        if outcome["error"] is None and store is not None:
            store.save(job.key, job, identity or {}, outcome)
        elif outcome["error"] is not None:
            errors += 1
            _log_job_error(job, outcome, errors)
        bar.update(1)

    threads = torch_threads if torch_threads is not None else max(1, joblib.cpu_count() // n_jobs)
    try:
        if not pending:
            pass
        elif backend == "dask":
            _run_with_dask(
                pending,
                run,
                n_jobs=n_jobs,
                scheduler=scheduler,
                torch_threads=torch_threads,
                on_result=on_result,
            )
        elif n_jobs == 1:
            with _torch_threads_in_process(torch_threads):
                _run_in_process(pending, run, on_result)
        elif backend == "threading":
            with _torch_threads_in_process(threads):
                _run_with_joblib(
                    pending, run, backend=backend, n_jobs=n_jobs, threads=None, on_result=on_result
                )
        else:
            _run_with_joblib(
                pending, run, backend=backend, n_jobs=n_jobs, threads=threads, on_result=on_result
            )
    except BaseException as exc:
        stored = sum(1 for outcome in outcomes.values() if outcome["error"] is None)
        logger.warning(
            "sweep stopped by %s after %d of %d jobs; %s",
            type(exc).__name__,
            len(outcomes),
            len(jobs),
            f"{stored} finished jobs are stored in {cache_dir} and a rerun skips them"
            if store is not None
            else "no cache_dir was set, so the finished jobs are lost",
        )
        raise
    finally:
        bar.close()

    if errors:
        logger.warning("sweep: %d of %d jobs failed; see the error column", errors, len(jobs))
    return _build_table(jobs, outcomes)


def _check_metric_names(job: _Job, outcome: dict[str, Any]) -> dict[str, Any]:
    clashes = [
        name for name in outcome["metrics"] if name in job.params or name in RESERVED_COLUMNS
    ]
    if not clashes:
        return outcome
    error = (
        f"ValueError: run returned metric {clashes[0]!r}, which is also a parameter or a result "
        "column name; rename the metric"
    )
    return {**outcome, "metrics": {}, "error": error, "traceback": None}


def _log_job_error(job: _Job, outcome: dict[str, Any], count: int) -> None:
    level = logging.WARNING if count <= _MAX_LOGGED_ERRORS else logging.DEBUG
    logger.log(
        level,
        "sweep: job failed at point %d %s, item %d %.200r: %s%s",
        job.point_index,
        job.params,
        job.item_index,
        job.item,
        outcome["error"],
        f"\n{outcome['traceback']}" if outcome.get("traceback") else "",
    )
    if count == _MAX_LOGGED_ERRORS:
        logger.warning("sweep: logging further job errors at DEBUG only")


def _build_table(jobs: list[_Job], outcomes: dict[int, dict[str, Any]]) -> pd.DataFrame:
    param_names: dict[str, None] = {}
    metric_names: dict[str, None] = {}
    rows = []
    for job in jobs:  # jobs are already in (point_index, item_index) order
        outcome = outcomes[job.index]
        param_names.update(dict.fromkeys(name for name in job.params if name != "seed"))
        metric_names.update(dict.fromkeys(outcome["metrics"]))
        rows.append(
            {
                "point_index": job.point_index,
                "item_index": job.item_index,
                **job.params,
                "item": job.item,
                **outcome["metrics"],
                "seconds": outcome["seconds"],
                "cached": outcome["cached"],
                "error": outcome["error"],
            }
        )
    columns = [
        "point_index",
        "item_index",
        *param_names,
        "seed",
        "item",
        *metric_names,
        "seconds",
        "cached",
        "error",
    ]
    table = pd.DataFrame.from_records(rows, columns=columns)
    table["error"] = table["error"].astype(object).where(table["error"].notna(), None)
    return table


# --- config files and output -----------------------------------------------------------------


def run_sweep_config(
    config: SweepConfig, *, progress: bool = True, **overrides: Any
) -> pd.DataFrame:
    """Run the sweep that `config` describes and write it to `config.out` if that is set.

    `overrides` replace config fields (for example n_jobs=4, backend="dask",
    scheduler="tcp://host:8786", cache_dir=..., out=...). An override whose value is None is
    ignored, so a CLI can pass its unset options through.
    """
    valid = {field.name for field in fields(SweepConfig)}
    unknown = sorted(set(overrides) - valid)
    if unknown:
        raise ValueError(
            f"run_sweep_config: unknown override {unknown[0]!r}; valid overrides: {', '.join(sorted(valid))}"
        )
    changes = {name: value for name, value in overrides.items() if value is not None}
    if changes.get("backend", config.backend) != "dask" and "scheduler" not in changes:
        changes["scheduler"] = None  # a scheduler from the file applies to backend dask only
    config = replace(config, **changes)

    table = sweep(
        config.grid_or_points,
        get_runner(config.task),
        items=config.items,
        n_jobs=config.n_jobs,
        backend=config.backend,
        scheduler=config.scheduler,
        cache_dir=config.cache_dir,
        seed=config.seed,
        progress=progress,
        torch_threads=config.torch_threads,
    )
    if config.out is not None:
        write_results(table, config.out)
    return table


def write_results(table: pd.DataFrame, path: str | os.PathLike[str]) -> Path:
    """Write a sweep table to .csv, .json (a list of row objects) or .parquet; return the path.

    List and dict cells (items, Bezier control points) are written as JSON strings in CSV and
    Parquet. Parquet needs pyarrow. Creates the parent folder.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in (".csv", ".json", ".parquet"):
        raise ValueError(
            f"write_results: unsupported suffix {path.suffix!r} in {path}; use .csv, .json or .parquet"
        )
    if suffix == ".parquet":
        try:
            import pyarrow  # noqa: F401
        except ImportError:
            raise ImportError(
                f"write_results: writing {path.suffix!r} needs pyarrow (pip install pyarrow); "
                "or write .csv or .json"
            ) from None
    path.parent.mkdir(parents=True, exist_ok=True)

    if suffix == ".json":
        table.to_json(path, orient="records", indent=2)
        return path
    flat = table.copy()
    for column in flat.columns:
        if flat[column].dtype == object:
            flat[column] = flat[column].map(
                lambda value: json.dumps(value) if isinstance(value, (list, dict)) else value
            )
    if suffix == ".csv":
        flat.to_csv(path, index=False)
    else:
        flat.to_parquet(path, index=False)
    return path


from tempo_search._callable import make_module_callable  # noqa: E402

make_module_callable(__name__, sweep)
