"""Author-year citation labels for the book, unique by construction.

The book cites three papers that an author-year style would all render as "Song et al., 2021".
This extension registers a pybtex label style that writes "Song et al., 2021a" (a letter is added
only where two labels would otherwise collide, as in natbib), and a bibliography style that uses
it. With ``bibtex_reference_style: label`` the in-text citation and the bibliography show the same
label, so a reader can always tell which paper is meant. tests/test_book.py checks this on the
built site.
"""

from __future__ import annotations

from collections import Counter

from pybtex.plugin import register_plugin
from pybtex.richtext import Text
from pybtex.style.formatting.alpha import Style as AlphaStyle
from pybtex.style.labels import BaseLabelStyle


def _last_name(person) -> str:
    return Text.from_latex(" ".join(person.last_names)).render_as("text")


class AuthorYearLabelStyle(BaseLabelStyle):
    """"Anderson, 1982", "Song and Ermon, 2019", "Song et al., 2021a"."""

    def format_label(self, entry) -> str:
        people = entry.persons.get("author") or entry.persons.get("editor") or []
        names = [_last_name(p) for p in people]
        if not names:
            who = entry.fields.get("organization") or entry.fields.get("title", "Anon.")
        elif len(names) == 1:
            who = names[0]
        elif len(names) == 2:
            who = f"{names[0]} and {names[1]}"
        else:
            who = f"{names[0]} et al."
        return f"{who}, {entry.fields.get('year', 'n.d.')}"

    def format_labels(self, sorted_entries):
        labels = [self.format_label(entry) for entry in sorted_entries]
        count, seen = Counter(labels), Counter()
        for label in labels:
            if count[label] == 1:
                yield label
            else:
                yield label + chr(ord("a") + seen[label])
                seen[label] += 1


class AuthorYearStyle(AlphaStyle):
    """pybtex's alpha style (sorted by author, year, title) with author-year labels."""

    default_label_style = AuthorYearLabelStyle


def setup(app):
    register_plugin("pybtex.style.labels", "sdelab_author_year", AuthorYearLabelStyle)
    register_plugin("pybtex.style.formatting", "sdelab_author_year", AuthorYearStyle)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
