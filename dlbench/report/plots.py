"""Plots of result rows (matplotlib Figure objects: no pyplot state, Agg canvas, safe in any thread)."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from dlbench.errors import DlbenchError, check_choice
from dlbench.report.cells import FAILED_STATUSES, _key_text, _varying, cell_label, check_unmixed, higher_is_better
from dlbench.report.eigenvalues import plot_eigenvalues
from dlbench.report.leaderboard import _first_valid, _is_profile, _is_training, _throughput_frame

# Failed cells are drawn at the bottom of the axes with a marker per status.
FAILURE_MARKERS = {"oom": "x", "timeout": "v", "nan": "d", "error": "X"}


def _figure(n_panels: int, width: float = 6.4, height: float = 4.6, n_rows: int = 1):
    from matplotlib.figure import Figure

    n_cols = math.ceil(n_panels / n_rows)
    figure = Figure(figsize=(width * n_cols, height * n_rows), layout="constrained")
    axes = figure.subplots(n_rows, n_cols, squeeze=False).ravel()
    for unused in axes[n_panels:]:
        unused.set_visible(False)
    return figure, list(axes[:n_panels])


def _colours(names: Iterable[str]) -> dict[str, Any]:
    """A distinct colour per name: the default cycle up to 10 lines, tab20 beyond."""
    from matplotlib import colormaps

    names = sorted(set(names))
    if len(names) <= 10:
        return {name: f"C{i}" for i, name in enumerate(names)}
    return {name: colormaps["tab20"](i % 20) for i, name in enumerate(names)}


# Measured peaks are solid lines, the compiler's estimate is dashed.
SOURCE_LINESTYLES = {"memory_stats": "-", "rss": "-", "memory_analysis": "--"}


def _save(figure, path: str | Path | None) -> None:
    if path is not None:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        figure.savefig(path, dpi=110)


LINE_MARKERS = ("o", "s", "^", "D", "v", "P", "X", "<", ">", "h")


def _line_plot(
    frame: pd.DataFrame,
    y: str,
    ylabel: str,
    title: str,
    path: str | Path | None,
    *,
    line_keys: Sequence[str] = ("model", "backend"),
    yscale: float = 1.0,
):
    """Log-log lines of ``y`` against ``seq_len`` per ``line_keys`` (one panel per mode), with failed
    cells marked at the bottom of the panel."""
    from matplotlib.lines import Line2D

    values = frame[y].astype(float)
    if not (np.isfinite(values) & (values > 0)).any():
        # A log axis needs a positive value: a sweep where every cell failed has nothing to draw.
        raise DlbenchError("no successful cells to plot (every cell failed or was skipped)")
    frame = frame.copy()
    frame["mode"] = frame["mode"].fillna("").astype(str)
    modes = sorted(frame["mode"].unique())
    figure, axes = _figure(len(modes))
    keys = _key_text(frame, [k for k in ("target", *line_keys, "dtype", "batch", "hidden", "state") if k in frame])
    shown = _varying(keys, always=line_keys)
    records = keys.to_dict("records")
    frame["_line"] = [cell_label(k, shown) for k in records]
    # One colour per model/backend; the memory source only changes the line style.
    frame["_colour"] = [cell_label(k, [c for c in shown if c != "source"]) for k in records]
    colour_of = _colours(frame["_colour"])
    colours = dict(zip(frame["_line"], (colour_of[c] for c in frame["_colour"]), strict=True))
    styles = dict(zip(frame["_line"], (SOURCE_LINESTYLES.get(k.get("source", ""), "-") for k in records), strict=True))
    # Models with near-equal throughput draw on top of each other: distinct hollow markers keep each visible.
    marker_of = {c: LINE_MARKERS[i % len(LINE_MARKERS)] for i, c in enumerate(sorted(colour_of))}
    markers = dict(zip(frame["_line"], (marker_of[c] for c in frame["_colour"]), strict=True))
    for ax, mode in zip(axes, modes, strict=True):
        part = frame[frame["mode"] == mode]
        for line, points in part.groupby("_line", sort=True):
            points = points.sort_values("seq_len")
            good = points[np.isfinite(points[y].astype(float))]
            ax.plot(good["seq_len"].astype(float), good[y].astype(float) * yscale, marker=markers[line], ms=7, mfc="none",
                    mew=1.5, color=colours[line], linestyle=styles[line], label=line)  # fmt: skip
            for status, marker in FAILURE_MARKERS.items():
                bad = points[(points["status"] == status) & ~np.isfinite(points[y].astype(float))]
                if len(bad):
                    # x in data units, y pinned near the bottom: a failed cell has no value to plot.
                    ax.plot(bad["seq_len"].astype(float), [0.04] * len(bad), linestyle="none", marker=marker,
                            ms=9, mew=2, color=colours[line], transform=ax.get_xaxis_transform())  # fmt: skip
        ax.set_xscale("log")
        ax.set_yscale("log")
        _plain_ticks(ax, sorted(frame["seq_len"].dropna().astype(float).unique()))
        ax.margins(y=0.15)  # room at the bottom for the failed-cell markers
        ax.set_xlabel("sequence length (tokens)")
        ax.set_ylabel(ylabel)
        ax.set_title(f"{title}{' - ' + mode if mode else ''}")
        ax.grid(True, which="both", alpha=0.3)
        handles, _ = ax.get_legend_handles_labels()
        used = set(part["status"])
        handles += [
            Line2D([], [], linestyle="none", marker=m, color="0.3", mew=2, ms=8, label=f"{s} (cell failed)")
            for s, m in FAILURE_MARKERS.items()
            if s in used
        ]
        if handles:
            ax.legend(handles=handles, fontsize="small")
    _save(figure, path)
    return figure


def _plain_number(value: float, _position: object = None) -> str:
    """A tick label as a plain number: 64, 1,024, 0.5 (never 6x10^1)."""
    if value >= 1:
        return f"{value:,.0f}"
    return f"{value:.3g}"


def _plain_ticks(ax, lengths: Sequence[float]) -> None:
    """Log axes labelled in plain numbers: x ticks at the measured lengths (at most ~8 of them), y ticks
    at the decades (and their 2x/5x steps when the axis spans at most three decades)."""
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    if len(lengths):
        step = max(1, math.ceil(len(lengths) / 8))
        ax.set_xticks(list(lengths[::step]))
        ax.xaxis.set_minor_formatter(NullFormatter())
        ax.xaxis.set_major_formatter(FuncFormatter(_plain_number))
    low, high = ax.get_ylim()
    crowded = low <= 0 or math.log10(high / low) > 3  # 1-2-5 steps only where few decades are shown
    ax.yaxis.set_major_locator(LogLocator(base=10, subs=(1.0,) if crowded else (1.0, 2.0, 5.0)))
    ax.yaxis.set_major_formatter(FuncFormatter(_plain_number))
    ax.yaxis.set_minor_formatter(NullFormatter())


def _with_resolved_backend(frame: pd.DataFrame) -> pd.DataFrame:
    """Legends name the backend a cell ran: ``auto->blocked`` rather than ``auto``."""
    if "resolved_backend" in frame:
        frame = frame.assign(backend=frame["resolved_backend"].where(frame["resolved_backend"] != "", frame["backend"]))
    return frame


def _subtitle(rows: pd.DataFrame) -> str:
    parts = []
    for column, fmt in (("batch", "B={}"), ("hidden", "H={}"), ("state", "P={}"), ("dtype", "{}"), ("device_kind", "{}")):
        values = sorted({str(v) for v in rows[column].dropna()}) if column in rows else []
        if len(values) == 1:
            parts.append(fmt.format(values[0]))
    return ", ".join(parts)


def plot_throughput(rows: pd.DataFrame, path: str | Path | None = None):
    """Log-log tokens/s (median over repeats) against sequence length, one line per model/backend and
    one panel per mode; failed cells (oom, timeout...) marked at the bottom. Saves a PNG to ``path``
    (if given) and returns the matplotlib Figure."""
    frame = _with_resolved_backend(_throughput_frame(rows))
    if frame.empty:
        raise DlbenchError("no profile scan rows (task 'scan') to plot")
    return _line_plot(frame, "tokens_per_s", "throughput (tokens/s)", f"scan throughput ({_subtitle(rows)})", path)


def plot_memory(rows: pd.DataFrame, path: str | Path | None = None):
    """Log-log peak memory (MiB) against sequence length per model/backend and memory source
    (``memory_stats``, ``rss``, ``memory_analysis``); failed cells marked. Returns the Figure."""
    profile = rows[_is_profile(rows)]
    peak = profile[(profile["metric"] == "peak_bytes") & (profile["status"] == "ok")]
    failed = profile[profile["status"].isin(FAILED_STATUSES)]
    if peak.empty:
        raise DlbenchError("no peak_bytes rows in these profile results to plot")
    keys = ["target", "mode", "dtype", "batch", "hidden", "state", "seq_len", "model", "backend", "source"]
    text = _key_text(peak, keys).assign(value=peak["value"].to_numpy(float))
    frame = text.groupby(keys, sort=True)["value"].max().reset_index()
    # Each failed cell is marked once per memory source seen for its model/backend.
    sources = frame[["model", "backend", "source"]].drop_duplicates()
    fail = _key_text(failed, [k for k in keys if k != "source"]).assign(status=failed["status"].to_numpy())
    fail = fail.drop_duplicates().merge(sources, on=["model", "backend"], how="inner").assign(value=math.nan)
    frame = pd.concat([frame.assign(status="ok"), fail], ignore_index=True)
    frame["seq_len"] = pd.to_numeric(frame["seq_len"])
    resolved = _throughput_frame(rows)[["model", "backend", "resolved_backend"]].drop_duplicates(["model", "backend"])
    frame = _with_resolved_backend(frame.merge(resolved, on=["model", "backend"], how="left").fillna({"resolved_backend": ""}))
    return _line_plot(
        frame, "value", "peak memory (MiB)", f"peak memory ({_subtitle(rows)})", path,
        line_keys=("model", "backend", "source"), yscale=1 / 2**20,
    )  # fmt: skip


REGRESSION_METRICS = frozenset({"val_mse", "val_rmse", "val_mae", "test_mse", "test_rmse", "test_mae"})


def _curve_unit(task_rows: pd.DataFrame, metric: str, unit: str) -> str:
    """The unit to label a curve with. A loss of a regression task is a squared error in (normalised)
    target units, never "nats", whatever older rows recorded."""
    if metric.endswith("_loss") and unit == "nats" and task_rows["metric"].isin(REGRESSION_METRICS).any():
        return "target^2"
    return unit


TRAINING_CURVES = ("train_loss", "val_loss", "val_accuracy", "val_mse", "val_rmse")


def plot_training(rows: pd.DataFrame, path: str | Path | None = None):
    """Training curves: one panel per task and curve metric (train loss, validation metrics) against
    step, one line per model (mean over seeds, shaded min..max). Returns the Figure."""
    rows = rows[_is_training(rows) & rows["metric"].isin(TRAINING_CURVES) & (rows["status"] == "ok")]
    if rows.empty:
        raise DlbenchError("no training curves (" + ", ".join(TRAINING_CURVES) + ") in these rows to plot")
    panels = rows[["task", "metric"]].drop_duplicates().sort_values(["task", "metric"]).itertuples(index=False)
    panels = list(panels)
    # One row of panels per task, one column per curve metric.
    figure, axes = _figure(len(panels), width=5.2, height=4.0, n_rows=rows["task"].nunique())
    colours = _colours(rows["model"].dropna())
    notes: set[str] = set()
    for ax, (task, metric) in zip(axes, panels, strict=True):
        part = rows[(rows["task"] == task) & (rows["metric"] == metric)]
        for model, curve in part.groupby("model", sort=True):
            per_step = curve.groupby("index")["value"].agg(["mean", "min", "max"]).sort_index()
            steps = per_step.index.to_numpy(float)
            single = len(steps) == 1  # one evaluation: a line of one point draws nothing
            label = f"{model} ({curve['seed'].nunique()} seeds)" + (", one point" if single else "")
            ax.plot(steps, per_step["mean"], color=colours[model], label=label, marker="o" if single else None)
            if single:
                notes.add("one evaluation point: drawn as a marker")
            ax.fill_between(steps, per_step["min"], per_step["max"], color=colours[model], alpha=0.2, lw=0)
        unit = _curve_unit(rows[rows["task"] == task], metric, str(_first_valid(part["unit"]) or ""))
        ax.set_xlabel("training step")
        ax.set_ylabel(f"{metric.replace('_', ' ')}" + (f" ({unit})" if unit and unit != "1" else ""))
        if not higher_is_better(metric) and (part["value"] > 0).all():
            ax.set_yscale("log")  # losses span decades
            _plain_ticks(ax, [])
        ax.set_title(f"{task}: {metric}")
        if notes:
            ax.text(0.02, 0.02, "; ".join(sorted(notes)), transform=ax.transAxes, fontsize="small", color="0.3")
            notes.clear()
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize="small")
    _save(figure, path)
    return figure


def _plot_eigenvalues(rows: pd.DataFrame, path: str | Path | None = None):
    eigen = rows[rows["metric"].isin(("eig_abs", "eig_angle"))]
    if eigen.empty:
        raise DlbenchError("no eigenvalue rows here; `dlbench plot RUN --kind eigenvalues` computes them from a run's saved parameters")
    return plot_eigenvalues(eigen, path)


PLOTS: dict[str, Callable[[pd.DataFrame, str | Path | None], Any]] = {
    "throughput": plot_throughput,
    "memory": plot_memory,
    "training": plot_training,
    "eigenvalues": _plot_eigenvalues,
}
PLOT_KINDS = ("auto", *PLOTS)


PLOT_SUFFIXES = (".png", ".pdf", ".svg")


def plot_results(paths: Sequence[str | Path], kind: str = "auto", out: str | Path | None = None) -> Path:
    """Read rows and draw one plot of ``kind`` (``auto``: throughput for profile rows, else training)
    to ``out`` (default: ``KIND.png`` beside the results). Returns the PNG's path."""
    from dlbench.rundir import read_rows

    check_choice("plot kind", kind, PLOT_KINDS)
    if out is not None:
        check_choice("plot file type", Path(out).suffix.lower() or "(none)", PLOT_SUFFIXES)
    rows = check_unmixed(read_rows(paths))
    if kind == "auto":
        kind = "throughput" if _is_profile(rows).any() else "training"
    if out is None:
        first = Path(paths[0])
        out = first / f"{kind}.png" if first.is_dir() else first.with_name(f"{first.stem}-{kind}.png")
    PLOTS[kind](rows, out)
    return Path(out)
