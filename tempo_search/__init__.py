"""tempo_search: Monte Carlo tree search over language-model tokens in one shared KV cache.

Public names are imported on first use, so that `import tempo_search` (and every sweep worker
that unpickles a job) does not pay for torch and transformers until it needs them.
"""

from __future__ import annotations

import importlib
import logging
from typing import Any

__version__ = "0.1.0"

_EXPORTS = {
    # models and the tree state
    "LoadedModel": "tempo_search.models",
    "load_model": "tempo_search.models",
    "default_cache_dir": "tempo_search.models",
    "ROOT": "tempo_search.tree_state",
    "TreeState": "tempo_search.tree_state",
    "ForwardOutput": "tempo_search.tree_state",
    "NodeBudgetExceeded": "tempo_search.tree_state",
    "ExactnessReport": "tempo_search.check",
    "check_model": "tempo_search.check",
    # TEMPO generation
    "generate": "tempo_search.generate",
    "GenerationResult": "tempo_search.generate",
    "GenerationStats": "tempo_search.generate",
    "Step": "tempo_search.generate",
    "TokenChoice": "tempo_search.generate",
    # search
    "search": "tempo_search.search",
    "SearchConfig": "tempo_search.search",
    "SearchResult": "tempo_search.search",
    "SearchStats": "tempo_search.search",
    "Completion": "tempo_search.search",
    "RolloutConfig": "tempo_search.rollouts",
    "ValueWeights": "tempo_search.policies.values",
    "BezierSchedule": "tempo_search.schedules",
    "FlatLinearSchedule": "tempo_search.schedules",
    "constant_schedule": "tempo_search.schedules",
    "PruneConfig": "tempo_search.coherence",
    # the tree
    "SearchNode": "tempo_search.tree",
    "render_tree": "tempo_search.tree",
    "visit_distribution": "tempo_search.tree",
    "save_tree": "tempo_search.tree",
    "load_tree_json": "tempo_search.tree",
    "tree_to_dot": "tempo_search.tree",
    # metrics and sweeps
    "distinct_n": "tempo_search.metrics",
    "self_bleu": "tempo_search.metrics",
    "repetition_rate": "tempo_search.metrics",
    "perplexity": "tempo_search.metrics",
    "keyword_coverage": "tempo_search.metrics",
    "sweep": "tempo_search.sweep",
    "worker_cache": "tempo_search.sweep",
}

__all__ = sorted(_EXPORTS)


_SUBPACKAGES = ("tasks", "policies", "rollouts", "testing", "runners")


def __getattr__(name: str) -> Any:
    if name in _SUBPACKAGES:
        return importlib.import_module(f"tempo_search.{name}")
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'tempo_search' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))


logging.getLogger(__name__).addHandler(logging.NullHandler())
