"""Console tables, leaderboards, comparisons and plots, all derived from result rows.

Nothing here writes raw rows: everything is computed from what :func:`dlbench.results.read_rows`
returns, so a leaderboard or a plot can always be regenerated from the append-only run files.

Derived quantities (documented in ``results/README.md``):
- tokens/s of one timed repeat = batch * seq_len / wall_s; a cell's throughput is the median of them.
- a training cell's score is the mean and *population* std (ddof=0, as the papers report) over seeds
  of each seed's final value of the metric.
- time per 1,000 steps = 1000 * median(step_time_s) over every recorded step of every seed.
- compare: ratio NEW/BASE of a statistic (median) with a bootstrap CI, and a Mann-Whitney U test
  on the raw samples (timing repeats, or one final value per seed for quality metrics).

References: hyperfine (``export/``, the warnings of its summary), pytest-benchmark (``compare``),
MODELS.md section 7 for the published numbers.
"""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from rich.console import Console
from rich.table import Table

from dlbench.errors import DlbenchError, check_choice
from dlbench.models import ModelConfig, build_model, count_parameters
from dlbench.registry import get_model, model_names


def models_table(names: Sequence[str] | None, config: ModelConfig) -> Table:
    """A table of registered models, each built with ``config`` to count its parameters."""
    names = tuple(names) if names else model_names()
    specs = [get_model(n) for n in names]
    table = Table(
        title=f"dlbench models (H={config.hidden_dim}, P={config.state_dim}, blocks={config.num_blocks}, "
        f"inputs={config.num_inputs}, classes={config.num_outputs}, norm={config.norm})"
    )
    table.add_column("model", no_wrap=True)
    table.add_column("layer", no_wrap=True)
    table.add_column("options")
    table.add_column("parameters", justify="right", no_wrap=True)
    table.add_column("scan backends")
    unbuildable = {}
    for spec in specs:
        try:
            count = f"{count_parameters(build_model(spec.name, dataclasses.replace(config, scan='auto'))):,}"
        except DlbenchError:
            raise
        except ValueError as error:  # one layer's size rule (S5's even P) must not hide the others
            unbuildable[spec.name] = str(error).splitlines()[0]
            count = "n/a"
        options = ", ".join(f"{k}={v}" for k, v in spec.options.items()) or "-"
        table.add_row(spec.name, spec.layer.__name__, options, count, " ".join(spec.layer.scans))
    if len(unbuildable) == len(specs):
        raise DlbenchError("no model can be built with these sizes: " + "; ".join(f"{k}: {v}" for k, v in unbuildable.items()))
    table.caption = "\n".join(
        f"{spec.name}: {spec.description}" + (f" (n/a here: {unbuildable[spec.name]})" if spec.name in unbuildable else "")
        for spec in specs
    )
    table.caption_justify = "left"
    return table


# ---------------------------------------------------------------------------------------------
# Vocabulary shared by every view
# ---------------------------------------------------------------------------------------------

# Columns that identify a measured cell (everything but run id, seed, repeat index and provenance).
CELL_KEYS = (
    "suite", "task", "target", "model", "layer_options", "backend", "seq_len", "batch", "hidden", "state",
    "blocks", "dtype", "mode", "devices", "metric", "source",
)  # fmt: skip
# Metrics whose rows are raw repeats of one measurement: every row is a sample, pooled over seeds.
# Every other metric contributes one sample per seed: that seed's final (largest-index) value.
PER_REPEAT_METRICS = frozenset({"wall_s", "step_time_s", "first_call_s", "bandwidth"})
# Direction of "better"; metrics not listed are lower-is-better (times, losses, errors, bytes).
HIGHER_IS_BETTER = frozenset(
    {"test_accuracy", "val_accuracy", "train_accuracy", "bandwidth_fraction", "bandwidth", "tokens_per_s"}
)
# Properties of a configuration rather than performance: shown by compare, never gated.
NEUTRAL_METRICS = frozenset({"param_count", "min_bytes_per_token"})
# Status values that mean "this cell failed" (``skipped`` and ``n/a`` are not failures of the cell).
FAILED_STATUSES = ("oom", "timeout", "nan", "error")
# Training metrics in preference order for the leaderboard when --metric is not given.
LEADERBOARD_METRICS = ("test_accuracy", "test_mse", "test_rmse", "test_mae", "val_accuracy", "val_loss", "train_loss")
# Short labels for cell keys in tables, legends and messages.
KEY_LABELS: dict[str, str] = {"seq_len": "L={}", "batch": "B={}", "hidden": "H={}", "state": "P={}", "blocks": "blocks={}"}


def higher_is_better(metric: str) -> bool:
    """Whether a larger value of ``metric`` is an improvement."""
    return metric in HIGHER_IS_BETTER


def _key_text(rows: pd.DataFrame, keys: Sequence[str]) -> pd.DataFrame:
    """The key columns as strings with missing values as "" (groupby and labels need no NA)."""
    out = pd.DataFrame(index=rows.index)
    for key in keys:
        column = rows[key] if key in rows.columns else pd.Series(pd.NA, index=rows.index)
        out[key] = column.astype("string").fillna("")
    return out


def _varying(keys: pd.DataFrame, always: Iterable[str] = ()) -> list[str]:
    """Key columns whose value differs between rows (what a legend or a cell label must show)."""
    always = list(always)
    return always + [c for c in keys.columns if c not in always and keys[c].nunique() > 1]


def cell_label(key: Mapping[str, str], shown: Sequence[str]) -> str:
    """A compact name for a cell such as ``dlinoss chunked L=50000 fwd``."""
    parts = [KEY_LABELS.get(k, "{}").format(key[k]) for k in shown if key.get(k, "")]
    return " ".join(parts) or "(all rows)"


# Keys that are usually shared by many cells: printed once as a section title, not in every label.
SECTION_KEYS = ("suite", "task", "target", "mode", "dtype", "batch", "hidden", "state", "blocks", "devices")


def _sort_key(key: Mapping[str, str]) -> tuple:
    """Order cells naturally: numbers (lengths, sizes) numerically, the rest alphabetically."""
    return tuple((0, int(v), "") if v.isdigit() else (1, 0, v) for v in key.values())


def sections(found: Iterable[Cell]) -> list[tuple[str, list[tuple[str, Cell]]]]:
    """Partition cells by :data:`SECTION_KEYS`: per section a title (the shared keys) and each cell's
    short label (model plus whatever else varies inside the section, e.g. backend and length)."""
    groups: dict[tuple[str, ...], list[Cell]] = {}
    for cell in sorted(found, key=lambda c: _sort_key(c.key)):
        groups.setdefault(tuple(cell.key.get(k, "") for k in SECTION_KEYS), []).append(cell)
    out = []
    for section, members in groups.items():
        keys = pd.DataFrame([{k: v for k, v in c.key.items() if k not in SECTION_KEYS} for c in members])
        shown = _varying(keys.drop(columns=["metric", "source"]), always=("model",))
        title = cell_label(dict(zip(SECTION_KEYS, section, strict=True)), SECTION_KEYS)
        out.append((title, [(cell_label(c.key, shown), c) for c in members]))
    return out


@dataclasses.dataclass
class Cell:
    """One measured cell: its key, its samples (ok rows only) and the statuses of its failed rows."""

    key: dict[str, str]
    samples: np.ndarray
    failures: dict[str, str]  # status -> first reason
    first_run: float | None = None  # the earliest repeat, for the slow-first-run warning
    # Not part of the key: a failed cell's status row has no unit, yet must match the ok cell.
    unit: str = ""

    @property
    def metric(self) -> str:
        return self.key["metric"]


def cells(rows: pd.DataFrame, keys: Sequence[str] = CELL_KEYS) -> dict[tuple[str, ...], Cell]:
    """Group rows into cells; see :data:`PER_REPEAT_METRICS` for what counts as a sample."""
    if rows.empty:
        return {}
    text = _key_text(rows, keys)
    seeds = _key_text(rows, ("seed",))["seed"]
    found: dict[tuple[str, ...], Cell] = {}
    grouper = list(keys) if len(keys) > 1 else keys[0]  # a one-element list changes key types in pandas 4
    for key, index in text.groupby(grouper, sort=True, dropna=False).groups.items():
        group = rows.loc[index]
        key = key if isinstance(key, tuple) else (key,)  # one key column gives scalar group names
        key_map = dict(zip(keys, key, strict=True))
        ok = group[(group["status"] == "ok") & np.isfinite(group["value"].astype(float))]
        ordered = ok.assign(_order=ok["index"].astype("Float64").fillna(-1.0)).sort_values("_order", kind="stable")
        if key_map.get("metric") in PER_REPEAT_METRICS or not (seeds.loc[ordered.index] != "").any():
            samples = ordered["value"].to_numpy(float)
        else:
            # One sample per seed: its final value (curves end at the best/last evaluation).
            samples = ordered.groupby(seeds.loc[ordered.index], sort=True)["value"].last().to_numpy(float)
        failed = group[group["status"] != "ok"]
        failures = {
            str(s): ("" if pd.isna(r) else str(r)) for s, r in zip(failed["status"], failed["reason"], strict=True)
        }
        first = float(ordered["value"].iloc[0]) if len(ordered) and key_map.get("metric") in PER_REPEAT_METRICS else None
        units = group["unit"].dropna()
        found[key] = Cell(key_map, samples, failures, first, str(units.iloc[0]) if len(units) else "")
    return found


# ---------------------------------------------------------------------------------------------
# Number formatting
# ---------------------------------------------------------------------------------------------


def _seconds(x: float) -> str:
    scales = ((1.0, "s"), (1e-3, "ms"), (1e-6, "µs"), (1e-9, "ns"))
    for scale, name in scales:
        if abs(x) >= scale:
            return f"{x / scale:.3g} {name}"
    return f"{x:.3g} s"


def _bytes(x: float) -> str:
    for power, name in ((3, "GiB"), (2, "MiB"), (1, "KiB")):
        if abs(x) >= 1024**power:
            return f"{x / 1024**power:.3g} {name}"
    return f"{x:.0f} B"


UNIT_FORMATS: dict[str, Callable[[float], str]] = {
    "s": _seconds,
    "bytes": _bytes,
    "bytes/s": lambda x: _bytes(x) + "/s",
    "tokens/s": lambda x: f"{x:.3g} tok/s",
}


def format_value(value: float | None, unit: str = "") -> str:
    """A human-readable value in its unit (seconds scaled to ms/µs, bytes to KiB/MiB/GiB)."""
    if value is None or not np.isfinite(value):
        return "-"
    return UNIT_FORMATS.get(unit, lambda x: f"{x:.4g}" + (f" {unit}" if unit and unit != "1" else ""))(float(value))


# ---------------------------------------------------------------------------------------------
# Published numbers (MODELS.md section 7), shown beside reproductions
# ---------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Reference:
    """Published results of one task: the metric, how measured values map to the paper's units
    (``display = value * scale``), and per model (mean, std) in those units (std None if unpublished)."""

    metric: str
    scale: float
    unit: str
    values: Mapping[str, tuple[float, float | None]]
    source: str


def _uea(*pairs: tuple[str, float, float]) -> dict[str, tuple[float, float]]:
    return {model: (mean, std) for model, mean, std in pairs}


_UEA_TABLE = {  # model: per dataset (mean, std), order EigenWorms/SCP1/SCP2/Ethanol/Heartbeat/Motor
    "dlinoss": ((93.9, 3.2), (88.9, 3.0), (58.6, 2.3), (29.9, 0.6), (75.8, 4.9), (61.1, 2.0)),
    "linoss-im": ((95.0, 4.4), (87.8, 2.6), (58.2, 6.9), (29.9, 0.6), (75.8, 3.7), (60.0, 7.5)),
    "linoss-imex": ((80.0, 2.7), (87.5, 4.0), (58.9, 8.1), (29.9, 1.0), (75.5, 4.3), (57.9, 5.3)),
    "s5": ((81.1, 3.7), (89.9, 4.6), (50.5, 2.6), (24.1, 4.3), (77.7, 5.5), (47.7, 5.5)),
    "lru": ((87.8, 2.8), (82.6, 3.4), (51.2, 3.6), (21.5, 2.1), (78.4, 6.7), (48.4, 5.0)),
    "mamba": ((70.9, 15.8), (80.7, 1.4), (48.2, 3.9), (27.9, 4.5), (76.2, 3.8), (47.7, 4.5)),
    "s6": ((85.0, 16.1), (82.8, 2.7), (49.9, 9.4), (26.4, 6.4), (76.5, 8.3), (51.3, 4.7)),
}
_UEA_DATASETS = (
    "EigenWorms", "SelfRegulationSCP1", "SelfRegulationSCP2", "EthanolConcentration", "Heartbeat", "MotorImagery",
)  # fmt: skip
from dlbench.tasks.weather import PUBLISHED as _WEATHER  # noqa: E402  (numpy/pandas only, no JAX)

_PAPERS = "D-LinOSS (arXiv 2505.12171) and LinOSS (arXiv 2410.03943) tables; MODELS.md section 7"

PUBLISHED: dict[str, Reference] = {
    **{
        dataset: Reference(
            "test_accuracy", 100.0, "%", {m: scores[i] for m, scores in _UEA_TABLE.items()}, _PAPERS
        )
        for i, dataset in enumerate(_UEA_DATASETS)
    },
    "PPG-DaLiA": Reference(
        "test_mse",
        100.0,
        "1e-2",
        {
            "dlinoss": (6.16, 0.73), "linoss-im": (6.4, 0.23), "linoss-imex": (7.5, 0.46), "mamba": (10.65, 2.20),
            "lru": (12.17, 0.49), "s5": (12.63, 1.25), "s6": (12.88, 2.05),
        },  # fmt: skip
        _PAPERS,
    ),
    # The decay task's numbers are read off the D-LinOSS paper's text (~), without a std.
    "decay": Reference("test_rmse", 1000.0, "1e-3", {"dlinoss": (0.8, None), "linoss-im": (8.0, None)}, _PAPERS),
    # Weather forecasting: the numbers and their sources live beside the loader (dlbench/tasks/weather.py).
    "weather": Reference(**_WEATHER),
}
# Other spellings of task names found in suites and user files -> the key of PUBLISHED.
TASK_ALIASES = {
    "ppg": "PPG-DaLiA", "ppg-dalia": "PPG-DaLiA", "ppg_dalia": "PPG-DaLiA", "scp1": "SelfRegulationSCP1",
    "scp2": "SelfRegulationSCP2", "ethanol": "EthanolConcentration", "motor": "MotorImagery",
    **{name.casefold(): name for name in PUBLISHED},
}  # fmt: skip
# How a metric is displayed when no published reference fixes the scale.
DISPLAY_SCALES: dict[str, tuple[float, str]] = {"test_accuracy": (100.0, "%"), "val_accuracy": (100.0, "%")}


def published(task: str, model: str, metric: str) -> tuple[Reference | None, tuple[float, float | None] | None]:
    """The published reference for ``task`` (if its metric is ``metric``) and the model's entry."""
    reference = PUBLISHED.get(TASK_ALIASES.get(task.casefold(), task))
    if reference is None or reference.metric != metric:
        return None, None
    return reference, reference.values.get(model)


# ---------------------------------------------------------------------------------------------
# Leaderboards
# ---------------------------------------------------------------------------------------------

TRAINING_COLUMNS = (
    "task", "metric", "unit", "rank", "model", "mean", "std", "seeds", "failed", "params",
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
    value), rank, seeds, failed seeds, parameters, time per 1,000 steps, peak memory and the published
    number (MODELS.md section 7) with the difference, in the paper's units. Columns: ``TRAINING_COLUMNS``."""
    rows = rows[_is_training(rows)]
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
            if not len(samples) and not seeds_failed:
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
            }
        )
    frame = pd.DataFrame(out, columns=[c for c in THROUGHPUT_COLUMNS if c not in ("relative_to_fastest", "fastest")])
    for column in ("batch", "hidden", "state", "seq_len"):
        frame[column] = pd.to_numeric(frame[column], errors="coerce").astype("Int64")
    return frame


def throughput_leaderboard(rows: pd.DataFrame) -> pd.DataFrame:
    """Profile cells with median tokens/s per length and backend; ``fastest`` marks the fastest backend
    of each model at each length, ``relative_to_fastest`` is tokens/s over that backend's. Columns:
    ``THROUGHPUT_COLUMNS``."""
    frame = _throughput_frame(rows)
    if frame.empty:
        return pd.DataFrame(columns=list(THROUGHPUT_COLUMNS))
    group = ["target", "mode", "dtype", "batch", "hidden", "state", "seq_len", "model"]
    best = frame.groupby(group, dropna=False)["tokens_per_s"].transform("max")
    frame["relative_to_fastest"] = frame["tokens_per_s"] / best
    frame["fastest"] = frame["tokens_per_s"].notna() & (frame["tokens_per_s"] == best)
    frame = frame.sort_values(["target", "mode", "dtype", "batch", "hidden", "state", "seq_len", "model", "backend"])
    return frame[list(THROUGHPUT_COLUMNS)].reset_index(drop=True)


def leaderboards(rows: pd.DataFrame, kind: str = "auto", metric: str | None = None) -> dict[str, pd.DataFrame]:
    """The leaderboards of ``kind`` (``auto``: every kind present in ``rows``), keyed by kind."""
    check_choice("leaderboard kind", kind, LEADERBOARD_KINDS)
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
                str(r.rank) + (f" ({r.failed} failed)" if r.failed else ""),
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
        header = ["length", "model", "backend", "tokens/s", "x fastest", "median wall", "repeats", "peak memory", "status"]
        body = []
        for r in frame.itertuples():
            speed = f"{r.tokens_per_s:,.0f}" if np.isfinite(r.tokens_per_s) else "-"
            if r.fastest:  # the fastest backend of this model at this length
                speed = rf"\textbf{{{speed}}}" if latex else f"**{speed}**"
            body.append(
                [
                    "-" if pd.isna(r.seq_len) else f"{r.seq_len:,}", r.model, r.backend, speed,
                    f"{r.relative_to_fastest:.2f}" if np.isfinite(r.relative_to_fastest) else "-",
                    format_value(r.wall_s_median, "s"), str(r.repeats), format_value(r.peak_bytes, "bytes"), r.status,
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
    "(MODELS.md section 7); rank 1 is best.",
    "throughput": "tokens/s = batch × length / wall time, median over timed repeats; **bold** = fastest "
    "backend of that model at that length; x fastest = tokens/s relative to it.",
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
        return board.to_csv(index=False, float_format="%.10g")
    writers = {"md": _markdown, "latex": _latex}
    return "\n".join(writers[fmt](DISPLAYS[k](b, fmt == "latex"), NOTES[k]) for k, b in boards.items())


# ---------------------------------------------------------------------------------------------
# Comparison of two runs
# ---------------------------------------------------------------------------------------------


class GateFailed(DlbenchError):
    """A ``--fail-if`` gate of ``dlbench compare`` failed: exit code 1 (2 stays "bad input")."""

    exit_code = 1


STATISTICS: dict[str, Callable[[np.ndarray], float]] = {"median": np.median, "mean": np.mean}


@dataclasses.dataclass(frozen=True)
class Gate:
    """Fail when NEW's ``statistic`` is worse than BASE's by more than ``threshold`` (a fraction)
    and the difference is significant."""

    statistic: str
    threshold: float

    @classmethod
    def parse(cls, text: str) -> Gate:
        """Parse ``median:5%`` (or ``median:0.05``)."""
        name, _, amount = text.partition(":")
        check_choice("gate statistic", name, STATISTICS)
        try:
            threshold = float(amount[:-1]) / 100 if amount.endswith("%") else float(amount)
        except ValueError:
            raise DlbenchError(f"bad --fail-if {text!r}; expected STAT:PERCENT such as median:5%") from None
        if not threshold >= 0:
            raise DlbenchError(f"bad --fail-if {text!r}; the threshold must be >= 0")
        return cls(name, threshold)

    def __str__(self) -> str:
        return f"{self.statistic}:{100 * self.threshold:g}%"


def _exact_u_pvalue(u: float, n1: int, n2: int) -> float:
    """Two-sided exact p-value of U (no ties): counts of rank arrangements by dynamic programming."""
    # counts[i][j] is the distribution of U for sizes (i, j); f(i,j,u) = f(i-1,j,u-j) + f(i,j-1,u).
    counts = [[None] * (n2 + 1) for _ in range(n1 + 1)]
    for i in range(n1 + 1):
        for j in range(n2 + 1):
            if i == 0 or j == 0:
                counts[i][j] = np.ones(1)
                continue
            dist = np.zeros(i * j + 1)
            dist[j : j + len(counts[i - 1][j])] += counts[i - 1][j]
            dist[: len(counts[i][j - 1])] += counts[i][j - 1]
            counts[i][j] = dist
    dist = counts[n1][n2] / counts[n1][n2].sum()
    low = min(u, n1 * n2 - u)
    return float(min(1.0, 2 * dist[: int(math.floor(low)) + 1].sum()))


def mann_whitney_u(x: Sequence[float], y: Sequence[float]) -> float:
    """Two-sided Mann-Whitney U p-value: exact for small samples without ties, else the normal
    approximation with tie and continuity corrections (same conventions as scipy.stats.mannwhitneyu)."""
    x, y = np.asarray(x, float), np.asarray(y, float)
    n1, n2 = len(x), len(y)
    if n1 == 0 or n2 == 0:
        return math.nan
    combined = np.concatenate([x, y])
    ranks = pd.Series(combined).rank(method="average").to_numpy()
    u = ranks[:n1].sum() - n1 * (n1 + 1) / 2
    _, tie_counts = np.unique(combined, return_counts=True)
    ties = bool((tie_counts > 1).any())
    if not ties and max(n1, n2) <= 8:  # scipy's rule for method='auto'
        return _exact_u_pvalue(u, n1, n2)
    n = n1 + n2
    variance = n1 * n2 / 12 * ((n + 1) - ((tie_counts**3 - tie_counts).sum()) / (n * (n - 1)))
    if variance <= 0:
        return 1.0  # every value equal: no evidence of a difference
    z = (abs(u - n1 * n2 / 2) - 0.5) / math.sqrt(variance)
    return float(min(1.0, math.erfc(max(z, 0.0) / math.sqrt(2))))


def significance(base: np.ndarray, new: np.ndarray) -> float:
    """Two-sided Mann-Whitney U p-value (scipy if installed, else :func:`mann_whitney_u`)."""
    if len(base) == 0 or len(new) == 0:
        return math.nan
    if np.array_equal(np.sort(base), np.sort(new)):
        return 1.0
    try:
        from scipy.stats import mannwhitneyu
    except ImportError:
        return mann_whitney_u(base, new)
    return float(mannwhitneyu(new, base, alternative="two-sided").pvalue)


def bootstrap_ratio_ci(
    base: np.ndarray, new: np.ndarray, statistic: str = "median", level: float = 0.95, n_boot: int = 2000
) -> tuple[float, float]:
    """Percentile bootstrap CI of stat(new)/stat(base), resampling each run independently (fixed seed,
    so the same inputs always give the same interval)."""
    if len(base) == 0 or len(new) == 0:
        return math.nan, math.nan
    rng = np.random.default_rng(0)
    stat = STATISTICS[statistic]
    b = stat(rng.choice(base, size=(n_boot, len(base))), axis=1)
    n = stat(rng.choice(new, size=(n_boot, len(new))), axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        ratios = n / b
    tail = 100 * (1 - level) / 2
    low, high = np.nanpercentile(ratios, [tail, 100 - tail])
    return float(low), float(high)


COMPARE_COLUMNS = (
    "section", "cell", "metric", "unit", "n_base", "n_new", "base", "new", "ratio", "ci_low", "ci_high", "p_value",
    "significant", "verdict", "gate_failed",
)  # fmt: skip


def compare(
    base: pd.DataFrame,
    new: pd.DataFrame,
    *,
    gate: Gate | None = None,
    alpha: float = 0.01,
    metrics: Sequence[str] | None = None,
) -> tuple[pd.DataFrame, dict[str, int]]:
    """Match cells of two runs and compare each: ratio NEW/BASE of the gate's statistic (median by
    default) with a (1 - alpha) bootstrap CI, and a Mann-Whitney U p-value on the raw samples.

    A cell fails the gate when it got worse by more than the threshold (in the metric's direction,
    see :data:`HIGHER_IS_BETTER`) and p < alpha, or when it now fails (oom, timeout...) and did not
    before. Returns the comparison (``COMPARE_COLUMNS``) and counts of unmatched cells.
    """
    statistic = gate.statistic if gate else "median"
    stat = STATISTICS[statistic]
    if metrics:
        base, new = base[base["metric"].isin(metrics)], new[new["metric"].isin(metrics)]
    base_cells, new_cells = cells(base), cells(new)
    _add_failed_counterparts(base_cells, new_cells)
    _add_failed_counterparts(new_cells, base_cells)
    shared = sorted(set(base_cells) & set(new_cells))
    if not shared:
        raise DlbenchError("no cells in common between BASE and NEW (different suites, models or sizes?)")
    labels = {id(cell): (title, label) for title, members in sections(base_cells[k] for k in shared) for label, cell in members}
    out = []
    for key in sorted(shared, key=lambda k: _sort_key(base_cells[k].key)):
        b, n = base_cells[key], new_cells[key]
        metric = b.metric
        row: dict[str, Any] = {
            "section": labels[id(b)][0],
            "cell": labels[id(b)][1],
            "metric": metric,
            "unit": b.unit,
            "n_base": len(b.samples),
            "n_new": len(n.samples),
            "base": stat(b.samples) if len(b.samples) else math.nan,
            "new": stat(n.samples) if len(n.samples) else math.nan,
        }
        with np.errstate(divide="ignore", invalid="ignore"):
            row["ratio"] = row["new"] / row["base"] if row["base"] else math.nan
        row["ci_low"], row["ci_high"] = bootstrap_ratio_ci(b.samples, n.samples, statistic, 1 - alpha)
        row["p_value"] = significance(b.samples, n.samples)
        row["significant"] = bool(row["p_value"] < alpha)
        worse = row["ratio"] < 1 if higher_is_better(metric) else row["ratio"] > 1
        row["gate_failed"] = False
        if len(b.samples) and not len(n.samples):
            row["verdict"] = "now " + "/".join(n.failures or {"missing": ""})
            row["gate_failed"] = gate is not None
        elif not len(b.samples):
            row["verdict"] = "was " + "/".join(b.failures or {"missing": ""})
        elif metric in NEUTRAL_METRICS:
            row["verdict"] = "same" if row["ratio"] == 1 else "changed"
        elif not row["significant"]:
            row["verdict"] = "n.s."
        else:
            row["verdict"] = "worse" if worse else "better"
            if gate is not None and worse:
                change = 1 - row["ratio"] if higher_is_better(metric) else row["ratio"] - 1
                row["gate_failed"] = bool(change > gate.threshold)
        out.append(row)
    unmatched = {"only_base": len(set(base_cells) - set(new_cells)), "only_new": len(set(new_cells) - set(base_cells))}
    return pd.DataFrame(out, columns=list(COMPARE_COLUMNS)), unmatched


def _point(cell: Cell) -> tuple[str, ...]:
    """A cell's measurement point: its key without the metric (and the metric's source)."""
    return tuple(v for k, v in cell.key.items() if k not in ("metric", "source"))


def _add_failed_counterparts(measured: dict[tuple[str, ...], Cell], other: dict[tuple[str, ...], Cell]) -> None:
    """Give ``other`` a failed cell for each cell of ``measured`` whose measurement point failed there.

    A failed point writes one status row (a sweep's ``cell_s``, a run's ``test_loss``), not the
    metrics it measures when it works; without this, those metrics would look merely unmatched
    instead of "now oom" / "was timeout".
    """
    failed: dict[tuple[str, ...], dict[str, str]] = {}
    for cell in other.values():
        if cell.failures and not len(cell.samples):
            failed.setdefault(_point(cell), {}).update(cell.failures)
    for key, cell in measured.items():
        if key not in other and _point(cell) in failed:
            other[key] = Cell(cell.key, np.array([]), failed[_point(cell)], unit=cell.unit)


def compare_tables(result: pd.DataFrame, statistic: str = "median", alpha: float = 0.01) -> list[Table]:
    """Rich tables of :func:`compare`'s result, one per section; failing cells in red, not significant
    differences (n.s.) dimmed."""
    level = f"{100 * (1 - alpha):g}%"
    tables = []
    for section, part in result.groupby("section", sort=False):
        table = Table(
            title=f"{section}: NEW vs BASE", title_justify="left",
            caption=f"ratio of {statistic}s, {level} bootstrap CI, Mann-Whitney U p; n.s. = not significant at {alpha:g}",
        )  # fmt: skip
        for column in ("cell", "metric", "base", "new", "ratio", f"{level} CI", "p", "n", "verdict"):
            table.add_column(column, justify="left" if column in ("cell", "metric", "verdict") else "right")
        for r in part.itertuples():
            style = "bold red" if r.gate_failed else ("dim" if not r.significant else "")
            table.add_row(
                r.cell, r.metric, format_value(r.base, r.unit), format_value(r.new, r.unit),
                f"{r.ratio:.3f}" if np.isfinite(r.ratio) else "-",
                f"[{r.ci_low:.3f}, {r.ci_high:.3f}]" if np.isfinite(r.ci_low) else "-",
                f"{r.p_value:.2g}" if np.isfinite(r.p_value) else "-", f"{r.n_base}/{r.n_new}",
                r.verdict + (" FAIL" if r.gate_failed else ""), style=style,
            )  # fmt: skip
        tables.append(table)
    return tables


def compare_runs(
    base_paths: Sequence[str | Path],
    new_paths: Sequence[str | Path],
    *,
    fail_if: str | None = None,
    alpha: float = 0.01,
    metrics: Sequence[str] | None = None,
    console: Console | None = None,
) -> pd.DataFrame:
    """Read, compare and print two runs; raise :class:`GateFailed` (exit 1) naming the failing cells."""
    from dlbench.results import read_rows

    if not 0 < alpha < 1:
        raise DlbenchError(f"--alpha must be in (0, 1), got {alpha}")
    gate = Gate.parse(fail_if) if fail_if else None
    result, unmatched = compare(read_rows(base_paths), read_rows(new_paths), gate=gate, alpha=alpha, metrics=metrics)
    console = console or Console()
    for table in compare_tables(result, gate.statistic if gate else "median", alpha):
        console.print(table)
    if unmatched["only_base"] or unmatched["only_new"]:
        console.print(
            f"[yellow]warning:[/] unmatched cells: {unmatched['only_base']} only in BASE, "
            f"{unmatched['only_new']} only in NEW"
        )
    failed = result[result["gate_failed"]]
    if len(failed):
        named = [f"{r.section}: {r.cell} {r.metric} ({r.verdict}" + (f", x{r.ratio:.3g})" if math.isfinite(r.ratio) else ")")
                 for r in failed.itertuples()]
        more = f"; and {len(named) - 10} more (see the table)" if len(named) > 10 else ""
        raise GateFailed(f"gate {gate} failed for {len(failed)} cell(s): {'; '.join(named[:10])}{more}")
    return result


# ---------------------------------------------------------------------------------------------
# Console summary (hyperfine-like)
# ---------------------------------------------------------------------------------------------

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


# ---------------------------------------------------------------------------------------------
# Plots (matplotlib Figure objects: no pyplot state, Agg canvas, safe in any thread)
# ---------------------------------------------------------------------------------------------

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
    frame = _throughput_frame(rows)
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
    return _line_plot(
        frame, "value", "peak memory (MiB)", f"peak memory ({_subtitle(rows)})", path,
        line_keys=("model", "backend", "source"), yscale=1 / 2**20,
    )  # fmt: skip


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
    for ax, (task, metric) in zip(axes, panels, strict=True):
        part = rows[(rows["task"] == task) & (rows["metric"] == metric)]
        for model, curve in part.groupby("model", sort=True):
            per_step = curve.groupby("index")["value"].agg(["mean", "min", "max"]).sort_index()
            steps = per_step.index.to_numpy(float)
            ax.plot(steps, per_step["mean"], color=colours[model], label=f"{model} ({curve['seed'].nunique()} seeds)")
            ax.fill_between(steps, per_step["min"], per_step["max"], color=colours[model], alpha=0.2, lw=0)
        unit = str(_first_valid(part["unit"]) or "")  # pandas reads a column of "1" as integers
        ax.set_xlabel("training step")
        ax.set_ylabel(f"{metric.replace('_', ' ')}" + (f" ({unit})" if unit and unit != "1" else ""))
        if not higher_is_better(metric) and (part["value"] > 0).all():
            ax.set_yscale("log")  # losses span decades
        ax.set_title(f"{task}: {metric}")
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize="small")
    _save(figure, path)
    return figure


PLOTS: dict[str, Callable[[pd.DataFrame, str | Path | None], Any]] = {
    "throughput": plot_throughput,
    "memory": plot_memory,
    "training": plot_training,
}
PLOT_KINDS = ("auto", *PLOTS)


PLOT_SUFFIXES = (".png", ".pdf", ".svg")


def plot_results(paths: Sequence[str | Path], kind: str = "auto", out: str | Path | None = None) -> Path:
    """Read rows and draw one plot of ``kind`` (``auto``: throughput for profile rows, else training)
    to ``out`` (default: ``KIND.png`` beside the results). Returns the PNG's path."""
    from dlbench.results import read_rows

    check_choice("plot kind", kind, PLOT_KINDS)
    if out is not None:
        check_choice("plot file type", Path(out).suffix.lower() or "(none)", PLOT_SUFFIXES)
    rows = read_rows(paths)
    if kind == "auto":
        kind = "throughput" if _is_profile(rows).any() else "training"
    if out is None:
        first = Path(paths[0])
        out = first / f"{kind}.png" if first.is_dir() else first.with_name(f"{first.stem}-{kind}.png")
    PLOTS[kind](rows, out)
    return Path(out)
