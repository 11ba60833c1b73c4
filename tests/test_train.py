"""The training loop: model-blind, deterministic, SSM learning-rate partition, NaN policy, masking."""

import ast
import dataclasses
from pathlib import Path

import jax.numpy as jnp
import numpy as np
import pandas as pd
import pytest
from flax import nnx

import dlbench.train as train_module
from dlbench.config import ModelConfig, RunSpec, TaskConfig, TrainConfig
from dlbench.layers.base import SSMParam
from dlbench.rundir import RowWriter
from dlbench.tasks import Split, TaskData, load_task

ALLOWED = {"dlbench.checkpoints", "dlbench.config", "dlbench.distributed", "dlbench.layers.base", "dlbench.models", "dlbench.rundir", "dlbench.tasks", "dlbench.timing"}


def test_train_imports_no_concrete_layer():
    tree = ast.parse(Path(train_module.__file__).read_text())
    imported = set()
    for n in ast.walk(tree):
        if isinstance(n, ast.ImportFrom) and n.module == "dlbench":  # `from dlbench import x` names a module
            imported |= {f"dlbench.{a.name}" for a in n.names}
        elif isinstance(n, ast.ImportFrom) and n.module:
            imported.add(n.module)
    imported |= {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    ours = {m for m in imported if m.startswith("dlbench")}
    assert ours <= ALLOWED, f"train.py imports {ours - ALLOWED}"
    assert not any(m.startswith("dlbench.layers.") and m != "dlbench.layers.base" for m in imported)


class Toy(nnx.Module):
    def __init__(self):
        self.ssm = SSMParam(jnp.ones(3))
        self.other = nnx.Param(jnp.ones(2))


def test_ssm_params_get_their_own_learning_rate():
    model = Toy()
    optimizer = train_module.make_optimizer(model, TrainConfig(lr=0.1, ssm_lr=0.01, optimizer="adam"))
    grads = nnx.grad(lambda m: m.ssm[...].sum() + m.other[...].sum())(model)
    optimizer.update(model, grads)
    # Adam's first step moves every parameter by its learning rate (sign of the gradient).
    assert np.allclose(model.ssm[...], 1 - 0.01) and np.allclose(model.other[...], 1 - 0.1)


def test_warmup_cosine_schedule():
    schedule = train_module.learning_rate(1.0, TrainConfig(steps=100, warmup_steps=10, schedule="cosine"))
    assert float(schedule(0)) == 0.0 and np.isclose(float(schedule(10)), 1.0) and float(schedule(100)) < 1e-6


def tiny_data(n=12, length=7, channels=3, classes=3, seed=0, pad=False):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, classes, n).astype(np.int32)
    x = rng.standard_normal((n, length, channels)).astype(np.float32) + y[:, None, None]
    mask = None
    if pad:
        lengths = rng.integers(3, length + 1, n)
        mask = np.arange(length)[None] < lengths[:, None]
        x = np.where(mask[..., None], x, 0.0).astype(np.float32)
    split = Split(x, y, mask)
    return TaskData("toy", split, split, split, head="classification", num_outputs=classes)


def spec(model="attention", seed=0, **train):
    settings = ModelConfig(hidden_dim=4, state_dim=2, num_blocks=1)
    config = dataclasses.replace(TrainConfig(steps=6, batch_size=4, eval_every=3, lr=1e-2), **train)
    return RunSpec("toy", model, seed, TaskConfig(dataset="toy"), settings, config)


TIMES = ["lower_s", "compile_s", "first_window_s", "window_s", "step_time_s", "train_time_s", "peak_bytes"]


def rows(path):
    return pd.read_csv(path, keep_default_na=False, na_values=[""])


def test_deterministic_given_seed_and_rows_complete(tmp_path):
    data = tiny_data()
    results = []
    for name in ("a", "b"):
        train_module.train_run(spec(), data, RowWriter(tmp_path / f"{name}.csv"))
        frame = rows(tmp_path / f"{name}.csv")
        timeless = frame[~frame.metric.isin(TIMES)]
        results.append(timeless[["metric", "index", "value"]].reset_index(drop=True))
    pd.testing.assert_frame_equal(results[0], results[1])
    metrics = set(results[0].metric)
    assert {"param_count", "train_loss", "val_loss", "val_accuracy", "test_loss", "test_accuracy", "best_step"} <= metrics
    frame = rows(tmp_path / "a.csv")
    assert frame.metric.iloc[-1] == "test_accuracy"  # the final row marks a finished run
    assert set(frame.model) == {"attention"} and set(frame.task) == {"toy"} and set(frame.seed) == {0}
    assert frame.loc[frame.metric == "compile_s", "index"].item() == 0
    peak = frame[frame.metric == "peak_bytes"]
    assert len(peak) == 1 and peak.value.item() > 2**20 and peak.source.item() in ("rss", "memory_stats")


def test_nan_loss_writes_status_nan_and_stops(tmp_path):
    data = tiny_data()
    bad = dataclasses.replace(data, train=Split(np.full_like(data.train.x, np.nan), data.train.y))
    result = train_module.train_run(spec(), bad, RowWriter(tmp_path / "r.csv"))
    frame = rows(tmp_path / "r.csv")
    assert result.status == "nan"
    assert frame.status.iloc[-1] == "nan" and "non-finite" in frame.reason.iloc[-1]
    assert "test_accuracy" not in set(frame.metric)


def test_early_stopping_and_best_params(tmp_path):
    data = tiny_data()
    result = train_module.train_run(spec(steps=60, eval_every=1, patience=2, lr=1e-9), data, RowWriter(tmp_path / "r.csv"))
    # With a negligible learning rate validation never improves after the first evaluation.
    assert result.steps < 60 and result.best_step == 1


def test_masked_loss_ignores_padding():
    from dlbench.models import ModelConfig, build_model

    data = tiny_data(pad=True)
    model = build_model("attention", ModelConfig(num_inputs=3, hidden_dim=4, state_dim=2, num_blocks=1, num_outputs=3), seed=0)
    model.eval()
    x, y, mask = data.train.x, data.train.y, data.train.mask
    noisy = np.where(mask[..., None], x, 123.0).astype(np.float32)  # garbage in the padded steps
    weight = jnp.ones(len(x))
    clean = train_module.batch_sums(model, x, y, mask, weight)
    dirty = train_module.batch_sums(model, noisy, y, mask, weight)
    assert np.isclose(float(clean["loss"]), float(dirty["loss"]), rtol=1e-5)


def test_regression_metrics_on_decay(tmp_path):
    data = load_task(TaskConfig(dataset="decay", num_sequences=20, seq_len=16), 0, None)
    run = RunSpec("decay", "attention", 0, TaskConfig(dataset="decay"), ModelConfig(hidden_dim=4, state_dim=2, num_blocks=1), TrainConfig(steps=4, batch_size=4, eval_every=2))
    result = train_module.train_run(run, data, RowWriter(tmp_path / "r.csv"))
    frame = rows(tmp_path / "r.csv")
    assert list(frame.metric.iloc[-4:]) == ["test_loss", "test_mse", "test_mae", "test_rmse"]
    assert np.isclose(result.test["test_rmse"] ** 2, result.test["test_mse"])
    assert {"val_mse", "val_rmse", "val_mae"} <= set(frame.metric)
    # Squared error is in target units squared, never nats; MAE and RMSE in target units.
    units = dict(zip(frame.metric, frame.unit, strict=False))
    assert units["train_loss"] == units["test_loss"] == units["val_mse"] == "target^2"
    assert units["test_mae"] == units["test_rmse"] == "target"
    # MAE <= RMSE (Jensen), and both are consistent with the per-element errors of the best model.
    assert 0 < result.test["test_mae"] <= result.test["test_rmse"]


@pytest.mark.parametrize("n, batch", [(10, 4), (3, 8)])
def test_eval_batches_cover_every_row_once(n, batch):
    split = Split(np.arange(n, dtype=np.float32)[:, None, None], np.arange(n))
    weights = np.concatenate([w for *_, w in train_module.eval_batches(split, batch)])
    xs = np.concatenate([x for x, *_ in train_module.eval_batches(split, batch)])
    assert weights.sum() == n and sorted(xs[weights > 0, 0, 0]) == list(range(n))

