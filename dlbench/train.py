"""THE training loop: one model-blind loop for every registered model and task.

It sees models only through :func:`dlbench.models.build_model` and the layer contract: parameters
that need their own learning rate are declared by the layer as :class:`dlbench.layers.base.SSMParam`
and become one optax partition here (:func:`make_optimizer`), never matched by name.

Protocol (docs/models.md section 8): Adam (or AdamW), constant learning rate unless warm-up / cosine are
asked for, evaluation every ``eval_every`` steps, early stopping after ``patience`` evaluations without
validation improvement, the test metric read with the best-validation parameters. Training mode
(dropout on, BatchNorm batch statistics updated) only in the train step; evaluation runs in eval mode
(dropout off, BatchNorm running statistics).

Fused windows (:class:`Trainer`): every split is put on the device(s) once; the steps between two
evaluations are ONE compiled program (a ``fori_loop`` over steps, state donated) that draws each
step's batch on the device from the seed (:func:`batch_indices`: epoch e's permutation is
``permutation(fold_in(key(seed), e))``, so the data order is a function of the seed and the step
alone, which also makes a resumed run draw the same batches) and returns the window's losses. Nothing
syncs with the host inside a window. A split too large for the device budget
(:func:`device_data_budget`) falls back to host batching with the same batch order (rows' ``source``
says ``host batches``).

Rows (tidy schema of :mod:`dlbench.rundir`, written as they are made, ``index`` = step):
  param_count; lower_s and compile_s of the window program (timed apart, ahead of time);
  per evaluation window: train_loss (mean over the window), first_window_s (the first window's wall
  time, warm-up included) or window_s (a later window's), step_time_s = window wall / steps, blocked on
  the window's result (steady windows only; a run with a single window reports it with a reason), so
  tokens/s = batch * seq_len / step_time_s per window; val_loss, and val_accuracy (classification) or
  val_mse, val_rmse, val_mae (regression, on the normalised target); checkpoint_step when a checkpoint
  is saved (:mod:`dlbench.checkpoints`);
  at the end: best_step, train_time_s, peak_bytes, test_loss, then test_accuracy, or test_mse,
  test_mae and test_rmse. Loss units: "nats" (cross-entropy) or "target^2" (squared error).
The last row of a finished run is ``test_accuracy`` / ``test_rmse``, or a ``status=nan`` row when the
loss stopped being finite (see :data:`FINAL_METRICS`).

Data parallelism (one code path for 1 and N devices): the programs are ``jax.jit`` programs over a
1-D mesh of ``devices`` (:mod:`dlbench.distributed`); parameters and optimiser state are replicated,
the splits and every batch are split over the mesh's "data" axis, and XLA inserts the gradient
all-reduce. BatchNorm statistics and the loss are over the global batch, so a step equals the
single-device step. Rows carry ``devices``; tokens/s is the total, per device it is that / devices.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
import statistics
import time
from collections.abc import Callable, Iterator
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from dlbench import distributed
from dlbench.config import RunSpec, TrainConfig
from dlbench.layers.base import SSMParam
from dlbench.models import ModelConfig, SequenceModel, build_model, count_parameters
from dlbench.rundir import FINAL_METRICS, RowWriter
from dlbench.tasks import Split, TaskData
from dlbench.timing import peak_memory


@dataclasses.dataclass(frozen=True)
class RunResult:
    """What one run ended with: its status, the step of the best validation, and the test metrics."""

    status: str
    best_step: int
    steps: int
    test: dict[str, float]
    reason: str = ""


def model_config(spec: RunSpec, data: TaskData) -> ModelConfig:
    """The backbone for ``spec`` on ``data`` (inputs, outputs and head come from the task)."""
    return dataclasses.replace(spec.model_settings, num_inputs=data.num_inputs, num_outputs=data.num_outputs, head=data.head,
                               output_step=data.output_step, output_activation=data.output_activation,
                               output_last=data.output_last)


def learning_rate(peak: float, config: TrainConfig) -> optax.Schedule | float:
    """Constant (the papers'), or linear warm-up then constant / cosine decay to 0 at ``steps``."""
    if config.schedule == "cosine":
        return optax.warmup_cosine_decay_schedule(0.0, peak, config.warmup_steps, config.steps, end_value=0.0)
    if config.warmup_steps:
        return optax.join_schedules(
            [optax.linear_schedule(0.0, peak, config.warmup_steps), optax.constant_schedule(peak)], [config.warmup_steps]
        )
    return peak


def _base_optimizer(peak: float, config: TrainConfig) -> optax.GradientTransformation:
    lr = learning_rate(peak, config)
    if config.optimizer == "adamw":
        return optax.adamw(lr, weight_decay=config.weight_decay)
    return optax.adam(lr)


def make_optimizer(model: nnx.Module, config: TrainConfig) -> nnx.Optimizer:
    """Adam/AdamW over every ``nnx.Param``; SSMParam leaves get ``ssm_lr`` when it is set.

    This is the one place where the variable type becomes an optax partition.
    """
    tx = _base_optimizer(config.lr, config)
    if config.ssm_lr and config.ssm_lr != config.lr:
        params = nnx.state(model, nnx.Param)
        labels = jax.tree.map(
            lambda v: "ssm" if isinstance(v, SSMParam) else "other", params, is_leaf=lambda x: isinstance(x, nnx.Variable)
        )
        tx = optax.multi_transform({"ssm": _base_optimizer(config.ssm_lr, config), "other": tx}, labels)
    if config.grad_clip:
        tx = optax.chain(optax.clip_by_global_norm(config.grad_clip), tx)
    return nnx.Optimizer(model, tx, wrt=nnx.Param)


# --- losses and metrics (masked) -----------------------------------------------------------------


def _target_mask(data_mask: jax.Array | None, model: SequenceModel, y: jax.Array) -> jax.Array:
    """Valid regression targets (batch, targets): the input mask read at the head's output steps."""
    if data_mask is None:
        return jnp.ones(y.shape[:2], bool)
    if model.output_last:
        return data_mask[:, -model.output_last :]
    step = model.output_step
    return data_mask[:, step - 1 :: step][:, : y.shape[1]]


def batch_sums(model: SequenceModel, x, y, mask, weight) -> dict[str, jax.Array]:
    """Per-batch sums (so uneven batches combine exactly): loss, and correct (classification) or squared
    and absolute error (regression, averaged over target channels, summed over valid targets).

    ``weight`` (batch,) is 0 for the rows that only pad the last evaluation batch.
    """
    out = model(x, mask)
    if model.head == "classification":
        loss = optax.softmax_cross_entropy_with_integer_labels(out, y)
        correct = (jnp.argmax(out, axis=-1) == y).astype(jnp.float32)
        return {"loss": (loss * weight).sum(), "correct": (correct * weight).sum(), "count": weight.sum()}
    dtype = jnp.promote_types(out.dtype, jnp.float32)  # never below float32 (a bfloat16 model's sums)
    valid = _target_mask(mask, model, y).astype(dtype) * weight[:, None]
    error = out.astype(dtype) - y.astype(dtype)
    total = ((error**2).mean(axis=-1) * valid).sum()
    absolute = (jnp.abs(error).mean(axis=-1) * valid).sum()
    return {"loss": total, "se": total, "ae": absolute, "count": valid.sum()}


def train_loss(model: SequenceModel, x, y, mask) -> jax.Array:
    sums = batch_sums(model, x, y, mask, jnp.ones(x.shape[0], jnp.float32))
    return sums["loss"] / jnp.maximum(sums["count"], 1.0)


def loss_and_grads(model: SequenceModel, x, y, mask):
    """(training loss, gradients w.r.t. the parameters) in train mode; updates BatchNorm statistics in ``model``."""
    model.train()  # dropout on, BatchNorm uses and updates batch statistics
    return nnx.value_and_grad(train_loss)(model, x, y, mask)


def compile_sharded(fn: Callable, mesh, state, batch: tuple, out_replicated: bool = True):
    """Lower and compile ``fn(state, *batch)`` with ``state`` replicated and ``batch`` split over ``mesh``.

    Returns (compiled, placed state, place) where ``place(batch)`` puts later batches the same way.
    The same program runs on a mesh of one device; outputs are replicated (every process can read them).
    """
    state = distributed.put_replicated(mesh, state)
    place = functools.partial(distributed.put_batch, mesh)
    shardings = {"out_shardings": distributed.replicated(mesh)} if out_replicated else {}
    compiled = jax.jit(fn, **shardings).lower(state, *place(batch)).compile()
    return compiled, state, place


# --- data order ----------------------------------------------------------------------------------


def batch_indices(key: jax.Array, step: jax.Array, n: int, batch_size: int) -> jax.Array:
    """Sorted example indices (batch,) of 0-based training step ``step``, drawn on the device.

    Epoch ``e = step // (n // batch_size)`` is the permutation ``permutation(fold_in(key, e), n)``;
    step s takes its ``s % (n // batch_size)``-th slice of ``batch_size`` (a ragged tail is never
    drawn, so every batch has one compiled shape). A function of the seed and the step alone.
    """
    per_epoch = n // batch_size
    perm = jax.random.permutation(jax.random.fold_in(key, step // per_epoch), n)
    return jnp.sort(jax.lax.dynamic_slice_in_dim(perm, (step % per_epoch) * batch_size, batch_size))


def window_indices(seed: int, first: int, count: int, n: int, batch_size: int) -> np.ndarray:
    """Host copy (count, batch) of the indices of steps ``first .. first + count - 1`` (host batching)."""
    return np.asarray(_window_indices(jnp.int32(seed), jnp.int32(first), count, n, batch_size))


@functools.partial(jax.jit, static_argnums=(2, 3, 4))
def _window_indices(seed, first, count: int, n: int, batch_size: int):
    key = jax.random.key(seed)
    return jax.vmap(lambda j: batch_indices(key, first + j, n, batch_size))(jnp.arange(count))


def eval_batches(split: Split, batch_size: int) -> Iterator[tuple]:
    """In-order batches, the last one padded to ``batch_size`` with weight-0 rows (one compiled shape)."""
    n = len(split)
    for start in range(0, n, batch_size):
        index = np.arange(start, min(start + batch_size, n))
        pad = batch_size - len(index)
        weight = np.concatenate([np.ones(len(index), np.float32), np.zeros(pad, np.float32)])
        index = np.concatenate([index, np.zeros(pad, index.dtype)])
        yield split.x[index], split.y[index], None if split.mask is None else split.mask[index], weight


def device_data_budget() -> int:
    """Bytes of split data one device may hold: ``$DLBENCH_DEVICE_DATA_BYTES``, else half the device's
    memory limit (accelerators), else a quarter of the host's physical memory (CPU)."""
    import os

    if os.environ.get("DLBENCH_DEVICE_DATA_BYTES"):
        return int(os.environ["DLBENCH_DEVICE_DATA_BYTES"])
    try:
        stats = jax.local_devices()[0].memory_stats() or {}
    except Exception:  # backends without memory statistics
        stats = {}
    if stats.get("bytes_limit"):
        return int(stats["bytes_limit"]) // 2
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // 4
    except (ValueError, OSError, AttributeError):
        return 2**30


def _nbytes(split: Split) -> int:
    return sum(a.nbytes for a in (split.x, split.y, split.mask) if a is not None)


# --- the compiled programs of one run ------------------------------------------------------------


def _pad_rows(a: np.ndarray, multiple: int) -> np.ndarray:
    extra = -len(a) % multiple
    return a if not extra else np.concatenate([a, np.zeros((extra, *a.shape[1:]), a.dtype)])


class Trainer:
    """The compiled programs of one run over its device-resident splits.

    ``window(state, first, count)`` runs steps ``first+1 .. first+count`` (``count <= window``) as one
    program and returns (new state, losses (window,) with NaN past ``count``); ``state`` is donated.
    ``evaluate(model_state, split_name)`` returns the summed metrics of a split. ``on_device`` is False
    when the splits exceed :func:`device_data_budget`: batches are then gathered on the host (same
    indices) and fed to a compiled single step, one per step.

    Args:
      model, optimizer: the run's model and :func:`make_optimizer`'s optimiser (their state is taken).
      data: the task's splits.
      batch_size, eval_batch: training and evaluation batch (both divisible by the mesh size).
      window: the most steps one window program runs (``eval_every``).
      seed: the data-order seed (:func:`batch_indices`).
      mesh: the data-parallel mesh.
      on_device: None decides from the budget; True/False forces device-resident / host batching.
    """

    def __init__(self, model: SequenceModel, optimizer: nnx.Optimizer, data: TaskData, *, batch_size: int,
                 eval_batch: int, window: int, seed: int, mesh, on_device: bool | None = None):
        self.mesh, self.batch_size, self.window, self.seed = mesh, batch_size, window, seed
        self.data, self.eval_batch = data, eval_batch
        self.use_mask = data.has_mask
        self.graphdef, state = nnx.split((model, optimizer))
        self.model_graphdef = nnx.graphdef(model)
        self.state = distributed.put_replicated(mesh, state)
        n_dev = mesh.devices.size
        per_device = (_nbytes(data.train) + _nbytes(data.val) + _nbytes(data.test)) / n_dev
        self.on_device = per_device <= device_data_budget() if on_device is None else on_device
        self.source = "device-resident data, fused window" if self.on_device else "host batches (splits exceed the device budget)"
        self._n = len(data.train)
        if self.on_device:
            train = (data.train.x, data.train.y, data.train.mask if self.use_mask else None)
            self.train_data = distributed.put_batch(mesh, tuple(None if a is None else _pad_rows(a, n_dev) for a in train))
        self._eval_data: dict[str, tuple] = {}
        self._eval_compiled = None
        self.lower_s = self.compile_s = 0.0

    # the pieces ---------------------------------------------------------------------------------

    def _constrain(self, tree):
        return jax.tree.map(lambda a: jax.lax.with_sharding_constraint(a, distributed.batch_sharding(self.mesh, a.ndim)), tree)

    def _step(self, state, x, y, mask):
        model, optimizer = nnx.merge(self.graphdef, state)
        loss, grads = loss_and_grads(model, x, y, mask if self.use_mask else None)
        optimizer.update(model, grads)
        return nnx.state((model, optimizer)), loss

    def _window(self, state, train, seed, first, count):
        key = jax.random.key(seed)
        x_all, y_all, m_all = train
        losses = jnp.full((self.window,), jnp.nan, self._loss_dtype)

        def body(j, carry):
            state, losses = carry
            index = batch_indices(key, first + j, self._n, self.batch_size)
            batch = self._constrain((x_all[index], y_all[index], None if m_all is None else m_all[index]))
            state, loss = self._step(state, *batch)
            return state, losses.at[j].set(loss)

        return jax.lax.fori_loop(0, count, body, (state, losses))

    def _scalar(self, value: int):
        return distributed.put_replicated(self.mesh, np.int32(value))

    def compile(self) -> None:
        """Lower and compile the training program ahead of time; sets ``lower_s`` and ``compile_s``."""
        d = self.data.train
        x0, y0, m0 = d.x[: self.batch_size], d.y[: self.batch_size], d.mask[: self.batch_size] if self.use_mask else None
        self._loss_dtype = jax.eval_shape(self._step, self.state, x0, y0, m0)[1].dtype
        out = distributed.replicated(self.mesh)
        start = time.perf_counter()
        if self.on_device:
            lowered = jax.jit(self._window, donate_argnums=0, out_shardings=out).lower(
                self.state, self.train_data, *(self._scalar(0) for _ in range(3)))
        else:
            lowered = jax.jit(self._step, donate_argnums=0, out_shardings=out).lower(
                self.state, *distributed.put_batch(self.mesh, (x0, y0, m0)))
        mid = time.perf_counter()
        self._compiled = lowered.compile()
        self.lower_s, self.compile_s = mid - start, time.perf_counter() - mid

    def window_run(self, state, first: int, count: int):
        """Steps first+1 .. first+count: (new state, losses (window,) on the device, NaN past count)."""
        if self.on_device:
            return self._compiled(state, self.train_data, self._scalar(self.seed), self._scalar(first), self._scalar(count))
        index = window_indices(self.seed, first, count, self._n, self.batch_size)
        d, losses = self.data.train, []
        for rows in index:
            batch = (d.x[rows], d.y[rows], d.mask[rows] if self.use_mask else None)
            state, loss = self._compiled(state, *distributed.put_batch(self.mesh, batch))
            losses.append(loss)
        pad = jnp.full((self.window - count,), jnp.nan, self._loss_dtype)
        return state, jnp.concatenate([jnp.stack(losses), pad])

    def _eval_fn(self, model_state, xs, ys, ms, ws):
        model = nnx.merge(self.model_graphdef, model_state)
        model.eval()  # dropout off, BatchNorm running statistics

        def body(_, batch):
            x, y, m, w = batch
            return None, batch_sums(model, x, y, m if self.use_mask else None, w)

        return jax.lax.scan(body, None, (xs, ys, ms, ws))[1]

    def evaluate(self, model_state, which: str) -> dict[str, float]:
        """Sums (loss, correct or se/ae, count) over split ``which`` ("val" or "test"), in float64 on the host."""
        split: Split = getattr(self.data, which)
        if which not in self._eval_data:
            parts = list(eval_batches(split, self.eval_batch))
            stacked = tuple(None if parts[0][k] is None else np.stack([p[k] for p in parts]) for k in range(4))
            if self.on_device:
                sharding = lambda a: distributed.batch_sharding(self.mesh, a.ndim, axis=1)  # noqa: E731
                self._eval_data[which] = distributed.put(stacked, sharding)
            else:
                self._eval_data[which] = stacked
        if self._eval_compiled is None:
            self._eval_compiled = jax.jit(self._eval_fn, out_shardings=distributed.replicated(self.mesh))
        data = self._eval_data[which]
        if self.on_device:
            sums = self._eval_compiled(model_state, *data)
        else:  # one batch at a time through the same program (a stack of one)
            pieces = []
            for k in range(len(data[0])):
                one = tuple(None if a is None else a[k : k + 1] for a in data)
                one = distributed.put(one, lambda a: distributed.batch_sharding(self.mesh, a.ndim, axis=1))
                pieces.append(self._eval_compiled(model_state, *one))
            sums = {key: jnp.concatenate([p[key] for p in pieces]) for key in pieces[0]}
        return {k: math.fsum(np.asarray(v, np.float64).tolist()) for k, v in sums.items()}


def model_part(state):
    """The model's state inside the (model, optimizer) state of :class:`Trainer`."""
    return state[0]


# --- the loop ------------------------------------------------------------------------------------


def _metrics(head: str, sums: dict[str, float], prefix: str) -> dict[str, float]:
    count = max(sums["count"], 1.0)
    if head == "classification":
        return {f"{prefix}_loss": sums["loss"] / count, f"{prefix}_accuracy": sums["correct"] / count}
    mse = sums["se"] / count
    return {f"{prefix}_loss": mse, f"{prefix}_mse": mse, f"{prefix}_mae": sums["ae"] / count, f"{prefix}_rmse": math.sqrt(mse)}


UNITS = {"accuracy": "fraction", "mse": "target^2", "rmse": "target", "mae": "target"}


def loss_unit(head: str) -> str:
    """Cross-entropy in nats (classification); squared error in target units squared (regression)."""
    return "nats" if head == "classification" else "target^2"


def _unit(head: str, metric: str) -> str:
    kind = metric.split("_", 1)[1]
    return loss_unit(head) if kind == "loss" else UNITS[kind]


def _better(head: str, new: dict[str, float], best: dict[str, float] | None, prefix: str = "val") -> bool:
    # Classification stops on validation accuracy (the papers'), regression on validation MSE.
    if best is None:
        return True
    if head == "classification":
        return new[f"{prefix}_accuracy"] > best[f"{prefix}_accuracy"]
    return new[f"{prefix}_mse"] < best[f"{prefix}_mse"]


@dataclasses.dataclass(frozen=True)
class EvalProgress:
    """What one evaluation reports to a progress display (``train_run(on_eval=...)``)."""

    step: int
    total: int
    metric: str
    value: float
    tokens_per_s: float
    elapsed_s: float
    eta_s: float


def _duration(seconds: float) -> str:
    if not math.isfinite(seconds):
        return "?"
    seconds = int(round(seconds))
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


def progress_line(info: EvalProgress, spec: RunSpec, run_index: int, run_count: int) -> str:
    """One plain log line per evaluation, for output that is not a terminal (SLURM logs, ``| tee``, CI).

    ``run_index`` counts from 1. Example:
    ``run 2/6 linoss-im eigenworms seed 2345 step 3000/100000 val_accuracy=0.6111 41,230 tok/s elapsed 0:05:12 eta 2:41:00``
    """
    return (f"run {run_index}/{run_count} {spec.model} {spec.task} seed {spec.seed} step {info.step}/{info.total} "
            f"{info.metric}={info.value:.4g} {info.tokens_per_s:,.0f} tok/s "
            f"elapsed {_duration(info.elapsed_s)} eta {_duration(info.eta_s)}")


def train_run(
    spec: RunSpec,
    data: TaskData,
    writer: RowWriter,
    *,
    on_step: Callable[[int, int], None] | None = None,
    on_eval: Callable[[EvalProgress], None] | None = None,
    devices: int | None = None,
    checkpoint_dir: str | None = None,
    resume: bool = False,
    on_device: bool | None = None,
) -> RunResult:
    """Train ``spec.model`` on ``data`` and write its rows to ``writer``; see the module docstring.

    Args:
      spec: the resolved run (model, seed, model settings, train config).
      data: the task's splits, x (n, seq, inputs).
      writer: row writer; this function adds task/model/seed/axes columns.
      on_step: called as ``on_step(step, total_steps)`` after every window (progress display).
      on_eval: called with an :class:`EvalProgress` after every evaluation (see :func:`progress_line`).
      devices: data-parallel devices (all, every process's, when None: the largest count that
        divides the batch); an explicit count must divide the batch.
      checkpoint_dir: the run directory's ``checkpoints`` folder (:mod:`dlbench.checkpoints`); None
        saves nothing. State and best parameters are saved every ``train.checkpoint_every``
        evaluations and the best parameters at the end.
      resume: continue from this cell's last checkpoint in ``checkpoint_dir`` when there is one (its
        rows are written again first, so the run ends with the rows of an uninterrupted run).
      on_device: force device-resident data (True) or host batching (False); None: by the budget.
    Returns:
      the run's :class:`RunResult`.
    """
    from dlbench import checkpoints

    cfg = spec.train
    batch_size = min(cfg.batch_size, len(data.train))
    eval_batch = min(cfg.eval_batch_size, max(len(data.val), len(data.test)))
    n_devices = distributed.resolve_devices(devices, divides=batch_size)
    mesh = distributed.make_mesh(n_devices)
    eval_batch = -(-eval_batch // n_devices) * n_devices  # weight-0 padding rows keep sums exact
    settings = spec.model_settings
    head = data.head
    base = {
        "task": spec.task,
        "model": spec.model,
        "seed": spec.seed,
        "layer_options": json.dumps(dict(settings.layer_options), sort_keys=True) if settings.layer_options else "",
        "seq_len": data.seq_len,
        "batch": batch_size,
        "hidden": settings.hidden_dim,
        "state": settings.state_dim,
        "blocks": settings.num_blocks,
        "dtype": "float32",
        "mode": "train",
        "backend": settings.scan,
        "devices": n_devices,
    }
    emitted: list[dict[str, Any]] = []  # this run's rows, kept for checkpoints (a resume writes them again)

    def write(metric: str, value: float, unit: str, index: int | None = None, **extra: Any) -> None:
        row = {**base, "metric": metric, "value": value, "unit": unit, "index": index, **extra}
        emitted.append(row)
        writer.write(row)

    mconfig = model_config(spec, data)
    model = build_model(spec.model, mconfig, seed=spec.seed)
    optimizer = make_optimizer(model, cfg)
    trainer = Trainer(model, optimizer, data, batch_size=batch_size, eval_batch=eval_batch, window=cfg.eval_every,
                      seed=spec.seed, mesh=mesh, on_device=on_device)
    saver = None
    if checkpoint_dir is not None and jax.process_count() == 1:
        saver = checkpoints.RunCheckpointer(checkpoint_dir, spec.task, spec.model, spec.seed, model_name=spec.model,
                                            config=mconfig, fresh=not resume)
    state = trainer.state
    best: dict[str, float] | None = None
    best_step, since_best, done, evaluations, elapsed_before = 0, 0, 0, 0, 0.0
    restored = saver.restore(state) if saver is not None and resume else None
    trainer.compile()
    if restored is not None:
        state, best_model, meta = restored
        for row in meta["rows"]:
            emitted.append(row)
            writer.write(row)
        best, best_step, since_best = meta["best"], meta["best_step"], meta["since_best"]
        done, evaluations, elapsed_before = meta["step"], meta["evaluations"], meta["elapsed_s"]
    else:
        write("param_count", count_parameters(model), "count")
        cache = jax.config.jax_compilation_cache_dir
        note = f"compilation cache on: {cache}" if cache else ""
        write("lower_s", trainer.lower_s, "s", 0, source=trainer.source)
        write("compile_s", trainer.compile_s, "s", 0, reason=note, source=trainer.source)
        best_model = None
    del model, optimizer
    tokens = batch_size * data.seq_len
    steady: list[float] = []
    first_window = restored is None
    run_start = time.perf_counter()
    i = done
    while done < cfg.steps:
        count = min(cfg.eval_every, cfg.steps - done)
        t0 = time.perf_counter()
        state, losses = trainer.window_run(state, done, count)
        losses = np.asarray(losses)[:count]  # blocks on the window's result
        wall = time.perf_counter() - t0
        i = done = done + count
        bad = np.flatnonzero(~np.isfinite(losses))
        if bad.size:
            at = i - count + 1 + int(bad[0])
            write("train_loss", float(losses[bad[0]]), loss_unit(head), at, status="nan", reason=f"non-finite training loss at step {at}")
            return RunResult("nan", best_step, at, {}, f"non-finite training loss at step {at}")
        if on_step is not None:
            on_step(i, cfg.steps)
        write("train_loss", math.fsum(losses.astype(np.float64).tolist()) / count, loss_unit(head), i)
        if first_window:
            write("first_window_s", wall, "s", i, source=trainer.source)
            if i == cfg.steps:  # the only window: its step time is all there is
                write("step_time_s", wall / count, "s", i, source=trainer.source, reason="only window: includes warm-up")
        else:
            after_resume = "first window after resume" if restored is not None and not steady else ""
            write("window_s", wall, "s", i, source=trainer.source, reason=after_resume)
            write("step_time_s", wall / count, "s", i, source=trainer.source)
            steady.append(wall / count)
        first_window = False
        val = _metrics(head, trainer.evaluate(model_part(state), "val"), "val")
        for name, value in val.items():
            write(name, value, _unit(head, name), i)
        evaluations += 1
        stop = False
        if _better(head, val, best):
            best, best_step, since_best = val, i, 0
            best_model = jax.tree.map(jnp.copy, model_part(state))  # the window program donates `state`
        else:
            since_best += 1
            stop = bool(cfg.patience and since_best >= cfg.patience)
        elapsed = elapsed_before + time.perf_counter() - run_start
        if saver is not None and cfg.checkpoint_every and evaluations % cfg.checkpoint_every == 0 and not stop and i < cfg.steps:
            row = {**base, "metric": "checkpoint_step", "value": i, "unit": "step", "index": i}
            saver.save(i, state, best_model, {"rows": [*emitted, row], "best": best, "best_step": best_step,
                                             "since_best": since_best, "step": i, "evaluations": evaluations,
                                             "elapsed_s": elapsed})
            emitted.append(row)
            writer.write(row)
        if on_eval is not None:
            per_step = statistics.median(steady) if steady else wall / count
            metric = "val_accuracy" if head == "classification" else "val_mse"
            on_eval(EvalProgress(i, cfg.steps, metric, val[metric], tokens / per_step, elapsed, (cfg.steps - i) * per_step))
        if stop:
            break
    write("best_step", best_step, "step", best_step)
    write("train_time_s", elapsed_before + time.perf_counter() - run_start, "s", i)
    # Peak memory so far: the device allocator's peak on GPUs; on CPU the process's peak RSS, which in
    # a suite is the peak over this run and the runs before it (source "rss" says so).
    peak, source = peak_memory()
    write("peak_bytes", peak, "bytes", i, source=source)
    test = _metrics(head, trainer.evaluate(best_model, "test"), "test")
    if saver is not None:
        saver.save_best(i, best_model, {"best_step": best_step, "step": i, "finished": True})
    # test_loss first; the run's final metric (FINAL_METRICS) goes last, so its presence marks a finished run.
    for name in sorted(test, key=lambda n: n in FINAL_METRICS):
        write(name, test[name], _unit(head, name), best_step)
    return RunResult("ok", best_step, i, test)
