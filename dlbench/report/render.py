"""Tables that survive pipes: one way to print a table for a terminal, a log file or a script.

``--format`` on ``models``, ``suites``, ``show``, ``compare`` and ``run --dry-run``:
- ``table``: rich box table; every column folds instead of cutting a cell with "…", and when stdout
  is not a terminal (a SLURM log, ``| tee``, CI) the table is printed at its full natural width
  instead of the 80 columns rich assumes;
- ``plain``: aligned text, two spaces between columns, no box characters, never cut (the default
  when stdout is not a terminal);
- ``csv`` / ``json``: the table's data for scripts (json: a list of records, ``null`` for missing).

Rich tables are the one source: :func:`table_frame` turns a table into a frame of its cell texts,
so a view that builds a ``rich.table.Table`` gets all four formats; a view with numeric data can pass
its own frame for csv/json instead.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence

import pandas as pd
from rich.console import Console
from rich.table import Table
from rich.text import Text

from dlbench.errors import check_choice

OUTPUT_FORMATS = ("table", "plain", "csv", "json")
# Wider than any terminal: a non-terminal console renders a table at its natural width up to this.
FULL_WIDTH = 100_000


def resolve_format(fmt: str | None, console: Console) -> str:
    """``fmt`` checked, or the default: ``table`` in a terminal, ``plain`` otherwise."""
    if fmt is None:
        return "table" if console.is_terminal else "plain"
    check_choice("output format", fmt, OUTPUT_FORMATS)
    return fmt


def _text(cell: object) -> str:
    """A table cell's plain text (markup such as ``[red]`` removed)."""
    if isinstance(cell, Text):
        return cell.plain
    if isinstance(cell, str):
        return Text.from_markup(cell).plain
    return str(cell)


def table_frame(table: Table) -> pd.DataFrame:
    """The cell texts of ``table`` as a frame, one column per table column (header text)."""
    headers = [_text(c.header) for c in table.columns]
    columns = [[_text(cell) for cell in c.cells] for c in table.columns]
    return pd.DataFrame(dict(zip(headers, columns, strict=True)), columns=headers)


def plain_text(table: Table) -> str:
    """``table`` as aligned plain text: title, header, rows, caption; nothing cut, no box characters.
    Multi-line cells continue on extra lines in their column."""
    frame = table_frame(table)
    header = list(frame.columns)
    body = [[str(v) for v in row] for row in frame.itertuples(index=False)]
    right = [c.justify == "right" for c in table.columns]

    def lines_of(row: list[str]) -> list[list[str]]:
        split = [cell.splitlines() or [""] for cell in row]
        height = max(len(s) for s in split) if split else 1
        return [[s[i] if i < len(s) else "" for s in split] for i in range(height)]

    expanded = [line for row in [header, *body] for line in lines_of(row)]
    widths = [max((len(line[i]) for line in expanded), default=0) for i in range(len(header))]

    def fmt(line: list[str]) -> str:
        cells = [c.rjust(w) if r else c.ljust(w) for c, w, r in zip(line, widths, right, strict=True)]
        return "  ".join(cells).rstrip()

    out = [_text(table.title)] if table.title else []
    out += [fmt(line) for line in lines_of(header)]
    out.append("  ".join("-" * w for w in widths))
    out += [fmt(line) for row in body for line in lines_of(row)]
    if table.caption:
        out.append(_text(table.caption))
    return "\n".join(out) + "\n"


def frame_json(frame: pd.DataFrame) -> str:
    """Records of ``frame`` as JSON; NaN and missing values become ``null``."""

    def clean(value: object) -> object:
        if value is None or value is pd.NA or value is pd.NaT:
            return None
        if isinstance(value, float) and not math.isfinite(value):
            return None
        if hasattr(value, "item"):  # numpy scalars
            return clean(value.item())
        return value

    records = [{str(k): clean(v) for k, v in row.items()} for row in frame.to_dict("records")]
    return json.dumps(records, indent=1, default=str) + "\n"


def print_table(table: Table, console: Console) -> None:
    """Print a rich table so that no cell is cut: columns fold rather than ellipsize, and a console
    that is not a terminal prints it at its natural width."""
    for column in table.columns:
        column.overflow = "fold"
    if console.is_terminal:
        console.print(table)
    else:
        # Console.print caps a width at the console's own, so measure and print on a console as wide
        # as the table (same file, no colour codes in a log).
        width = Console(file=console.file, width=FULL_WIDTH, no_color=True).measure(table).maximum
        Console(file=console.file, width=max(width, console.width), no_color=True, highlight=False).print(table)


def render(
    tables: Table | Sequence[Table],
    fmt: str | None,
    console: Console,
    *,
    frame: pd.DataFrame | None = None,
) -> None:
    """Print ``tables`` in ``fmt`` (see :data:`OUTPUT_FORMATS`; None: table in a terminal, else plain).

    ``frame``: the data behind the tables for csv/json (default: the tables' cell texts, one frame;
    several tables get a ``table`` column holding each one's title).
    """
    tables = [tables] if isinstance(tables, Table) else list(tables)
    fmt = resolve_format(fmt, console)
    if fmt in ("csv", "json"):
        if frame is None:
            frames = [table_frame(t) for t in tables]
            if len(tables) > 1:
                frames = [f.assign(table=_text(t.title or "")) for f, t in zip(frames, tables, strict=True)]
            frame = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
        text = frame.to_csv(index=False, float_format="%.10g") if fmt == "csv" else frame_json(frame)
        console.file.write(text)
        console.file.flush()
        return
    for table in tables:
        if fmt == "plain":
            console.file.write(plain_text(table) + ("\n" if len(tables) > 1 else ""))
        else:
            print_table(table, console)
    console.file.flush()
