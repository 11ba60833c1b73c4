"""Scaling out on CPU: data-parallel steps, the sequence-parallel scan, and a two-process job.

Several devices need ``XLA_FLAGS=--xla_force_host_platform_device_count=4`` before JAX starts, and this
pytest process has already started JAX with one device, so the checks run in fresh subprocesses.
"""

import json
import os
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import pandas as pd
import pytest

REPO = Path(__file__).resolve().parents[1]


def xla_flags(devices: int) -> str:
    """This process's XLA flags (the test run's fast-compile ones, see conftest) plus the device count."""
    return f"{os.environ.get('XLA_FLAGS', '')} --xla_force_host_platform_device_count={devices}".strip()


def run_python(script: str, tmp_path: Path, devices: int = 4, timeout: int = 300) -> dict:
    path = tmp_path / "check.py"
    path.write_text(textwrap.dedent(script))
    env = {**os.environ, "XLA_FLAGS": xla_flags(devices), "DLBENCH_JAX_CACHE": "off"}
    proc = subprocess.run([sys.executable, str(path)], capture_output=True, text=True, timeout=timeout, env=env, cwd=REPO)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


SEQ_SHARD = """
import json
import jax
jax.config.update("jax_enable_x64", True)
import numpy as np
from dlbench.errors import DlbenchError
from dlbench.scan_cell import Cell, build_workload
import dlbench.layers  # noqa: F401  (registers the built-in models)
from dlbench.registry import get_model, model_names

assert jax.device_count() == 4
# Every model once; each generic backend and the gradients (fwdbwd) on several layer families.
CASES = [(m, "associative", "fwd") for m in model_names() if m != "attention"]
CASES += [("s6", "sequential", "fwd")]
CASES += [("dlinoss", "chunked", "fwdbwd"), ("lru", "chunked", "fwdbwd"), ("mamba", "chunked", "fwdbwd")]
CASES += [("attention", "auto", "fwd")]
own = [s for s in get_model("dlinoss").layer.scans if s not in ("sequential", "associative", "chunked", "auto")]
CASES += [("dlinoss", own[0], "fwd")] if own else []
out = {}
for model, backend, mode in CASES:
    # L = 4 * 9 (distinct primes elsewhere: H 5, batch 3; P 6, even for the conjugate-pair S5).
    one = Cell(model, backend, mode, 36, 3, 5, 6, "layer", "float64", 0, 1, False)
    four = Cell(model, backend, mode, 36, 3, 5, 6, "layer", "float64", 0, 4, True)
    fn, args, _, _ = build_workload(one)
    reference = jax.tree.map(np.asarray, jax.jit(fn)(*args))
    try:
        fn4, args4, _, options = build_workload(four)
    except DlbenchError as error:
        out[f"{model}/{backend}/{mode}"] = "n/a"
        continue
    sharded = jax.tree.map(np.asarray, jax.jit(fn4)(*args4))
    assert options["seq_shard"] and args4[1].sharding.spec[1] == "seq"
    errors = jax.tree.leaves(jax.tree.map(lambda a, b: float(np.max(np.abs(a - b)) / (1 + np.max(np.abs(a)))), reference, sharded))
    out[f"{model}/{backend}/{mode}"] = max(errors)

# The public primitive itself, called in shard_map: time-varying diagonal and invariant 2x2 blocks, h0 given.
from jax.sharding import PartitionSpec as P
from dlbench.distributed import SEQ, make_mesh
from dlbench.layers.kernels.scan import BLOCK2X2, DIAGONAL, linear_scan, sharded_linear_scan

rng = np.random.default_rng(1)
mesh = make_mesh(4, SEQ)
for name, semigroup, invariant, a, b, h0 in (
    ("diagonal", DIAGONAL, False, rng.uniform(0.5, 1.0, (36, 3)), rng.normal(size=(36, 3)), rng.normal(size=3)),
    ("block2x2", BLOCK2X2, True, 0.6 * rng.normal(size=(3, 2, 2)), rng.normal(size=(36, 3, 2)), rng.normal(size=(3, 2))),
):
    options = dict(backend="chunked", semigroup=semigroup, invariant=invariant, h0=h0, chunk_size=4)
    reference = np.asarray(linear_scan(a, b, **options))
    local = lambda a, b: sharded_linear_scan(a, b, axis_name=SEQ, **options)
    a_spec = P() if invariant else P(SEQ)
    sharded = jax.jit(jax.shard_map(local, mesh=mesh, in_specs=(a_spec, P(SEQ)), out_specs=P(SEQ), check_vma=False))(a, b)
    out[f"sharded_linear_scan/{name}"] = float(np.max(np.abs(np.asarray(sharded) - reference)))
print(json.dumps(out))
"""


def test_sequence_sharded_scan_equals_single_device_float64(tmp_path):
    result = run_python(SEQ_SHARD, tmp_path)
    numeric = {k: v for k, v in result.items() if v != "n/a"}
    not_applicable = sorted(k for k, v in result.items() if v == "n/a")
    # Every LTI layer (2x2 blocks and diagonal) and the selective scan; all generic backends; gradients.
    for model in ("linoss-imex", "linoss-im", "dlinoss", "s5", "lru", "s6", "mamba"):
        assert f"{model}/associative/fwd" in numeric, (model, result)
    for key in ("s6/sequential/fwd", "dlinoss/chunked/fwdbwd", "lru/chunked/fwdbwd", "mamba/chunked/fwdbwd",
                "sharded_linear_scan/diagonal", "sharded_linear_scan/block2x2"):
        assert key in numeric, (key, result)
    assert max(numeric.values()) < 1e-12, numeric
    # Attention has no recurrence to split; a layer's own (non-scan) formulation is not sequence-parallel.
    assert "attention/auto/fwd" in not_applicable
    assert all(k.split("/")[1] not in ("sequential", "associative", "chunked") for k in not_applicable), not_applicable


DATA_PARALLEL = """
import json
import jax
jax.config.update("jax_enable_x64", True)
import jax.numpy as jnp
import numpy as np
from flax import nnx
from dlbench import distributed
from dlbench.config import TrainConfig
from dlbench.models import ModelConfig, build_model
from dlbench.train import compile_sharded, loss_and_grads, make_optimizer

out = {}
rng = np.random.default_rng(0)
x = rng.normal(size=(12, 17, 3))
y = rng.integers(0, 5, size=12)
for name in ("lru", "dlinoss"):
    # BatchNorm (statistics over the global batch) and dropout (same bits however the batch is split).
    config = ModelConfig(num_inputs=3, hidden_dim=7, state_dim=6, num_blocks=2, num_outputs=5, norm="batch", dropout=0.1)
    results = []
    for devices in (1, 4):
        model = build_model(name, config, seed=0, dtype=jnp.float64)
        graphdef, state = nnx.split((model, make_optimizer(model, TrainConfig())))

        def fn(state, x, y):
            model, _ = nnx.merge(graphdef, state)
            loss, grads = loss_and_grads(model, x, y, None)
            return loss, grads, nnx.state(model, nnx.BatchStat)

        mesh = distributed.make_mesh(devices)
        compiled, placed, place = compile_sharded(fn, mesh, state, (x, y))
        args = place((x, y))
        assert len(args[0].sharding.device_set) == devices and args[0].sharding.spec[0] == "data"
        loss, grads, stats = compiled(placed, *args)
        results.append((float(loss), jax.tree.map(np.asarray, grads), jax.tree.map(np.asarray, stats)))
    (l1, g1, s1), (l4, g4, s4) = results
    grad_err = max(jax.tree.leaves(jax.tree.map(lambda a, b: float(np.max(np.abs(a - b))), g1, g4)))
    stat_err = max(jax.tree.leaves(jax.tree.map(lambda a, b: float(np.max(np.abs(a - b))), s1, s4)))
    grad_scale = max(jax.tree.leaves(jax.tree.map(lambda a: float(np.max(np.abs(a))), g1)))
    out[name] = {"loss": [l1, l4], "grad_err": grad_err, "grad_scale": grad_scale, "stat_err": stat_err}
print(json.dumps(out))
"""


def test_sharded_training_step_equals_unsharded(tmp_path):
    result = run_python(DATA_PARALLEL, tmp_path)
    for name, r in result.items():
        assert abs(r["loss"][0] - r["loss"][1]) < 1e-12, (name, r)
        assert r["grad_scale"] > 1e-6 and r["grad_err"] < 1e-12 * max(1.0, r["grad_scale"]), (name, r)
        assert r["stat_err"] < 1e-12, (name, r)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


TINY = ["--seeds", "0", "--set", "train.steps=2", "--set", "train.eval_every=1", "--set", "model.hidden_dim=4",
        "--set", "model.state_dim=2", "--set", "model.num_blocks=1", "--set", "train.batch_size=4"]


def test_two_processes_one_cell_only_process_zero_writes(tmp_path):
    port = _free_port()
    procs = []
    for pid in (0, 1):
        cwd = tmp_path / f"p{pid}"
        cwd.mkdir()
        argv = [sys.executable, "-c", "import sys; from dlbench.cli import main; sys.exit(main(sys.argv[1:]))",
                "run", "smoke", "--model", "attention", *TINY, "--out", "out",
                "--coordinator", f"127.0.0.1:{port}", "--num-processes", "2", "--process-id", str(pid)]
        env = {**os.environ, "DLBENCH_JAX_CACHE": "off", "XLA_FLAGS": xla_flags(1),
               "PYTHONPATH": str(REPO)}
        procs.append(subprocess.Popen(argv, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    try:
        outs = [p.communicate(timeout=180) for p in procs]
    finally:
        for p in procs:  # a hung job must not outlive the test
            p.kill()
    for p, (_, err) in zip(procs, outs, strict=True):
        assert p.returncode == 0, err[-3000:]
    assert not (tmp_path / "p1" / "out").exists(), "process 1 wrote output"
    rows = pd.read_csv(tmp_path / "p0" / "out" / "rows.csv")
    assert set(rows.model) == {"attention"} and rows.run_id.nunique() == 1
    # One global mesh over both processes' devices: the step ran data-parallel across the two processes.
    assert set(rows.devices) == {2} and set(rows.device_count) == {2}
    assert "test_accuracy" in set(rows.metric) and rows[rows.metric == "test_accuracy"].shape[0] == 1
    assert (rows[rows.metric == "peak_bytes"].value > 0).all() and "peak_bytes" in set(rows.metric)
    assert "dlbench run smoke" in outs[0][0] and "dlbench run smoke" not in outs[1][0]


@pytest.mark.parametrize("bad", ["--coordinator=nohostport", "--process-id=5"])
def test_bad_cluster_options_are_one_line_errors(capsys, bad):
    from dlbench.cli import main

    code = main(["run", "smoke", "--model", "attention", *TINY, "--num-processes", "2", "--coordinator", "127.0.0.1:1",
                 "--process-id", "0", bad])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and "Traceback" not in err, err


FUSED_WINDOW = """
import json
import jax
jax.config.update("jax_enable_x64", True)
import jax.numpy as jnp
import numpy as np
from flax import nnx
from dlbench import distributed
from dlbench.config import TrainConfig
from dlbench.models import ModelConfig, build_model
from dlbench.tasks import Split, TaskData
from dlbench.train import Trainer, make_optimizer, model_part

rng = np.random.default_rng(0)
# 13 series: not a multiple of 4 devices (the sharded split is padded, padding never drawn).
x = rng.normal(size=(13, 17, 3))
y = rng.integers(0, 5, size=13).astype(np.int32)
split = Split(x, y)
data = TaskData("toy", split, split, split, head="classification", num_outputs=5)
config = ModelConfig(num_inputs=3, hidden_dim=7, state_dim=6, num_blocks=2, num_outputs=5, norm="batch", dropout=0.1)
out = []
for devices in (1, 4):
    model = build_model("lru", config, seed=0, dtype=jnp.float64)
    trainer = Trainer(model, make_optimizer(model, TrainConfig(lr=1e-2)), data, batch_size=4, eval_batch=8, window=5,
                      seed=3, mesh=distributed.make_mesh(devices), on_device=True)
    trainer.compile()
    assert trainer.train_data[0].sharding.spec[0] == "data" and len(trainer.train_data[0].sharding.device_set) == devices
    state, losses = trainer.window_run(trainer.state, 0, 5)
    state, more = trainer.window_run(state, 5, 5)
    params = [np.asarray(a) for a in jax.tree.leaves(nnx.state(nnx.merge(trainer.model_graphdef, model_part(state)), nnx.Param))]
    out.append((np.concatenate([np.asarray(losses), np.asarray(more)]).tolist(), params,
                trainer.evaluate(model_part(state), "val")))
(l1, p1, v1), (l4, p4, v4) = out
print(json.dumps({"loss_err": float(np.max(np.abs(np.array(l1) - np.array(l4)))),
                  "param_err": max(float(np.max(np.abs(a - b))) for a, b in zip(p1, p4)),
                  "val": [v1, v4], "moved": float(np.max(np.abs(np.array(l1[:1]) - np.array(l1[-1:]))))}))
"""


def test_fused_window_on_four_devices_equals_one_float64(tmp_path):
    r = run_python(FUSED_WINDOW, tmp_path)
    assert r["loss_err"] < 1e-12 and r["param_err"] < 1e-12, r
    v1, v4 = r["val"]
    assert all(abs(v1[k] - v4[k]) < 1e-10 for k in v1), r
    assert r["moved"] > 0, r
