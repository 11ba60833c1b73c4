import os

# Tests must not grab every core or preallocate: CI has 2 cores and runs tests in one process.
os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")


import pytest


@pytest.hookimpl(tryfirst=True)
def pytest_configure(config):
    # Benchmarks run once, untimed, in the normal test run; `--benchmark-only` times them for real.
    if hasattr(config.option, "benchmark_only") and not config.option.benchmark_only:
        config.option.benchmark_disable = True
