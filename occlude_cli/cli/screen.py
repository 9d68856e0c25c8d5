"""What the terminal can show, and text fitted into its width: whether live drawing (bars, a spinner, cursor
movement) is possible, names shortened in the middle, paths shortened at folder boundaries, and tables whose
numbers stay whole while the name and label columns give way.

Colour follows rich's rules (a terminal; ``NO_COLOR`` off, ``FORCE_COLOR`` on, ``TERM=dumb`` off); live
drawing needs more: the stream itself must be a terminal (``FORCE_COLOR`` into a pipe colours the lines but
never animates), ``TERM`` must not be ``dumb`` and ``CI`` must be unset (a CI log gets one line per input)."""

from __future__ import annotations

import io
import os
from dataclasses import dataclass
from functools import cache
from typing import List, Literal, Optional, Sequence, Tuple

from rich import box
from rich.cells import cell_len
from rich.console import Console
from rich.table import Table
from rich.text import Text

from ..text import shown

ELLIPSIS = "…"


def is_live(console: Console) -> bool:
    """Whether ``console`` may be drawn on live (bars redrawn in place): its stream is a terminal (not a file
    or pipe, whatever ``FORCE_COLOR`` says), ``TERM`` is not dumb, and this is not a CI log (``CI``)."""
    try:
        tty = bool(console.file.isatty())
    except (AttributeError, ValueError, OSError):
        tty = False
    return tty and os.environ.get("TERM", "") not in ("dumb", "unknown") and not os.environ.get("CI")


def _head(text: str, cells: int) -> str:
    out, used = [], 0
    for char in text:
        used += cell_len(char)
        if used > cells:
            break
        out.append(char)
    return "".join(out)


def _tail(text: str, cells: int) -> str:
    return _head(text[::-1], cells)[::-1]


def shorten_middle(text: str, width: int) -> str:
    """``text`` in at most ``width`` terminal cells, cut in the middle ('IMG_2024…family_cat.jpg'): the start
    and the end (a name's distinctive suffix and its extension) stay; wide characters count double."""
    text = shown(text)
    if cell_len(text) <= width:
        return text
    if width <= 1:
        return ELLIPSIS[:width]
    room = width - 1
    head = _head(text, room * 2 // 5)
    return head + ELLIPSIS + _tail(text, room - cell_len(head))


def shorten_path(path: str, width: int) -> str:
    """A path that fits ``width`` cells: cut from the left at a folder boundary ('…/b/c.png'), and only when
    the file name alone is too long, that name shortened in the middle ('…/IMG_2024…cat.jpg')."""
    path = shown(path)
    if cell_len(path) <= width:
        return path
    parts = path.split("/")  # never at a backslash: escapes are shown as \xNN
    for start in range(1, len(parts)):
        candidate = ELLIPSIS + "/" + "/".join(parts[start:])
        if cell_len(candidate) <= width:
            return candidate
    prefix = ELLIPSIS + "/" if len(parts) > 1 and width >= 16 else ""
    return prefix + shorten_middle(parts[-1], width - len(prefix))


def clock(seconds: Optional[float]) -> str:
    """Seconds as H:MM:SS ('-:--:--' when unknown)."""
    if seconds is None or seconds != seconds or seconds < 0:
        return "-:--:--"
    whole = int(round(seconds))
    return f"{whole // 3600}:{whole // 60 % 60:02d}:{whole % 60:02d}"


# ------------------------------------------------------------------------------------------- tables


@dataclass
class Column:
    """A column of a :func:`fitted_table`. ``kind``: ``name`` (a path or file name: shortened, cut at folder
    boundaries then in the middle), ``label`` (text that wraps onto more lines: labels, errors) or ``number``
    (numbers and short words: never cut). ``keep``: columns with a lower value are left out first when even
    the shortest names and labels do not fit; 0 never."""

    header: str
    kind: str = "number"
    justify: Literal["left", "right"] = "left"
    keep: int = 0


NAME_MIN = 10
NAME_SHORT = 24
LABEL_MIN = 10


@cache
def _overhead(columns: int) -> int:
    """The cells a table's borders and padding take besides its columns' content."""
    table = _table(None)
    for _ in range(columns):
        table.add_column(no_wrap=True)
    table.add_row(*["x"] * columns)
    console = Console(width=1000, file=io.StringIO(), color_system=None)
    with console.capture() as capture:
        console.print(table)
    return max(cell_len(line) for line in capture.get().splitlines()) - columns


def _widths(columns: Sequence[Column], cells: Sequence[Sequence[str]], width: int) -> Optional[List[int]]:
    """Each column's width, or None when the columns do not fit even with the shortest names and labels."""
    natural = [max([cell_len(c.header)] + [cell_len(row[i]) for row in cells]) for i, c in enumerate(columns)]
    widths = list(natural)
    over = sum(widths) + _overhead(len(columns)) - width
    # a long name shortens first (down to NAME_SHORT), then the label wraps, then the name shortens to NAME_MIN
    for kind, least in (("name", NAME_SHORT), ("label", LABEL_MIN), ("name", NAME_MIN)):
        for i, column in enumerate(columns):
            if over > 0 and column.kind == kind:
                floor = max(min(natural[i], least), cell_len(column.header))
                cut = min(over, widths[i] - floor)
                widths[i] -= cut
                over -= cut
    return widths if over <= 0 else None


def fitted_table(title: str, columns: Sequence[Column], rows: Sequence[Sequence[Tuple[str, str]]], width: int) -> Table:
    """A table that fits ``width`` cells: ``rows`` of (text, style) cells (outside text as it is: shown here,
    never read as markup). Numbers stay whole: a long name shortens first, then the label column wraps, then
    the name shortens further; when even that is not enough, the columns with the lowest ``keep`` go."""
    chosen = list(range(len(columns)))
    texts = [[shown(text) for text, _ in row] for row in rows]
    while True:
        widths = _widths([columns[i] for i in chosen], [[row[i] for i in chosen] for row in texts], width)
        droppable = [i for i in chosen if columns[i].keep > 0]
        if widths is not None or not droppable:
            break
        chosen.remove(min(droppable, key=lambda i: columns[i].keep))
    widths = widths or [cell_len(columns[i].header) for i in chosen]
    table = _table(Text(shown(title)))
    for i, cells in zip(chosen, widths):
        column = columns[i]
        wraps = column.kind == "label"
        table.add_column(
            column.header, justify=column.justify, width=cells, no_wrap=not wraps, overflow="fold" if wraps else "crop"
        )
    for row, text_row in zip(rows, texts):
        table.add_row(*[_cell(text_row[i], row[i][1], columns[i].kind, w) for i, w in zip(chosen, widths)])
    return table


def _table(title: Optional[Text]) -> Table:
    """A table without vertical lines, two spaces between columns, a rule under the header."""
    return Table(
        title=title, title_justify="left", box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False, collapse_padding=True
    )


def _cell(text: str, style: str, kind: str, width: int) -> Text:
    if kind == "name":
        text = shorten_path(text, width)
    return Text(text, style=style or "")
