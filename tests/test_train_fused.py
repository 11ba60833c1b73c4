"""Fused windows equal single steps; host batching equals device-resident data; checkpoints resume exactly."""

import dataclasses
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd
import pytest
from flax import nnx

import dlbench.train as train_module
from dlbench.checkpoints import load_run_params
from dlbench.config import ModelConfig, RunSpec, TaskConfig, TrainConfig
from dlbench.models import build_model
from dlbench.rundir import RowWriter
from dlbench.tasks import Split, TaskData

REPO = Path(__file__).resolve().parents[1]
TIMES = ["lower_s", "compile_s", "first_window_s", "window_s", "step_time_s", "train_time_s", "peak_bytes"]


def toy(n=13, length=11, channels=3, classes=5, seed=0, dtype=np.float32):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, classes, n).astype(np.int32)
    x = (rng.standard_normal((n, length, channels)) + y[:, None, None]).astype(dtype)
    split = Split(x, y)
    return TaskData("toy", split, split, split, head="classification", num_outputs=classes)


def test_batch_indices_are_epoch_permutations_of_the_seed():
    key = jax.random.key(3)
    steps = [np.asarray(train_module.batch_indices(key, jnp.int32(s), 13, 4)) for s in range(6)]
    # 13 // 4 = 3 batches per epoch: each epoch's three batches are disjoint, sorted, and in range.
    for epoch in (steps[:3], steps[3:]):
        flat = np.concatenate(epoch)
        assert len(set(flat.tolist())) == 12 and flat.max() < 13
        assert all((np.diff(b) > 0).all() for b in epoch)
    assert not all((a == b).all() for a, b in zip(steps[:3], steps[3:], strict=True))  # a new permutation per epoch
    host = train_module.window_indices(3, 2, 3, 13, 4)
    assert (host == np.stack(steps[2:5])).all()
    other = train_module.window_indices(4, 0, 3, 13, 4)
    assert not (other == np.stack(steps[:3])).all()


def host(a):
    return np.asarray(jax.random.key_data(a) if jax.dtypes.issubdtype(a.dtype, jax.dtypes.prng_key) else a)


def test_fused_window_equals_single_steps_float64():
    """K steps as one program (device-resident data) == K single compiled steps on host batches."""
    jax.config.update("jax_enable_x64", True)
    try:
        data = toy(dtype=np.float64)
        config = ModelConfig(num_inputs=3, hidden_dim=7, state_dim=6, num_blocks=2, num_outputs=5, dropout=0.1)
        out = []
        for on_device in (True, False):
            model = build_model("lru", config, seed=0, dtype=jnp.float64)
            optimizer = train_module.make_optimizer(model, TrainConfig(lr=1e-2))
            trainer = train_module.Trainer(model, optimizer, data, batch_size=4, eval_batch=5, window=7, seed=11,
                                           mesh=jax.sharding.Mesh(np.array(jax.devices()[:1]), ("data",)), on_device=on_device)
            trainer.compile()
            state = trainer.state
            state, first = trainer.window_run(state, 0, 7)
            state, second = trainer.window_run(state, 7, 5)  # a shorter last window, same program
            losses = np.concatenate([np.asarray(first), np.asarray(second)])
            params = jax.tree.map(host, nnx.to_pure_dict(train_module.model_part(state)))
            out.append((losses, params, trainer.evaluate(train_module.model_part(state), "val")))
        (l1, p1, v1), (l2, p2, v2) = out
        assert np.asarray(first).dtype == np.float64
        assert np.isnan(l1[-2:]).all() and np.isnan(l2[-2:]).all()  # past `count`: NaN
        assert np.allclose(l1[:12], l2[:12], rtol=0, atol=1e-13), (l1, l2)
        leaves1, leaves2 = jax.tree.leaves(p1), jax.tree.leaves(p2)
        assert max(float(np.max(np.abs(a.astype(np.float64) - b.astype(np.float64)))) for a, b in zip(leaves1, leaves2, strict=True)) < 1e-13
        assert v1 == pytest.approx(v2, rel=1e-13)
        # Training moved the parameters (the comparison is not between two untouched models).
        fresh = nnx.to_pure_dict(nnx.state(build_model("lru", config, seed=0, dtype=jnp.float64)))
        assert not np.allclose(fresh["encoder"]["kernel"], p1["encoder"]["kernel"])
    finally:
        jax.config.update("jax_enable_x64", False)


def spec(model="attention", seed=0, **train):
    settings = ModelConfig(hidden_dim=4, state_dim=2, num_blocks=1)
    config = dataclasses.replace(TrainConfig(steps=9, batch_size=4, eval_every=3, lr=1e-2), **train)
    return RunSpec("toy", model, seed, TaskConfig(dataset="toy"), settings, config)


def values(path):
    frame = pd.read_csv(path, keep_default_na=False, na_values=[""])
    return frame[~frame.metric.isin(TIMES)][["metric", "index", "value", "unit", "status"]].reset_index(drop=True)


def test_host_batching_gives_the_same_rows_and_says_so(tmp_path):
    data = toy()
    for name, on_device in (("dev", True), ("host", False)):
        train_module.train_run(spec(), data, RowWriter(tmp_path / f"{name}.csv"), on_device=on_device)
    pd.testing.assert_frame_equal(values(tmp_path / "dev.csv"), values(tmp_path / "host.csv"), rtol=1e-6)
    host = pd.read_csv(tmp_path / "host.csv", keep_default_na=False)
    assert host[host.metric == "step_time_s"].source.str.startswith("host batches").all()
    dev = pd.read_csv(tmp_path / "dev.csv", keep_default_na=False)
    assert dev[dev.metric == "compile_s"].source.item().startswith("device-resident")


def test_time_rows_first_window_apart(tmp_path):
    train_module.train_run(spec(), toy(), RowWriter(tmp_path / "r.csv"))
    frame = pd.read_csv(tmp_path / "r.csv", keep_default_na=False, na_values=[""])
    by = {m: list(frame[frame.metric == m]["index"]) for m in TIMES}
    assert by["lower_s"] == by["compile_s"] == [0]
    assert by["first_window_s"] == [3] and by["window_s"] == [6, 9] and by["step_time_s"] == [6, 9]
    window = frame[frame.metric == "window_s"].value.to_numpy()
    step = frame[frame.metric == "step_time_s"].value.to_numpy()
    assert np.allclose(step, window / 3)


def test_progress_line_and_callback(tmp_path):
    seen = []
    run = spec()
    train_module.train_run(run, toy(), RowWriter(tmp_path / "r.csv"), on_eval=seen.append)
    assert [s.step for s in seen] == [3, 6, 9] and all(s.total == 9 for s in seen)
    assert seen[-1].eta_s == 0 and seen[-1].tokens_per_s > 0 and seen[-1].metric == "val_accuracy"
    line = train_module.progress_line(seen[1], run, 2, 5)
    assert line.startswith("run 2/5 attention toy seed 0 step 6/9 val_accuracy=") and "tok/s" in line and "eta" in line
    assert "\n" not in line


def test_resume_in_process_equals_uninterrupted_and_best_params_load(tmp_path):
    data = toy()
    run = spec(steps=12, checkpoint_every=1, patience=0)
    full = train_module.train_run(run, data, RowWriter(tmp_path / "full.csv"), checkpoint_dir=tmp_path / "a")
    # A crashed run: stopped by an exception right after the evaluation at step 6 (checkpoints at 3 and 6).
    with pytest.raises(KeyboardInterrupt):
        def stop(info):
            if info.step == 6:
                raise KeyboardInterrupt
        train_module.train_run(run, data, RowWriter(tmp_path / "part.csv"), checkpoint_dir=tmp_path / "b", on_eval=stop)
    resumed = train_module.train_run(run, data, RowWriter(tmp_path / "resumed.csv"), checkpoint_dir=tmp_path / "b", resume=True)
    assert resumed.test == full.test and resumed.best_step == full.best_step
    pd.testing.assert_frame_equal(values(tmp_path / "full.csv"), values(tmp_path / "resumed.csv"))
    frame = pd.read_csv(tmp_path / "resumed.csv", keep_default_na=False, na_values=[""])
    assert list(frame[frame.metric == "checkpoint_step"]["index"]) == [3, 6, 9]
    assert frame[frame.metric == "window_s"].reason.tolist().count("first window after resume") == 1


def test_load_run_params_reproduces_test_metrics(tmp_path):
    data = toy()
    run = spec(steps=6)
    result = train_module.train_run(run, data, RowWriter(tmp_path / "r.csv"), checkpoint_dir=tmp_path / "checkpoints")
    model = load_run_params(tmp_path, "attention", "toy", 0)
    sums = train_module.batch_sums(model, data.test.x, data.test.y, None, jnp.ones(len(data.test.y)))
    assert float(sums["correct"] / sums["count"]) == pytest.approx(result.test["test_accuracy"])
    assert float(sums["loss"] / sums["count"]) == pytest.approx(result.test["test_loss"], rel=1e-5)
    with pytest.raises(Exception, match="no best parameters"):
        load_run_params(tmp_path, "attention", "toy", 1)
