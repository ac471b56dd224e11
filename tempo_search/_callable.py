"""Callable modules for the public functions that share their module's name."""

from __future__ import annotations

import sys
import types
from collections.abc import Callable


def make_module_callable(module_name: str, function: Callable) -> None:
    """Let the module `module_name` be called as `function`.

    `tempo_search.search`, `.generate` and `.sweep` are both functions and submodules. Once a
    submodule is imported, Python sets the package attribute of that name to the module, so
    `tempo_search.search(...)` would call a module. A callable module keeps that call working
    and keeps the module's attributes (for `monkeypatch` and `from ... import`) as they are.
    """

    class _CallableModule(types.ModuleType):
        def __call__(self, *args, **kwargs):
            return function(*args, **kwargs)

    _CallableModule.__name__ = f"callable module {module_name}"
    sys.modules[module_name].__class__ = _CallableModule
