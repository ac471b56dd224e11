"""tempo_search: Monte Carlo tree search over language-model tokens in one shared KV cache."""

import logging

from tempo_search.check import ExactnessReport, check_model
from tempo_search.generate import GenerationResult, GenerationStats, Step, TokenChoice, generate
from tempo_search.models import LoadedModel, default_cache_dir, load_model
from tempo_search.tree_state import ROOT, ForwardOutput, NodeBudgetExceeded, TreeState

__version__ = "0.1.0"

__all__ = [
    "ROOT",
    "ExactnessReport",
    "ForwardOutput",
    "GenerationResult",
    "GenerationStats",
    "LoadedModel",
    "NodeBudgetExceeded",
    "Step",
    "TokenChoice",
    "TreeState",
    "check_model",
    "default_cache_dir",
    "generate",
    "load_model",
]

logging.getLogger(__name__).addHandler(logging.NullHandler())
