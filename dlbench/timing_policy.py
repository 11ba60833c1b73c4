"""The timing policy and its statistics, JAX-free: what :mod:`dlbench.timing` measures by, and what a
reader of the rows (``dlbench.report``) judges them by.

- :class:`TimingPolicy`: warm-up, at least N timed calls AND T seconds, pairing, warning thresholds.
- :func:`summarize`: median, quartiles, mean, std, range of raw repeats.
- :func:`median_ci`: the distribution-free confidence interval of a median from order statistics
  (the binomial argument: the number of samples below the true median is Binomial(n, 1/2); e.g.
  Conover, "Practical Nonparametric Statistics", 3rd ed., section 3.2). With fewer than 6 samples no
  pair of order statistics covers 95%, and :class:`MedianCI` says so (``coverage`` < the level).
- :func:`timing_warnings`: slow first run, outliers beyond ``outlier_iqr`` IQRs of the quartiles.
- :func:`classify_failure` / :func:`classify_process_death`: THE mapping from a failure to a row status.
"""

from __future__ import annotations

import dataclasses
import math
import signal
import statistics
from collections.abc import Sequence

# Warning thresholds (defaults of TimingPolicy; report uses the same numbers for rows it reads).
SLOW_FIRST_FACTOR = 3.0
OUTLIER_IQR = 3.0
CONFIDENCE = 0.95


def _help(default, text: str):
    return dataclasses.field(default=default, metadata={"help": text})


@dataclasses.dataclass(frozen=True)
class TimingPolicy:
    """How many calls to time (per round) and when to warn."""

    warmup: int = _help(1, "untimed calls before timing")
    repeats: int = _help(5, "at least this many timed calls")
    min_time_s: float = _help(1.0, "and at least this many seconds of them")
    max_repeats: int = _help(1000, "never more timed calls than this")
    max_time_s: float | None = _help(None, "stop adding repeats past this many seconds (after the minimum count)")
    pair: bool = _help(True, "precede every timed call by an untimed call of the same program")
    slow_first_factor: float = _help(SLOW_FIRST_FACTOR, "warn when the first call is this many times the median")
    outlier_iqr: float = _help(OUTLIER_IQR, "outlier fence in IQRs beyond Q1/Q3")

    def __post_init__(self):
        if self.warmup < 0 or self.repeats < 1 or self.max_repeats < self.repeats:
            raise ValueError(
                f"need warmup >= 0 and 1 <= repeats <= max_repeats, got {self.warmup}, {self.repeats}, {self.max_repeats}"
            )
        if not (math.isfinite(self.min_time_s) and self.min_time_s >= 0):
            raise ValueError(f"min_time_s must be a finite number >= 0, got {self.min_time_s}")
        if self.max_time_s is not None and not (math.isfinite(self.max_time_s) and self.max_time_s > 0):
            raise ValueError(f"max_time_s must be a finite number > 0, got {self.max_time_s}")


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


@dataclasses.dataclass(frozen=True)
class MedianCI:
    """A confidence interval [low, high] of a median; ``coverage`` is what the order statistics achieve."""

    median: float
    low: float
    high: float
    coverage: float
    n: int

    @property
    def half_width(self) -> float:
        """The larger distance from the median to an end, relative to the median (0.05 = +-5%)."""
        if self.median <= 0:
            return math.inf
        return max(self.median - self.low, self.high - self.median) / self.median

    def within(self, target: float, level: float = CONFIDENCE) -> bool:
        """True when the interval reaches ``level`` coverage and is within +-``target`` of the median."""
        return self.coverage >= level and self.half_width <= target


def _binomial_cdf_below(n: int) -> list[float]:
    """P(Binomial(n, 1/2) < j) for j = 0..n+1, exactly (integer arithmetic, one division each)."""
    total = 2**n
    out, acc = [0.0], 0
    for i in range(n + 1):
        acc += math.comb(n, i)
        out.append(acc / total)
    return out


def median_ci(samples: Sequence[float], level: float = CONFIDENCE) -> MedianCI:
    """Distribution-free confidence interval of the median from two order statistics.

    The interval is [x_(j), x_(n+1-j)] (1-based, sorted) for the largest j with
    P(Binomial(n, 1/2) < j) <= (1 - level) / 2; its coverage is 1 - 2 P(Binomial(n, 1/2) < j) >= level.
    When no j >= 1 qualifies (n < 6 at 95%), the interval is [min, max] and ``coverage`` is below
    ``level``, so :meth:`MedianCI.within` is False however narrow it is.
    """
    if not samples:
        raise ValueError("no samples for a confidence interval")
    xs = sorted(samples)
    n = len(xs)
    median = statistics.median(xs)
    alpha = (1 - level) / 2
    if n > 2000:  # normal approximation of the binomial; exact sums grow as n^2 digits
        j = max(1, math.floor(n / 2 - 1.959963984540054 * math.sqrt(n) / 2))
        coverage = level
    else:
        below = _binomial_cdf_below(n)
        j = 0
        while j + 1 <= n and below[j + 1] <= alpha:
            j += 1
        if j == 0:
            return MedianCI(median, xs[0], xs[-1], 1 - 2 * below[1], n)
        coverage = 1 - 2 * below[j]
    return MedianCI(median, xs[j - 1], xs[n - j], coverage, n)


def ratio_interval(numerator: MedianCI, denominator: MedianCI) -> tuple[float, float, float]:
    """(ratio of medians, low, high): a conservative interval of the ratio from the two intervals."""
    if denominator.median <= 0 or denominator.low <= 0:
        return math.inf, math.inf, math.inf
    return numerator.median / denominator.median, numerator.low / denominator.high, numerator.high / denominator.low


def timing_warnings(first_call_s: Sequence[float], repeats_s: Sequence[float], policy: TimingPolicy = TimingPolicy()) -> list[str]:
    """Warnings a reader of the numbers should see: slow first run, outliers."""
    found: list[str] = []
    if not repeats_s:  # nothing repeated (a single-sample cell): nothing to compare against
        return found
    summary = summarize(repeats_s)
    if first_call_s and summary.median > 0 and first_call_s[0] > policy.slow_first_factor * summary.median:
        found.append(f"slow first run: {first_call_s[0] / summary.median:.1f}x the median")
    fence_hi = summary.q3 + policy.outlier_iqr * summary.iqr
    fence_lo = summary.q1 - policy.outlier_iqr * summary.iqr
    outliers = sum(1 for x in repeats_s if x > fence_hi or x < fence_lo)
    if summary.n >= 4 and summary.iqr > 0 and outliers:
        found.append(f"{outliers} outlier(s) beyond {policy.outlier_iqr:g} IQR")
    return found


# ---------------------------------------------------------------------------------------------
# Failure -> status: the one classification (an exception in the cell, or a cell process that died).

# Statuses after which longer lengths of the same series are not attempted.
STOPPING = ("oom", "timeout")
_OOM_MARKERS = ("resource_exhausted", "out of memory", "memoryerror")


def _looks_oom(text: str) -> bool:
    lowered = text.lower()
    return any(marker in lowered for marker in _OOM_MARKERS)


def classify_failure(error: BaseException) -> tuple[str, str]:
    """(status, one-line reason) for an exception raised while building, compiling or running a cell."""
    text = f"{type(error).__name__}: {error}"
    first_line = text.strip().splitlines()[0] if text.strip() else type(error).__name__
    if isinstance(error, FloatingPointError):
        return "nan", first_line[:300]
    if isinstance(error, MemoryError) or _looks_oom(text):
        return "oom", first_line[:300]
    return "error", first_line[:300]


def classify_process_death(returncode: int, stderr_tail: Sequence[str], *, timed_out: bool, timeout: float) -> tuple[str, str]:
    """(status, one-line reason) for a cell process that ended without reporting its status."""
    if timed_out:
        return "timeout", f"cell exceeded --timeout {timeout:g}s and was killed"
    if returncode in (-signal.SIGKILL, 137):
        return "oom", "cell process killed by SIGKILL (out of memory)"
    last = next((line for line in reversed(stderr_tail) if line.strip()), f"exit code {returncode}")
    status = "oom" if _looks_oom(" ".join(stderr_tail)) else "error"
    return status, f"cell process died (exit {returncode}): {last.strip()[:250]}"
