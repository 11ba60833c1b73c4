"""pytest-benchmark timings of every model's sequence layer at fixed shapes.

`pytest tests/benchmarks --benchmark-only` times them; the normal test run calls each once with
benchmarking disabled, so they cannot rot. Shapes are fixed so runs compare across commits
(`--benchmark-autosave`, `--benchmark-compare`). Every case checks what it timed: the outputs have
the workload's shapes and are finite, so a backend that silently returns NaN fails here.
"""

import jax
import numpy as np
import pytest

import dlbench.layers  # noqa: F401  (registers the built-in models)
from dlbench.profile import expand_backends
from dlbench.registry import get_model, model_names
from dlbench.scan_cell import Cell, build_workload

SEQ_LEN, BATCH, HIDDEN, STATE = 4096, 1, 64, 64

# Forward for the default, the papers' parallel scan and each layer's own backends; the backward
# pass for the default only (it is what training uses).
BACKENDS_BY_MODE = {"fwd": ("auto", "associative", "*"), "fwdbwd": ("auto",)}
CASES = [
    (model, backend, mode)
    for model in model_names()
    for mode, backends in BACKENDS_BY_MODE.items()
    for backend in expand_backends(model, backends)
    if backend in get_model(model).layer.scans
]
# Fused GPU kernels cannot run where there is no GPU.
GPU_ONLY = {"cudnn"}


@pytest.mark.parametrize("model, backend, mode", CASES, ids=["-".join(c) for c in CASES])
def test_layer_scan(benchmark, model, backend, mode):
    if backend in GPU_ONLY and jax.default_backend() != "gpu":
        pytest.skip(f"{backend} needs a GPU")
    cell = Cell(model, backend, mode, SEQ_LEN, BATCH, HIDDEN, STATE, "layer", "float32", 0)
    workload = build_workload(cell)
    compiled = jax.jit(workload.fn).lower(*workload.args).compile()
    jax.block_until_ready(compiled(*workload.args))
    benchmark.extra_info.update(seq_len=SEQ_LEN, batch=BATCH, hidden=HIDDEN, state=STATE)
    out = benchmark(lambda: jax.block_until_ready(compiled(*workload.args)))
    if mode == "fwd":
        assert out.shape == (BATCH, SEQ_LEN, HIDDEN)
    else:  # gradients w.r.t. (parameters, input): the input's gradient has the input's shape
        assert out[1].shape == (BATCH, SEQ_LEN, HIDDEN)
        assert jax.tree_util.tree_structure(out[0]) == jax.tree_util.tree_structure(workload.args[0])
    for leaf in jax.tree_util.tree_leaves(out):
        assert np.isfinite(np.asarray(leaf, np.float64)).all(), f"{model} {backend} {mode}: non-finite output"
