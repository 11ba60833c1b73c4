"""One cell of a ``profile scan`` sweep: what it measures, its workload, one measured round, its check.

A cell (model x backend x mode x length x widths) builds its workload through the registry (never a
concrete layer) and is timed by THE timing loop (:func:`dlbench.timing.time_function`); failures
become rows (:func:`dlbench.timing_policy.classify_failure`). The sweep that visits cells in rounds
is :mod:`dlbench.profile`; the child-process launcher that isolates a cell is :mod:`dlbench.cells`.

``verify``: per cell (round 0) ``max_rel_err`` of the cell's outputs against the float64
``sequential`` backend at the same length with the same parameters and inputs (see
:data:`VERIFY_TOLERANCE`); the gradients (loss and gradients for ``train``) in the backward modes.
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
from collections.abc import Callable
from typing import Any

from dlbench.errors import DlbenchError
from dlbench.timing_policy import TimingPolicy, classify_failure

# max_rel_err tolerance of --verify against the float64 sequential reference, per dtype; models that
# need their own are listed in VERIFY_TOLERANCE_BY_MODEL (model -> dtype -> tolerance).
VERIFY_TOLERANCE = {"float32": 1e-3, "bfloat16": 6e-2, "float64": 1e-9}
VERIFY_TOLERANCE_BY_MODEL: dict[str, dict[str, float]] = {}


def verify_tolerance(model: str, dtype: str) -> float:
    return VERIFY_TOLERANCE_BY_MODEL.get(model, {}).get(dtype, VERIFY_TOLERANCE[dtype])


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

    def label(self) -> str:
        return f"{self.model} {self.backend} L={self.seq_len} {self.mode}"

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


# ---------------------------------------------------------------------------------------------
# One cell's workload.


def _dtype(name: str):
    import jax
    import jax.numpy as jnp

    if name == "float64":
        jax.config.update("jax_enable_x64", True)
    return jnp.dtype(name)


@dataclasses.dataclass
class Workload:
    """What a cell times: ``fn(*args)``; the sequence layer; the options recorded in the rows.

    ``check_fn(*args)`` is what ``--verify`` compares with the float64 reference (``fn`` itself, except
    in ``train`` mode: the loss and gradients, since Adam's normalised update would amplify rounding).
    """

    fn: Callable
    args: tuple
    layer: Any
    options: dict[str, Any]
    check_fn: Callable

    def __iter__(self):  # fn, args, layer, options = build_workload(cell)
        return iter((self.fn, self.args, self.layer, self.options))


def build_workload(cell: Cell, *, dropout: float | None = None) -> Workload:
    """The workload of a cell; only the registry knows the model. ``dropout`` overrides the backbone's
    (``--verify`` compares with dropout off: float64 draws different dropout masks)."""
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
        config = ModelConfig(num_inputs=cell.hidden, hidden_dim=cell.hidden, state_dim=cell.state, num_blocks=2, num_outputs=10, scan=cell.backend,
                             **({} if dropout is None else {"dropout": dropout}))
        module = build_model(cell.model, config, seed=cell.seed, dtype=dtype, param_dtype=param_dtype)
        module.train() if cell.mode in ("fwdbwd", "train") else module.eval()
        layer = module.blocks[0].layer
    options = {**spec.options, "scan": cell.backend, "resolved_scan": layer.resolve_scan(cell.seq_len)}
    if cell.mode == "train":
        return _train_workload(cell, module, x, layer, options)
    graphdef, state = nnx.split(module)
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
        return Workload(forward, (state, x), layer, options, forward)

    def loss(state, x):
        y = forward(state, x)
        return jnp.mean(jnp.square(y.astype(jnp.float32)))

    grads = jax.grad(loss, argnums=(0, 1))
    return Workload(grads, (state, x), layer, options, grads)


def _train_workload(cell: Cell, model, x, layer, options) -> Workload:
    """One full training step of the whole model: forward, cross-entropy, backward, Adam update."""
    import jax
    from flax import nnx

    from dlbench import distributed, train
    from dlbench.config import TrainConfig

    optimizer = train.make_optimizer(model, TrainConfig())
    graphdef, state = nnx.split((model, optimizer))
    y = jax.random.randint(jax.random.key(cell.seed + 1), (cell.batch,), 0, 10)
    mesh = distributed.make_mesh(cell.devices, distributed.DATA)
    state, (x, y) = distributed.put_replicated(mesh, state), distributed.put_batch(mesh, (x, y))

    def step(state, x, y):
        model, optimizer = nnx.merge(graphdef, state)
        loss, grads = train.loss_and_grads(model, x, y, None)
        optimizer.update(model, grads)
        return nnx.state((model, optimizer)), loss

    def loss_and_grads(state, x, y):
        model, _ = nnx.merge(graphdef, state)
        return train.loss_and_grads(model, x, y, None)

    return Workload(step, (state, x, y), layer, options, loss_and_grads)


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


# ---------------------------------------------------------------------------------------------
# One round of one cell, in this process.


def _cell_s(base: dict, started: float, status: str, reason: str) -> dict:
    return {**base, "metric": "cell_s", "value": time.perf_counter() - started, "unit": "s", "status": status, "reason": reason}


def run_cell(
    cell: Cell,
    policy: TimingPolicy,
    emit: Callable[[dict], None],
    *,
    round_index: int = 0,
    verify: bool = False,
    kept: dict | None = None,
) -> str:
    """Measure one round of one cell, emitting rows as they are made. Returns the round's status.

    ``kept`` (in-process sweeps) maps a cell key to its workload and executable, so a later round
    neither rebuilds nor recompiles it.
    """
    from dlbench.timing import is_finite_tree, peak_memory, time_function

    started = time.perf_counter()
    base = {**cell.axes(), "round": round_index}
    entry = kept.get(cell.key()) if kept is not None else None
    try:
        workload = entry[0] if entry else build_workload(cell)
    except Exception as error:  # noqa: BLE001 - a model that cannot be built for this cell is a result too
        # A DlbenchError here means the model lacks the backend (n/a); anything else is a failure.
        status, reason = ("n/a", str(error)) if isinstance(error, DlbenchError) else classify_failure(error)
        emit(_cell_s(base, started, status, reason))
        return status
    base["layer_options"] = json.dumps(workload.options, sort_keys=True, default=str)
    status, reason = "ok", ""
    try:
        timing = time_function(workload.fn, workload.args, policy, compiled=entry[1] if entry else None)
        if not is_finite_tree(timing.outputs):
            raise FloatingPointError("non-finite output")
        first_round = round_index == 0
        for row in timing.rows(base):
            if first_round or row["metric"] in ("first_call_s", "wall_s"):
                emit(row)
        if first_round:
            peak, source = peak_memory()
            emit({**base, "metric": "peak_bytes", "value": peak, "unit": "bytes", "source": source})
            dtype_bytes = workload.args[1].dtype.itemsize
            per_token = workload.layer.min_bytes_per_token_at(cell.seq_len, dtype_bytes) * (1 if cell.mode == "fwd" else 2)
            emit({**base, "metric": "min_bytes_per_token", "value": per_token, "unit": "bytes", "source": type(workload.layer).__name__})
            if verify:
                emit(verify_row(cell, workload, base))
        if kept is not None and entry is None:
            kept[cell.key()] = (workload, timing.compiled)
        reason = "; ".join(timing.warnings)
    except Exception as error:  # noqa: BLE001 - any failure of a cell is a result, not a crash
        status, reason = classify_failure(error)
    emit(_cell_s(base, started, status, reason))
    return status


def run_cell_payload(payload: dict, emit: Callable[[dict], None]) -> None:
    """Entry of an isolated cell (:mod:`dlbench.cells`): one round of one cell."""
    from dlbench.plugins import load_models

    load_models()  # the parent exported its plugins in $DLBENCH_PLUGINS
    run_cell(Cell(**payload["cell"]), TimingPolicy(**payload["policy"]), emit, round_index=payload["round"], verify=payload["verify"])


def max_rel_err(got: Any, reference: Any) -> float:
    """max over output leaves of max|got - ref| / max|ref| (relative to each leaf's largest reference value)."""
    import jax
    import numpy as np

    worst = 0.0
    for a, b in zip(jax.tree_util.tree_leaves(got), jax.tree_util.tree_leaves(reference), strict=True):
        a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
        if not np.issubdtype(b.dtype, np.floating) or b.size == 0:
            continue
        scale = float(np.max(np.abs(b)))
        err = float(np.max(np.abs(a - b)))
        worst = max(worst, err / scale if scale > 0 else err)
    return worst


def verify_row(cell: Cell, workload: Workload, base: dict) -> dict:
    """The ``max_rel_err`` row of a cell: its outputs against the float64 sequential backend with the
    same parameters and inputs (a layer without ``sequential`` is checked against its own backend in
    float64, and the row's source says so)."""
    import jax
    import numpy as np

    if cell.target == "model":  # the same cell without dropout (its masks are drawn per dtype)
        workload = build_workload(cell, dropout=0.0)
    got = jax.tree.map(np.asarray, jax.jit(workload.check_fn)(*workload.args))
    scans = workload.layer.scans
    reference_backend = "sequential" if "sequential" in scans else workload.options["resolved_scan"]
    with jax.enable_x64(True):
        reference = build_workload(dataclasses.replace(cell, backend=reference_backend, dtype="float64", devices=1, seq_shard=False),
                                   dropout=0.0)

        def to64(x):
            if jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key):
                return x
            x = np.asarray(x)
            return x.astype(np.float64) if np.issubdtype(x.dtype, np.floating) or x.dtype == jax.numpy.bfloat16 else x

        args = jax.tree.map(to64, workload.args)
        expected = jax.jit(reference.check_fn)(*args)
        err = max_rel_err(got, expected)
    tolerance = verify_tolerance(cell.model, cell.dtype)
    ok = math.isfinite(err) and err <= tolerance
    return {**base, "metric": "max_rel_err", "value": err, "unit": "1", "source": f"vs {reference_backend} float64",
            "status": "ok" if ok else "error", "reason": f"tolerance {tolerance:g}" + ("" if ok else " exceeded")}


