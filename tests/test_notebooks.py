"""The chapters read well at 1280 px: every line of code a reader sees (code
cells, and code blocks in the text such as exercise solutions) is at most 88 characters,
and code cells stay short. Checked on the stored notebooks: no build, no browser."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "book").glob("*.ipynb"))
MAX_LINE = 88  # the project's line length; at 1280 px a code block shows ~90 characters
MAX_CELL_LINES = 30  # "cells <= ~25 lines": 25 is the aim, 30 the limit that fails
_FENCE = re.compile(r"^(\s*)(```+|~~~+)(.*)$")


def _code_blocks(cell: dict) -> list[str]:
    """The code a reader sees in a cell: the whole of a code cell, or the fenced code
    blocks (not directive fences such as ```{admonition}) of a markdown cell."""
    src = "".join(cell["source"])
    if cell["cell_type"] == "code":
        return [src]
    blocks, current, fence = [], None, None
    for line in src.splitlines():
        m = _FENCE.match(line)
        if current is None and m and not m.group(3).strip().startswith("{"):
            current, fence = [], m.group(2)
        elif (current is not None and m and m.group(2).startswith(fence)
              and not m.group(3).strip()):
            blocks.append("\n".join(current))
            current = None
        elif current is not None:
            current.append(line)
    return blocks


def test_there_are_notebooks():
    assert NOTEBOOKS, "no book/*.ipynb found"


def test_code_fences_are_found():
    source = ["text\n", "```python\n", "x = 1\n", "```\n",
              "```{admonition} a\n", "not code\n", "```\n"]
    cell = {"cell_type": "markdown", "source": source}
    assert _code_blocks(cell) == ["x = 1"]


@pytest.mark.parametrize("nb", NOTEBOOKS, ids=[p.name for p in NOTEBOOKS])
def test_code_lines_are_at_most_88_characters(nb: Path):
    cells = json.loads(nb.read_text())["cells"]
    long = [
        f"cell {i} ({cell['cell_type']}), {len(line)} chars: {line.strip()[:60]}..."
        for i, cell in enumerate(cells)
        for block in _code_blocks(cell)
        for line in block.splitlines()
        if len(line) > MAX_LINE
    ]
    assert not long, (f"{nb.name}: {len(long)} code lines over {MAX_LINE} characters:\n"
                      + "\n".join(long))


@pytest.mark.parametrize("nb", NOTEBOOKS, ids=[p.name for p in NOTEBOOKS])
def test_code_cells_are_short(nb: Path):
    cells = json.loads(nb.read_text())["cells"]
    big = []
    for i, cell in enumerate(cells):
        n = len("".join(cell["source"]).rstrip().splitlines())
        if cell["cell_type"] == "code" and n > MAX_CELL_LINES:
            big.append(f"cell {i}: {n} lines")
    assert not big, (f"{nb.name}: code cells over {MAX_CELL_LINES} lines (move what a "
                     "reader need not see into sdelab):\n" + "\n".join(big))


# Chapter and exercise numbers come from Sphinx (chapters are numbered in _toc.yml), so
# prose must not type them: the book's order changes, and a typed number would then lie.
_TYPED_NUMBER = re.compile(
    r"\b(?:[Cc]hapters? \d|[Cc]h\. ?\d|[Ee]xercises? [A-Z0-9]+\.\d)")
_EXERCISE_TITLE = re.compile(r":::\{exercise\} +[A-Z0-9]+\.\d+[:.]")


@pytest.mark.parametrize("nb", NOTEBOOKS, ids=[p.name for p in NOTEBOOKS])
def test_no_typed_chapter_or_exercise_numbers(nb: Path):
    """Links instead of numbers: {doc}`03_score_matching`, {numref}`ex-label`,
    {eq}`label`; exercises are numbered by sphinx-exercise (no ``:nonumber:``, no "3.1:"
    in the title)."""
    cells = json.loads(nb.read_text())["cells"]
    bad = []
    for i, cell in enumerate(cells):
        if cell["cell_type"] != "markdown":
            continue
        src = "".join(cell["source"])
        bad += [f"cell {i}: typed number {m.group(0)!r}"
                for m in _TYPED_NUMBER.finditer(src)]
        bad += [f"cell {i}: numbered exercise title {m.group(0)!r}"
                for m in _EXERCISE_TITLE.finditer(src)]
        bad += [f"cell {i}: ':nonumber:' exercise"
                for _ in re.finditer(":nonumber:", src)]
    assert not bad, f"{nb.name}:\n" + "\n".join(bad)
