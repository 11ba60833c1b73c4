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
    first, repeats = repeat_timed(call, TimingPolicy(warmup=1, repeats=3, min_time_s=5.0), clock=clock, block=lambda x: x)
    assert first == [10.0]
    # 3 runs would be only 3 s: the 5-second minimum takes it to 5 runs.
    assert repeats == [1.0] * 5


def test_min_repeats_extend_past_min_time():
    clock = FakeClock()
    call = scripted_call(clock, [1.0] * 2 + [2.0] * 100)
    first, repeats = repeat_timed(call, TimingPolicy(warmup=2, repeats=7, min_time_s=1.0), clock=clock, block=lambda x: x)
    assert first == [1.0, 1.0]
    assert repeats == [2.0] * 7


def test_max_repeats_and_max_time_cap_the_loop():
    clock = FakeClock()
    call = scripted_call(clock, [0.001] * 100)
    _, repeats = repeat_timed(call, TimingPolicy(warmup=0, repeats=2, min_time_s=100.0, max_repeats=10), clock=clock, block=lambda x: x)
    assert len(repeats) == 10
    clock = FakeClock()
    call = scripted_call(clock, [1.0] * 100)
    _, repeats = repeat_timed(call, TimingPolicy(warmup=0, repeats=2, min_time_s=100.0, max_time_s=4.0), clock=clock, block=lambda x: x)
    assert len(repeats) == 4


def test_every_timed_call_is_blocked():
    clock = FakeClock()
    blocked = []
    call = scripted_call(clock, [1.0] * 10)
    repeat_timed(call, TimingPolicy(warmup=1, repeats=3, min_time_s=0), clock=clock, block=blocked.append)
    assert len(blocked) == 4


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
    result = time_function(lambda x: x, (1,), TimingPolicy(warmup=1, repeats=4, min_time_s=0.0), clock=clock)
    assert result.lower_s == 3.0
    assert result.compile_s == 7.0
    assert result.first_call_s == [0.5]
    assert result.repeats_s == [0.5] * 4


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
