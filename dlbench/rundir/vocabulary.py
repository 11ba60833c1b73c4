"""The whole row vocabulary in one place: columns, metrics with their units, statuses, and what ends a run.

Everything that writes or reads ``rows.csv`` takes its names from here; ``results/README.md`` is
generated from these tables (:func:`readme_tables`, ``python -m dlbench.rundir.vocabulary``) and a
test fails when the two drift apart.
"""

from __future__ import annotations

import dataclasses


@dataclasses.dataclass(frozen=True)
class Column:
    """One column of ``rows.csv``."""

    name: str
    type: str  # str, int, float, bool
    group: str  # identity, axes, measurement, outcome, provenance
    meaning: str


@dataclasses.dataclass(frozen=True)
class Metric:
    """One value of the ``metric`` column: the units it may be written in and what it means."""

    name: str
    units: tuple[str, ...]
    written_by: str
    meaning: str
    better: str = ""  # "higher", "lower" or "" (not a quality: never gated)


@dataclasses.dataclass(frozen=True)
class Unit:
    name: str
    meaning: str


def _columns(group: str, *specs: tuple[str, str, str]) -> tuple[Column, ...]:
    return tuple(Column(name, type_, group, meaning) for name, type_, meaning in specs)


GROUPS = {
    "identity": "Identity: what was measured",
    "axes": "Axes: the configuration of the cell",
    "measurement": "Measurement: one number",
    "outcome": "Outcome",
    "provenance": "Provenance: on every row",
}

COLUMN_SPECS: tuple[Column, ...] = (
    _columns(
        "identity",
        ("run_id", "str", "one invocation of a command: UTC start time plus a random suffix (`20250101T120000Z-1a2b3c`); "
                           "the output folder's `manifest.json` has the same id"),
        ("suite", "str", "suite name for `dlbench run SUITE` (`smoke`, `decay`, `scan`, ...); empty for a bare `dlbench profile`"),
        ("config_hash", "str", "12 hex digits of SHA-256 over the run's (or sweep's) resolved settings; the settings "
                               "themselves are in `manifest.json` under this hash; rows with different hashes were made "
                               "with different settings (empty in folders written before the manifest existed)"),
        ("task", "str", "`scan` for profile scan cells, `bandwidth` for the device copy-bandwidth run, else the task name "
                        "(`basicmotions`, `eigenworms`, `ppg`, `decay`, ...)"),
        ("model", "str", "registered model name (`dlinoss`, `linoss-im`, `s5`, `lru`, `s6`, `mamba`, `attention`, ...); see `dlbench models`"),
        ("layer_options", "str", "non-default layer options as a JSON object (e.g. `{\"discretization\": \"IMEX2\"}`), "
                                 "empty for the defaults; profile cells add `\"seq_shard\": true` when sequence-parallel"),
        ("backend", "str", "scan backend: `associative`, `sequential`, `chunked`, `auto` or a layer-specific name"),
        ("target", "str", "profile only: `layer` (the sequence layer alone) or `model` (the whole network)"),
    ),
    _columns(
        "axes",
        ("seq_len", "int", "sequence length L (steps per sequence)"),
        ("batch", "int", "batch size B"),
        ("hidden", "int", "hidden width H"),
        ("state", "int", "state size P"),
        ("blocks", "int", "residual blocks of the network"),
        ("dtype", "str", "compute dtype: `float32`, `bfloat16`, `float64`"),
        ("mode", "str", "`fwd` (forward), `fwdbwd` (forward + gradient w.r.t. parameters and input) or `train` (training rows)"),
        ("seed", "int", "seed of the run or cell"),
        ("devices", "int", "devices the cell or run ran on"),
    ),
    _columns(
        "measurement",
        ("metric", "str", "what `value` is; vocabulary below"),
        ("value", "float", "the number, in `unit`; empty for a failed cell"),
        ("unit", "str", "unit of `value`; vocabulary below"),
        ("index", "int", "repeat number for timing repeats (`wall_s`, 0-based), training step for curves, "
                         "`step_time_s` and `window_s`, eigenvalue number for `eig_*`; empty for one-off values"),
        ("round", "int", "timing round of a profile cell (cells are re-timed in rounds); empty for training rows"),
        ("source", "str", "where a measurement comes from; for memory: `memory_stats` (device allocator peak), "
                          "`rss` (peak resident memory of the process), `memory_analysis` (the compiler's estimate); "
                          "`block{b}` for eigenvalues"),
    ),
    _columns(
        "outcome",
        ("status", "str", "one of the statuses below"),
        ("reason", "str", "for a status other than `ok`: the first line of the error or why the cell was skipped"),
    ),
    _columns(
        "provenance",
        ("dlbench_version", "str", "installed dlbench version"),
        ("jax_version", "str", "jax version"),
        ("jaxlib_version", "str", "jaxlib version"),
        ("flax_version", "str", "flax version"),
        ("optax_version", "str", "optax version"),
        ("platform", "str", "JAX backend: `cpu`, `gpu`/`cuda`, `tpu`"),
        ("device_kind", "str", "`jax.devices()[0].device_kind` (e.g. `cpu`, `NVIDIA H200`)"),
        ("device_count", "int", "number of visible JAX devices"),
        ("git_commit", "str", "commit of the dlbench checkout (empty if not a git checkout)"),
        ("git_dirty", "bool", "whether tracked files had uncommitted changes"),
        ("host", "str", "host name"),
        ("time_utc", "str", "ISO-8601 UTC time the row was written"),
    ),
)
COLUMN_SPECS = tuple(c for group in COLUMN_SPECS for c in group)
COLUMNS: tuple[str, ...] = tuple(c.name for c in COLUMN_SPECS)
IDENTITY = tuple(c.name for c in COLUMN_SPECS if c.group == "identity")
AXES = tuple(c.name for c in COLUMN_SPECS if c.group == "axes")
MEASUREMENT = tuple(c.name for c in COLUMN_SPECS if c.group == "measurement")
OUTCOME = tuple(c.name for c in COLUMN_SPECS if c.group == "outcome")
PROVENANCE = tuple(c.name for c in COLUMN_SPECS if c.group == "provenance")
INTEGER_COLUMNS = tuple(c.name for c in COLUMN_SPECS if c.type == "int")
# The columns without which a file is not a dlbench result table (older layouts lack some others).
REQUIRED = ("model", "metric", "value", "unit", "status")
# Columns added after the first release: a file without them is an older layout, still readable.
ADDED_LATER = ("config_hash", "round")

UNITS: tuple[Unit, ...] = (
    Unit("s", "seconds"),
    Unit("bytes", "bytes"),
    Unit("bytes/s", "bytes per second"),
    Unit("count", "a number of things (parameters)"),
    Unit("fraction", "a ratio in 0..1 (accuracy; papers print it as %)"),
    Unit("1", "dimensionless ratio (bandwidth fraction, relative error, eigenvalue modulus)"),
    Unit("rad", "radians"),
    Unit("step", "a training step number"),
    Unit("nats", "cross-entropy loss (classification), natural log"),
    Unit("target^2", "squared error in the units of the (normalised) regression target: MSE and regression losses"),
    Unit("target", "error in the units of the (normalised) regression target: RMSE, MAE"),
)
UNIT_NAMES = tuple(u.name for u in UNITS)
LOSS_UNITS = ("nats", "target^2")  # classification: cross-entropy in nats; regression: MSE (never "nats")

_P, _R, _T = "profile", "run", "profile, run"
METRICS: tuple[Metric, ...] = (
    # Timing of a profile cell (dlbench.timing / dlbench.profile).
    Metric("wall_s", ("s",), _P, "one timed call of the compiled function, blocked until ready; one row per repeat (`index`) and round (`round`)", "lower"),
    Metric("wall_s_ci_low", ("s",), _P, "lower end of the 95% confidence interval of the cell's median `wall_s`", "lower"),
    Metric("wall_s_ci_high", ("s",), _P, "upper end of the 95% confidence interval of the cell's median `wall_s`", "lower"),
    Metric("lower_s", ("s",), _P, "time of `jax.jit(fn).lower(...)`"),
    Metric("compile_s", ("s",), _T, "time of `.compile()` (profile) / lower + compile of the train step (run); `reason` or `source` say whether the compilation cache was on"),
    Metric("first_call_s", ("s",), _P, "untimed warm-up call, used for the slow-first-run warning"),
    Metric("cell_s", ("s",), _P, "wall time of the whole cell (lower, compile, warm-up, repeats); its row ends a cell"),
    Metric("peak_bytes", ("bytes",), _T, "peak memory; see `source`", "lower"),
    Metric("min_bytes_per_token", ("bytes",), _P, "the layer's minimum memory traffic per token (documented formula per model)"),
    Metric("bandwidth_fraction", ("1",), _P, "achieved bytes/s (`min_bytes_per_token` x tokens/s) over the measured copy bandwidth", "higher"),
    Metric("bandwidth", ("bytes/s",), "profile, profile bandwidth", "device copy bandwidth (task `bandwidth`)", "higher"),
    Metric("max_rel_err", ("1",), _P, "largest relative error of a backend's output against the sequential reference", "lower"),
    # Training (dlbench.train).
    Metric("param_count", ("count",), _R, "trainable parameters (BatchNorm statistics counted as the papers do)"),
    Metric("train_loss", LOSS_UNITS, _R, "mean training loss over the evaluation window ending at step `index`", "lower"),
    Metric("step_time_s", ("s",), _R, "median wall time of one training step over the window ending at step `index`, compile excluded", "lower"),
    Metric("first_window_s", ("s",), _R, "wall time of the first fused window of steps (includes any warm-up the window needs)", "lower"),
    Metric("window_s", ("s",), _R, "wall time of one fused window of training steps; `index` = its last step", "lower"),
    Metric("val_loss", LOSS_UNITS, _R, "validation loss at evaluation step `index`", "lower"),
    Metric("val_accuracy", ("fraction",), _R, "validation accuracy at evaluation step `index`, a fraction 0..1", "higher"),
    Metric("val_mse", ("target^2",), _R, "validation mean squared error on the normalised target", "lower"),
    Metric("val_rmse", ("target",), _R, "validation root mean squared error on the normalised target", "lower"),
    Metric("val_mae", ("target",), _R, "validation mean absolute error on the normalised target", "lower"),
    Metric("best_step", ("step",), _R, "the step whose validation metric was best; the test metrics use its parameters"),
    Metric("checkpoint_step", ("step",), _R, "the step of the parameters saved under `checkpoints/`"),
    Metric("train_time_s", ("s",), _R, "wall time of the training loop (all steps and evaluations, compile excluded)", "lower"),
    Metric("test_loss", LOSS_UNITS, _R, "test loss at the best validation", "lower"),
    Metric("test_accuracy", ("fraction",), _R, "final test accuracy at the best validation, a fraction 0..1 (papers print %); ends a classification run", "higher"),
    Metric("test_mse", ("target^2",), _R, "final test mean squared error on the normalised target", "lower"),
    Metric("test_rmse", ("target",), _R, "final test root mean squared error on the normalised target; ends a regression run", "lower"),
    Metric("test_mae", ("target",), _R, "final test mean absolute error on the normalised target", "lower"),
    # Analysis (dlbench.eigen).
    Metric("eig_abs", ("1",), "eigen", "modulus of eigenvalue `index` of block `source`'s transition"),
    Metric("eig_angle", ("rad",), "eigen", "angle of eigenvalue `index` of block `source`'s transition, in (-pi, pi]"),
)
METRIC_NAMES = tuple(m.name for m in METRICS)
METRIC = {m.name: m for m in METRICS}
HIGHER_IS_BETTER = frozenset(m.name for m in METRICS if m.better == "higher")
LOWER_IS_BETTER = frozenset(m.name for m in METRICS if m.better == "lower")

STATUS_MEANINGS: dict[str, str] = {
    "ok": "measured",
    "oom": "out of memory",
    "timeout": "took longer than allowed (isolated cells are killed)",
    "nan": "non-finite loss or output",
    "error": "crashed; `reason` has the first line of the error",
    "skipped": "not attempted (longer lengths after an OOM or time-out of the same series)",
    "n/a": "not applicable to this model/backend",
}
STATUSES = tuple(STATUS_MEANINGS)
# Statuses that are a failure of the run or cell (skipped and n/a are not failures).
FAILED = ("oom", "timeout", "nan", "error")

# A training run has ended once one of these rows exists for its (task, model, seed), or a row with
# status nan (the loss stopped being finite); train.py writes the final metric last.
FINAL_METRICS = ("test_accuracy", "test_rmse")
# Run outcomes that --resume keeps (a run that ended in error, oom or timeout is trained again).
KEPT_ON_RESUME = ("ok", "nan")
# A profile cell has ended once its cell_s row exists.
CELL_END_METRIC = "cell_s"


def _table(header: tuple[str, ...], rows: list[tuple[str, ...]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def readme_tables() -> dict[str, str]:
    """The generated blocks of ``results/README.md``: name -> Markdown."""
    blocks = {}
    for group, title in GROUPS.items():
        rows = [(f"`{c.name}`", c.type, c.meaning) for c in COLUMN_SPECS if c.group == group]
        blocks[f"columns-{group}"] = f"## {title}\n" + _table(("column", "type", "meaning"), rows)
    blocks["units"] = _table(("unit", "meaning"), [(f"`{u.name}`", u.meaning) for u in UNITS])
    blocks["metrics"] = _table(
        ("metric", "unit", "written by", "better", "meaning"),
        [(f"`{m.name}`", " or ".join(f"`{u}`" for u in m.units), m.written_by, m.better or "-", m.meaning) for m in METRICS],
    )
    blocks["statuses"] = _table(("status", "meaning"), [(f"`{s}`", m) for s, m in STATUS_MEANINGS.items()])
    return blocks


BEGIN = "<!-- generated from dlbench/rundir/vocabulary.py: {name} -->"
END = "<!-- end of generated block -->"


def render_readme(text: str) -> str:
    """``text`` with every generated block replaced by the current vocabulary."""
    for name, block in readme_tables().items():
        begin = BEGIN.format(name=name)
        start = text.index(begin) + len(begin)
        stop = text.index(END, start)
        text = text[:start] + "\n" + block + "\n" + text[stop:]
    return text


if __name__ == "__main__":  # python -m dlbench.rundir.vocabulary results/README.md  (rewrites it in place)
    import sys
    from pathlib import Path

    target = Path(sys.argv[1] if len(sys.argv) > 1 else "results/README.md")
    target.write_text(render_readme(target.read_text()))
    print(f"wrote {target}")
