"""Tables that fit the terminal without breaking a number or cutting a cell.

Rules every table of convtool follows:

* numeric columns never wrap (``no_wrap``): a token such as ``9.41k`` or ``M→38.2`` is
  never split across lines;
* only text columns (results, reasons, decisions) wrap, and only at spaces; their minimum
  width is their longest word, so no word is cut;
* long layer names are shortened *from the middle*, keeping the ends that tell layers apart
  (``/model.22/cv3.2/cv3.2.0/conv/Conv`` -> ``model.22/cv3.2/…/conv``), and stay unique within
  the table;
* a renderer offers its columns in a few arrangements, widest first (e.g. the result beside
  the layer name, then under it, then before/after pairs stacked on two lines); :func:`fit`
  takes the first arrangement whose columns fit the width.  The narrowest one is used even
  when it does not fit (a terminal narrower than about 70 columns): the console is then
  given the table's width and the terminal wraps lines, but cells stay whole.

Pure functions: no console is needed to plan a table.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from rich import box
from rich.cells import cell_len
from rich.console import RenderableType
from rich.table import Table
from rich.text import Text

ELLIPSIS = "…"
#: Cells between two columns.
GAP = 2
#: Layer names are never shortened below this many cells.
MIN_NAME = 14


@dataclass
class Column:
    """One column: header, cells (plain strings or rich Text; ``\\n`` stacks lines).

    ``wrap``: a text column that may wrap at spaces (never below its longest word or
    ``min_width``); every other column keeps each line of each cell whole.
    ``names``: the layer-name column, shortened from the middle to fit (see :func:`shorten`).
    """

    header: str
    cells: list[str | Text]
    justify: str = "right"
    wrap: bool = False
    min_width: int = 0
    names: bool = False
    style: str | None = None
    # a layer-name column may carry text under each name (wrapped): e.g. the result
    below: list[Text | None] = field(default_factory=list)


def _plain(cell: str | Text) -> str:
    return cell.plain if isinstance(cell, Text) else str(cell)


def _lines(cell: str | Text) -> list[str]:
    return _plain(cell).split("\n")


def natural_width(col: Column) -> int:
    """The width a non-wrapping column needs: its widest line (header included)."""
    widths = [cell_len(line) for cell in col.cells for line in _lines(cell)]
    return max([cell_len(col.header), *widths])


def min_width(col: Column) -> int:
    """The narrowest a column may get: wrapping columns their longest word, names MIN_NAME."""
    if col.names:
        longest = max([cell_len(_plain(c)) for c in col.cells] or [0])
        words = [w for t in col.below if t is not None for w in t.plain.split()]
        return max(min(MIN_NAME, longest), cell_len(col.header.split()[0]),
                   max([cell_len(w) for w in words] or [0]), col.min_width)
    if col.wrap:
        words = [w for cell in col.cells for w in _plain(cell).split()] + col.header.split()
        return max([cell_len(w) for w in words] + [col.min_width])
    return natural_width(col)


def needed_width(cols: Sequence[Column]) -> int:
    """The narrowest table these columns make (GAP cells between columns)."""
    return sum(min_width(c) for c in cols) + GAP * max(len(cols) - 1, 0)


def fit(arrangements: Sequence[Callable[[], list[Column]]], width: int) -> list[Column]:
    """The first arrangement whose columns fit ``width``, else the narrowest one."""
    cols: list[Column] = []
    for make in arrangements:
        cols = make()
        if needed_width(cols) <= width:
            return cols
    return cols


def _stripped(name: str) -> str:
    text = name.strip("/")
    if text.endswith("/Conv") and text.count("/") >= 1:
        text = text[: -len("/Conv")]
    return text


def _candidates(name: str, width: int) -> list[str]:
    """Every shortened form of ``name`` that fits ``width``, most informative first."""
    out: list[str] = []
    if cell_len(name) <= width:
        out.append(name)
    text = _stripped(name)
    if cell_len(text) <= width:
        out.append(text)
    parts = text.split("/")
    for kept in range(len(parts) - 1, 1, -1):  # more segments first, then the tail-heavy split
        for tail in range(kept - 1, 0, -1):
            form = "/".join(parts[: kept - tail] + [ELLIPSIS] + parts[len(parts) - tail:])
            if cell_len(form) <= width:
                out.append(form)
    if cell_len(text) <= width:
        out.append(text)
    else:  # a cut in the middle of the characters, then cuts keeping more of the tail
        out.append(_cut_middle(text, width))
        keep = width - 1
        out += [text[: keep - tail] + ELLIPSIS + text[len(text) - tail:] for tail in range((keep + 1) // 2 + 1, keep)]
    return list(dict.fromkeys(out))


def shorten(name: str, width: int) -> str:
    """``name`` in at most ``width`` cells, shortened from the middle, keeping its ends.

    Torch-export names lose a leading ``/`` and a trailing ``/Conv`` (the op type, the same for
    every layer) first; then whole path segments are dropped from the middle
    (``model.22/cv3.2/…/conv``); a name with too few segments is cut in the middle of its
    characters (``backbone.la…4.conv2``).
    """
    return _candidates(name, width)[0]


def _cut_middle(text: str, width: int) -> str:
    if width <= 1:
        return ELLIPSIS
    keep = width - 1
    tail = (keep + 1) // 2
    head = keep - tail
    return text[:head] + ELLIPSIS + text[len(text) - tail:]


def shorten_all(names: Sequence[str], width: int) -> list[str]:
    """:func:`shorten` for every name, keeping the shortened names unique: names whose short
    forms clash take their next candidate (more of the tail, then a cut in the middle of the
    characters), and as a last resort their full name."""
    options = [_candidates(n, width) for n in names]
    pick = [0] * len(names)
    for _ in range(max((len(o) for o in options), default=0) + 1):
        chosen = [o[i] if i < len(o) else n for o, i, n in zip(options, pick, names)]
        counts: dict[str, int] = {}
        for c in chosen:
            counts[c] = counts.get(c, 0) + 1
        clashes = [k for k, c in enumerate(chosen) if counts[c] > 1 and chosen[k] != names[k]]
        if not clashes:
            return chosen
        for k in clashes:
            pick[k] += 1
    return [o[i] if i < len(o) else n for o, i, n in zip(options, pick, names)]


def widths(cols: Sequence[Column], width: int) -> list[int]:
    """Each column's content width in a table ``width`` cells wide.

    Fixed columns get their natural width.  The room left goes to the text columns and the
    name column, each starting at its minimum: first text columns up to a comfortable 24
    cells, then names up to their full length, then text columns up to their natural width.
    When even the minimums do not fit, the minimums (the table is then wider than ``width``).
    """
    out = [natural_width(c) if not (c.wrap or c.names) else min_width(c) for c in cols]
    room = width - sum(out) - GAP * max(len(cols) - 1, 0)

    def grow(i: int, upto: int) -> None:
        nonlocal room
        extra = max(0, min(room, upto - out[i]))
        out[i] += extra
        room -= extra

    flexible = [i for i, c in enumerate(cols) if c.wrap or c.names]
    for i in flexible:
        if cols[i].wrap:
            grow(i, min(natural_width(cols[i]), max(out[i], 24)))
    for i in flexible:
        if cols[i].names:
            grow(i, max(cell_len(_plain(c)) for c in cols[i].cells) if cols[i].cells else out[i])
    for i in flexible:
        col = cols[i]
        full = natural_width(col) if col.wrap else max(
            [out[i]] + [cell_len(t.plain) for t in col.below if t is not None])
        grow(i, full)
    return out


def build(cols: Sequence[Column], width: int, title: str | None = None) -> Table:
    """A rich table of ``cols`` for a console ``width`` cells wide (see the module rules).

    Every column gets an explicit width (:func:`widths`), so rich never squeezes a column
    below what its cells need.
    """
    table = Table(title=title, box=box.SIMPLE_HEAD, header_style="bold", show_edge=False, padding=(0, 1, 0, 0),
                  pad_edge=False, title_justify="left")  # columns GAP apart: padding + SIMPLE_HEAD's blank divider
    sizes = widths(cols, width)
    cells: list[list[RenderableType]] = []
    for col, size in zip(cols, sizes):
        if col.names:
            table.add_column(col.header, justify="left", width=size, no_wrap=not col.below,
                             overflow="fold", style=col.style)
            names = shorten_all([_plain(c) for c in col.cells], size)
            column: list[RenderableType] = []
            for i, short in enumerate(names):
                under = col.below[i] if i < len(col.below) else None
                column.append(Text.assemble(short, "\n", under) if under is not None else Text(short))
            cells.append(column)
        else:
            table.add_column(col.header, justify=col.justify, width=size, no_wrap=not col.wrap,
                             overflow="fold", style=col.style)
            cells.append(list(col.cells))
    rows = max((len(c) for c in cells), default=0)
    for i in range(rows):
        table.add_row(*[c[i] if i < len(c) else "" for c in cells])
    return table


def table_width(cols: Sequence[Column], width: int) -> int:
    """The width :func:`build` makes for a console ``width`` wide (more when it cannot fit)."""
    return sum(widths(cols, width)) + GAP * max(len(cols) - 1, 0)
