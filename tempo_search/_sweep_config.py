"""Sweep inputs: grid expansion, item checks, the runner registry and sweep config files.

`tempo_search.sweep` re-exports the public names defined here.
"""

from __future__ import annotations

import dataclasses
import difflib
import itertools
import json
import logging
import math
import re
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import yaml

logger = logging.getLogger(__name__)

BACKENDS = ("loky", "threading", "dask")

# Columns that `sweep` adds to every row. A parameter with one of these names would be overwritten.
# "seed" is not reserved: a point that sets it chooses its job's seed itself.
RESERVED_COLUMNS = ("point_index", "item_index", "item", "seconds", "cached", "error")

RunFunction = Callable[[dict[str, Any], Any], Mapping[str, Any]]

RUNNERS: dict[str, RunFunction] = {}
"""Run functions that a sweep config can name in its `task` key, by name."""


def register_runner(name: str) -> Callable[[RunFunction], RunFunction]:
    """Register the decorated run function under `name` in `RUNNERS`.

    Decorate a top-level function, so that worker processes can import it by name. Registering
    the same function again (a module reload, or a worker importing the module) is allowed.
    """
    if not isinstance(name, str) or not name.strip():
        raise ValueError(f"register_runner: name must be a non-empty string, got {name!r}")

    def decorator(run: RunFunction) -> RunFunction:
        if not callable(run):
            raise TypeError(f"register_runner({name!r}) must decorate a function, got {run!r}")
        previous = RUNNERS.get(name)
        if previous is not None and _qualified_name(previous) != _qualified_name(run):
            raise ValueError(
                f"runner {name!r} is already registered to {_qualified_name(previous)}; "
                f"register {_qualified_name(run)} under another name"
            )
        RUNNERS[name] = run
        return run

    return decorator


def get_runner(name: str) -> RunFunction:
    """Return the run function registered under `name`, or raise ValueError listing the known names."""
    _register_builtin_runners()
    try:
        return RUNNERS[name]
    except KeyError:
        known = ", ".join(sorted(RUNNERS)) or "none registered"
        raise ValueError(
            f"unknown task {name!r}; known tasks: {known}. "
            "Set task to one of them, or register a run function with @register_runner(name)"
        ) from None


def _register_builtin_runners() -> None:
    # The built-in runners ("generate", "search", "game24") register themselves on import.
    import tempo_search.runners  # noqa: F401


def _qualified_name(obj: Any) -> str:
    return f"{getattr(obj, '__module__', '?')}.{getattr(obj, '__qualname__', repr(obj))}"


# --- grid and items --------------------------------------------------------------------------


def expand_grid(grid: Mapping[str, Any] | Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Expand a grid into its list of points (parameter dicts).

    A mapping of name -> list of values gives the Cartesian product in `itertools.product`
    order: the first name varies slowest and the last name fastest, so
    `{"a": [1, 2], "b": ["x", "y"]}` gives a=1,b=x; a=1,b=y; a=2,b=x; a=2,b=y.
    A list of dicts gives those points unchanged, in their order, and the dicts may have
    different keys. Values must be JSON-serialisable: tuples become lists and numpy scalars and
    1-D arrays become Python values. Raises ValueError or TypeError naming the offending key.
    """
    if isinstance(grid, Mapping):
        return _expand_mapping(grid)
    if isinstance(grid, (str, bytes)) or not isinstance(grid, Iterable):
        raise TypeError(
            f"grid must be a dict of name -> list of values or a list of dicts, got "
            f"{type(grid).__name__} {grid!r}"
        )

    points = list(grid)
    if not points:
        raise ValueError("grid is an empty list of points; pass at least one dict of parameters")
    expanded = []
    for index, point in enumerate(points):
        if not isinstance(point, Mapping):
            raise TypeError(
                f"grid point {index} must be a dict of name -> value, got "
                f"{type(point).__name__} {point!r}"
            )
        expanded.append(
            {
                _check_name(name, f"grid point {index}"): _to_json_value(
                    value, f"grid point {index} key {name!r}"
                )
                for name, value in point.items()
            }
        )
        if "seed" in expanded[-1]:
            _check_seed_value(expanded[-1]["seed"], f"grid point {index}")
    return expanded


def _expand_mapping(grid: Mapping[str, Any]) -> list[dict[str, Any]]:
    if not grid:
        raise ValueError(
            "grid is empty; pass a dict of name -> list of values, such as {'c_puct': [1.0, 2.0]}"
        )

    names = []
    value_lists = []
    for name, values in grid.items():
        names.append(_check_name(name, "grid"))
        value_lists.append(_check_value_list(name, values))

    return [
        dict(zip(names, combination, strict=True))
        for combination in itertools.product(*value_lists)
    ]


def _check_name(name: Any, where: str) -> str:
    if not isinstance(name, str) or not name.isidentifier():
        raise ValueError(
            f"{where}: parameter name {name!r} is not a Python identifier; use letters, digits "
            "and underscores, not starting with a digit (for example 'c_puct')"
        )
    if name in RESERVED_COLUMNS:
        raise ValueError(
            f"{where}: parameter name {name!r} is reserved for a result column "
            f"({', '.join(RESERVED_COLUMNS)}); rename the parameter"
        )
    return name


def _check_value_list(name: str, values: Any) -> list[Any]:
    if hasattr(values, "tolist") and getattr(values, "ndim", None) == 1:
        values = values.tolist()  # a 1-D numpy array, such as np.linspace(0.5, 2.0, 4)
    if not isinstance(values, (list, tuple, range)):
        raise ValueError(
            f"grid key {name!r} must map to a list of values, got {type(values).__name__} "
            f"{values!r}; wrap a single value in a list: {{{name!r}: [{values!r}]}}"
        )
    if len(values) == 0:
        raise ValueError(
            f"grid key {name!r} has an empty list, which leaves no points to run; "
            "give at least one value or remove the key"
        )
    checked = [_to_json_value(value, f"grid key {name!r}") for value in values]
    if name == "seed":
        for value in checked:
            _check_seed_value(value, "grid")
    return checked


def _check_seed_value(value: Any, where: str) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{where}: seed values must be integers, got {value!r}")


def _to_json_value(value: Any, where: str) -> Any:
    """Return `value` as plain JSON types (tuples become lists), or raise TypeError naming `where`."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if type(value).__module__ == "numpy" and hasattr(value, "item"):
        return _to_json_value(
            value.item() if getattr(value, "ndim", 0) == 0 else value.tolist(), where
        )
    if isinstance(value, (list, tuple)):
        return [_to_json_value(element, where) for element in value]
    if isinstance(value, Mapping) and all(isinstance(key, str) for key in value):
        return {key: _to_json_value(element, where) for key, element in value.items()}
    raise TypeError(
        f"{where}: value {value!r} of type {type(value).__name__} is not JSON-serialisable; "
        "use numbers, strings, booleans, None, lists or dicts with string keys"
    )


def check_items(items: Any) -> list[Any] | None:
    """Return `items` as a list of JSON values, or None; raise TypeError or ValueError if invalid."""
    if items is None:
        return None
    if isinstance(items, (str, bytes, Mapping)) or not isinstance(items, (list, tuple)):
        raise TypeError(
            f"items must be a list of prompts or puzzles (JSON values) or None, got "
            f"{type(items).__name__} {items!r:.80}"
        )
    if len(items) == 0:
        raise ValueError(
            "items is an empty list, which leaves no jobs; pass items=None to run each point once"
        )
    return [_to_json_value(item, f"items[{index}]") for index, item in enumerate(items)]


def check_run_options(
    *,
    n_jobs: Any,
    backend: Any,
    seed: Any,
    torch_threads: Any,
    cache_dir: Any,
) -> None:
    """Raise ValueError or TypeError naming the first invalid sweep option."""
    if isinstance(n_jobs, bool) or not isinstance(n_jobs, int) or not (n_jobs >= 1 or n_jobs == -1):
        raise ValueError(
            f"n_jobs must be an integer >= 1, or -1 for one job per CPU, got {n_jobs!r}"
        )
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {', '.join(BACKENDS)}, got {backend!r}")
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise TypeError(f"seed must be an integer, got {type(seed).__name__} {seed!r}")
    if torch_threads is not None and (
        isinstance(torch_threads, bool) or not isinstance(torch_threads, int) or torch_threads < 1
    ):
        raise ValueError(
            f"torch_threads must be an integer >= 1, or None for CPUs // n_jobs, got {torch_threads!r}"
        )
    if cache_dir is not None and not isinstance(cache_dir, (str, Path)):
        raise TypeError(
            f"cache_dir must be a path (str or pathlib.Path) or None, got {type(cache_dir).__name__}"
        )


# --- config files ----------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class SweepConfig:
    """A sweep read from a config file: what to run, over which points and items, and how.

    Exactly one of `grid` (name -> list of values) and `points` (list of parameter dicts) is set.
    `task` names a run function in `RUNNERS`; it is looked up when the sweep runs. Relative
    `cache_dir` and `out` paths in a file are resolved against the file's folder by
    `load_sweep_config`.
    """

    task: str
    grid: dict[str, list[Any]] | None = None
    points: list[dict[str, Any]] | None = None
    items: list[Any] | None = None
    n_jobs: int = 1
    backend: str = "loky"
    scheduler: str | None = None
    cache_dir: str | None = None
    seed: int = 0
    torch_threads: int | None = None
    out: str | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.task, str) or not self.task.strip():
            raise ValueError(
                f"key 'task' must be the name of a registered run function, got {self.task!r}"
            )
        if (self.grid is None) == (self.points is None):
            raise ValueError(
                "set exactly one of the keys 'grid' (name -> list of values) and 'points' "
                "(list of parameter dicts)"
            )
        if self.grid is not None and not isinstance(self.grid, Mapping):
            raise TypeError(
                f"key 'grid' must be a mapping of name -> list of values, got "
                f"{type(self.grid).__name__}; use 'points' for a list of parameter dicts"
            )
        if self.points is not None and not isinstance(self.points, list):
            raise TypeError(
                f"key 'points' must be a list of parameter dicts, got {type(self.points).__name__}; "
                "use 'grid' for a mapping of name -> list of values"
            )
        expand_grid(self.grid if self.grid is not None else self.points)
        check_items(self.items)
        check_run_options(
            n_jobs=self.n_jobs,
            backend=self.backend,
            seed=self.seed,
            torch_threads=self.torch_threads,
            cache_dir=self.cache_dir,
        )
        if self.scheduler is not None:
            if not isinstance(self.scheduler, str):
                raise TypeError(
                    f"key 'scheduler' must be an address string such as 'tcp://host:8786', "
                    f"got {type(self.scheduler).__name__} {self.scheduler!r}"
                )
            if self.backend != "dask":
                raise ValueError(
                    f"key 'scheduler' is set ({self.scheduler!r}) but backend is "
                    f"{self.backend!r}; set backend: dask or remove scheduler"
                )
        if self.out is not None and not isinstance(self.out, (str, Path)):
            raise TypeError(f"key 'out' must be a file path, got {type(self.out).__name__}")

    @property
    def grid_or_points(self) -> dict[str, list[Any]] | list[dict[str, Any]]:
        """The `grid` argument for `sweep`: `grid` if set, else `points`."""
        return self.grid if self.grid is not None else self.points  # type: ignore[return-value]


_CONFIG_KEYS = tuple(field.name for field in dataclasses.fields(SweepConfig))
_ITEM_ALIASES = ("items", "prompts", "puzzles")
_VALID_FILE_KEYS = tuple(sorted({*_CONFIG_KEYS, *_ITEM_ALIASES}))

# PyYAML follows YAML 1.1, which reads 1e-3 (no dot) as a string, not a float.
_FLOAT_LIKE = re.compile(r"^[+-]?(\d+\.?\d*|\.\d+)[eE][+-]?\d+$")


def load_sweep_config(path: str | Path) -> SweepConfig:
    """Read a sweep config from a YAML (.yaml, .yml) or JSON (.json) file.

    Valid keys: task, grid or points, items (or its aliases prompts, puzzles), n_jobs, backend,
    scheduler, cache_dir, seed, torch_threads, out. Relative cache_dir and out paths are
    resolved against the config file's folder. Raises FileNotFoundError for a missing file and
    ValueError or TypeError that names the file, the key and the fix for an invalid one.
    """
    path = Path(path)
    data = _read_config_file(path)

    # 1. Keys: reject unknown ones with the nearest valid key.
    for key in data:
        if key not in _VALID_FILE_KEYS:
            close = difflib.get_close_matches(str(key), _VALID_FILE_KEYS, n=1, cutoff=0.6)
            hint = f"did you mean {close[0]!r}? " if close else ""
            raise ValueError(
                f"{path}: unknown key {key!r}; {hint}valid keys: {', '.join(_VALID_FILE_KEYS)}"
            )
    item_keys = [key for key in _ITEM_ALIASES if key in data]
    if len(item_keys) > 1:
        raise ValueError(
            f"{path}: keys {' and '.join(map(repr, item_keys))} both set the items; keep one of them"
        )
    fields = {key: value for key, value in data.items() if key not in _ITEM_ALIASES}
    if item_keys:
        fields["items"] = data[item_keys[0]]

    # 2. Paths: relative to the config file, so that the file works from any directory.
    for key in ("cache_dir", "out"):
        if isinstance(fields.get(key), str):
            fields[key] = str(path.parent / Path(fields[key]).expanduser())

    _register_builtin_runners()
    if "task" not in fields:
        known = ", ".join(sorted(RUNNERS)) or "none registered"
        raise ValueError(f"{path}: missing key 'task'; set it to one of the known tasks: {known}")
    if path.suffix in (".yaml", ".yml"):
        _warn_float_strings(path, fields.get("grid"), fields.get("points"))

    # 3. Values: SweepConfig checks types and the grid, and the runner must exist.
    try:
        config = SweepConfig(**fields)
        get_runner(config.task)
    except (ValueError, TypeError) as exc:
        raise type(exc)(f"{path}: {exc}") from None
    return config


def _read_config_file(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise FileNotFoundError(f"sweep config not found: {path} (resolved to {path.resolve()})")
    text = path.read_text(encoding="utf-8")

    if path.suffix in (".yaml", ".yml"):
        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
            problem = getattr(exc, "problem", None) or str(exc)
            raise ValueError(f"{path}: invalid YAML{where}: {problem}") from None
    elif path.suffix == ".json":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ValueError(
                f"{path}: invalid JSON at line {exc.lineno}, column {exc.colno}: {exc.msg}"
            ) from None
    else:
        raise ValueError(
            f"{path}: unsupported config suffix {path.suffix!r}; use .yaml, .yml or .json"
        )

    if not isinstance(data, dict):
        raise ValueError(
            f"{path}: the file must contain a mapping of keys (task, grid, items, ...), got "
            f"{type(data).__name__}"
        )
    return data


def _warn_float_strings(path: Path, grid: Any, points: Any) -> None:
    values: list[tuple[str, Any]] = []
    if isinstance(grid, Mapping):
        values = [(str(k), v) for k, vs in grid.items() if isinstance(vs, list) for v in vs]
    elif isinstance(points, list):
        values = [(str(k), v) for p in points if isinstance(p, Mapping) for k, v in p.items()]
    for name, value in values:
        if isinstance(value, str) and _FLOAT_LIKE.match(value) and math.isfinite(float(value)):
            logger.warning(
                "%s: grid value %r of %r is read as a string because YAML 1.1 needs a dot in "
                "a float; write %s if you mean a number",
                path,
                value,
                name,
                _with_dot(value),
            )


def _with_dot(value: str) -> str:
    mantissa, _, exponent = value.lower().partition("e")
    if "." not in mantissa:
        mantissa += ".0"
    return f"{mantissa}e{exponent}"
