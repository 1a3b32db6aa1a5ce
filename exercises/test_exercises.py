"""Run every exercise check against the chosen implementation, and keep the starters unsolved."""

from __future__ import annotations

import ast
import inspect

import pytest

from exercises.registry import CHAPTER_MODULES, EXERCISES, _load_all

_load_all()
IDS = sorted(EXERCISES, key=lambda k: (EXERCISES[k].chapter, EXERCISES[k].number))


@pytest.mark.parametrize("name", IDS, ids=[f"{EXERCISES[k].chapter}-{k}" for k in IDS])
def test_exercise(name, request):
    ex = EXERCISES[name]
    ex.run(ex.implementation(request.config.getoption("--impl")))


@pytest.mark.parametrize("name", IDS, ids=[f"{EXERCISES[k].chapter}-{k}" for k in IDS])
def test_starter_is_still_a_stub(name):
    """No solution leaks into a starter: its body is a docstring and one `raise NotImplementedError`."""
    fn = EXERCISES[name].implementation("starter")
    body = ast.parse(inspect.getsource(fn)).body[0].body
    stmts = [s for s in body if not (isinstance(s, ast.Expr) and isinstance(s.value, ast.Constant))]
    assert len(stmts) == 1 and isinstance(stmts[0], ast.Raise), f"starter {name} must only raise NotImplementedError"
    with pytest.raises(NotImplementedError, match=f"exercise {name}:"):
        EXERCISES[name].run(fn)


def test_every_chapter_module_has_its_starters_and_solutions():
    import importlib

    for chapter, module in CHAPTER_MODULES.items():
        names = [k for k, ex in EXERCISES.items() if ex.chapter == chapter]
        assert len(names) >= 3, f"{chapter} has {len(names)} exercises; each chapter has at least three"
        starter = importlib.import_module(f"exercises.{module}")
        solution = importlib.import_module(f"exercises.solutions.{module}")
        for n in names:
            assert hasattr(starter, n) and hasattr(solution, n), f"{n} missing from exercises/{module}.py or its solution"
