"""pytest-benchmark timings of every model's sequence layer at fixed shapes.

`pytest tests/benchmarks --benchmark-only` times them; the normal test run calls each once with
benchmarking disabled, so they cannot rot. Shapes are fixed so runs compare across commits
(`--benchmark-autosave`, `--benchmark-compare`).
"""

import jax
import pytest

from dlbench.profile import Cell, build_workload, expand_backends
from dlbench.registry import get_model, model_names

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
    fn, args, _, _ = build_workload(cell)
    compiled = jax.jit(fn).lower(*args).compile()
    jax.block_until_ready(compiled(*args))
    benchmark.extra_info.update(seq_len=SEQ_LEN, batch=BATCH, hidden=HIDDEN, state=STATE)
    benchmark(lambda: jax.block_until_ready(compiled(*args)))
