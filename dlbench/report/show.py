"""``dlbench show``: a hyperfine-like summary of result rows: provenance, one line per cell, warnings.

A *cell* here is one measurement point (a profile cell: model, backend, length...; a training cell:
task and model over its seeds): its metrics become columns of one line. The main metric (``wall_s``
for profile cells, the leaderboard metric for training) gets median ± IQR, its 95% CI where the rows
carry one (``wall_s_ci_low`` / ``wall_s_ci_high``), range and n; the others their median.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from rich.console import Console
from rich.table import Table

from dlbench.report.cells import (
    LEADERBOARD_METRICS,
    Cell,
    cells,
    check_unmixed,
    format_value,
    sections,
    unfinished_runs,
)
from dlbench.timing_policy import timing_warnings

# Metrics shown as a column (median) beside the main one, in this order, when a section has them.
SIDE_METRICS = (
    "test_accuracy", "test_mse", "test_rmse", "test_mae", "test_loss", "val_accuracy", "val_loss", "train_loss",
    "step_time_s", "compile_s", "peak_bytes", "param_count", "bandwidth_fraction", "bandwidth",
)  # fmt: skip
# Where a peak comes from, most trustworthy first (the leaderboard's order).
PEAK_SOURCES = ("memory_stats", "rss", "memory_analysis")
CI_METRICS = ("wall_s_ci_low", "wall_s_ci_high")


def cell_warnings(cell: Cell, first_call: float | None = None) -> list[str]:
    """Outliers and a slow first run (:func:`dlbench.timing_policy.timing_warnings`; the first call is
    the ``first_call_s`` row if present, else the first repeat against the rest) and failures."""
    xs = list(cell.samples)
    if first_call is not None:
        found = timing_warnings([first_call], xs)
    elif cell.first_run is not None and len(xs) >= 3:
        found = timing_warnings([cell.first_run], xs[1:])
    else:
        found = timing_warnings([], xs)
    return found + [f"{status}: {reason}" if reason else status for status, reason in cell.failures.items()]


def _provenance_lines(rows: pd.DataFrame) -> list[str]:
    def values(column: str) -> str:
        found = sorted({str(v) for v in rows[column].dropna()}) if column in rows else []
        return ", ".join(found) or "-"

    dirty = rows["git_dirty"].astype("string").str.lower().isin(["true", "1"]).any() if "git_dirty" in rows else False
    return [
        f"runs: {values('run_id')}   suite: {values('suite')}   files: {values('source_file')}",
        f"dlbench {values('dlbench_version')}, jax {values('jax_version')}, flax {values('flax_version')} "
        f"on {values('platform')} ({values('device_kind')} x {values('device_count')}), host {values('host')}",
        f"git {values('git_commit')[:12]}{' (dirty)' if dirty else ''}   time {values('time_utc')[:25]}",
    ]


def _point(cell: Cell) -> tuple[str, ...]:
    return tuple(v for k, v in cell.key.items() if k not in ("metric", "source"))


def _main_metric(metrics: set[str]) -> str:
    for metric in ("wall_s", *LEADERBOARD_METRICS):
        if metric in metrics:
            return metric
    return sorted(metrics)[0]


def _side_value(group: dict[str, list[Cell]], metric: str) -> tuple[str, list[str]]:
    """The display of ``metric`` at one point (preferred memory source, flagged fractions) and notes."""
    found = [c for c in group.get(metric, []) if len(c.samples)]
    if not found:
        return "-", []
    if metric == "peak_bytes":
        found.sort(key=lambda c: PEAK_SOURCES.index(c.key["source"]) if c.key.get("source") in PEAK_SOURCES else 9)
    cell = found[0]
    value = float(np.median(cell.samples))
    text = format_value(value, cell.unit)
    if metric == "peak_bytes" and cell.key.get("source"):
        text += f" ({cell.key['source']})"
    if metric == "bandwidth_fraction" and value > 1:
        # More than the device's copy bandwidth: the working set sits in cache, not a real fraction.
        return f"{value:.3g} (cache-resident)", ["bandwidth_fraction above 1: the data fits in cache"]
    return text, []


def show_frame(rows: pd.DataFrame) -> tuple[list[Table], pd.DataFrame, list[str]]:
    """Per section of cells a table with one line per cell; the same data as a frame (one record per
    cell, numeric medians) and the warnings (outliers, slow first run, failed cells, cache-resident)."""
    found = cells(rows)
    first_calls = {_point(c): float(c.samples[0]) for c in found.values() if c.metric == "first_call_s" and len(c.samples)}
    tables, records, notes = [], [], []
    for title, members in sections(found.values()):
        points: dict[tuple[str, ...], dict[str, list[Cell]]] = {}
        labels: dict[tuple[str, ...], str] = {}
        for label, cell in members:
            points.setdefault(_point(cell), {}).setdefault(cell.metric, []).append(cell)
            labels.setdefault(_point(cell), label)
        metrics = {m for group in points.values() for m in group} - {"first_call_s", *CI_METRICS}
        if not metrics:
            continue
        main = _main_metric(metrics)
        sides = [m for m in SIDE_METRICS if m in metrics and m != main]
        has_ci = any(m in group for group in points.values() for m in CI_METRICS)
        timed = main == "wall_s"
        table = Table(title=title, title_justify="left")
        header = ["cell", f"{main} median ± IQR", *(["95% CI"] if has_ci else []), "min … max", "n",
                  *(["tokens/s"] if timed else []), *sides, "status"]  # fmt: skip
        for column in header:
            table.add_column(column, justify="left" if column in ("cell", "status") else "right")
        for point, group in points.items():
            label = labels[point]
            main_cells = group.get(main, [])
            cell = main_cells[0] if main_cells else Cell(dict(zip(labels, point, strict=False)), np.array([]), {})
            xs, unit = cell.samples, cell.unit
            failures = {s: r for c in (c for cs in group.values() for c in cs) for s, r in c.failures.items()}
            warnings = cell_warnings(Cell(cell.key, xs, failures, cell.first_run, unit), first_calls.get(point) if timed else None)
            record = {"section": title, "cell": label, "metric": main, "unit": unit, "n": len(xs)}
            spread = extent = ci = "-"
            if len(xs):
                q1, median, q3 = np.percentile(xs, [25, 50, 75])
                record.update(median=median, q1=q1, q3=q3, min=float(xs.min()), max=float(xs.max()))
                spread = format_value(median, unit) + (f" ± {format_value(q3 - q1, unit)}" if len(xs) > 1 else "")
                extent = f"{format_value(xs.min(), unit)} … {format_value(xs.max(), unit)}" if len(xs) > 1 else "-"
            if has_ci:
                bounds = [float(np.median(group[m][0].samples)) if m in group and len(group[m][0].samples) else np.nan
                          for m in CI_METRICS]  # fmt: skip
                record.update(ci_low=bounds[0], ci_high=bounds[1])
                if np.isfinite(bounds).all():
                    ci = f"[{format_value(bounds[0], 's')}, {format_value(bounds[1], 's')}]"
            tokens = "-"
            if timed and len(xs) and cell.key.get("batch") and cell.key.get("seq_len"):
                record["tokens_per_s"] = float(np.median(int(cell.key["batch"]) * int(cell.key["seq_len"]) / xs))
                tokens = f"{record['tokens_per_s']:,.0f}"
            side_texts = []
            for metric in sides:
                text, side_notes = _side_value(group, metric)
                side_texts.append(text)
                warnings += side_notes
                values = [c for c in group.get(metric, []) if len(c.samples)]
                record[metric] = float(np.median(values[0].samples)) if values else np.nan
            record["status"] = status = "/".join(failures) if failures else "ok"
            notes += [(f"{title}: {label}", w) for w in warnings]
            style = "red" if failures and not len(xs) else ("yellow" if warnings else "")
            table.add_row(label, spread, *([ci] if has_ci else []), extent, str(len(xs)), *([tokens] if timed else []),
                          *side_texts, status, style=style)  # fmt: skip
            records.append(record)
        tables.append(table)
    for (task, model), seeds in unfinished_runs(rows).items():
        notes.append((f"{task}: {model}", f"{len(seeds)} unfinished run(s), seed {', '.join(map(str, seeds))}: "
                      "no final row (its writer was killed, or it is still running); not counted"))  # fmt: skip
    return tables, pd.DataFrame(records), notes


def show_tables(rows: pd.DataFrame) -> tuple[list[Table], list[str]]:
    """The tables and warnings of :func:`show_frame`."""
    tables, _, notes = show_frame(rows)
    return tables, [f"{where}: {what}" for where, what in notes]


def _grouped(notes: Sequence[tuple[str, str]]) -> list[str]:
    """Warnings of one kind on more than three cells as one line (``slow first run on 14 cells: ...``);
    ``notes`` are (where, warning) pairs."""
    kinds: dict[str, list[str]] = {}
    for where, what in notes:
        kind, detail = (what.split(": ", 1) if what.startswith("slow first run") else (what, ""))
        kinds.setdefault(kind, []).append(where + (f" ({detail})" if detail else ""))
    out = []
    for kind, where in kinds.items():
        if len(where) > 3:
            out.append(f"{kind} on {len(where)} cells: " + "; ".join(where[:3]) + f"; and {len(where) - 3} more")
        else:
            out += [f"{w}: {kind}" for w in where]
    return out


def show(paths: Sequence[str | Path], console: Console | None = None, fmt: str | None = None) -> None:
    """Print a hyperfine-like summary of result files: provenance, one line per cell, warnings.
    ``fmt``: table, plain, csv or json (:mod:`dlbench.report.render`; None: table in a terminal)."""
    from dlbench.report.render import render, resolve_format
    from dlbench.rundir import read_rows

    rows = check_unmixed(read_rows(paths))
    console = console or Console()
    fmt = resolve_format(fmt, console)
    tables, frame, notes = show_frame(rows)
    if fmt in ("csv", "json"):
        render(tables, fmt, console, frame=frame)
        return
    for line in _provenance_lines(rows):
        console.print(line, highlight=False, soft_wrap=True)
    render(tables, fmt, console)
    for note in _grouped(notes):
        console.print(f"[yellow]warning:[/] {note}", highlight=False, soft_wrap=True)
    if not notes:
        console.print("no warnings: no outliers, no slow first runs, no failed cells")
