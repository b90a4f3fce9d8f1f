"""Tables of the command line: rich tables on a terminal, plain aligned text in a log.

No cell is ever cut or folded (run ids and layer names are what users type next). Columns
that do not fit the console's width go to further blocks that repeat the name columns; when
output goes to a file or a pipe, each block is plain text, one line per row with every name
whole, so that ``grep`` and ``awk`` find them.
"""

from __future__ import annotations

from collections.abc import Sequence

from rich import box
from rich.console import Console
from rich.table import Table
from rich.text import Text

__all__ = ["plain_table", "print_rich_table", "print_table"]

#: Spaces between the columns of a plain table.
GAP = "  "


def plain_table(head: Sequence[object], rows: Sequence[Sequence[object]], keys: int = 1
                ) -> list[str]:
    """The lines of a plain-text table: the first ``keys`` columns left-aligned, the others
    right-aligned, a dashed rule under the header, no trailing spaces. A header cell may
    hold several lines (``"NMF rel.\\nerror"``); a row's cells are put on one line."""
    heads = [str(c).split("\n") for c in head]
    depth = max((len(h) for h in heads), default=1)
    head_lines = [[h[k] if k < len(h) else "" for h in heads] for k in range(depth)]
    body = [[" ".join(str(c).split("\n")) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in [*head_lines, *body]) for i in range(len(head))]

    def line(r: list[str]) -> str:
        return GAP.join(c.ljust(w) if i < keys else c.rjust(w)
                        for i, (c, w) in enumerate(zip(r, widths, strict=True))).rstrip()

    return [*map(line, head_lines), GAP.join("-" * w for w in widths), *map(line, body)]


def _print_plain(con: Console, lines: list[str], title: str | None) -> None:
    for text in ([title] if title else []) + lines:
        con.print(text, soft_wrap=True, markup=False, highlight=False, emoji=False)


def _blocks(widths: list[int], keys: int, limit: int) -> list[list[int]]:
    """The columns after the first ``keys`` split into blocks that fit ``limit`` characters
    next to the key columns (a column wider than that gets a block of its own)."""
    fixed = sum(w + 3 for w in widths[:keys])
    blocks: list[list[int]] = []
    used = fixed
    for i in range(keys, len(widths)):
        if not blocks or used + widths[i] > limit:
            blocks.append([])
            used = fixed
        blocks[-1].append(i)
        used += widths[i] + 3
    return blocks or [[]]


def print_table(
    con: Console,
    head: list[str],
    rows: list[list[str]],
    *,
    keys: int = 1,
    title: str | None = None,
) -> None:
    """Print a table whose cells are never cut: columns that do not fit the console's width
    go to further blocks, each repeating the first ``keys`` (name) columns.

    A block is a rich table on a terminal and a :func:`plain_table` elsewhere (a log, a
    pipe), whose lines hold whole names even where they are longer than the width.
    """

    def width(i: int) -> int:
        cells = [head[i], *(r[i] for r in rows)]
        return max(len(line) for c in cells for line in str(c).split("\n"))

    blocks = _blocks([width(i) for i in range(len(head))], keys, con.width)
    if title:
        con.print(title, soft_wrap=True, markup=False, highlight=False)
    for n, cols in enumerate(blocks):
        shown = [*range(keys), *cols]
        if not con.is_terminal:
            lines = plain_table([head[i] for i in shown], [[r[i] for i in shown] for r in rows],
                                keys)
            _print_plain(con, ([""] if n else []) + lines, None)
            continue
        table = Table(box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False)
        for i in shown:
            table.add_column(Text(head[i]), justify="left" if i < keys else "right",
                             no_wrap=True, overflow="fold")
        for r in rows:
            table.add_row(*[Text(str(r[i])) for i in shown])
        con.print(table)


def _text(cell: object) -> str:
    return cell.plain if isinstance(cell, Text) else Text.from_markup(str(cell)).plain


def print_rich_table(con: Console, table: Table) -> None:
    """Print a rich table without cutting or wrapping any cell: on a terminal at its full
    width (wider than the terminal if need be), elsewhere as a :func:`plain_table` (the
    columns' cells as text, markup removed)."""
    if not con.is_terminal:
        head = [_text(c.header) for c in table.columns]
        columns = [[_text(cell) for cell in c.cells] for c in table.columns]
        rows = [list(r) for r in zip(*columns, strict=True)]
        keys = next((i for i, c in enumerate(table.columns) if c.justify == "right"),
                    len(table.columns))
        title = _text(table.title) if table.title else None
        _print_plain(con, plain_table(head, rows, max(1, keys)), title)
        return
    need = con.measure(table, options=con.options.update_width(10_000)).maximum
    if need <= con.width:
        con.print(table)
        return
    wide = Console(file=con.file, width=need, force_terminal=con.is_terminal,
                   color_system=con.color_system)  # type: ignore[arg-type]
    wide.print(table)
