"""Peak resident memory and step time of per-step training calls under three host allocator settings.

Each setting runs in a fresh process (glibc reads its tunables at start): LinOSS-IM at the EigenWorms
widths (batch 4, H 128, P 64, 2 blocks, L 4,096), one compiled training step called ``--steps`` times
(the per-call program of ``profile`` cells and host-batched training). Settings: glibc's defaults,
``glibc.malloc.hugetlb=1`` (what ``dlbench`` uses, dlbench.host_memory), and freed memory kept in the
process (one arena, no mmap; the alternative that was dropped). Prints one JSON line.

    python scripts/host_memory_rss.py --steps 30
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

SETTINGS = {
    "glibc defaults": {},
    "glibc.malloc.hugetlb=1": {"GLIBC_TUNABLES": "glibc.malloc.hugetlb=1"},
    "kept in process": {"MALLOC_ARENA_MAX": "1", "MALLOC_MMAP_MAX_": "0", "MALLOC_TRIM_THRESHOLD_": str(2**40)},
}


def worker(steps: int) -> None:
    import time

    import jax
    import jax.numpy as jnp
    import numpy as np
    from flax import nnx

    import dlbench.train as T
    from dlbench.config import TrainConfig
    from dlbench.models import ModelConfig, build_model

    model = build_model("linoss-im", ModelConfig(num_inputs=7, hidden_dim=128, state_dim=64, num_blocks=2, num_outputs=5), seed=0)
    graphdef, state = nnx.split((model, T.make_optimizer(model, TrainConfig())))

    def step(state, x, y):
        model, optimizer = nnx.merge(graphdef, state)
        loss, grads = T.loss_and_grads(model, x, y, None)
        optimizer.update(model, grads)
        return nnx.state((model, optimizer)), loss

    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.standard_normal((4, 4096, 7)), jnp.float32)
    y = jnp.asarray(rng.integers(0, 5, 4), jnp.int32)
    compiled = jax.jit(step, donate_argnums=0).lower(state, x, y).compile()
    state, loss = compiled(state, x, y)
    loss.block_until_ready()
    start = time.perf_counter()
    for _ in range(steps):
        state, loss = compiled(state, x, y)
        loss.block_until_ready()
    seconds = (time.perf_counter() - start) / steps

    def status(key):
        return int(next(line for line in open("/proc/self/status") if line.startswith(key)).split()[1]) * 1024

    print(json.dumps({"temp_bytes": compiled.memory_analysis().temp_size_in_bytes, "peak_rss_bytes": status("VmHWM"),
                      "step_s": seconds}))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=30)
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker:
        return worker(args.steps)
    out = {"steps": args.steps}
    base = {k: v for k, v in os.environ.items() if k not in ("GLIBC_TUNABLES", "MALLOC_ARENA_MAX", "MALLOC_MMAP_MAX_", "MALLOC_TRIM_THRESHOLD_")}
    for name, extra in SETTINGS.items():
        done = subprocess.run([sys.executable, os.path.abspath(__file__), "--worker", f"--steps={args.steps}"],
                              env={**base, **extra}, capture_output=True, text=True, check=True)
        out[name] = {"environment": extra, **json.loads(done.stdout.strip().splitlines()[-1])}
    print(json.dumps(out))


if __name__ == "__main__":
    main()
