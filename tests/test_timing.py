"""The timing policy, pinned with a fake clock: warm-up excluded, N runs AND T seconds, compile apart."""

import jax.numpy as jnp
import pytest

from dlbench import timing
from dlbench.timing import TimingPolicy, classify_failure, repeat_timed, summarize, time_function, timing_warnings


class FakeClock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


def scripted_call(clock, durations):
    """A 'computation' whose k-th call takes durations[k] fake seconds."""
    it = iter(durations)

    def call():
        clock.now += next(it)
        return None

    return call


def test_warmup_is_excluded_and_min_time_extends_repeats():
    clock = FakeClock()
    call = scripted_call(clock, [10.0] + [1.0] * 100)
    first, repeats, _ = repeat_timed(call, TimingPolicy(warmup=1, repeats=3, min_time_s=5.0, pair=False), clock=clock, block=lambda x: x)
    assert first == [10.0]
    # 3 runs would be only 3 s: the 5-second minimum takes it to 5 runs.
    assert repeats == [1.0] * 5


def test_min_repeats_extend_past_min_time():
    clock = FakeClock()
    call = scripted_call(clock, [1.0] * 2 + [2.0] * 100)
    first, repeats, _ = repeat_timed(call, TimingPolicy(warmup=2, repeats=7, min_time_s=1.0, pair=False), clock=clock, block=lambda x: x)
    assert first == [1.0, 1.0]
    assert repeats == [2.0] * 7


def test_max_repeats_and_max_time_cap_the_loop():
    clock = FakeClock()
    call = scripted_call(clock, [0.001] * 100)
    _, repeats, _ = repeat_timed(call, TimingPolicy(warmup=0, repeats=2, min_time_s=100.0, max_repeats=10, pair=False), clock=clock, block=lambda x: x)
    assert len(repeats) == 10
    clock = FakeClock()
    call = scripted_call(clock, [1.0] * 100)
    _, repeats, _ = repeat_timed(call, TimingPolicy(warmup=0, repeats=2, min_time_s=100.0, max_time_s=4.0, pair=False), clock=clock, block=lambda x: x)
    assert len(repeats) == 4


def test_every_timed_call_is_blocked():
    clock = FakeClock()
    blocked = []
    call = scripted_call(clock, [1.0] * 10)
    repeat_timed(call, TimingPolicy(warmup=1, repeats=3, min_time_s=0, pair=False), clock=clock, block=blocked.append)
    assert len(blocked) == 4
    blocked.clear()
    call = scripted_call(clock, [1.0] * 10)
    repeat_timed(call, TimingPolicy(warmup=1, repeats=3, min_time_s=0), clock=clock, block=blocked.append)
    assert len(blocked) == 7  # warm-up, then an untimed and a timed call per repeat


def test_each_timed_call_is_paired_with_an_untimed_call_of_itself():
    # Odd calls (the untimed partners) are slow, even calls fast: pairing times only the fast ones
    # and the time of the untimed partner never leaks into a repeat.
    clock = FakeClock()
    call = scripted_call(clock, [9.0] + [5.0, 1.0] * 20)
    first, repeats, _ = repeat_timed(call, TimingPolicy(warmup=1, repeats=4, min_time_s=3.5), clock=clock, block=lambda x: x)
    assert first == [9.0] and repeats == [1.0] * 4
    assert clock.now == 9.0 + 4 * 6.0


def test_compile_is_timed_apart_from_runs(monkeypatch):
    clock = FakeClock()

    class FakeCompiled:
        def __call__(self, *args):
            clock.now += 0.5
            return args

        def memory_analysis(self):
            return None

    class FakeLowered:
        def compile(self):
            clock.now += 7.0
            return FakeCompiled()

    class FakeJit:
        def lower(self, *args):
            clock.now += 3.0
            return FakeLowered()

    monkeypatch.setattr(timing.jax, "jit", lambda fn: FakeJit())
    result = time_function(lambda x: x, (1,), TimingPolicy(warmup=1, repeats=4, min_time_s=0.0), clock=clock, block=lambda x: x)
    assert result.lower_s == 3.0
    assert result.compile_s == 7.0
    assert result.first_call_s == [0.5]
    assert result.repeats_s == [0.5] * 4
    rows = result.rows({"model": "m"})
    assert [r["metric"] for r in rows] == ["lower_s", "compile_s", "first_call_s"] + ["wall_s"] * 4
    assert [r["index"] for r in rows if r["metric"] == "wall_s"] == [0, 1, 2, 3]
    # A later round of a kept cell reuses the executable: nothing is lowered or compiled again.
    again = time_function(lambda x: x, (1,), TimingPolicy(warmup=0, repeats=2, min_time_s=0.0), compiled=result.compiled,
                          clock=clock, block=lambda x: x)
    assert again.lower_s is None and again.compile_s is None and again.repeats_s == [0.5] * 2
    assert [r["metric"] for r in again.rows({})] == ["wall_s", "wall_s"]


def test_real_function_times_and_blocks():
    result = time_function(lambda x: jnp.sin(x).sum(), (jnp.ones(1000),), TimingPolicy(warmup=1, repeats=3, min_time_s=0.0))
    assert len(result.repeats_s) == 3 and all(t > 0 for t in result.repeats_s)
    assert result.compile_s > 0 and result.lower_s > 0


def test_summary_statistics():
    s = summarize([1.0, 2.0, 3.0, 4.0, 100.0])
    assert s.median == 3.0 and s.q1 == 2.0 and s.q3 == 4.0 and s.iqr == 2.0
    assert s.mean == pytest.approx(22.0) and s.min == 1.0 and s.max == 100.0


def test_warnings_for_slow_first_run_and_outliers():
    policy = TimingPolicy(slow_first_factor=3.0, outlier_iqr=3.0)
    found = timing_warnings([10.0], [1.0, 1.1, 0.9, 1.0, 1.05, 9.0], policy)
    assert any("slow first run" in w for w in found)
    assert any("outlier" in w for w in found)
    assert timing_warnings([1.0], [1.0, 1.1, 0.9, 1.0], policy) == []


def test_policy_rejects_nonsense():
    with pytest.raises(ValueError):
        TimingPolicy(repeats=0)


@pytest.mark.parametrize(
    "error, status",
    [
        (RuntimeError("RESOURCE_EXHAUSTED: Out of memory allocating 123 bytes"), "oom"),
        (MemoryError(), "oom"),
        (ValueError("shapes do not match"), "error"),
        (FloatingPointError("non-finite output"), "nan"),
    ],
)
def test_failures_are_classified(error, status):
    assert classify_failure(error)[0] == status


def test_a_child_process_reports_its_own_peak_memory_not_its_parents():
    # ru_maxrss survives exec, so a cell process would inherit the parent's resident size; the
    # isolated cells' peak_bytes rows must be their own.
    import subprocess
    import sys

    import numpy as np

    from dlbench.timing import peak_memory

    ballast = np.ones(1_500_000_000 // 8)  # touched: 1.5 GB resident in this process
    parent_peak, _ = peak_memory()
    child = subprocess.run(
        [sys.executable, "-c", "from dlbench.timing import peak_memory; print(peak_memory()[0])"],
        capture_output=True, text=True, check=True,
    )
    del ballast
    assert parent_peak > 1_500_000_000
    assert int(child.stdout) < 1_000_000_000, (int(child.stdout), parent_peak)


def test_a_dead_cell_process_is_classified_in_the_same_place():
    import signal

    from dlbench.timing_policy import classify_process_death

    assert classify_process_death(-signal.SIGKILL, [], timed_out=False, timeout=5)[0] == "oom"
    assert classify_process_death(1, ["jaxlib...: RESOURCE_EXHAUSTED: Out of memory"], timed_out=False, timeout=5)[0] == "oom"
    status, reason = classify_process_death(1, ["Traceback", "ValueError: bad"], timed_out=False, timeout=5)
    assert status == "error" and "ValueError: bad" in reason
    assert classify_process_death(-9, [], timed_out=True, timeout=5)[0] == "timeout"


@pytest.mark.parametrize("n", [6, 10, 15, 40, 101])
def test_median_interval_is_the_exact_order_statistic_interval(n):
    from math import comb

    from dlbench.timing_policy import median_ci

    ci = median_ci([float(i) for i in range(n, 0, -1)])  # unsorted input
    # Brute force: the largest j with P(Bin(n, 1/2) < j) <= 2.5%; the interval is [x_(j), x_(n+1-j)].
    below = lambda j: sum(comb(n, i) for i in range(j)) / 2**n  # noqa: E731
    j = max(j for j in range(1, n // 2 + 1) if below(j) <= 0.025)
    assert (ci.low, ci.high) == (float(j), float(n + 1 - j))
    assert ci.coverage == pytest.approx(1 - 2 * below(j)) and ci.coverage >= 0.95
    assert ci.median == pytest.approx((n + 1) / 2)


def test_median_interval_of_too_few_samples_is_never_within_target():
    from dlbench.timing_policy import median_ci

    ci = median_ci([1.0, 1.0, 1.0, 1.0, 1.0])  # n=5: [min, max] covers only 93.75%
    assert ci.coverage == pytest.approx(1 - 2 / 32) and ci.half_width == 0.0
    assert not ci.within(0.05)
    assert median_ci([1.0] * 6).within(0.05)


def test_median_interval_covers_the_true_median_as_often_as_it_claims():
    import random

    from dlbench.timing_policy import median_ci

    rng = random.Random(1)
    hits, trials = 0, 2000
    for _ in range(trials):
        ci = median_ci([rng.lognormvariate(0.0, 0.5) for _ in range(15)])  # true median exp(0) = 1
        hits += ci.low <= 1.0 <= ci.high
    assert 0.95 <= hits / trials <= 0.99  # exact coverage at n=15 is 96.5%


def test_the_policy_refuses_non_finite_times():
    with pytest.raises(ValueError, match="min_time_s"):
        TimingPolicy(min_time_s=float("nan"))
    with pytest.raises(ValueError, match="max_time_s"):
        TimingPolicy(max_time_s=float("inf"))


def test_timing_policy_and_statistics_import_no_jax():
    import subprocess
    import sys

    code = "import sys, dlbench.timing_policy, dlbench.rounds; assert 'jax' not in sys.modules, 'jax imported'"
    subprocess.run([sys.executable, "-c", code], check=True)
