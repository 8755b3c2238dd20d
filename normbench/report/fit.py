"""Tables that stay readable at any width: 120 columns, 80, 60, and in pipes.

A table is described as ``Column``s and rows of cells; ``fit_table`` draws it
with rich at the width of the console it will be printed to:

1. it fits: the table as it is (no cell is cut, ``wrap`` columns may wrap);
2. too wide: ``drop`` columns are left out, highest ``drop`` first, until it fits
   (a note under the table names them; Markdown/JSON/CSV keep everything);
3. still too wide: a *stacked* layout, one block per row: the ``key`` cells on
   the first line, then ``header value`` pairs, indented, wrapping at the width.

``fit_chunks`` is for grids whose value columns are all needed (a run's
providers): the columns are split over several tables, each repeating the key
columns, before falling back to the stacked layout.

``key`` columns (the case, the verdict) are never dropped and never cut: rich
draws them ``no_wrap`` at their full width, so the table is only used when they
fit. Widths are measured with rich itself (``Measurement``), box and padding
included. Pure: no torch.
"""

from __future__ import annotations

import io
from dataclasses import dataclass, field
from typing import Any, Sequence

from rich import box
from rich.cells import cell_len
from rich.console import Console, RenderableType
from rich.measure import Measurement
from rich.padding import Padding
from rich.table import Table
from rich.text import Text

#: rich.Table settings of normbench's compact tables (comparisons, run tables, profiles):
#: a simple header rule, no outer edge, one space of padding (more columns fit).
TABLE_STYLE: dict[str, Any] = dict(title_justify="left", box=box.SIMPLE_HEAD, header_style="bold", pad_edge=False,
                                   show_edge=False, padding=(0, 1), collapse_padding=True)

Cell = Any  # str or rich Text

#: Widest line a ``wrap`` column is narrowed to before the table counts as too wide.
WRAP_MIN = 12


@dataclass
class Column:
    """One column of a fitted table.

    Attributes:
        header: its title (``\\n`` for several lines).
        justify: ``left`` or ``right``.
        key: identifies the row (case, verdict): never dropped, never cut.
        drop: > 0: may be left out when the table is too wide, the highest first.
        wrap: may wrap onto several lines (descriptions); other columns stay one line.
        min_width: the narrowest it is drawn.
        stack_label: how the stacked layout names the value (default: the header on one line).
    """

    header: str
    justify: str = "left"
    key: bool = False
    drop: int = 0
    wrap: bool = False
    min_width: int | None = None
    stack_label: str | None = None

    def label(self) -> str:
        return self.stack_label if self.stack_label is not None else " ".join(self.header.split())


@dataclass
class Fitted:
    """What ``fit_table`` chose: the renderables to print, and the columns it left out."""

    renderables: list[RenderableType]
    dropped: list[str] = field(default_factory=list)
    stacked: bool = False


_MEASURE = Console(width=100_000, file=io.StringIO(), color_system=None, highlight=False)


def _text(cell: Cell) -> Text:
    return cell if isinstance(cell, Text) else Text(str(cell))


def _lines(cell: Cell) -> list[str]:
    return _text(cell).plain.split("\n")


def _natural(col: Column, cells: list[Cell]) -> int:
    """Width of ``col`` on one line per cell (header lines included)."""
    w = max((cell_len(line) for c in [col.header, *cells] for line in _lines(c)), default=0)
    return max(w, col.min_width or 0)


def _narrowest(col: Column, cells: list[Cell]) -> int:
    """The width ``col`` needs: natural, or for a ``wrap`` column its longest word (at least ``WRAP_MIN``)."""
    nat = _natural(col, cells)
    if not col.wrap:
        return nat
    words = [cell_len(w) for c in [col.header, *cells] for w in _text(c).plain.split()]
    return min(nat, max([WRAP_MIN, *words, col.min_width or 0]))


def _build(cols: list[Column], rows: list[list[Cell]], sections: Sequence[bool], title: str | None,
           table_kwargs: dict[str, Any]) -> Table:
    t = Table(title=title, **table_kwargs)
    for c in cols:
        t.add_column(c.header, justify=c.justify, no_wrap=not c.wrap,  # type: ignore[arg-type]
                     overflow="fold", min_width=c.min_width)
    for i, row in enumerate(rows):
        t.add_row(*row, end_section=bool(sections[i]) if i < len(sections) else False)
    return t


def _overhead(n: int, table_kwargs: dict[str, Any]) -> int:
    """Columns that box lines, padding and edges add to a table of ``n`` columns in this style."""
    t = _build([Column("x") for _ in range(n)], [["x"] * n], (), None, table_kwargs)
    return Measurement.get(_MEASURE, _MEASURE.options, t).maximum - n


class _Widths:
    """Each column's natural and narrowest width, measured once."""

    def __init__(self, cols: list[Column], rows: list[list[Cell]], table_kwargs: dict[str, Any]):
        self.kwargs = table_kwargs
        cells = [[r[i] for r in rows] for i in range(len(cols))]
        self.narrowest = [_narrowest(c, cs) for c, cs in zip(cols, cells)]
        self._overheads: dict[int, int] = {}

    def needs(self, idx: list[int]) -> int:
        """Columns the table of columns ``idx`` needs: box and padding plus each column's narrowest width."""
        n = len(idx)
        if n not in self._overheads:
            self._overheads[n] = _overhead(n, self.kwargs)
        return self._overheads[n] + sum(self.narrowest[i] for i in idx)


def stacked(cols: list[Column], rows: list[list[Cell]], width: int, title: str | None = None,
            sections: Sequence[bool] = (), indent: int = 4) -> list[RenderableType]:
    """One block per row: the key cells on a line, then ``label value`` pairs, indented, as many
    to a line as fit in ``width`` (a pair is never split across lines unless it alone is wider).

    Empty values and ``-`` are left out; a section end leaves a blank line.
    """
    out: list[RenderableType] = []
    if title:
        out.append(Text(title, style="italic"))
    keys = [i for i, c in enumerate(cols) if c.key]
    rest = [i for i, c in enumerate(cols) if not c.key]
    room = max(width - indent, 20)
    for n, row in enumerate(rows):
        head = Text()
        for i in keys:
            cell = _text(row[i])
            if not cell.plain.strip():
                continue
            if head.plain:
                head.append("  ")
            head.append_text(Text(" ".join(cell.plain.split()), style=cell.style))
        out.append(head)
        body = Text()
        line = 0
        for i in rest:
            cell = _text(row[i])
            value = " ".join(cell.plain.split())
            if value in ("", "-"):
                continue
            label = cols[i].label()
            item = Text(f"{label} " if label else "", style="dim")
            item.append(value, style=cell.style)
            if line and line + 3 + item.cell_len > room:
                body.append("\n")
                line = 0
            elif line:
                body.append(" · ", style="dim")
                line += 3
            body.append_text(item)
            line += cell_len(item.plain)
        if body.plain:
            out.append(Padding(body, (0, 0, 0, indent)))
        if n < len(sections) and sections[n] and n + 1 < len(rows):
            out.append(Text(""))
    return out


def fit_table(cols: list[Column], rows: list[list[Cell]], width: int, *, title: str | None = None,
              sections: Sequence[bool] = (), **table_kwargs: Any) -> Fitted:
    """Draw ``rows`` under ``cols`` within ``width`` columns (see the module docstring).

    Args:
        cols: the columns, in order.
        rows: one list of cells (str or ``Text``) per row, as many as ``cols``.
        width: the console's width.
        title: the table's title (wraps; in the stacked layout, a line).
        sections: per row, whether a section ends after it (a blank line between groups).
        table_kwargs: passed to ``rich.table.Table`` (box, padding, header_style, ...).
    """
    active = list(range(len(cols)))
    dropped: list[str] = []
    widths = _Widths(cols, rows, table_kwargs)
    while widths.needs(active) > width:
        candidates = [i for i in active if cols[i].drop > 0]
        if not candidates:
            return Fitted(stacked(cols, rows, width, title, sections), dropped=[], stacked=True)
        worst = max(candidates, key=lambda i: (cols[i].drop, i))
        active.remove(worst)
        dropped.append(cols[worst].label())
    table = _build([cols[i] for i in active], [[r[i] for i in active] for r in rows], sections, title, table_kwargs)
    return Fitted([table], dropped=dropped)


def fit_chunks(cols: list[Column], rows: list[list[Cell]], width: int, *, title: str | None = None,
               sections: Sequence[bool] = (), max_parts: int = 2, **table_kwargs: Any) -> Fitted:
    """Like ``fit_table``, but a table too wide is split by columns, each part repeating the key columns.

    Every column is kept; the stacked layout is used when the key columns and any one
    other column do not fit side by side, or when it would take more than ``max_parts``
    tables (values that belong together would be too far apart).
    """
    all_idx = list(range(len(cols)))
    widths = _Widths(cols, rows, table_kwargs)
    if widths.needs(all_idx) <= width:
        return Fitted([_build(cols, rows, sections, title, table_kwargs)])
    keys = [i for i in all_idx if cols[i].key]
    groups: list[list[int]] = []
    current: list[int] = []
    for i in all_idx:
        if i in keys:
            continue
        if widths.needs(keys + current + [i]) <= width:
            current.append(i)
            continue
        if not current:  # this column alone does not fit beside the keys
            return Fitted(stacked(cols, rows, width, title, sections), stacked=True)
        groups.append(current)
        current = [i]
        if widths.needs(keys + current) > width:
            return Fitted(stacked(cols, rows, width, title, sections), stacked=True)
    if current:
        groups.append(current)
    if len(groups) > max_parts:
        return Fitted(stacked(cols, rows, width, title, sections), stacked=True)
    out: list[RenderableType] = []
    for n, g in enumerate(groups):
        idx = sorted(keys + g)
        part = f"{title} ({n + 1}/{len(groups)})" if title else None
        out.append(_build([cols[i] for i in idx], [[r[i] for i in idx] for r in rows], sections, part, table_kwargs))
    return Fitted(out)


# --------------------------------------------------------------------------- help
#: Below this width an option's help goes under its names instead of beside them.
HELP_STACK_BELOW = 100


class HelpTable(Table):
    """A rich ``Table`` for typer's ``--help`` option panels that never cuts a word.

    typer draws each option as one row (names, short names, negative names, type,
    help) with the help in the last column; in a narrow terminal that column gets
    a few characters and long words are cut (``param/op/provide…``). Below
    ``HELP_STACK_BELOW`` columns this table draws a row as a line with the
    option's names and type, then its help on the lines below, indented and as
    wide as the terminal. Tables with a header or fewer than three columns (the
    command list) are drawn as usual.
    """

    def __rich_console__(self, console: Console, options: Any):  # type: ignore[override]
        if self.show_header or len(self.columns) < 3 or options.max_width >= HELP_STACK_BELOW:
            yield from super().__rich_console__(console, options)
            return
        cells = [list(c.cells) for c in self.columns]
        for i in range(self.row_count):
            *names, kind, help_ = [col[i] if i < len(col) else "" for col in cells]
            parts = [t for t in (_as_text(c) for c in names) if t.plain.strip()]
            head = Text(" ")
            for j, t in enumerate(parts):
                if j:
                    head.append(" " if parts[j - 1].plain.strip() == "*" else ", ")
                head.append_text(t)
            kind_text = _as_text(kind)
            if kind_text.plain.strip():
                head.append(" ")
                head.append_text(kind_text)
            yield head
            yield Padding(help_, (0, 0, 0, 6))


def _as_text(cell: Any) -> Text:
    return cell if isinstance(cell, Text) else Text(cell) if isinstance(cell, str) else Text("")


def install_help_layout() -> None:
    """Make typer's rich ``--help`` use ``HelpTable`` (no option help is cut at 80 or 60 columns)."""
    import typer.rich_utils

    typer.rich_utils.Table = HelpTable  # type: ignore[misc]
