import os

# Tests must not grab every core or preallocate: CI has 2 cores and runs tests in one process.
os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")
# Tests compile hundreds of small programs; LLVM's optimisation is most of each compile and buys
# nothing at test sizes. XLA's HLO passes, which decide the numerics, still run. Child processes
# (isolated profile cells, multi-process tests) inherit it.
_FAST_COMPILE = "--xla_backend_optimization_level=0 --xla_llvm_disable_expensive_passes=true"
os.environ["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} {_FAST_COMPILE}".strip()


import pytest


@pytest.hookimpl(tryfirst=True)
def pytest_configure(config):
    # Benchmarks run once, untimed, in the normal test run; `--benchmark-only` times them for real.
    if hasattr(config.option, "benchmark_only") and not config.option.benchmark_only:
        config.option.benchmark_disable = True
