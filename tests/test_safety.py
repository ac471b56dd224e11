"""Safe loading and no code execution of model output, checked on the package source."""

import ast
from pathlib import Path

import pytest

import tempo_search

PACKAGE = Path(tempo_search.__file__).parent
SOURCES = sorted(PACKAGE.rglob("*.py"))


def _calls(path: Path) -> list[str]:
    names = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Call):
            func = node.func
            if isinstance(func, ast.Name):
                names.append(func.id)
            elif isinstance(func, ast.Attribute):
                base = func.value.id if isinstance(func.value, ast.Name) else ""
                names.append(f"{base}.{func.attr}")
    return names


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_source_never_evaluates_code(path):
    calls = _calls(path)

    assert "eval" not in calls
    assert "exec" not in calls
    assert "compile" not in calls


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_source_never_unpickles(path):
    calls = _calls(path)

    assert "pickle.load" not in calls
    assert "pickle.loads" not in calls
    assert "torch.load" not in calls


def test_load_model_keeps_remote_code_off_by_default():
    import inspect

    from tempo_search.models import load_model

    parameters = inspect.signature(load_model).parameters

    assert parameters["trust_remote_code"].default is False
    assert parameters["allow_pickle"].default is False
