"""THE training loop: one model-blind loop for every registered model and task.

It sees models only through :func:`dlbench.models.build_model` and the layer contract: parameters
that need their own learning rate are declared by the layer as :class:`dlbench.layers.base.SSMParam`
and become one optax partition here (:func:`make_optimizer`), never matched by name.

Protocol (MODELS.md section 8): Adam (or AdamW), constant learning rate unless warm-up / cosine are
asked for, evaluation every ``eval_every`` steps, early stopping after ``patience`` evaluations without
validation improvement, the test metric read with the best-validation parameters. Training mode
(dropout on, BatchNorm batch statistics updated) only in the train step; evaluation runs in eval mode
(dropout off, BatchNorm running statistics).

Rows (tidy schema of :mod:`dlbench.rundir`, written as they are made, ``index`` = step):
  param_count, compile_s (lower + compile of the train step, apart from every step time),
  per evaluation: train_loss (mean over the window), step_time_s (median over the window; throughput
  = batch * seq_len / step_time_s is derived, not stored), val_loss, and val_accuracy (classification)
  or val_mse, val_rmse (regression);
  at the end: best_step, train_time_s, peak_bytes, test_loss, then test_accuracy, or test_mse and test_rmse.
The last row of a finished run is ``test_accuracy`` / ``test_rmse``, or a ``status=nan`` row when the
loss stopped being finite (see :data:`FINAL_METRICS`).

Data parallelism (one code path for 1 and N devices): the steps are ``jax.jit`` programs over a 1-D
mesh of ``devices`` (:mod:`dlbench.distributed`); parameters and optimiser state are replicated, every
batch is split over the mesh's "data" axis, and XLA inserts the gradient all-reduce. BatchNorm
statistics and the loss are over the global batch, so a step equals the single-device step. Rows carry
``devices``; tokens/s = batch * seq_len / step_time_s is the total, per device it is that / devices.
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
    """Per-batch sums (so uneven batches combine exactly): loss, and correct (classification) or squared error.

    ``weight`` (batch,) is 0 for the rows that only pad the last evaluation batch.
    """
    out = model(x, mask)
    if model.head == "classification":
        loss = optax.softmax_cross_entropy_with_integer_labels(out, y)
        correct = (jnp.argmax(out, axis=-1) == y).astype(jnp.float32)
        return {"loss": (loss * weight).sum(), "correct": (correct * weight).sum(), "count": weight.sum()}
    valid = _target_mask(mask, model, y).astype(jnp.float32) * weight[:, None]
    err = out.astype(jnp.float32) - y
    total = ((err**2).mean(axis=-1) * valid).sum()
    return {"loss": total, "se": total, "ae": (jnp.abs(err).mean(axis=-1) * valid).sum(), "count": valid.sum()}


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


def batches(split: Split, batch_size: int, rng: np.random.Generator) -> Iterator[tuple]:
    """Endless shuffled batches of exactly ``batch_size`` (one compiled shape); a new permutation per epoch."""
    n = len(split)
    while True:
        perm = rng.permutation(n)
        for start in range(0, n - batch_size + 1, batch_size):
            index = np.sort(perm[start : start + batch_size])
            yield split.x[index], split.y[index], None if split.mask is None else split.mask[index]


def eval_batches(split: Split, batch_size: int) -> Iterator[tuple]:
    """In-order batches, the last one padded to ``batch_size`` with weight-0 rows (one compiled shape)."""
    n = len(split)
    for start in range(0, n, batch_size):
        index = np.arange(start, min(start + batch_size, n))
        pad = batch_size - len(index)
        weight = np.concatenate([np.ones(len(index), np.float32), np.zeros(pad, np.float32)])
        index = np.concatenate([index, np.zeros(pad, index.dtype)])
        yield split.x[index], split.y[index], None if split.mask is None else split.mask[index], weight


# --- the loop ------------------------------------------------------------------------------------


def _metrics(head: str, sums: dict[str, float], prefix: str) -> dict[str, float]:
    count = max(sums["count"], 1.0)
    if head == "classification":
        return {f"{prefix}_loss": sums["loss"] / count, f"{prefix}_accuracy": sums["correct"] / count}
    mse = sums["se"] / count
    return {f"{prefix}_loss": mse, f"{prefix}_mse": mse, f"{prefix}_rmse": math.sqrt(mse), f"{prefix}_mae": sums["ae"] / count}


UNITS = {"accuracy": "fraction", "loss": "nats", "mse": "target^2", "rmse": "target", "mae": "target"}


def _better(head: str, new: dict[str, float], best: dict[str, float] | None, prefix: str = "val") -> bool:
    # Classification stops on validation accuracy (the papers'), regression on validation MSE.
    if best is None:
        return True
    if head == "classification":
        return new[f"{prefix}_accuracy"] > best[f"{prefix}_accuracy"]
    return new[f"{prefix}_mse"] < best[f"{prefix}_mse"]


def train_run(
    spec: RunSpec,
    data: TaskData,
    writer: RowWriter,
    *,
    on_step: Callable[[int, int], None] | None = None,
    devices: int | None = None,
) -> RunResult:
    """Train ``spec.model`` on ``data`` and write its rows to ``writer``; see the module docstring.

    Args:
      spec: the resolved run (model, seed, model settings, train config).
      data: the task's splits, x (n, seq, inputs).
      writer: row writer; this function adds task/model/seed/axes columns.
      on_step: called as ``on_step(step, total_steps)`` after every step (progress display).
      devices: data-parallel devices (all, every process's, when None: the largest count that
        divides the batch); an explicit count must divide the batch.
    Returns:
      the run's :class:`RunResult`.
    """
    cfg = spec.train
    batch_size = min(cfg.batch_size, len(data.train))
    eval_batch = min(cfg.eval_batch_size, max(len(data.val), len(data.test)))
    n_devices = distributed.resolve_devices(devices, divides=batch_size)
    mesh = distributed.make_mesh(n_devices)
    eval_batch = -(-eval_batch // n_devices) * n_devices  # weight-0 padding rows keep sums exact
    settings = spec.model_settings
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

    def write(metric: str, value: float, unit: str, index: int | None = None, **extra: Any) -> None:
        writer.write({**base, "metric": metric, "value": value, "unit": unit, "index": index, **extra})

    model = build_model(spec.model, model_config(spec, data), seed=spec.seed)
    write("param_count", count_parameters(model), "count")
    optimizer = make_optimizer(model, cfg)
    graphdef, state = nnx.split((model, optimizer))
    use_mask = data.has_mask

    def step_fn(state, x, y, mask):
        model, optimizer = nnx.merge(graphdef, state)
        loss, grads = loss_and_grads(model, x, y, mask if use_mask else None)
        optimizer.update(model, grads)
        return nnx.state((model, optimizer)), loss

    def eval_fn(state, x, y, mask, weight):
        model, _ = nnx.merge(graphdef, state)
        model.eval()  # dropout off, BatchNorm running statistics
        return batch_sums(model, x, y, mask if use_mask else None, weight)

    rng = np.random.default_rng(spec.seed)  # data order: deterministic given the seed
    stream = batches(data.train, batch_size, rng)
    x0, y0, m0 = next(stream)
    start = time.perf_counter()
    step, state, place = compile_sharded(step_fn, mesh, state, (x0, y0, m0))
    cache = jax.config.jax_compilation_cache_dir
    write("compile_s", time.perf_counter() - start, "s", 0, reason=f"compilation cache on: {cache}" if cache else "")
    evaluate_compiled = jax.jit(eval_fn, out_shardings=distributed.replicated(mesh))

    def evaluate(state, split: Split, prefix: str) -> dict[str, float]:
        totals: dict[str, float] = {}
        for xb, yb, mb, wb in eval_batches(split, eval_batch):
            for k, v in evaluate_compiled(state, *place((xb, yb, mb, wb))).items():
                totals[k] = totals.get(k, 0.0) + float(v)
        return _metrics(data.head, totals, prefix)

    pending = (x0, y0, m0)
    best: dict[str, float] | None = None
    best_state, best_step = state, 0
    since_best = 0
    window_losses: list[float] = []
    window_times: list[float] = []
    run_start = time.perf_counter()
    for i in range(1, cfg.steps + 1):
        xb, yb, mb = pending if pending is not None else next(stream)
        pending = None
        t0 = time.perf_counter()
        state, loss = step(state, *place((xb, yb, mb)))
        loss = float(loss)  # blocks on the step, so the time below is the step's
        window_times.append(time.perf_counter() - t0)
        if not math.isfinite(loss):
            write("train_loss", loss, "nats", i, status="nan", reason=f"non-finite training loss at step {i}")
            return RunResult("nan", best_step, i, {}, f"non-finite training loss at step {i}")
        window_losses.append(loss)
        if on_step is not None:
            on_step(i, cfg.steps)
        if i % cfg.eval_every and i != cfg.steps:
            continue
        write("train_loss", statistics.fmean(window_losses), "nats", i)
        write("step_time_s", statistics.median(window_times), "s", i)
        window_losses, window_times = [], []
        val = evaluate(state, data.val, "val")
        for name, value in val.items():
            write(name, value, UNITS[name.split("_", 1)[1]], i)
        if _better(data.head, val, best):
            best, best_state, best_step, since_best = val, state, i, 0
        else:
            since_best += 1
            if cfg.patience and since_best >= cfg.patience:
                break
    write("best_step", best_step, "step", best_step)
    write("train_time_s", time.perf_counter() - run_start, "s", i)
    # Peak memory so far: the device allocator's peak on GPUs; on CPU the process's peak RSS, which in
    # a suite is the peak over this run and the runs before it (source "rss" says so).
    peak, source = peak_memory()
    write("peak_bytes", peak, "bytes", i, source=source)
    test = evaluate(best_state, data.test, "test")
    # test_loss first; the run's final metric (FINAL_METRICS) goes last, so its presence marks a finished run.
    for name in sorted(test, key=lambda n: n in FINAL_METRICS):
        write(name, test[name], UNITS[name.split("_", 1)[1]], best_step)
    return RunResult("ok", best_step, i, test)
