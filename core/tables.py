"""Rich tables that print their cells verbatim."""

from __future__ import annotations

from rich.markup import escape
from rich.table import Table


class PlainTable(Table):
    """A rich Table whose string cells are shown as they are, never parsed as markup: run names
    like ``quickstart[attention=cbam]`` and recipe values contain square brackets."""

    def add_row(self, *cells, **kwargs) -> None:
        super().add_row(*(escape(c) if isinstance(c, str) else c for c in cells), **kwargs)
