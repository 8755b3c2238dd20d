"""``normbench compare --format``: a ``Comparison`` in the format named (``render``).

``rich`` prints the terminal tables (``compare_rich``); ``markdown`` is the text for
a pull request (``compare_markdown``); ``json`` and ``csv`` are data for programs
(``compare_data``). The cells and stage layout the two table formats share are
``compare_cells``'s. Pure: no torch.
"""

from __future__ import annotations

from rich.console import Console

from normbench.report.compare_data import to_csv, to_json
from normbench.report.compare_markdown import to_markdown
from normbench.report.compare_rich import render_rich
from normbench.compare import Comparison


def render(cmp: Comparison, fmt: str, console: Console) -> str | None:
    """``rich`` prints to ``console`` and returns None; the others return text."""
    if fmt == "rich":
        render_rich(cmp, console)
        return None
    if fmt == "markdown":
        return to_markdown(cmp)
    if fmt == "json":
        return to_json(cmp)
    if fmt == "csv":
        return to_csv(cmp)
    raise ValueError(fmt)
