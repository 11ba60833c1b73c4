"""THE timing loop: one honest way to time any jitted function, blind to what it computes.

Policy (JAX "Benchmarking" and "Ahead-of-time lowering" docs; hyperfine; asv), per call of
:func:`time_function` (one *round* of a cell, see :mod:`dlbench.profile`):
1. ``jax.jit(fn).lower(*args)`` and ``.compile()`` are timed apart (``lower_s``, ``compile_s``); the
   compiled executable is what gets timed, so no call pays for tracing.
2. ``warmup`` calls run first and are excluded (buffer allocation, thread-pool start-up); their times
   are kept as ``first_call_s``.
3. Every call is blocked until its outputs are ready.
4. With ``pair`` every timed call is preceded by an untimed call of the same executable, so the timed
   call never runs straight after a different program (measured: up to 39% apart otherwise).
5. Timed calls continue until there are at least ``repeats`` of them AND at least ``min_time_s``
   seconds of them, capped by ``max_repeats`` and ``max_time_s``.
6. Every raw repeat is kept (``wall_s`` rows, ``index`` = repeat); warnings flag a slow first run and
   outliers. The JAX-free policy and statistics live in :mod:`dlbench.timing_policy`.
"""

from __future__ import annotations

import dataclasses
import resource
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

import jax

from dlbench.timing_policy import (  # noqa: F401 - re-exported: the timing loop's public names
    STOPPING,
    MedianCI,
    Summary,
    TimingPolicy,
    classify_failure,
    classify_process_death,
    median_ci,
    summarize,
    timing_warnings,
)

DEFAULT_POLICY = TimingPolicy()


@dataclasses.dataclass
class Timing:
    """Everything measured for one jitted function (one round)."""

    lower_s: float | None
    compile_s: float | None
    first_call_s: list[float]
    repeats_s: list[float]
    memory_analysis: dict[str, int] | None = None
    warnings: list[str] = dataclasses.field(default_factory=list)
    cache: str = "off"
    outputs: Any = None
    compiled: Any = None  # the executable, so a later round can time it again without compiling

    @property
    def summary(self) -> Summary:
        return summarize(self.repeats_s)

    def rows(self, base: dict[str, Any]) -> list[dict[str, Any]]:
        """The tidy rows of this measurement: lower_s, compile_s, compiler peak_bytes, first_call_s, wall_s."""
        out = []
        if self.lower_s is not None:
            out.append({**base, "metric": "lower_s", "value": self.lower_s, "unit": "s", "source": f"cache={self.cache}"})
        if self.compile_s is not None:
            out.append({**base, "metric": "compile_s", "value": self.compile_s, "unit": "s", "source": f"cache={self.cache}"})
        if self.memory_analysis and "peak_memory_in_bytes" in self.memory_analysis:
            out.append({**base, "metric": "peak_bytes", "value": self.memory_analysis["peak_memory_in_bytes"], "unit": "bytes",
                        "source": "memory_analysis"})
        out += [{**base, "metric": "first_call_s", "value": t, "unit": "s", "index": i, "source": "perf_counter"}
                for i, t in enumerate(self.first_call_s)]
        out += [{**base, "metric": "wall_s", "value": t, "unit": "s", "index": i, "source": "perf_counter"}
                for i, t in enumerate(self.repeats_s)]
        return out


def repeat_timed(
    call: Callable[[], Any],
    policy: TimingPolicy,
    *,
    clock: Callable[[], float] = time.perf_counter,
    block: Callable[[Any], Any] = jax.block_until_ready,
) -> tuple[list[float], list[float], Any]:
    """Warm up, then time ``call`` per the policy. Returns (first-call times, timed repeats, last output)."""
    first = []
    out = None
    for _ in range(policy.warmup):
        start = clock()
        out = block(call())
        first.append(clock() - start)
    repeats: list[float] = []
    total = 0.0
    while len(repeats) < policy.max_repeats:
        enough = len(repeats) >= policy.repeats
        if enough and total >= policy.min_time_s:
            break
        if enough and policy.max_time_s is not None and total >= policy.max_time_s:
            break
        if policy.pair:
            block(call())  # untimed: the timed call follows a call of itself, never another program
        start = clock()
        out = block(call())
        elapsed = clock() - start
        repeats.append(elapsed)
        total += elapsed
    return first, repeats, out


def compile_timed(fn: Callable, args: Sequence[Any], *, clock: Callable[[], float] = time.perf_counter):
    """Lower and compile ``jax.jit(fn)`` for ``args``, timing each stage.

    Returns (compiled, lower_s, compile_s, memory_analysis) where memory_analysis is the compiler's
    byte estimate (None where the backend offers none).
    """
    start = clock()
    lowered = jax.jit(fn).lower(*args)
    lowered_at = clock()
    compiled = lowered.compile()
    compiled_at = clock()
    return compiled, lowered_at - start, compiled_at - lowered_at, compiled_memory(compiled)


def compiled_memory(compiled) -> dict[str, int] | None:
    try:
        analysis = compiled.memory_analysis()
    except (NotImplementedError, RuntimeError, AttributeError):
        return None
    if analysis is None:
        return None
    return {k: int(getattr(analysis, k)) for k in dir(analysis) if k.endswith("_in_bytes") and not k.startswith("_")}


def time_function(
    fn: Callable,
    args: Sequence[Any],
    policy: TimingPolicy = DEFAULT_POLICY,
    *,
    compiled: Callable | None = None,
    clock: Callable[[], float] = time.perf_counter,
    block: Callable[[Any], Any] = jax.block_until_ready,
) -> Timing:
    """Compile ``fn`` for ``args`` (unless ``compiled`` is given: a later round of a kept cell) and time
    the executable per ``policy``. The outputs of the last call are kept (``Timing.outputs``)."""
    lower_s = compile_s = memory = None
    cache = compilation_cache_state()
    if compiled is None:
        compiled, lower_s, compile_s, memory = compile_timed(fn, args, clock=clock)
    first, repeats, out = repeat_timed(lambda: compiled(*args), policy, clock=clock, block=block)
    return Timing(lower_s, compile_s, first, repeats, memory, timing_warnings(first, repeats, policy), cache, out, compiled)


def peak_memory() -> tuple[int, str]:
    """Peak memory so far and where the number comes from.

    The device allocator's ``peak_bytes_in_use`` where the backend reports it (GPUs); otherwise the
    peak resident set size of this process (CPU), which covers one cell only when each cell runs in
    its own process (``--isolate``).
    """
    # This process's own device: in a multi-process job jax.devices()[0] belongs to process 0 and
    # has no statistics here.
    stats = jax.local_devices()[0].memory_stats()
    if stats and "peak_bytes_in_use" in stats:
        return int(stats["peak_bytes_in_use"]), "memory_stats"
    # VmHWM belongs to this address space; ru_maxrss survives exec, so an isolated cell would report
    # the (JAX-loaded) parent's resident size at the time it was spawned.
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024, "rss"
    except OSError:
        pass
    # ru_maxrss is in kilobytes on Linux, bytes on macOS.
    scale = 1 if sys.platform == "darwin" else 1024
    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * scale, "rss"


def compilation_cache_state() -> str:
    """'on:<dir>' or 'off': whether compile times may come from JAX's persistent cache."""
    directory = jax.config.jax_compilation_cache_dir
    enabled = jax.config.jax_enable_compilation_cache and directory
    return f"on:{directory}" if enabled else "off"


def is_finite_tree(tree: Any) -> bool:
    """True when every floating leaf of ``tree`` is finite (NaN/Inf outputs make a cell fail)."""
    import jax.numpy as jnp

    leaves = [x for x in jax.tree_util.tree_leaves(tree) if jnp.issubdtype(jnp.asarray(x).dtype, jnp.inexact)]
    return all(bool(jnp.all(jnp.isfinite(x))) for x in leaves)


# ---------------------------------------------------------------------------------------------
# Copy bandwidth: measured here and its row made here (the sweep and `profile bandwidth` both call these).


# Copies are fast and steady: more repeats in less time than a scan cell.
BANDWIDTH_POLICY = TimingPolicy(repeats=10, min_time_s=0.5)


def measure_bandwidth(megabytes: int = 256, policy: TimingPolicy = BANDWIDTH_POLICY) -> float:
    """Copy bandwidth of the default device in bytes/s: read + write of an array of ``megabytes``.

    ``x + 1`` rather than a copy, so XLA cannot elide it; every element is read once and written once.
    """
    import statistics

    import jax.numpy as jnp

    n = megabytes * 2**20 // 4
    x = jnp.ones((n,), jnp.float32)
    timing = time_function(lambda x: x + 1.0, (x,), policy)
    return 2 * n * 4 / statistics.median(timing.repeats_s)


def bandwidth_row(value: float, megabytes: int = 256) -> dict[str, Any]:
    return {"task": "bandwidth", "model": "", "metric": "bandwidth", "value": value, "unit": "bytes/s",
            "source": f"x+1 on {megabytes} MiB float32"}


def measure_and_write_bandwidth(writer, megabytes: int = 256) -> float:
    """Measure the copy bandwidth and write its row; THE one place that row is made."""
    value = measure_bandwidth(megabytes)
    writer.write(bandwidth_row(value, megabytes))
    return value
