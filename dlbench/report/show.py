"""``dlbench show``: a hyperfine-like summary of result rows: provenance, one line per cell, warnings."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from rich.console import Console
from rich.table import Table

from dlbench.report.cells import Cell, cells, format_value, sections

SLOW_FIRST_FACTOR = 3.0  # same default as timing.TimingPolicy.slow_first_factor
OUTLIER_IQR = 3.0  # fences at Q1 - 3 IQR and Q3 + 3 IQR, as timing.TimingPolicy


def cell_warnings(cell: Cell, first_call: float | None = None) -> list[str]:
    """Outliers beyond the 3-IQR fences, a slow first run (``first_call_s`` row if present, else the
    first repeat against the rest) and failures."""
    found = []
    xs = cell.samples
    if len(xs) >= 4:
        q1, q3 = np.percentile(xs, [25, 75])
        iqr = q3 - q1
        outliers = int(((xs > q3 + OUTLIER_IQR * iqr) | (xs < q1 - OUTLIER_IQR * iqr)).sum())
        if iqr > 0 and outliers:
            found.append(f"{outliers} outlier(s) beyond {OUTLIER_IQR:g} IQR of the quartiles")
    rest = xs[1:] if first_call is None else xs
    first = cell.first_run if first_call is None else first_call
    if first is not None and len(rest) >= 2 and np.median(rest) > 0 and first > SLOW_FIRST_FACTOR * np.median(rest):
        found.append(f"slow first run: {first / np.median(rest):.1f}x the median (warm-up or caching effect)")
    found += [f"{status}: {reason}" if reason else status for status, reason in cell.failures.items()]
    return found


def _provenance_lines(rows: pd.DataFrame) -> list[str]:
    def values(column: str) -> str:
        found = sorted({str(v) for v in rows[column].dropna()}) if column in rows else []
        return ", ".join(found) or "-"

    dirty = rows["git_dirty"].astype("string").str.lower().isin(["true", "1"]).any()
    return [
        f"runs: {values('run_id')}   suite: {values('suite')}   files: {values('source_file')}",
        f"dlbench {values('dlbench_version')}, jax {values('jax_version')}, flax {values('flax_version')} "
        f"on {values('platform')} ({values('device_kind')} x {values('device_count')}), host {values('host')}",
        f"git {values('git_commit')[:12]}{' (dirty)' if dirty else ''}   time {values('time_utc')[:25]}",
    ]


def show_tables(rows: pd.DataFrame) -> tuple[list[Table], list[str]]:
    """Per section of cells a table: median ± IQR, range, n (and tokens/s for ``wall_s``); plus the
    warnings to print (outliers, slow first run, failed cells)."""
    found = cells(rows)
    # first_call_s rows (if a writer records them) are the first run of the matching wall_s cell.
    first_calls = {
        tuple(v for k, v in c.key.items() if k != "metric"): float(c.samples[0])
        for c in found.values()
        if c.metric == "first_call_s" and len(c.samples)
    }
    tables, notes = [], []
    for title, members in sections(found.values()):
        table = Table(title=title, title_justify="left")
        timed = any(c.metric == "wall_s" for _, c in members)  # tokens/s only where there are scan timings
        columns = ("cell", "metric", "median ± IQR", "min … max", "n", *(("tokens/s",) if timed else ()), "status")
        for column in columns:
            table.add_column(column, justify="left" if column in ("cell", "metric", "status") else "right")
        for label, cell in members:
            if cell.metric == "first_call_s":
                continue
            unit, xs = cell.unit, cell.samples
            first = first_calls.get(tuple(v for k, v in cell.key.items() if k != "metric"))
            warnings = cell_warnings(cell, first if cell.metric == "wall_s" else None)
            metric = cell.metric + (f" ({cell.key['source']})" if cell.key.get("source") else "")
            notes += [f"{title}: {label} {metric}: {w}" for w in warnings]
            spread = extent = "-"
            if len(xs) == 1:
                spread = format_value(xs[0], unit)
            elif len(xs):
                q1, median, q3 = np.percentile(xs, [25, 50, 75])
                spread = f"{format_value(median, unit)} ± {format_value(q3 - q1, unit)}"
                extent = f"{format_value(xs.min(), unit)} … {format_value(xs.max(), unit)}"
            tokens = "-"
            if cell.metric == "wall_s" and len(xs) and cell.key["batch"] and cell.key["seq_len"]:
                tokens = f"{np.median(int(cell.key['batch']) * int(cell.key['seq_len']) / xs):,.0f}"
            status = "/".join(cell.failures) if cell.failures else "ok"
            style = "red" if cell.failures and not len(xs) else ("yellow" if warnings else "")
            table.add_row(label, metric, spread, extent, str(len(xs)), *((tokens,) if timed else ()), status, style=style)
        tables.append(table)
    return tables, notes


def show(paths: Sequence[str | Path], console: Console | None = None) -> None:
    """Print a hyperfine-like summary of result files: provenance, per-cell statistics, warnings."""
    from dlbench.results import read_rows

    rows = read_rows(paths)
    console = console or Console()
    for line in _provenance_lines(rows):
        console.print(line, highlight=False, soft_wrap=True)
    tables, notes = show_tables(rows)
    for table in tables:
        console.print(table)
    for note in notes:
        console.print(f"[yellow]warning:[/] {note}", highlight=False, soft_wrap=True)
    if not notes:
        console.print("no warnings: no outliers, no slow first runs, no failed cells")


