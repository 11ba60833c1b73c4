"""``dlbench profile``: scan throughput against sequence length, and the device's copy bandwidth.

A sweep is a grid of cells (model x backend x mode x length). Each cell builds its workload through
the registry (never a concrete layer), times it with :mod:`dlbench.timing`, and becomes tidy rows.
With ``isolate`` (the default) every cell runs in its own process, so a cell's peak RSS is its own,
a crash or out-of-memory kills only that cell, and a time-out can stop it mid-call. Failures are
rows too: after an OOM or time-out at length L, longer lengths of that model/backend/mode are
recorded as skipped. Rows are written as they are made, so Ctrl-C keeps every finished one.

Several devices (:mod:`dlbench.distributed`): by default the batch is split over a "data" mesh of
``devices`` (all that divide the batch); with ``seq_shard`` every sequence is split over a "seq" mesh
of all devices instead and the layer runs under ``shard_map`` with the sequence-parallel scan
(:func:`dlbench.layers.kernels.scan.sharded_linear_scan`); a layer whose recurrence does not go through the
shared scans (attention, a layer's own formulation) records ``n/a``. Rows carry ``devices``; the
tokens/s derived from them is the total, per device it is that / devices.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

from dlbench.config import check_types
from dlbench.errors import DlbenchError, check_choice
from dlbench.rundir import ROWS_FILE
from dlbench.timing import TimingPolicy

MODES = ("fwd", "fwdbwd")
TARGETS = ("layer", "model")
DTYPES = ("float32", "bfloat16", "float64")
DEFAULT_LENGTHS = tuple(2**k for k in range(10, 17)) + (50_000,)
PLOT_FILE = "throughput.png"
# Statuses after which longer lengths of the same series are not attempted.
STOPPING = ("oom", "timeout")


def _field(default, help: str):
    return dataclasses.field(default=default, metadata={"help": help})


@dataclasses.dataclass(frozen=True)
class ScanSweep:
    """One ``profile scan`` sweep; every field is a command-line option and a ``[sweep]`` key."""

    models: tuple[str, ...] = _field((), "models to time (empty: all registered)")
    backends: tuple[str, ...] = _field(("auto",), "scan backends (a model that lacks one records n/a)")
    lengths: tuple[int, ...] = _field(DEFAULT_LENGTHS, "sequence lengths, timed in increasing order")
    batch: int = _field(1, "sequences per call")
    hidden: int = _field(128, "hidden width H")
    state: int = _field(64, "state size P")
    modes: tuple[str, ...] = _field(MODES, "fwd, fwdbwd (gradient w.r.t. parameters and input)")
    target: str = _field("layer", "time one sequence layer or the whole model (2 blocks, classification head)")
    dtype: str = _field("float32", "float32, bfloat16 or float64 (float64 enables jax_enable_x64)")
    repeats: int = _field(5, "at least this many timed calls per cell")
    min_time: float = _field(1.0, "and at least this many seconds of timed calls")
    warmup: int = _field(1, "untimed calls before timing")
    timeout: float = _field(300.0, "seconds a cell may take in all (isolated cells are killed)")
    isolate: bool = _field(True, "run each cell in its own process")
    memory_limit_gb: float | None = _field(None, "address-space limit per isolated cell, in GiB")
    seed: int = _field(0, "parameter and input seed")
    bandwidth: bool = _field(True, "measure the device's copy bandwidth first (for bandwidth_fraction rows)")
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
        if not self.lengths or min(self.lengths) < 1:
            raise DlbenchError(f"lengths must be positive integers, got {list(self.lengths)}")
        if self.batch < 1 or self.hidden < 1 or self.state < 1:
            raise DlbenchError("batch, hidden and state must be positive")
        if not self.backends:
            raise DlbenchError("at least one backend is needed")
        valid = known_backends()
        for backend in self.backends:
            if backend not in valid:  # "*" is how "all" reaches here; users type "all"
                check_choice("backend", backend, [b for b in valid if b != "*"] + ["all"])
        if self.seq_shard and self.target != "layer":
            raise DlbenchError("--seq-shard times one sequence layer (--target layer): a model's norms and head are not sequence-parallel")
        if self.devices is not None and self.devices < 1:
            raise DlbenchError(f"--devices must be >= 1, got {self.devices}")
        if not self.timeout > 0:
            raise DlbenchError(f"timeout must be > 0 seconds, got {self.timeout}")
        if self.memory_limit_gb is not None and not self.memory_limit_gb > 0:
            raise DlbenchError(f"memory_limit_gb must be > 0, got {self.memory_limit_gb}")
        try:
            self.policy()
        except ValueError as error:
            raise DlbenchError(str(error)) from None

    def policy(self) -> TimingPolicy:
        return TimingPolicy(warmup=self.warmup, repeats=self.repeats, min_time_s=self.min_time, max_repeats=max(1000, self.repeats))

    def model_list(self) -> tuple[str, ...]:
        from dlbench.registry import model_names

        return self.models or model_names()

    @classmethod
    def from_mapping(cls, mapping: Mapping[str, Any], where: str = "sweep") -> ScanSweep:
        """Build from a TOML table; unknown keys are errors naming the closest valid key."""
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
        if values.get("modes") == ("both",):
            values["modes"] = MODES
        try:
            return cls(**values)
        except DlbenchError as error:
            raise DlbenchError(f"{where}: {error}") from None


# The generic backends; "all" also times each layer's own extra backends.
ALL_BACKENDS = ("associative", "sequential", "chunked", "auto", "*")


def known_backends() -> tuple[str, ...]:
    """Every backend some registered model offers, plus "*" (each model's own extras)."""
    from dlbench.registry import get_model, model_names

    names = list(ALL_BACKENDS)
    for model in model_names():
        names.extend(s for s in get_model(model).layer.scans if s not in names)
    return tuple(names)


@dataclasses.dataclass(frozen=True)
class Cell:
    """One measurement point of a sweep."""

    model: str
    backend: str
    mode: str
    seq_len: int
    batch: int
    hidden: int
    state: int
    target: str
    dtype: str
    seed: int
    devices: int = 1
    seq_shard: bool = False

    def key(self) -> tuple:
        return (self.model, self.backend, self.mode, self.seq_len, self.batch, self.hidden, self.state, self.target, self.dtype,
                self.devices, self.seq_shard)

    def series(self) -> tuple:
        """Cells that differ only in length; an OOM or time-out stops the rest of the series."""
        return (self.model, self.backend, self.mode, self.batch, self.hidden, self.state, self.target, self.dtype,
                self.devices, self.seq_shard)

    def axes(self) -> dict[str, Any]:
        return {
            "task": "scan",
            "model": self.model,
            "backend": self.backend,
            "target": self.target,
            "seq_len": self.seq_len,
            "batch": self.batch,
            "hidden": self.hidden,
            "state": self.state,
            "blocks": 2 if self.target == "model" else 1,
            "dtype": self.dtype,
            "mode": self.mode,
            "seed": self.seed,
            "devices": self.devices,
            **({"layer_options": json.dumps({"seq_shard": True})} if self.seq_shard else {}),
        }


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
                for length in sorted(sweep.lengths):
                    yield Cell(model, backend, mode, length, sweep.batch, sweep.hidden, sweep.state, sweep.target, sweep.dtype,
                               sweep.seed, devices, sweep.seq_shard)


# ---------------------------------------------------------------------------------------------
# One cell, in this process.


def _dtype(name: str):
    import jax
    import jax.numpy as jnp

    if name == "float64":
        jax.config.update("jax_enable_x64", True)
    return jnp.dtype(name)


def build_workload(cell: Cell) -> tuple[Callable, tuple, Any, dict[str, Any]]:
    """(fn, args, sequence layer, layer options) for a cell; only the registry knows the model."""
    import jax
    import jax.numpy as jnp
    from flax import nnx

    from dlbench.models import ModelConfig, build_model
    from dlbench.registry import get_model

    dtype = _dtype(cell.dtype)
    spec = get_model(cell.model)
    param_dtype = jnp.float32 if dtype == jnp.bfloat16 else dtype
    key = jax.random.key(cell.seed)
    x = jax.random.normal(key, (cell.batch, cell.seq_len, cell.hidden), jnp.float32).astype(dtype)
    if cell.target == "layer":
        module = spec.make_layer(cell.hidden, cell.state, rngs=nnx.Rngs(cell.seed), dtype=dtype, param_dtype=param_dtype, scan=cell.backend)
        layer = module
    else:
        config = ModelConfig(num_inputs=cell.hidden, hidden_dim=cell.hidden, state_dim=cell.state, num_blocks=2, num_outputs=10, scan=cell.backend)
        module = build_model(cell.model, config, seed=cell.seed, dtype=dtype, param_dtype=param_dtype)
        module.train() if cell.mode == "fwdbwd" else module.eval()
        layer = module.blocks[0].layer
    graphdef, state = nnx.split(module)
    options = {**spec.options, "scan": cell.backend, "resolved_scan": layer.resolve_scan(cell.seq_len)}
    if cell.seq_shard:
        forward, state, x = _seq_sharded_forward(cell, graphdef, state, x)
        options["seq_shard"] = True
        options["resolved_scan"] = layer.resolve_scan(cell.seq_len // cell.devices)
    else:
        from dlbench import distributed

        # Data parallel (one code path for 1 and N devices): batch split over the mesh, parameters replicated.
        mesh = distributed.make_mesh(cell.devices, distributed.DATA)
        state, x = distributed.put_replicated(mesh, state), distributed.put_batch(mesh, x)

        def forward(state, x):
            return nnx.merge(graphdef, state)(x)

    if cell.mode == "fwd":
        return forward, (state, x), layer, options

    def loss(state, x):
        y = forward(state, x)
        return jnp.mean(jnp.square(y.astype(jnp.float32)))

    return jax.grad(loss, argnums=(0, 1)), (state, x), layer, options


def _seq_sharded_forward(cell: Cell, graphdef, state, x):
    """(forward, placed state, placed x) with the sequence of ``x`` split over a "seq" mesh of ``cell.devices``.

    The layer runs under ``shard_map`` inside :func:`~dlbench.layers.kernels.scan.sequence_sharded`; a layer
    that traces without a sequence-parallel scan raises DlbenchError (recorded as n/a).
    """
    import jax
    from flax import nnx
    from jax.sharding import NamedSharding
    from jax.sharding import PartitionSpec as P

    from dlbench import distributed
    from dlbench.layers.kernels.scan import sequence_sharded

    n = cell.devices
    if cell.seq_len % n:
        raise DlbenchError(f"--seq-shard: seq_len {cell.seq_len} is not divisible by {n} devices")
    mesh = distributed.make_mesh(n, distributed.SEQ)
    spec = P(None, distributed.SEQ, None)
    used: list[int] = []

    def local(state, x):
        with sequence_sharded(distributed.SEQ) as record:
            y = nnx.merge(graphdef, state)(x)
        used.append(record["scans"])
        return y

    def forward(state, x):
        return jax.shard_map(local, mesh=mesh, in_specs=(P(), spec), out_specs=spec, check_vma=False)(state, x)

    state = distributed.put_replicated(mesh, state)
    x = distributed.put(x, lambda h: NamedSharding(mesh, spec))
    jax.eval_shape(forward, state, x)
    if not used or not used[-1]:
        raise DlbenchError(f"{cell.model} ({cell.backend}) has no sequence-parallel scan: --seq-shard does not apply")
    return forward, state, x


def run_cell(cell: Cell, policy: TimingPolicy, bandwidth: float | None, emit: Callable[[dict], None]) -> str:
    """Measure one cell, emitting rows as they are made. Returns the cell's status."""
    from dlbench.timing import (
        classify_failure,
        compilation_cache_state,
        compile_timed,
        is_finite_tree,
        peak_memory,
        repeat_timed,
        timing_warnings,
    )

    started = time.perf_counter()
    base = cell.axes()
    status, reason = "ok", ""
    try:
        fn, args, layer, options = build_workload(cell)
    except Exception as error:  # noqa: BLE001 - a model that cannot be built for this cell is a result too
        # A DlbenchError here means the model lacks the backend (n/a); anything else is a failure.
        status, reason = ("n/a", str(error)) if isinstance(error, DlbenchError) else classify_failure(error)
        emit({**base, "metric": "cell_s", "value": time.perf_counter() - started, "unit": "s", "status": status, "reason": reason})
        return status
    base["layer_options"] = json.dumps(options, sort_keys=True, default=str)
    try:
        compiled, lower_s, compile_s, analysis = compile_timed(fn, args)
        cache = compilation_cache_state()
        emit({**base, "metric": "lower_s", "value": lower_s, "unit": "s", "source": f"cache={cache}"})
        emit({**base, "metric": "compile_s", "value": compile_s, "unit": "s", "source": f"cache={cache}"})
        if analysis and "peak_memory_in_bytes" in analysis:
            emit({**base, "metric": "peak_bytes", "value": analysis["peak_memory_in_bytes"], "unit": "bytes", "source": "memory_analysis"})
        # The warm-up inside repeat_timed is the executable's first call (first_call_s); the output is
        # checked for NaN/Inf only afterwards, by one more untimed call.
        first, repeats = repeat_timed(lambda: compiled(*args), policy)
        if not is_finite_tree(compiled(*args)):
            raise FloatingPointError("non-finite output")
        for i, t in enumerate(first):
            emit({**base, "metric": "first_call_s", "value": t, "unit": "s", "index": i, "source": "perf_counter"})
        for i, t in enumerate(repeats):
            emit({**base, "metric": "wall_s", "value": t, "unit": "s", "index": i, "source": "perf_counter"})
        peak, source = peak_memory()
        emit({**base, "metric": "peak_bytes", "value": peak, "unit": "bytes", "source": source})
        import statistics

        dtype_bytes = args[1].dtype.itemsize
        per_token = layer.min_bytes_per_token_at(cell.seq_len, dtype_bytes) * (2 if cell.mode == "fwdbwd" else 1)
        emit({**base, "metric": "min_bytes_per_token", "value": per_token, "unit": "bytes", "source": type(layer).__name__})
        if bandwidth:
            achieved = per_token * cell.batch * cell.seq_len / statistics.median(repeats)
            emit({**base, "metric": "bandwidth_fraction", "value": achieved / bandwidth, "unit": "1", "source": "min_bytes/median/bandwidth"})
        reason = "; ".join(timing_warnings(first, repeats, policy))
    except FloatingPointError as error:
        status, reason = "nan", str(error)
    except Exception as error:  # noqa: BLE001 - any failure of a cell is a result, not a crash
        status, reason = classify_failure(error)
    emit({**base, "metric": "cell_s", "value": time.perf_counter() - started, "unit": "s", "status": status, "reason": reason})
    return status


# ---------------------------------------------------------------------------------------------
# Isolation: one process per cell.

ROW_PREFIX = "DLBENCH-ROW "


def _child_main(spec: str) -> int:
    """Entry of an isolated cell: rows go to stdout as JSON lines."""
    from dlbench.plugins import load_models

    payload = json.loads(spec)
    _limit_memory(payload.get("memory_limit_gb"))
    load_models()  # the parent exported its plugins in $DLBENCH_PLUGINS
    cell = Cell(**payload["cell"])
    policy = TimingPolicy(**payload["policy"])

    def emit(row):
        print(ROW_PREFIX + json.dumps(row, default=str), flush=True)

    run_cell(cell, policy, payload.get("bandwidth"), emit)
    return 0


def _limit_memory(gb: float | None) -> None:
    """Cap this process's address space (the isolated cell limits itself: a ``preexec_fn`` would fork a
    multithreaded JAX parent, which Python documents as deadlock-prone)."""
    if not gb:
        return
    import resource

    limit = int(gb * 2**30)
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))


def run_cell_isolated(cell: Cell, policy: TimingPolicy, bandwidth: float | None, emit: Callable[[dict], None], *, timeout: float, memory_limit_gb: float | None) -> str:
    """Run a cell in a child process, relaying its rows; a death or time-out becomes a row."""
    payload = json.dumps({"cell": dataclasses.asdict(cell), "policy": dataclasses.asdict(policy), "bandwidth": bandwidth,
                          "memory_limit_gb": memory_limit_gb})
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    started = time.perf_counter()
    proc = subprocess.Popen(
        [sys.executable, "-m", "dlbench.profile", payload],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        start_new_session=True,
    )
    status = None
    deadline = started + timeout
    import selectors

    selector = selectors.DefaultSelector()
    selector.register(proc.stdout, selectors.EVENT_READ)
    stderr_tail: list[str] = []
    try:
        while True:
            remaining = deadline - time.perf_counter()
            if remaining <= 0:
                _kill(proc)
                break
            if not selector.select(timeout=min(remaining, 1.0)):
                if proc.poll() is not None:
                    break
                continue
            line = proc.stdout.readline()
            if not line:
                break
            if line.startswith(ROW_PREFIX):
                row = json.loads(line[len(ROW_PREFIX) :])
                emit(row)
                if row.get("metric") == "cell_s":
                    status = row.get("status", "ok")
    except BaseException:
        _kill(proc)
        raise
    finally:
        selector.close()
    timed_out = status is None and time.perf_counter() >= deadline
    if proc.poll() is None:
        _kill(proc)
    proc.wait()
    stderr_tail = (proc.stderr.read() or "").strip().splitlines()[-20:]
    if status is not None:
        return status
    base = cell.axes()
    elapsed = time.perf_counter() - started
    if timed_out:
        status, reason = "timeout", f"cell exceeded --timeout {timeout:g}s and was killed"
    elif proc.returncode in (-signal.SIGKILL, 137):
        status, reason = "oom", "cell process killed by SIGKILL (out of memory)"
    else:
        text = " ".join(stderr_tail)
        status = "oom" if ("RESOURCE_EXHAUSTED" in text or "Out of memory" in text or "MemoryError" in text) else "error"
        last = next((line for line in reversed(stderr_tail) if line.strip()), f"exit code {proc.returncode}")
        reason = f"cell process died (exit {proc.returncode}): {last.strip()[:250]}"
    emit({**base, "metric": "cell_s", "value": elapsed, "unit": "s", "status": status, "reason": reason})
    return status


def _kill(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


# ---------------------------------------------------------------------------------------------
# Bandwidth.


# Copies are fast and steady: more repeats in less time than a scan cell.
BANDWIDTH_POLICY = TimingPolicy(repeats=10, min_time_s=0.5)


def measure_bandwidth(megabytes: int = 256, policy: TimingPolicy = BANDWIDTH_POLICY) -> float:
    """Copy bandwidth of the default device in bytes/s: read + write of an array of ``megabytes``.

    ``x + 1`` rather than a copy, so XLA cannot elide it; every element is read once and written once.
    """
    import statistics

    import jax.numpy as jnp

    from dlbench.timing import time_function

    n = megabytes * 2**20 // 4
    x = jnp.ones((n,), jnp.float32)
    timing = time_function(lambda x: x + 1.0, (x,), policy)
    return 2 * n * 4 / statistics.median(timing.repeats_s)


# ---------------------------------------------------------------------------------------------
# The sweep.


def finished_cells(path: Path) -> tuple[set[tuple], dict[tuple, tuple[int, str]]]:
    """Cells already measured in a rows file, and per series the first stopping failure (length, status)."""
    import pandas as pd

    from dlbench.rundir import read_rows

    if not path.exists() or path.stat().st_size == 0:
        return set(), {}
    rows = read_rows([path])
    done = rows[(rows["metric"] == "cell_s") & (rows["task"] == "scan")]
    keys, stops = set(), {}
    for r in done.itertuples():
        seq_shard = bool(isinstance(r.layer_options, str) and json.loads(r.layer_options or "{}").get("seq_shard"))
        devices = 1 if pd.isna(r.devices) else int(r.devices)
        cell = Cell(r.model, r.backend, r.mode, int(r.seq_len), int(r.batch), int(r.hidden), int(r.state), r.target, r.dtype,
                    int(r.seed), devices, seq_shard)
        keys.add(cell.key())
        if r.status in STOPPING:
            prior = stops.get(cell.series())
            if prior is None or cell.seq_len < prior[0]:
                stops[cell.series()] = (cell.seq_len, r.status)
    return keys, stops


def run_sweep(sweep: ScanSweep, out_dir: str | os.PathLike, *, resume: bool = False, suite: str = "", console=None, plot: bool = True,
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
        trim_unfinished,
    )

    console = console or Console()
    out = Path(out_dir)
    rows_path = out / ROWS_FILE
    is_writer = distributed.is_writer()
    manifest = Manifest.new("profile", suite, run_id or new_run_id(), suite_file=suite_file, sets=sets)
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
            if resume:
                trim_unfinished(rows_path, kind="profile")
            manifest.write(out)
        done, stops = finished_cells(rows_path) if resume else (set(), {})
        defaults = {"run_id": manifest.run_id, "suite": suite, "config_hash": digest}
        writer = RowWriter(rows_path, defaults=defaults) if is_writer else NullWriter(defaults)
        policy = sweep.policy()
        all_cells = list(cells(sweep))
        todo = [c for c in all_cells if c.key() not in done]
        console.print(f"dlbench profile scan: {len(all_cells)} cells ({len(all_cells) - len(todo)} already measured) -> {rows_path}")

        bandwidth = None
        if sweep.bandwidth and todo:
            bandwidth = measure_bandwidth()
            writer.write({"task": "bandwidth", "model": "", "metric": "bandwidth", "value": bandwidth, "unit": "bytes/s", "source": "x+1 on 256 MiB float32"})
            console.print(f"copy bandwidth: {bandwidth / 1e9:.2f} GB/s")

        display = LiveTable(console, total=len(todo))
        try:
            _sweep_cells(todo, sweep, policy, bandwidth, stops, writer, display)
        except KeyboardInterrupt:
            console.print(f"interrupted: every finished cell is in {rows_path}; continue with: dlbench profile scan --resume --out {out}")
            raise
    if plot and is_writer:
        write_plot(rows_path, out / PLOT_FILE, console)
    return rows_path


def _sweep_cells(todo, sweep: ScanSweep, policy, bandwidth, stops, writer, display) -> None:
    """Measure each cell in turn, writing its rows as they are made (the body of :func:`run_sweep`)."""
    with display:
        for cell in todo:
            stop = stops.get(cell.series())
            if stop and cell.seq_len > stop[0]:
                row = {**cell.axes(), "metric": "cell_s", "value": 0.0, "unit": "s", "status": "skipped", "reason": f"{stop[1]} at seq_len {stop[0]}"}
                writer.write(row)
                display.finish(cell, "skipped", [row])
                continue
            cell_rows: list[dict] = []

            def emit(row, cell_rows=cell_rows):
                cell_rows.append(writer.write(row))

            display.start(cell)
            if sweep.isolate:
                status = run_cell_isolated(cell, policy, bandwidth, emit, timeout=sweep.timeout, memory_limit_gb=sweep.memory_limit_gb)
            else:
                status = run_cell(cell, policy, bandwidth, emit)
            if status in STOPPING and cell.series() not in stops:
                stops[cell.series()] = (cell.seq_len, status)
            display.finish(cell, status, cell_rows)


def write_plot(rows_path: Path, png: Path, console) -> None:
    """The throughput plot beside the rows; a sweep with nothing to draw says so instead of failing."""
    from dlbench.report import plot_throughput
    from dlbench.rundir import read_rows

    try:
        plot_throughput(read_rows([rows_path]), png)
    except DlbenchError as error:
        console.print(f"no plot: {error}")
        return
    console.print(f"plot: {png}")


def _existing_run_id(path: Path) -> str | None:
    if not path.exists() or path.stat().st_size == 0:
        return None
    from dlbench.rundir import read_rows

    ids = read_rows([path])["run_id"].dropna()
    return str(ids.iloc[0]) if len(ids) else None


def run_sweep_from_mapping(mapping: Mapping[str, Any], *, out_dir, resume: bool = False, suite: str = "", where: str = "sweep") -> Path:
    """Entry for ``dlbench run SUITE`` when the suite is a profile sweep (its ``[sweep]`` table)."""
    return run_sweep(ScanSweep.from_mapping(mapping, where=where), out_dir, resume=resume, suite=suite)


class LiveTable:
    """A progress bar and a table of finished cells, redrawn as cells finish."""

    def __init__(self, console, total: int):
        from rich.live import Live
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        self.console = console
        self.progress = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), console=console)
        self.task = self.progress.add_task("cells", total=total)
        self.rows: list[tuple] = []
        self.live = Live(self._render(), console=console, refresh_per_second=4, transient=False)

    def _render(self):
        from rich.console import Group
        from rich.table import Table

        table = Table(title="finished cells", show_lines=False)
        for col in ("model", "backend", "mode", "seq_len", "median ms", "tokens/s", "peak MiB", "status"):
            table.add_column(col, justify="right" if col not in ("model", "backend", "mode", "status") else "left")
        for r in self.rows[-15:]:
            table.add_row(*r)
        return Group(self.progress, table)

    def __enter__(self):
        self.live.__enter__()
        return self

    def __exit__(self, *exc):
        return self.live.__exit__(*exc)

    def start(self, cell: Cell) -> None:
        self.progress.update(self.task, description=f"{cell.model} {cell.backend} {cell.mode} L={cell.seq_len}")
        self.live.update(self._render())

    def finish(self, cell: Cell, status: str, rows: list[dict]) -> None:
        import statistics

        walls = [r["value"] for r in rows if r.get("metric") == "wall_s"]
        peaks = [r["value"] for r in rows if r.get("metric") == "peak_bytes" and r.get("source") != "memory_analysis"]
        median = statistics.median(walls) if walls else None
        self.rows.append(
            (
                cell.model,
                cell.backend,
                cell.mode,
                str(cell.seq_len),
                f"{median * 1e3:.2f}" if median else "-",
                f"{cell.batch * cell.seq_len / median:,.0f}" if median else "-",
                f"{peaks[0] / 2**20:,.0f}" if peaks else "-",
                status,
            )
        )
        self.progress.advance(self.task)
        self.live.update(self._render())


if __name__ == "__main__":
    sys.exit(_child_main(sys.argv[1]))
