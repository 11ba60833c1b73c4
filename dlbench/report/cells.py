"""The vocabulary every view shares: which columns identify a cell, how rows group into cells,
which direction is better, and how numbers are printed.

Derived quantities (documented in ``results/README.md``):
- tokens/s of one timed repeat = batch * seq_len / wall_s; a cell's throughput is the median of them.
- a training cell's score is the mean and *population* std (ddof=0, as the papers report) over seeds
  of each seed's final value of the metric.
- time per 1,000 steps = 1000 * median(step_time_s) over every recorded step of every seed.

Nothing in ``dlbench.report`` imports JAX, Flax or a layer: it only reads rows.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable, Iterable, Mapping, Sequence

import numpy as np
import pandas as pd

from dlbench.errors import DlbenchError
from dlbench.rundir.manifest import run_outcomes
from dlbench.rundir.vocabulary import FAILED

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
FAILED_STATUSES = FAILED
# Training metrics in preference order for the leaderboard when --metric is not given.
LEADERBOARD_METRICS = ("test_accuracy", "test_mse", "test_rmse", "test_mae", "val_accuracy", "val_loss", "train_loss")
# Short labels for cell keys in tables, legends and messages.
KEY_LABELS: dict[str, str] = {"seq_len": "L={}", "batch": "B={}", "hidden": "H={}", "state": "P={}", "blocks": "blocks={}", "devices": "devices={}"}


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


def unfinished_runs(rows: pd.DataFrame) -> dict[tuple[str, str], list[int]]:
    """(task, model) -> the seeds of training runs that have rows but neither a final metric nor a
    failure (:func:`dlbench.rundir.run_outcomes`, the rule ``--resume`` and ``merge`` use): a killed
    writer, or a run still going. Views name them, so that a missing seed is never silent."""
    training = rows[~rows["task"].isin(["scan", "bandwidth"]) & rows["seed"].notna()]
    text = training[["task", "model", "seed", "metric", "status"]].astype("string").fillna("")
    out: dict[tuple[str, str], list[int]] = {}
    for key, outcome in run_outcomes(text.to_dict("records")).items():
        if outcome is None:
            task, model, seed = key.rsplit("/", 2)
            out.setdefault((task, model), []).append(int(seed))
    return out


def check_unmixed(rows: pd.DataFrame) -> pd.DataFrame:
    """``rows`` unchanged, or :class:`DlbenchError` when a view would pool what must stay apart.

    Results are pooled per (task, model) over seeds for training and per cell for sweeps. That is
    only sound when every pooled row comes from one setting (one ``config_hash``) and each seed, or
    each cell, from one run: two runs of the same seed, or of the same cell, would be averaged as if
    they were more seeds or more repeats. Rows without a config hash (older folders) are compared by
    run id alone.
    """
    if rows.empty:
        return rows
    keys = _key_text(rows, (*CELL_KEYS, "seed", "run_id", "config_hash"))
    problems = []
    training = keys[~keys["task"].isin(["scan", "bandwidth"])]
    for (task, model), group in training.groupby(["task", "model"], sort=True):
        hashes = sorted(set(group["config_hash"]) - {""})
        if len(hashes) > 1:
            problems.append(f"{task}/{model} has {len(hashes)} different settings (config_hash {', '.join(hashes)})")
        for seed, runs in group.groupby("seed", sort=True)["run_id"]:
            ids = sorted(set(runs) - {""})
            if len(ids) > 1:
                problems.append(f"{task}/{model} seed {seed} is in {len(ids)} runs ({', '.join(ids)})")
    sweep = keys[keys["task"] == "scan"]
    cell_keys = [k for k in CELL_KEYS if k not in ("metric", "source")]
    for cell, group in sweep.groupby(cell_keys, sort=True):
        ids = sorted(set(group["run_id"]) - {""})
        hashes = sorted(set(group["config_hash"]) - {""})
        if len(ids) > 1 or len(hashes) > 1:
            label = " ".join(f"{k}={v}" for k, v in zip(cell_keys, cell, strict=True) if v)
            problems.append(f"cell {label} is in {len(ids)} runs ({', '.join(ids)})")
    if problems:
        more = f" (and {len(problems) - 3} more)" if len(problems) > 3 else ""
        raise DlbenchError(f"these rows would pool different runs: {'; '.join(problems[:3])}{more}; "
                           "read each run on its own, or `dlbench merge` the shards of one run")
    return rows


def _varying(keys: pd.DataFrame, always: Iterable[str] = ()) -> list[str]:
    """Key columns whose value differs between rows (what a legend or a cell label must show)."""
    always = list(always)
    return always + [c for c in keys.columns if c not in always and keys[c].nunique() > 1]


def layer_options_text(text: str) -> str:
    """``layer_options`` for people: the JSON object as ``key=value`` pairs, without the backend keys
    (``scan``, ``resolved_scan``), which the backend label shows. Non-JSON text is returned as is."""
    if not text.startswith("{"):
        return text
    try:
        options = json.loads(text)
    except ValueError:
        return text
    return " ".join(f"{k}={v}" for k, v in sorted(options.items()) if k not in ("scan", "resolved_scan"))


def resolved_backend(key: Mapping[str, str]) -> str:
    """The backend a cell ran: ``auto->blocked`` where ``auto`` resolved to a concrete scan (the
    ``resolved_scan`` the layer records in ``layer_options``), else the backend as written."""
    backend = key.get("backend", "")
    options = key.get("layer_options", "")
    if options.startswith("{"):
        try:
            resolved = json.loads(options).get("resolved_scan", "")
        except ValueError:
            resolved = ""
        if resolved and resolved != backend:
            return f"{backend}->{resolved}" if backend else str(resolved)
    return backend


def cell_label(key: Mapping[str, str], shown: Sequence[str]) -> str:
    """A compact name for a cell such as ``dlinoss chunked L=50000 fwd`` (layer options as key=value,
    ``auto`` with the backend it resolved to)."""
    display = {**key}
    if "layer_options" in key:
        display["layer_options"] = layer_options_text(key["layer_options"])
    if "backend" in key:
        display["backend"] = resolved_backend(key)
    parts = [KEY_LABELS.get(k, "{}").format(display[k]) for k in shown if display.get(k, "")]
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
        if "backend" in keys:  # `auto` resolving to different scans per model is worth a label
            keys["backend"] = [resolved_backend(c.key) for c in members]
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


def _scaled(x: float, scales: tuple[tuple[float, str], ...], smallest: str) -> str:
    """``x`` in the largest unit of ``scales`` (descending) it reaches, to 3 significant figures.

    A value that would print as 1000 or more of a unit (1,020 MiB) moves up one (0.996 GiB): ``.3g``
    would write it as ``1.02e+03``.
    """
    for i, (scale, name) in enumerate(scales):
        if abs(x) >= scale:
            if i > 0 and abs(x) / scale >= 999.5:
                scale, name = scales[i - 1]
            return f"{x / scale:.3g} {name}"
    return smallest.format(x)


def _seconds(x: float) -> str:
    return _scaled(x, ((1.0, "s"), (1e-3, "ms"), (1e-6, "µs"), (1e-9, "ns")), "{:.3g} s")


def _bytes(x: float) -> str:
    return _scaled(x, ((1024.0**4, "TiB"), (1024.0**3, "GiB"), (1024.0**2, "MiB"), (1024.0, "KiB")), "{:.0f} B")


UNIT_FORMATS: dict[str, Callable[[float], str]] = {
    "s": _seconds,
    "bytes": _bytes,
    "bytes/s": lambda x: f"{x / 1e9:.3g} GB/s",  # decimal, as `profile bandwidth` and the sweep print it
    "tokens/s": lambda x: f"{x:.3g} tok/s",
}


# Units printed without a suffix: dimensionless numbers (the column or metric name says what they are).
BARE_UNITS = frozenset({"", "1", "fraction", "count"})


def format_value(value: float | None, unit: str = "") -> str:
    """A human-readable value in its unit (seconds scaled to ms/µs, bytes to KiB/MiB/GiB)."""
    if value is None or not np.isfinite(value):
        return "-"
    return UNIT_FORMATS.get(unit, lambda x: f"{x:.4g}" + (f" {unit}" if unit not in BARE_UNITS else ""))(float(value))


