"""``dlbench profile``: scan throughput against sequence length, and the device's copy bandwidth.

A sweep is a grid of cells (model x backend x mode x length). Each cell builds its workload through
the registry (never a concrete layer) and is timed by THE timing loop (:func:`dlbench.timing.time_function`).

Rounds (as asv does): the sweep visits its cells in ``rounds`` rounds (default 3), each round in a
fresh order drawn from ``seed`` (in a cell's first round the lengths of one series stay ascending, so
an OOM can stop the longer ones), so load that comes and goes spreads over all cells instead of
landing on a few. Rows keep their ``round``; summaries pool the rounds. After the minimum rounds, cells
whose 95% interval of the median (order statistics, :func:`dlbench.timing_policy.median_ci`) is wider
than +-``ci_target`` get more rounds, up to ``max_rounds`` or until the sweep has run ``budget``
seconds; a cell that stopped short says so in the reason of its ``wall_s_ci_low``/``wall_s_ci_high``
rows and in the closing summary.

Compilation is paid once per cell: in-process cells keep their executable across rounds; isolated
cells (the default: own peak RSS, survivable crashes and time-outs, :mod:`dlbench.cells`) share a
persistent compilation cache private to the sweep, so rounds after the first load the executable.
``lower_s``, ``compile_s``, ``peak_bytes`` and ``min_bytes_per_token`` are written in a cell's round 0
only (later rounds would report cache loads); ``first_call_s`` and ``wall_s`` in every round.

Failures are rows too: after an OOM or time-out at length L, longer lengths of that model/backend/mode
are recorded as skipped. Rows are written as they are made, so Ctrl-C keeps every finished one.

Modes: ``fwd``; ``fwdbwd`` (gradient w.r.t. parameters and input of a mean-square loss); ``train``
(always the whole model: forward, cross-entropy loss, backward and the Adam update of
:func:`dlbench.train.make_optimizer`, via :func:`dlbench.train.loss_and_grads`).

One cell (its workload, one measured round, its ``--verify`` check) is :mod:`dlbench.scan_cell`.

Several devices (:mod:`dlbench.distributed`): by default the batch is split over a "data" mesh of
``devices`` (all that divide the batch); with ``seq_shard`` every sequence is split over a "seq" mesh
of all devices instead and the layer runs under ``shard_map`` with the sequence-parallel scan
(:func:`dlbench.layers.kernels.scan.sharded_linear_scan`); a layer whose recurrence does not go through the
shared scans (attention, a layer's own formulation) records ``n/a``. Rows carry ``devices``; the
tokens/s derived from them is the total, per device it is that / devices. A multi-process job runs
exactly ``rounds`` rounds (the processes must make the same calls; interval-driven extra rounds
would depend on each process's own clock).

The resolved backend of every cell (what ``auto`` became) is ``resolved_scan`` in the rows'
``layer_options`` JSON.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import math
import os
import shutil
import sys
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from dlbench.config import check_types
from dlbench.errors import DlbenchError, check_choice
from dlbench.plugins import loaded_plugins
from dlbench.rounds import CellProgress, CellsFailed, LiveTable, PlainLines, check_outcome, interval_rows, run_rounds  # noqa: F401
from dlbench.rundir import ROWS_FILE
from dlbench.scan_cell import Cell, run_cell
from dlbench.timing_policy import STOPPING, TimingPolicy

MODES = ("fwd", "fwdbwd", "train")
DEFAULT_MODES = ("fwd", "fwdbwd")
TARGETS = ("layer", "model")
DTYPES = ("float32", "bfloat16", "float64")
DEFAULT_LENGTHS = tuple(2**k for k in range(10, 17)) + (50_000,)
# What ``profile scan`` accepts (issue: nonsense is refused before anything runs). Lengths beyond
# 2^27 tokens do not fit any single device at H >= 1 in float32 with the state they need.
BOUNDS = {
    "lengths": (1, 2**27), "batch": (1, 2**16), "hidden": (1, 2**16), "state": (1, 2**16),
    "repeats": (1, 10_000), "min_time": (0.0, 3600.0), "warmup": (0, 1000), "timeout": (1e-3, 7 * 86400.0),
    "memory_limit_gb": (1e-3, 2**20), "seed": (0, 2**32 - 1), "rounds": (1, 100), "max_rounds": (1, 1000),
    "ci_target": (1e-4, 1.0), "budget": (0.0, 30 * 86400.0), "devices": (1, 2**16),
}  # fmt: skip
def _field(default, help: str):
    return dataclasses.field(default=default, metadata={"help": help})


@dataclasses.dataclass(frozen=True)
class ScanSweep:
    """One ``profile scan`` sweep; every field is a command-line option (defaults and help derive from
    here, see :func:`option_default` and :func:`option_help`) and a ``[sweep]`` key."""

    models: tuple[str, ...] = _field((), "models to time (empty: all registered)")
    backends: tuple[str, ...] = _field(("auto",), "scan backends (a model that lacks one records n/a)")
    lengths: tuple[int, ...] = _field(DEFAULT_LENGTHS, "sequence lengths, timed in increasing order (duplicates dropped)")
    batch: int = _field(1, "sequences per call")
    hidden: int = _field(128, "hidden width H")
    state: int = _field(64, "state size P")
    modes: tuple[str, ...] = _field(DEFAULT_MODES, "fwd, fwdbwd (gradient w.r.t. parameters and input), train (whole training step)")
    target: str = _field("layer", "time one sequence layer or the whole model (2 blocks, classification head); train is always the model")
    dtype: str = _field("float32", "element type: float32, bfloat16 or float64 (float64 enables jax_enable_x64)")
    repeats: int = _field(5, "at least this many timed calls per cell and round")
    min_time: float = _field(1.0, "and at least this many seconds of timed calls per cell and round")
    warmup: int = _field(1, "untimed calls before timing, per round")
    rounds: int = _field(3, "rounds: each visits every cell once, in a fresh random order")
    max_rounds: int = _field(10, "at most this many rounds for a cell whose interval is still wider than --ci-target")
    ci_target: float = _field(0.05, "wanted half-width of the 95% interval of each cell's median, relative (0.05 = +-5%)")
    budget: float = _field(1800.0, "seconds of sweep after which no extra round starts (the minimum rounds always run)")
    timeout: float = _field(300.0, "seconds one cell may take per round (isolated cells are killed)")
    isolate: bool = _field(True, "run each cell in its own process")
    memory_limit_gb: float | None = _field(None, "address-space limit per isolated cell, in GiB")
    seed: int = _field(0, "parameter, input and round-order seed")
    bandwidth: bool = _field(True, "measure the device's copy bandwidth first (for bandwidth_fraction rows)")
    verify: bool = _field(False, "per cell, max_rel_err against the float64 sequential backend at the same length")
    devices: int | None = _field(None, "devices of the mesh (default: all; data-parallel: all that divide the batch)")
    seq_shard: bool = _field(False, "split each sequence over the devices (sequence-parallel scan) instead of the batch")

    def __post_init__(self):
        from dlbench.plugins import load_models
        from dlbench.registry import model_names

        load_models()  # built-ins, entry points and $DLBENCH_PLUGINS

        check_types(self, "")  # TOML and --set values arrive unchecked
        for name in self.models:
            check_choice("model", name, model_names())
        for mode in self.modes:
            check_choice("mode", mode, MODES)
        check_choice("target", self.target, TARGETS)
        check_choice("dtype", self.dtype, DTYPES)
        if not self.lengths:
            raise DlbenchError("lengths: give at least one sequence length")
        if not self.modes:
            raise DlbenchError("modes: give at least one mode")
        for key, (low, high) in BOUNDS.items():
            values = getattr(self, key)
            for value in values if isinstance(values, tuple) else (values,):
                if value is None:
                    continue
                if not (math.isfinite(value) and low <= value <= high):
                    shown = [f"{int(b):_}" if float(b).is_integer() and abs(b) >= 10_000 else f"{b:g}" for b in (low, high)]
                    raise DlbenchError(f"{key.replace('_', '-')} must be a finite number in [{shown[0]}, {shown[1]}], got {value!r}")
        if self.max_rounds < self.rounds:
            raise DlbenchError(f"max-rounds ({self.max_rounds}) must be >= rounds ({self.rounds})")
        if not self.backends:
            raise DlbenchError("at least one backend is needed")
        valid = known_backends()
        for backend in self.backends:
            if backend not in valid:  # "*" is how "all" reaches here; users type "all"
                check_choice("backend", backend, [b for b in valid if b != "*"] + ["all"])
        if self.seq_shard and (self.target != "layer" or "train" in self.modes):
            raise DlbenchError("--seq-shard times one sequence layer (--target layer): a model's norms and head are not sequence-parallel")
        try:
            self.policy()
        except ValueError as error:
            raise DlbenchError(str(error)) from None

    def policy(self) -> TimingPolicy:
        return TimingPolicy(warmup=self.warmup, repeats=self.repeats, min_time_s=self.min_time, max_repeats=max(1000, self.repeats))

    def model_list(self) -> tuple[str, ...]:
        from dlbench.registry import model_names

        return self.models or model_names()

    def unique_lengths(self) -> tuple[int, ...]:
        return tuple(sorted(set(self.lengths)))

    def duplicate_lengths(self) -> list[int]:
        """Lengths given more than once (each is timed once)."""
        return sorted({n for n in self.lengths if self.lengths.count(n) > 1})

    @classmethod
    def from_mapping(cls, mapping: Mapping[str, Any], where: str = "sweep") -> ScanSweep:
        """Build from a TOML table (THE parser of ``[sweep]``); unknown keys are errors naming the closest valid key."""
        fields = {f.name: f for f in dataclasses.fields(cls)}
        values = {}
        for key, value in mapping.items():
            if key not in fields:
                close = difflib.get_close_matches(key, fields, n=1)
                hint = f" (did you mean {close[0]!r}?)" if close else ""
                raise DlbenchError(f"{where}: unknown key {key!r}{hint}; valid keys: {', '.join(fields)}")
            default = fields[key].default
            if isinstance(default, tuple) and not isinstance(value, (list, tuple)):
                value = [value]
            values[key] = tuple(value) if isinstance(default, tuple) else value
        if values.get("models") == ("all",):
            values["models"] = ()
        if values.get("backends") == ("all",):
            values["backends"] = ALL_BACKENDS
        if "modes" in values:
            values["modes"] = expand_modes(values["modes"])
        try:
            return cls(**values)
        except DlbenchError as error:
            raise DlbenchError(f"{where}: {error}") from None


def expand_modes(modes: Sequence[str]) -> tuple[str, ...]:
    """"both" is fwd and fwdbwd, "all" every mode; duplicates are dropped."""
    out: list[str] = []
    for mode in modes:
        for m in DEFAULT_MODES if mode == "both" else MODES if mode == "all" else (mode,):
            if m not in out:
                out.append(m)
    return tuple(out)


def option_default(name: str) -> Any:
    """The default of ScanSweep field ``name`` (the CLI's defaults come from here)."""
    return {f.name: f.default for f in dataclasses.fields(ScanSweep)}[name]


def option_help(name: str) -> str:
    """The help of ScanSweep field ``name`` with its default, for the CLI."""
    field = {f.name: f for f in dataclasses.fields(ScanSweep)}[name]
    text = field.metadata["help"]
    return text[0].upper() + text[1:] + "."


# The generic backends; "all" also times each layer's own extra backends.
ALL_BACKENDS = ("associative", "sequential", "chunked", "auto", "*")


def known_backends() -> tuple[str, ...]:
    """Every backend some registered model offers, plus "*" (each model's own extras)."""
    from dlbench.registry import get_model, model_names

    names = list(ALL_BACKENDS)
    for model in model_names():
        names.extend(s for s in get_model(model).layer.scans if s not in names)
    return tuple(names)


def expand_backends(model: str, backends: tuple[str, ...]) -> list[str]:
    """The backends to time for ``model``; "*" stands for the model's own extra backends."""
    from dlbench.registry import get_model

    scans = get_model(model).layer.scans
    out: list[str] = []
    for b in backends:
        names = [s for s in scans if s not in ALL_BACKENDS] if b == "*" else [b]
        out.extend(n for n in names if n not in out)
    return out


def cells(sweep: ScanSweep) -> Iterator[Cell]:
    from dlbench.distributed import resolve_devices

    devices = resolve_devices(sweep.devices, divides=None if sweep.seq_shard else sweep.batch)
    for model in sweep.model_list():
        for backend in expand_backends(model, sweep.backends):
            for mode in sweep.modes:
                target = "model" if mode == "train" else sweep.target
                for length in sweep.unique_lengths():
                    yield Cell(model, backend, mode, length, sweep.batch, sweep.hidden, sweep.state, target, sweep.dtype,
                               sweep.seed, devices, sweep.seq_shard)


# ---------------------------------------------------------------------------------------------
# The sweep.


def load_progress(path: Path, all_cells: Sequence[Cell]) -> tuple[list[CellProgress], dict[tuple, tuple[int, str]]]:
    """Per cell what a rows file already holds (rounds, failures, interval rows), and per series the
    first stopping failure (length, status). Rows of sweeps before rounds (no ``round``) count as one
    finished round of a finished cell."""
    import pandas as pd

    from dlbench.rundir import read_rows

    progress = {c.key(): CellProgress(c) for c in all_cells}
    stops: dict[tuple, tuple[int, str]] = {}
    if not path.exists() or path.stat().st_size == 0:
        return list(progress.values()), stops
    rows = read_rows([path])
    rows = rows[rows["task"] == "scan"]
    for r in rows.itertuples():
        options = json.loads(r.layer_options) if isinstance(r.layer_options, str) and r.layer_options else {}
        devices = 1 if pd.isna(r.devices) else int(r.devices)
        cell = Cell(r.model, r.backend, r.mode, int(r.seq_len), int(r.batch), int(r.hidden), int(r.state), r.target, r.dtype,
                    int(r.seed), devices, bool(options.get("seq_shard")))
        p = progress.setdefault(cell.key(), CellProgress(cell))
        legacy = "round" not in rows.columns or pd.isna(r.round)
        round_index = 0 if legacy else int(r.round)
        if options:
            p.options = r.layer_options
        if r.metric == "wall_s" and r.status == "ok":
            p.samples.setdefault(round_index, []).append(float(r.value))
        elif r.metric == "min_bytes_per_token":
            p.per_token = float(r.value)
        elif r.metric == "wall_s_ci_low":
            p.final = True
        elif r.metric == "cell_s":
            if r.status != "ok":
                p.status, p.reason = r.status, str(r.reason) if isinstance(r.reason, str) else ""
                p.samples.pop(round_index, None)
            elif legacy:
                p.final = True
            if r.status in STOPPING:
                prior = stops.get(cell.series())
                if prior is None or cell.seq_len < prior[0]:
                    stops[cell.series()] = (cell.seq_len, r.status)
        elif r.metric == "max_rel_err" and r.status != "ok":
            p.status, p.reason = "error", f"max_rel_err {r.value:.3g}: {r.reason}"
    # A round counts once its cell_s row is there; wall_s rows of a round cut short are dropped.
    done_rounds = {}
    if "round" in rows.columns:
        for r in rows[(rows.metric == "cell_s") & (rows.status == "ok")].itertuples():
            key_rows = done_rounds.setdefault((r.model, r.backend, r.mode, int(r.seq_len)), set())
            key_rows.add(0 if pd.isna(r.round) else int(r.round))
    for p in progress.values():
        finished = done_rounds.get((p.cell.model, p.cell.backend, p.cell.mode, p.cell.seq_len))
        if finished is not None:
            p.samples = {k: v for k, v in p.samples.items() if k in finished}
    return list(progress.values()), stops


def run_sweep(sweep: ScanSweep, out_dir: str | os.PathLike, *, resume: bool = False, suite: str = "", console=None,
              run_id: str | None = None, suite_file: str | None = None, sets: tuple[str, ...] = ()) -> Path:
    """Run a sweep into ``out_dir/rows.csv`` (and ``throughput.png``); returns the rows path.

    The folder's ``manifest.json`` records the sweep's settings; ``resume`` continues a folder only if
    they match (:func:`dlbench.rundir.check_resume`), re-measuring cells that never ended. Only process
    0 of a multi-process job holds the folder's lock and writes rows.
    """
    import contextlib

    from rich.console import Console

    from dlbench import distributed
    from dlbench.rundir import (
        Manifest,
        NullWriter,
        RowWriter,
        check_resume,
        holding_lock,
        merged,
        new_run_id,
        read_manifest,
    )

    console = console or Console()
    out = Path(out_dir)
    rows_path = out / ROWS_FILE
    is_writer = distributed.is_writer()
    manifest = Manifest.new("profile", suite, run_id or new_run_id(), suite_file=suite_file, sets=sets)
    manifest.plugins = loaded_plugins()
    digest = manifest.add("sweep", dataclasses.asdict(sweep))
    with holding_lock(out) if is_writer else contextlib.nullcontext():
        if rows_path.exists() and rows_path.stat().st_size and not resume:
            raise DlbenchError(f"{rows_path} exists; pass --resume to continue it or choose another --out")
        old = read_manifest(out) if resume else None
        if resume:
            for note in check_resume(out, old, manifest):
                console.print(note)
            if old is None:
                manifest.run_id = _existing_run_id(rows_path) or manifest.run_id
        manifest = merged(old, manifest)
        if is_writer:
            manifest.write(out)
        all_cells = list(cells(sweep))
        progress, stops = load_progress(rows_path, all_cells) if resume else ([CellProgress(c) for c in all_cells], {})
        wanted = {c.key() for c in all_cells}
        progress = [p for p in progress if p.cell.key() in wanted]
        defaults = {"run_id": manifest.run_id, "suite": suite, "config_hash": digest}
        writer = RowWriter(rows_path, defaults=defaults) if is_writer else NullWriter(defaults)
        measure_sweep(sweep, progress, stops, writer, console, rows_path)
    check_outcome(progress, console)
    return rows_path


def measure_sweep(sweep: ScanSweep, progress: list[CellProgress], stops, writer, console, rows_path: Path) -> None:
    """The body of :func:`run_sweep`: bandwidth, the rounds, the interval rows."""
    import jax

    done = sum(1 for p in progress if p.final or p.failed)
    console.print(f"dlbench profile scan: {len(progress)} cells ({done} already measured), {sweep.rounds} rounds -> {rows_path}")
    if sweep.duplicate_lengths():
        console.print(f"note: duplicate lengths dropped: {', '.join(map(str, sweep.duplicate_lengths()))}")
    todo = [p for p in progress if not (p.final or p.failed)]
    bandwidth = None
    if sweep.bandwidth and todo:
        from dlbench.timing import measure_and_write_bandwidth

        bandwidth = measure_and_write_bandwidth(writer)
        console.print(f"copy bandwidth: {bandwidth / 1e9:.2f} GB/s")
    policy = sweep.policy()
    multi = jax.process_count() > 1
    cache_dir = tempfile.mkdtemp(prefix="dlbench-jax-cache-") if sweep.isolate else None
    kept: dict = {}

    def measure(cell: Cell, round_index: int) -> tuple[str, str, list[float]]:
        rows: list[dict] = []

        def emit(row):
            rows.append(writer.write(row))

        if sweep.isolate:
            payload = {"cell": dataclasses.asdict(cell), "policy": dataclasses.asdict(policy), "round": round_index, "verify": sweep.verify}
            from dlbench.cells import run_isolated

            status = run_isolated("dlbench.scan_cell:run_cell_payload", payload, emit, base={**cell.axes(), "round": round_index},
                                  timeout=sweep.timeout, memory_limit_gb=sweep.memory_limit_gb, cache_dir=cache_dir)
        else:
            status = run_cell(cell, policy, emit, round_index=round_index, verify=sweep.verify, kept=kept)
        reason = next((r.get("reason") or "" for r in rows if r.get("metric") == "cell_s"), "")
        p = by_key[cell.key()]
        for r in rows:
            if r.get("layer_options") and p.options is None:
                p.options = r["layer_options"]
            if r.get("metric") == "min_bytes_per_token":
                p.per_token = float(r["value"])
            if r.get("metric") == "max_rel_err" and r.get("status") == "error" and status == "ok":
                status, reason = "error", f"max_rel_err {r['value']:.3g} > {r['reason']}"
        return status, reason, [float(r["value"]) for r in rows if r.get("metric") == "wall_s"]

    by_key = {p.cell.key(): p for p in progress}
    display = LiveTable(console, total=len(todo)) if console.is_terminal else PlainLines(console)

    def skip(p: CellProgress, stop) -> None:
        writer.write({**p.cell.axes(), "metric": "cell_s", "value": 0.0, "unit": "s", "status": "skipped", "reason": p.reason})
        display.finish(p)

    def measured(p: CellProgress, round_index: int) -> None:
        finished = p.failed or not p.wants_round(sweep.rounds, sweep.max_rounds, sweep.ci_target)
        if finished:
            finalize(p)
        display.round_done(p, round_index, finished)

    def finalize(p: CellProgress) -> None:
        if not p.failed and not p.final:
            for row in interval_rows(p, sweep.ci_target, bandwidth):
                writer.write(row)
            p.final = True
        display.finish(p)

    try:
        with display:
            run_rounds(todo, measure, rounds=sweep.rounds, max_rounds=sweep.rounds if multi else sweep.max_rounds,
                       target=sweep.ci_target, budget=math.inf if multi else sweep.budget, seed=sweep.seed,
                       stops=stops, skip=skip, on_measured=measured)
            for p in todo:
                if not p.final and not p.failed:
                    finalize(p)
    except KeyboardInterrupt:
        console.print(f"interrupted: every finished cell is in {rows_path}; continue with --resume --out {rows_path.parent}")
        raise
    finally:
        if cache_dir:
            shutil.rmtree(cache_dir, ignore_errors=True)
    short = [p for p in todo if p.stopped_short and not p.failed]
    for p in short:
        interval = p.interval()
        console.print(f"note: {p.cell.label()}: interval +-{interval.half_width:.1%} is wider than the target "
                      f"+-{sweep.ci_target:.1%} ({p.stopped_short}, {p.rounds_done} rounds)")


def _existing_run_id(path: Path) -> str | None:
    if not path.exists() or path.stat().st_size == 0:
        return None
    from dlbench.rundir import read_rows

    ids = read_rows([path])["run_id"].dropna()
    return str(ids.iloc[0]) if len(ids) else None


if __name__ == "__main__":  # isolated cells of older versions were started as `python -m dlbench.profile`
    from dlbench.cells import child_main

    sys.exit(child_main(sys.argv[1]))
