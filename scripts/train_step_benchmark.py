"""Training tokens/s of two dlbench trees side by side, interleaved, on one machine (issue 12, item 3).

Each tree runs in its own persistent worker process (``PYTHONPATH=TREE``); the driver alternates them,
one timed window of ``--steps`` training steps at a time (A, B, A, B, ...), so load from other users
of a shared machine hits both alike. A worker runs the training loop of its own tree exactly as
``train_run`` does: a tree with :class:`dlbench.train.Trainer` runs its fused window program on
device-resident data; an older tree (main 3a79093) its per-step loop (host batch -> device, compiled
step, ``float(loss)``). Widths default to LinOSS-IM on EigenWorms (batch 4, H 128, P 64, 2 blocks, 7
inputs, 5 classes), length cut to 4,096 for CPU. A worker's process starts in the environment its
tree's ``dlbench`` command gives itself (``dlbench.host_memory``: huge pages for XLA's scratch where
the tree has it); ``--env-a``/``--env-b`` change it, to time what the allocator gives apart from the code.

    python scripts/train_step_benchmark.py --a /work/main --b . --rounds 9 --steps 4

prints one JSON line: per tree the median and min/max of tokens/s over the rounds and the worker's
peak resident memory, and the ratio B/A of the medians with the range of the per-round ratios.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import statistics
import subprocess
import sys
import time


def worker(args) -> None:
    import jax
    import jax.numpy as jnp
    import numpy as np
    from flax import nnx

    import dlbench.train as T
    from dlbench import distributed
    from dlbench.config import TrainConfig
    from dlbench.models import ModelConfig, build_model
    from dlbench.tasks import Split, TaskData

    rng = np.random.default_rng(0)
    n = 40
    x = rng.standard_normal((n, args.length, 7)).astype(np.float32)
    y = rng.integers(0, 5, n).astype(np.int32)
    split = Split(x, y)
    data = TaskData("bench", split, split, split, head="classification", num_outputs=5)
    config = ModelConfig(num_inputs=7, hidden_dim=args.hidden, state_dim=args.state, num_blocks=args.blocks,
                         num_outputs=5, scan=args.scan)
    model = build_model(args.model, config, seed=0)
    optimizer = T.make_optimizer(model, TrainConfig())
    mesh = distributed.make_mesh(1)
    if hasattr(T, "Trainer"):
        # DLBENCH_BENCH_HOST=1: the same tree's host-batching path (one compiled step per step), to
        # separate what the fused window gives from what the rest of the tree gives.
        trainer = T.Trainer(model, optimizer, data, batch_size=args.batch, eval_batch=args.batch, window=args.steps,
                            seed=0, mesh=mesh, on_device=False if os.environ.get("DLBENCH_BENCH_HOST") else None)
        trainer.compile()
        state = trainer.state
        done = 0

        def window():
            nonlocal state, done
            state, losses = trainer.window_run(state, done, args.steps)
            done += args.steps
            return np.asarray(losses)
    else:  # the per-step loop of train_run before fused windows (main 3a79093)
        graphdef, state = nnx.split((model, optimizer))

        def step_fn(state, x, y, mask):
            model, optimizer = nnx.merge(graphdef, state)
            loss, grads = T.loss_and_grads(model, x, y, None)
            optimizer.update(model, grads)
            return nnx.state((model, optimizer)), loss

        stream = T.batches(data.train, args.batch, np.random.default_rng(0))
        step, state, place = T.compile_sharded(step_fn, mesh, state, next(stream))

        def window():
            nonlocal state
            out = []
            for _ in range(args.steps):
                state, loss = step(state, *place(next(stream)))
                out.append(float(loss))
            return out

    window()  # warm-up window, not timed
    print("ready", flush=True)
    for line in sys.stdin:
        if line.strip() != "go":
            break
        t0 = time.perf_counter()
        window()
        wall = time.perf_counter() - t0
        print(json.dumps({"tokens_per_s": args.steps * args.batch * args.length / wall, "step_s": wall / args.steps,
                          "peak_rss_bytes": peak_rss()}), flush=True)
    del jax, jnp


def peak_rss() -> int:
    """This process's peak resident set (VmHWM, compilation included), bytes; 0 where /proc has none."""
    try:
        with open("/proc/self/status") as f:
            return next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmHWM"))
    except (OSError, StopIteration):
        return 0


def tree_environment(tree: str, env: dict) -> dict:
    """``env`` as the tree's `dlbench` command would run a process in it (its dlbench.host_memory, if it has one)."""
    path = os.path.join(tree, "dlbench", "host_memory.py")
    if not os.path.exists(path):
        return env  # main 3a79093 and older: glibc's defaults
    spec = importlib.util.spec_from_file_location("tree_host_memory", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.environment(env)


def worker_environment(tree: str, extra: list[str], flag: str) -> tuple[dict, dict]:
    """(the worker's environment, the allocator settings and ``extra`` as it runs with them)."""
    bad = [item for item in extra if "=" not in item]
    if bad:
        raise SystemExit(f"{flag}: {bad[0]!r} is not KEY=VALUE")
    settings = dict(item.split("=", 1) for item in extra)
    env = {**os.environ, "PYTHONPATH": os.path.abspath(tree), "DLBENCH_JAX_CACHE": "off", **settings}
    try:
        env = tree_environment(tree, env)  # sees a DLBENCH_HOST_ALLOCATOR given in extra
    except Exception as error:  # the tree's DlbenchError for an unknown choice
        raise SystemExit(f"{flag}: {error}") from None
    env.update(settings)  # an explicit GLIBC_TUNABLES wins over what the tree would add
    return env, {k: env.get(k, "") for k in ("GLIBC_TUNABLES", "DLBENCH_HOST_ALLOCATOR", *settings)}


def tree_commit(tree: str) -> dict:
    """The git commit of ``tree`` and whether tracked files differ from it."""
    def git(*args):
        out = subprocess.run(["git", "-C", tree, *args], capture_output=True, text=True)
        return out.stdout.strip() if out.returncode == 0 else ""
    return {"commit": git("rev-parse", "HEAD"), "dirty": bool(git("status", "--porcelain", "--untracked-files=no"))}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--a", default="/work/main", help="tree A (baseline), put first on PYTHONPATH")
    p.add_argument("--b", default=".", help="tree B (candidate)")
    p.add_argument("--rounds", type=int, default=9)
    p.add_argument("--steps", type=int, default=4, help="training steps per timed window")
    p.add_argument("--model", default="linoss-im")
    p.add_argument("--scan", default="auto")
    p.add_argument("--length", type=int, default=4096)
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--hidden", type=int, default=128)
    p.add_argument("--state", type=int, default=64)
    p.add_argument("--blocks", type=int, default=2)
    for tree in ("a", "b"):
        p.add_argument(f"--env-{tree}", action="append", default=[], metavar="KEY=VALUE",
                       help=f"environment of tree {tree.upper()}'s worker, over the tree's own (repeatable); e.g. "
                            "DLBENCH_HOST_ALLOCATOR=system to time a tree without huge pages")
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker:
        return worker(args)
    passthrough = [f"--{k}={getattr(args, k)}" for k in ("steps", "model", "scan", "length", "batch", "hidden", "state", "blocks")]
    envs, recorded = {}, {}
    for name, tree, extra in (("A", args.a, args.env_a), ("B", args.b, args.env_b)):  # all checked before any worker starts
        envs[name], recorded[name] = worker_environment(tree, extra, f"--env-{name.lower()}")
    procs = {name: subprocess.Popen([sys.executable, os.path.abspath(__file__), "--worker", *passthrough], env=envs[name],
                                    stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd="/")
             for name in ("A", "B")}
    for proc in procs.values():
        assert proc.stdout.readline().strip() == "ready"
    got = {"A": [], "B": []}
    try:
        for r in range(args.rounds):
            for name in ("A", "B") if r % 2 == 0 else ("B", "A"):  # alternate who goes first
                procs[name].stdin.write("go\n")
                procs[name].stdin.flush()
                got[name].append(json.loads(procs[name].stdout.readline()))
    finally:
        for proc in procs.values():
            proc.stdin.close()
            proc.wait(timeout=60)
    out = {"widths": {k: getattr(args, k) for k in ("model", "scan", "length", "batch", "hidden", "state", "blocks")},
           "steps_per_window": args.steps, "rounds": args.rounds, "a": args.a, "b": args.b,
           "trees": {"A": tree_commit(args.a), "B": tree_commit(args.b)}, "environment": recorded}
    for name in ("A", "B"):
        tps = [g["tokens_per_s"] for g in got[name]]
        out[name] = {"median_tokens_per_s": statistics.median(tps), "min": min(tps), "max": max(tps),
                     "median_step_s": statistics.median(g["step_s"] for g in got[name]),
                     "peak_rss_bytes": max(g["peak_rss_bytes"] for g in got[name])}
    ratios = [b["tokens_per_s"] / a["tokens_per_s"] for a, b in zip(got["A"], got["B"], strict=True)]
    out["ratio_B_over_A"] = out["B"]["median_tokens_per_s"] / out["A"]["median_tokens_per_s"]
    out["per_round_ratio_min_max"] = [min(ratios), max(ratios)]
    print(json.dumps(out))


if __name__ == "__main__":
    main()
