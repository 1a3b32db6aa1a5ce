"""The registry of exercises and the one-line notebook helper :func:`check`.

Each exercise is a check function registered with :func:`exercise`: it receives an
implementation and raises ``AssertionError`` with a message a reader can act on. The same check
runs from pytest (``exercises/test_exercises.py``) and from a notebook (:func:`check`).
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Callable

CHAPTER_MODULES = {
    "ch01": "ch01_forward",
    "ch02": "ch02_reverse",
    "ch03": "ch03_score_matching",
    "ch04": "ch04_samplers",
    "ch05": "ch05_likelihood",
    "ch06": "ch06_evaluation",
    "ch07": "ch07_conditional",
    "ch08": "ch08_imputation",
    "ch09": "ch09_scaling",
    "langevin": "langevin_ncsn",
    "ddpm": "ddpm",
    "parametrisations": "parametrisations",
    "flow_matching": "flow_matching",
}


@dataclass(frozen=True)
class Exercise:
    chapter: str  # "ch01"
    number: str  # orders a chapter's exercises in tests; the book numbers them itself
    name: str  # the function the reader writes
    run: Callable[[Callable], None]  # the check: raises AssertionError on a wrong implementation

    def implementation(self, impl: str) -> Callable:
        """The reader's starter (``impl="starter"``) or the reference solution (``"reference"``)."""
        if impl not in ("starter", "reference"):
            raise ValueError(f"impl must be 'starter' or 'reference', got {impl!r}")
        module = CHAPTER_MODULES[self.chapter]
        package = "exercises" if impl == "starter" else "exercises.solutions"
        return getattr(importlib.import_module(f"{package}.{module}"), self.name)


EXERCISES: dict[str, Exercise] = {}


def exercise(chapter: str, number: str):
    """Register the decorated check function for the exercise function of the same name."""

    def register(fn: Callable[[Callable], None]) -> Callable[[Callable], None]:
        EXERCISES[fn.__name__] = Exercise(chapter, number, fn.__name__, fn)
        return fn

    return register


def _load_all() -> None:
    for module in CHAPTER_MODULES.values():
        importlib.import_module(f"exercises.checks.{module}")


def check(fn: Callable, name: str | None = None) -> None:
    """Check a reader's implementation ``fn`` of an exercise and print the verdict (pass, todo or what failed).

    The exercise is found by the function's name (``vp_kernel``), or by ``name`` when they differ.
    """
    _load_all()
    key = name or getattr(fn, "__name__", None)
    if key not in EXERCISES:
        raise ValueError(f"no exercise called {key!r}; known: {', '.join(sorted(EXERCISES))}")
    ex = EXERCISES[key]
    # The function's name, not the exercise's number: the book numbers exercises by the
    # chapter's place in the table of contents, which the registry does not know.
    label = f"exercise {ex.name}"
    try:
        ex.run(fn)
    except NotImplementedError:
        print(f"[todo] {label}: not implemented yet.")
        return
    except AssertionError as err:
        print(f"[fail] {label}: {err}")
        return
    except Exception as err:  # a crash in the reader's code is a failure to report, not to raise
        print(f"[fail] {label} raised {type(err).__name__}: {err}")
        return
    print(f"[pass] {label}: all checks passed.")
