"""THE timing loop: one honest way to time any jitted function, blind to what it computes.

Policy (JAX "Benchmarking" and "Ahead-of-time lowering" docs; hyperfine):
1. ``jax.jit(fn).lower(*args)`` and ``.compile()`` are timed apart and reported (``lower_s``,
   ``compile_s``); the compiled executable is what gets timed, so no call pays for tracing.
2. ``warmup`` calls run first and are excluded (the first call of an executable pays for buffer
   allocation and thread-pool start-up); their times are kept as ``first_call_s``.
3. Every timed call is blocked until its outputs are ready.
4. Timed calls continue until there are at least ``repeats`` of them AND at least ``min_time_s``
   seconds of them (whichever comes later), capped by ``max_repeats`` and ``max_time_s``.
5. Every raw repeat is kept; median, IQR, mean and std summarise them; warnings flag a slow first
   run and outliers (beyond ``outlier_iqr`` IQRs from the quartiles).
"""

from __future__ import annotations

import dataclasses
import math
import resource
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

import jax


@dataclasses.dataclass(frozen=True)
class TimingPolicy:
    """How many calls to time and when to warn."""

    warmup: int = dataclasses.field(default=1, metadata={"help": "untimed calls before timing"})
    repeats: int = dataclasses.field(default=5, metadata={"help": "at least this many timed calls"})
    min_time_s: float = dataclasses.field(default=1.0, metadata={"help": "and at least this many seconds of them"})
    max_repeats: int = dataclasses.field(default=1000, metadata={"help": "never more timed calls than this"})
    max_time_s: float | None = dataclasses.field(
        default=None, metadata={"help": "stop adding repeats past this many seconds (after the minimum count)"}
    )
    slow_first_factor: float = dataclasses.field(
        default=3.0, metadata={"help": "warn when the first call is this many times the median"}
    )
    outlier_iqr: float = dataclasses.field(default=3.0, metadata={"help": "outlier fence in IQRs beyond Q1/Q3"})

    def __post_init__(self):
        if self.warmup < 0 or self.repeats < 1 or self.max_repeats < self.repeats:
            raise ValueError(
                f"need warmup >= 0 and 1 <= repeats <= max_repeats, got {self.warmup}, {self.repeats}, {self.max_repeats}"
            )
        if self.min_time_s < 0:
            raise ValueError(f"min_time_s must be >= 0, got {self.min_time_s}")


@dataclasses.dataclass(frozen=True)
class Summary:
    """Robust and classical statistics of raw repeat times (seconds)."""

    n: int
    median: float
    q1: float
    q3: float
    mean: float
    std: float
    min: float
    max: float

    @property
    def iqr(self) -> float:
        return self.q3 - self.q1


def summarize(samples: Sequence[float]) -> Summary:
    """Median, quartiles (linear interpolation), mean, sample std, range."""
    if not samples:
        raise ValueError("no samples to summarize")
    xs = sorted(samples)
    if len(xs) == 1:
        q1 = q3 = xs[0]
    else:
        q1, _, q3 = statistics.quantiles(xs, n=4, method="inclusive")
    return Summary(
        n=len(xs),
        median=statistics.median(xs),
        q1=q1,
        q3=q3,
        mean=statistics.fmean(xs),
        std=statistics.stdev(xs) if len(xs) > 1 else 0.0,
        min=xs[0],
        max=xs[-1],
    )


@dataclasses.dataclass
class Timing:
    """Everything measured for one jitted function."""

    lower_s: float
    compile_s: float
    first_call_s: list[float]
    repeats_s: list[float]
    memory_analysis: dict[str, int] | None = None
    warnings: list[str] = dataclasses.field(default_factory=list)

    @property
    def summary(self) -> Summary:
        return summarize(self.repeats_s)


def timing_warnings(first_call_s: Sequence[float], repeats_s: Sequence[float], policy: TimingPolicy) -> list[str]:
    """Warnings a reader of the numbers should see: slow first run, outliers."""
    found = []
    summary = summarize(repeats_s)
    if first_call_s and summary.median > 0 and first_call_s[0] > policy.slow_first_factor * summary.median:
        found.append(f"slow first run: {first_call_s[0] / summary.median:.1f}x the median")
    fence_hi = summary.q3 + policy.outlier_iqr * summary.iqr
    fence_lo = summary.q1 - policy.outlier_iqr * summary.iqr
    outliers = sum(1 for x in repeats_s if x > fence_hi or x < fence_lo)
    if summary.n >= 4 and summary.iqr > 0 and outliers:
        found.append(f"{outliers} outlier(s) beyond {policy.outlier_iqr:g} IQR")
    return found


def repeat_timed(
    call: Callable[[], Any],
    policy: TimingPolicy,
    *,
    clock: Callable[[], float] = time.perf_counter,
    block: Callable[[Any], Any] = jax.block_until_ready,
) -> tuple[list[float], list[float]]:
    """Warm up, then time ``call`` per the policy. Returns (first-call times, timed repeats)."""
    first = []
    for _ in range(policy.warmup):
        start = clock()
        block(call())
        first.append(clock() - start)
    repeats: list[float] = []
    total = 0.0
    while len(repeats) < policy.max_repeats:
        enough = len(repeats) >= policy.repeats
        if enough and total >= policy.min_time_s:
            break
        if enough and policy.max_time_s is not None and total >= policy.max_time_s:
            break
        start = clock()
        block(call())
        elapsed = clock() - start
        repeats.append(elapsed)
        total += elapsed
    return first, repeats


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
    policy: TimingPolicy = TimingPolicy(),
    *,
    clock: Callable[[], float] = time.perf_counter,
) -> Timing:
    """Compile ``fn`` for ``args`` and time the executable per ``policy``."""
    compiled, lower_s, compile_s, memory = compile_timed(fn, args, clock=clock)
    first, repeats = repeat_timed(lambda: compiled(*args), policy, clock=clock)
    return Timing(lower_s, compile_s, first, repeats, memory, timing_warnings(first, repeats, policy))


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


def classify_failure(error: BaseException) -> tuple[str, str]:
    """(status, one-line reason) for an exception raised while compiling or running a cell."""
    text = f"{type(error).__name__}: {error}"
    first_line = text.strip().splitlines()[0] if text.strip() else type(error).__name__
    lowered = text.lower()
    if isinstance(error, MemoryError) or "resource_exhausted" in lowered or "out of memory" in lowered:
        return "oom", first_line[:300]
    return "error", first_line[:300]


def tokens_per_second(batch: int, seq_len: int, seconds: float) -> float:
    return batch * seq_len / seconds if seconds > 0 else math.inf
