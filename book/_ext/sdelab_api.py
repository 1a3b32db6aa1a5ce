"""Docstring care for the API reference (book/api.md).

reStructuredText "simple tables" are strict: a cell that runs into the gap between two columns
makes the whole table an error (and the strict book build fails). The library's docstrings are
written for ``help()`` first, so such a table is shown as preformatted text instead, exactly as
``help()`` shows it, rather than failing the site.
"""

from __future__ import annotations

import re

_BORDER = re.compile(r"^(\s*)(=+)(\s+=+)+\s*$")


def _gaps(border: str) -> list[int]:
    """Column positions of a simple-table border that must be blank in every row."""
    return [i for i, ch in enumerate(border.rstrip()) if ch == " " and border.strip()]


def _row_fits(row: str, gaps: list[int]) -> bool:
    return all(i >= len(row) or row[i] == " " for i in gaps)


def _literal_if_malformed(lines: list[str]) -> None:
    i = 0
    while i < len(lines):
        if not _BORDER.match(lines[i]):
            i += 1
            continue
        start, border, j = i, lines[i], i + 1
        borders = 1
        while j < len(lines) and lines[j].strip() and borders < 3:
            borders += bool(_BORDER.match(lines[j]))
            j += 1
        rows = [r for r in lines[start:j] if not _BORDER.match(r)]
        indent = len(border) - len(border.lstrip())
        gaps = [g for g in _gaps(border) if g >= indent]
        if not all(_row_fits(r, gaps) for r in rows):
            block = ["::", ""] + ["    " + r for r in lines[start:j]] + [""]
            lines[start:j] = block
            j = start + len(block)
        i = j


def _process(app, what, name, obj, options, lines):
    _literal_if_malformed(lines)


def setup(app):
    app.connect("autodoc-process-docstring", _process)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
