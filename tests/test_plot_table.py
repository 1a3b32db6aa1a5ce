"""sdelab.plot.table: result tables as Markdown."""

from __future__ import annotations

import pytest

from sdelab import plot


def _text(t) -> str:
    return getattr(t, "data", t)


def test_markdown_table_with_alignment_and_escaping():
    t = _text(plot.table(["SDE", "NFE"], [["ve", 128], ["a|b", "7"]]))
    assert t.splitlines() == ["| SDE | NFE |", "| :--- | ---: |", "| ve | 128 |",
                              "| a\\|b | 7 |"]
    assert "| :---: |" in _text(plot.table(["x"], [[1]], align="c"))


def test_bad_rows_and_alignments_are_refused():
    with pytest.raises(ValueError, match="row 1 has 1 cells"):
        plot.table(["a", "b"], [[1, 2], [3]])
    with pytest.raises(ValueError, match="align"):
        plot.table(["a", "b"], [[1, 2]], align="lx")
