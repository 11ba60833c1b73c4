"""Leaderboards derived from rows, and their CSV / Markdown / LaTeX writers.

- training: per task one row per model, mean +- population std over seeds beside the published number;
- throughput: per profile cell median tokens/s, the fastest backend per model and length.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from typing import Any

import numpy as np
import pandas as pd

from dlbench.errors import DlbenchError, check_choice
from dlbench.report.cells import (
    FAILED_STATUSES,
    LEADERBOARD_METRICS,
    _key_text,
    cells,
    check_unmixed,
    format_value,
    higher_is_better,
    resolved_backend,
    unfinished_runs,
)  # fmt: skip
from dlbench.report.published import DISPLAY_SCALES, PUBLISHED, TASK_ALIASES, published

TRAINING_COLUMNS = (
    "task", "metric", "unit", "rank", "model", "mean", "std", "seeds", "failed", "unfinished", "params",
    "time_per_1k_steps_s", "peak_bytes", "published_mean", "published_std", "delta",
)  # fmt: skip
THROUGHPUT_COLUMNS = (
    "target", "mode", "dtype", "batch", "hidden", "state", "seq_len", "model", "backend", "status", "repeats",
    "wall_s_median", "tokens_per_s", "relative_to_fastest", "fastest", "peak_bytes", "peak_source",
    "bandwidth_fraction",
)  # fmt: skip
LEADERBOARD_KINDS = ("auto", "training", "throughput")
FORMATS = ("csv", "md", "latex")


def _is_profile(rows: pd.DataFrame) -> pd.Series:
    """Rows written by ``dlbench profile`` (scan cells), as opposed to training or bandwidth rows."""
    return _key_text(rows, ("task",))["task"] == "scan"


def _is_training(rows: pd.DataFrame) -> pd.Series:
    task = _key_text(rows, ("task",))["task"]
    return ~task.isin(["scan", "bandwidth"])


def _first_valid(series: pd.Series) -> Any:
    valid = series.dropna()
    return valid.iloc[0] if len(valid) else None


def _pick_metric(rows: pd.DataFrame) -> str:
    present = set(rows["metric"].dropna())
    task = str(rows["task"].iloc[0]) if len(rows) else ""
    reference = PUBLISHED.get(TASK_ALIASES.get(task.casefold(), task))
    if reference is not None and reference.metric in present:
        return reference.metric  # rank by what the papers report (weather: test_mae)
    for metric in LEADERBOARD_METRICS:
        if metric in present:
            return metric
    raise DlbenchError(
        "no leaderboard metric in these training rows; pass --metric (found: " + ", ".join(sorted(present)) + ")"
    )


def training_leaderboard(rows: pd.DataFrame, metric: str | None = None) -> pd.DataFrame:
    """Per task one row per model: mean +- population std over seeds of ``metric`` (each seed's final
    value), rank, seeds, failed and unfinished seeds, parameters, time per 1,000 steps, peak memory and the published
    number (docs/models.md section 7) with the difference, in the paper's units. Columns: ``TRAINING_COLUMNS``."""
    rows = rows[_is_training(rows)]
    unfinished = unfinished_runs(rows)
    out = []
    for task, task_rows in rows.groupby(_key_text(rows, ("task",))["task"], sort=True):
        chosen = metric or _pick_metric(task_rows)
        reference, _ = published(task, "", chosen)
        scale, unit = (reference.scale, reference.unit) if reference else DISPLAY_SCALES.get(chosen, (1.0, ""))
        if not unit:
            unit = str(_first_valid(task_rows.loc[task_rows["metric"] == chosen, "unit"]) or "")
        board = []
        for model, model_rows in task_rows.groupby(_key_text(task_rows, ("model",))["model"], sort=True):
            metric_cells = cells(model_rows[model_rows["metric"] == chosen], ("metric",))
            samples = np.concatenate([c.samples for c in metric_cells.values()]) if metric_cells else np.array([])
            seeds_failed = model_rows.loc[model_rows["status"].isin(FAILED_STATUSES), "seed"].nunique(dropna=False)
            seeds_unfinished = len(unfinished.get((str(task), str(model)), []))
            if not len(samples) and not seeds_failed and not seeds_unfinished:
                continue
            values = samples * scale
            params = model_rows.loc[(model_rows["metric"] == "param_count") & (model_rows["status"] == "ok"), "value"]
            steps = model_rows.loc[(model_rows["metric"] == "step_time_s") & (model_rows["status"] == "ok"), "value"]
            peak = model_rows.loc[(model_rows["metric"] == "peak_bytes") & (model_rows["status"] == "ok"), "value"]
            _, entry = published(task, model, chosen)
            mean = float(values.mean()) if len(values) else math.nan
            board.append(
                {
                    "task": task,
                    "metric": chosen,
                    "unit": unit,
                    "model": model,
                    "mean": mean,
                    "std": float(values.std(ddof=0)) if len(values) else math.nan,  # population std, as published
                    "seeds": len(values),
                    "failed": int(seeds_failed),
                    "unfinished": seeds_unfinished,
                    "params": float(params.median()) if len(params) else math.nan,
                    "time_per_1k_steps_s": 1000.0 * float(steps.median()) if len(steps) else math.nan,
                    "peak_bytes": float(peak.max()) if len(peak) else math.nan,
                    "published_mean": entry[0] if entry else math.nan,
                    "published_std": entry[1] if entry and entry[1] is not None else math.nan,
                    "delta": mean - entry[0] if entry else math.nan,
                }
            )
        if not board:
            continue
        frame = pd.DataFrame(board)
        # Rank 1 is best; models with no successful seed are ranked last (NaN -> bottom).
        frame["rank"] = frame["mean"].rank(ascending=not higher_is_better(chosen), method="min", na_option="bottom")
        out.append(frame.sort_values(["rank", "model"]))
    if not out:
        return pd.DataFrame(columns=list(TRAINING_COLUMNS))
    board = pd.concat(out, ignore_index=True)
    board["rank"] = board["rank"].astype(int)
    return board[list(TRAINING_COLUMNS)]


# Where a peak comes from, most trustworthy first: a measured device peak, the process's peak RSS,
# and last the compiler's estimate (memory_analysis), which is not a measurement.
PEAK_SOURCES = ("memory_stats", "rss", "memory_analysis")


def _preferred_peak(peak: pd.DataFrame) -> pd.DataFrame:
    """The ``peak_bytes`` rows of the most trustworthy source present (unknown sources rank last)."""
    if peak.empty:
        return peak
    rank = peak["source"].map({s: i for i, s in enumerate(PEAK_SOURCES)}).fillna(len(PEAK_SOURCES))
    return peak[rank == rank.min()]


CI_COLUMNS = ("wall_s_ci_low", "wall_s_ci_high")
# Columns of the throughput board beyond THROUGHPUT_COLUMNS, used by the displays, not in the CSV (yet).
THROUGHPUT_EXTRAS = (*CI_COLUMNS, "relative_ci_low", "relative_ci_high", "resolved_backend")


def _ok_median(group: pd.DataFrame, metric: str) -> float:
    values = group.loc[(group["metric"] == metric) & (group["status"] == "ok"), "value"].astype(float)
    return float(values.median()) if len(values) else math.nan


def _throughput_frame(rows: pd.DataFrame) -> pd.DataFrame:
    """Per profile cell (target, mode, dtype, sizes, length, model, backend): median tokens/s of the ok
    ``wall_s`` repeats, their count, median wall time and the cell's worst status."""
    rows = rows[_is_profile(rows)]
    axes = ["target", "mode", "dtype", "batch", "hidden", "state", "seq_len", "model", "backend"]
    text = _key_text(rows, axes)
    out = []
    for key, index in text.groupby(axes, sort=False).groups.items():
        group = rows.loc[index]
        key_map = dict(zip(axes, key, strict=True))
        ok = group[(group["status"] == "ok") & (group["metric"] == "wall_s")]
        walls = ok["value"].to_numpy(float)
        walls = walls[np.isfinite(walls) & (walls > 0)]
        batch, seq_len = _first_valid(group["batch"]), _first_valid(group["seq_len"])
        tokens = float(batch) * float(seq_len) if batch is not None and seq_len is not None else math.nan
        failed = group.loc[group["status"] != "ok", "status"]
        peak = _preferred_peak(group[(group["metric"] == "peak_bytes") & (group["status"] == "ok")])
        fraction = group.loc[(group["metric"] == "bandwidth_fraction") & (group["status"] == "ok"), "value"]
        out.append(
            {
                **key_map,
                "batch": batch,
                "seq_len": seq_len,
                "status": str(failed.iloc[0]) if len(failed) and not len(walls) else "ok",
                "repeats": len(walls),
                "wall_s_median": float(np.median(walls)) if len(walls) else math.nan,
                # Median of per-repeat tokens/s (the median commutes with the monotone map t -> tokens/t
                # for odd counts; for even counts this is the mean of the two middle throughputs).
                "tokens_per_s": float(np.median(tokens / walls)) if len(walls) else math.nan,
                "peak_bytes": float(peak["value"].max()) if len(peak) else math.nan,
                "peak_source": str(_first_valid(peak["source"]) or "") if len(peak) else "",
                "bandwidth_fraction": float(fraction.median()) if len(fraction) else math.nan,
                # Display-only extras (not in the CSV): the cell's 95% CI of its median wall time where
                # the timing loop recorded one, and the backend ``auto`` resolved to.
                **{m: _ok_median(group, m) for m in CI_COLUMNS},
                "resolved_backend": resolved_backend({"backend": key_map["backend"],
                                                      "layer_options": str(_first_valid(group["layer_options"]) or "")
                                                      if "layer_options" in group else ""}),  # fmt: skip
            }
        )
    frame = pd.DataFrame(
        out, columns=[*(c for c in THROUGHPUT_COLUMNS if c not in ("relative_to_fastest", "fastest")), *CI_COLUMNS,
                      "resolved_backend"]
    )  # fmt: skip
    for column in ("batch", "hidden", "state", "seq_len"):
        frame[column] = pd.to_numeric(frame[column], errors="coerce").astype("Int64")
    return frame


def throughput_leaderboard(rows: pd.DataFrame) -> pd.DataFrame:
    """Profile cells with median tokens/s per length and backend; ``fastest`` marks the fastest backend
    of each model at each length, ``relative_to_fastest`` is tokens/s over that backend's. Columns:
    ``THROUGHPUT_COLUMNS``."""
    frame = _throughput_frame(rows)
    if frame.empty:
        return pd.DataFrame(columns=[*THROUGHPUT_COLUMNS, *THROUGHPUT_EXTRAS])
    group = ["target", "mode", "dtype", "batch", "hidden", "state", "seq_len", "model"]
    best = frame.groupby(group, dropna=False)["tokens_per_s"].transform("max")
    frame["relative_to_fastest"] = frame["tokens_per_s"] / best
    frame["fastest"] = frame["tokens_per_s"].notna() & (frame["tokens_per_s"] == best)
    frame = frame.sort_values(["target", "mode", "dtype", "batch", "hidden", "state", "seq_len", "model", "backend"])
    # x fastest's interval from the two cells' CIs of their median wall time (tokens/s ratio = inverse
    # wall-time ratio): [best_low / cell_high, best_high / cell_low]; NaN where a CI is missing.
    fastest = frame.assign(
        _low=frame["wall_s_ci_low"].where(frame["fastest"]), _high=frame["wall_s_ci_high"].where(frame["fastest"])
    ).groupby(group, dropna=False)
    frame["relative_ci_low"] = fastest["_low"].transform("min") / frame["wall_s_ci_high"]
    frame["relative_ci_high"] = fastest["_high"].transform("max") / frame["wall_s_ci_low"]
    # THROUGHPUT_COLUMNS first (the CSV), then the display-only extras.
    return frame[[*THROUGHPUT_COLUMNS, *THROUGHPUT_EXTRAS]].reset_index(drop=True)


def leaderboards(rows: pd.DataFrame, kind: str = "auto", metric: str | None = None) -> dict[str, pd.DataFrame]:
    """The leaderboards of ``kind`` (``auto``: every kind present in ``rows``), keyed by kind."""
    check_choice("leaderboard kind", kind, LEADERBOARD_KINDS)
    check_unmixed(rows)
    if metric is not None:
        check_choice("metric", metric, sorted(set(rows["metric"].dropna().astype(str))))
    builders: dict[str, Callable[[], pd.DataFrame]] = {
        "training": lambda: training_leaderboard(rows, metric),
        "throughput": lambda: throughput_leaderboard(rows),
    }
    present = {"training": bool(_is_training(rows).any()), "throughput": bool(_is_profile(rows).any())}
    wanted = [k for k in builders if (kind == "auto" and present[k]) or kind == k]
    boards = {k: builders[k]() for k in wanted}
    boards = {k: b for k, b in boards.items() if not b.empty}
    if not boards:
        raise DlbenchError(f"no {'' if kind == 'auto' else kind + ' '}rows to make a leaderboard from")
    return boards


def _pm(mean: float, std: float, unit: str, latex: bool = False) -> str:
    if not np.isfinite(mean):
        return "-"
    digits = 1 if unit == "%" else 3
    text = f"{mean:.{digits}f}" if unit == "%" else f"{mean:.{digits}g}"
    if np.isfinite(std):
        spread = f"{std:.{digits}f}" if unit == "%" else f"{std:.{digits}g}"
        text += (r" $\pm$ " if latex else " ± ") + spread
    return text


def _signed(x: float, unit: str) -> str:
    if not np.isfinite(x):
        return "-"
    return f"{x:+.1f}" if unit == "%" else f"{x:+.3g}"


def _training_display(board: pd.DataFrame, latex: bool) -> dict[str, list[list[str]]]:
    """Per task: header and rows of display strings."""
    tables = {}
    for task, frame in board.groupby("task", sort=True):
        metric, unit = frame["metric"].iloc[0], frame["unit"].iloc[0]
        head = f"{metric} ({unit})" if unit else metric
        header = ["rank", "model", head, "seeds", "published", "Δ", "params", "s / 1k steps", "peak memory"]
        body = [
            [
                str(r.rank) + "".join(f" ({n} {what})" for n, what in ((r.failed, "failed"), (r.unfinished, "unfinished")) if n),
                r.model,
                _pm(r.mean, r.std, unit, latex),
                str(r.seeds),
                _pm(r.published_mean, r.published_std, unit, latex),
                _signed(r.delta, unit),
                f"{r.params:,.0f}" if np.isfinite(r.params) else "-",
                f"{r.time_per_1k_steps_s:.3g}" if np.isfinite(r.time_per_1k_steps_s) else "-",
                format_value(r.peak_bytes, "bytes"),
            ]
            for r in frame.itertuples()
        ]
        tables[str(task)] = [header, *body]
    return tables


def _throughput_display(board: pd.DataFrame, latex: bool) -> dict[str, list[list[str]]]:
    tables = {}
    for (target, mode, dtype, batch, hidden, state), frame in board.groupby(
        ["target", "mode", "dtype", "batch", "hidden", "state"], sort=True, dropna=False
    ):
        title = f"profile scan: target={target} mode={mode} dtype={dtype} B={batch} H={hidden} P={state}"
        extras = frame if "resolved_backend" in frame else None
        has_ci = extras is not None and bool(np.isfinite(extras["wall_s_ci_low"].astype(float)).any())
        header = ["length", "model", "backend", "tokens/s", "x fastest", "median wall", *(["95% CI"] if has_ci else []),
                  "repeats", "peak memory", "status"]  # fmt: skip
        body = []
        for r in frame.itertuples():
            x = extras.loc[r.Index] if extras is not None else None
            backend = x["resolved_backend"] if x is not None and x["resolved_backend"] else r.backend
            ratio = f"{r.relative_to_fastest:.2f}" if np.isfinite(r.relative_to_fastest) else "-"
            ci = "-"
            if has_ci and np.isfinite([x["wall_s_ci_low"], x["wall_s_ci_high"]]).all():
                ci = f"[{format_value(x['wall_s_ci_low'], 's')}, {format_value(x['wall_s_ci_high'], 's')}]"
                if not r.fastest and np.isfinite([x["relative_ci_low"], x["relative_ci_high"]]).all():
                    ratio += f" [{x['relative_ci_low']:.2f}, {x['relative_ci_high']:.2f}]"
            speed = f"{r.tokens_per_s:,.0f}" if np.isfinite(r.tokens_per_s) else "-"
            if r.fastest:  # the fastest backend of this model at this length
                speed = rf"\textbf{{{speed}}}" if latex else f"**{speed}**"
            body.append(
                [
                    "-" if pd.isna(r.seq_len) else f"{r.seq_len:,}", r.model, backend, speed, ratio,
                    format_value(r.wall_s_median, "s"), *([ci] if has_ci else []), str(r.repeats),
                    format_value(r.peak_bytes, "bytes"), r.status,
                ]  # fmt: skip
            )
        tables[title] = [header, *body]
    return tables


DISPLAYS: dict[str, Callable[[pd.DataFrame, bool], dict[str, list[list[str]]]]] = {
    "training": _training_display,
    "throughput": _throughput_display,
}
NOTES = {
    "training": "mean ± population std over seeds, in the published units; Δ = measured − published "
    "(docs/models.md section 7); rank 1 is best.",
    "throughput": "tokens/s = batch × length / wall time, median over timed repeats; **bold** = fastest "
    "backend of that model at that length; x fastest = tokens/s relative to it.",
}
# The same notes for plain text, where there is no bold.
PLAIN_NOTES = {
    **NOTES,
    "throughput": "tokens/s = batch × length / wall time, median over timed repeats; x fastest = tokens/s "
    "relative to the fastest backend of that model at that length (1.00).",
}


def _markdown(tables: dict[str, list[list[str]]], note: str) -> str:
    out = []
    for title, (header, *body) in tables.items():
        out += [f"### {title}", "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        out += ["| " + " | ".join(cell.replace("|", r"\|") for cell in row) + " |" for row in body]
        out.append("")
    return "\n".join(out + [note, ""])


_LATEX_ESCAPES = {"_": r"\_", "%": r"\%", "&": r"\&", "#": r"\#", "Δ": r"$\Delta$", "×": r"$\times$", "−": "-"}


def _latex_escape(text: str) -> str:
    if "$" in text or text.startswith("\\textbf"):
        return text  # already LaTeX (mean $\pm$ std, bold)
    return re.sub("|".join(map(re.escape, _LATEX_ESCAPES)), lambda m: _LATEX_ESCAPES[m.group()], text)


def _latex(tables: dict[str, list[list[str]]], note: str) -> str:
    out = []
    for title, (header, *body) in tables.items():
        out += [
            r"\begin{table}[ht]", r"\centering", rf"\caption{{{_latex_escape(title)}}}",
            r"\begin{tabular}{" + "l" * 2 + "r" * (len(header) - 2) + "}", r"\toprule",
            " & ".join(map(_latex_escape, header)) + r" \\", r"\midrule",
        ]  # fmt: skip
        out += [" & ".join(map(_latex_escape, row)) + r" \\" for row in body]
        out += [r"\bottomrule", r"\end{tabular}", r"\end{table}", ""]
    return "\n".join(out + ["% " + note.replace("**bold**", "bold"), ""])


def export_leaderboard(
    rows: pd.DataFrame, fmt: str = "md", *, metric: str | None = None, kind: str = "auto"
) -> str:
    """The leaderboard(s) of ``rows`` as CSV, Markdown or LaTeX text.

    CSV holds one leaderboard with numeric columns (``TRAINING_COLUMNS`` or ``THROUGHPUT_COLUMNS``, see
    ``results/README.md``), so it loads back with ``pandas.read_csv``; Markdown and LaTeX hold one table
    per task (or per profile configuration) with mean ± std formatted.
    """
    check_choice("format", fmt, FORMATS)
    boards = leaderboards(rows, kind, metric)
    if fmt == "csv":
        if len(boards) > 1:
            raise DlbenchError("these rows hold both training and profile results; pick one with --kind for CSV")
        (board,) = boards.values()
        board = board[[c for c in board.columns if c not in THROUGHPUT_EXTRAS]]
        return board.to_csv(index=False, float_format="%.10g")
    writers = {"md": _markdown, "latex": _latex}
    return "\n".join(writers[fmt](DISPLAYS[k](b, fmt == "latex"), NOTES[k]) for k, b in boards.items())


