import os

import pytest

# Tests must not preallocate: CI has 2 cores and runs one pytest worker per core (`make test`).
os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")
# Tests compile hundreds of small programs; LLVM's optimisation is most of each compile and buys
# nothing at test sizes. XLA's HLO passes, which decide the numerics, still run. Child processes
# (isolated profile cells, multi-process tests) inherit it. Not when benchmarks are timed for real
# (`--benchmark-only`): they must time optimised code. JAX reads XLA_FLAGS when its backend starts,
# after pytest_configure and before any test runs.
_FAST_COMPILE = "--xla_backend_optimization_level=0 --xla_llvm_disable_expensive_passes=true"


@pytest.hookimpl(tryfirst=True)
def pytest_configure(config):
    # Benchmarks run once, untimed, in the normal test run; `--benchmark-only` times them for real.
    timing_benchmarks = getattr(config.option, "benchmark_only", False)
    if not timing_benchmarks:
        config.option.benchmark_disable = True
        os.environ["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} {_FAST_COMPILE}".strip()


@pytest.fixture(autouse=True)
def _no_persistent_compilation_cache(monkeypatch):
    # Tests stay hermetic: no JAX compilation cache shared with the user's runs (see dlbench.suite).
    monkeypatch.setenv("DLBENCH_JAX_CACHE", "off")
    # Loading a plugin exports it in $DLBENCH_PLUGINS for child processes; no test inherits another's.
    monkeypatch.delenv("DLBENCH_PLUGINS", raising=False)


@pytest.fixture
def error_line(capsys):
    """Run the CLI on argv; assert one line on stderr, exit code 2, no traceback; return the line."""
    from dlbench.cli import main

    def check(argv):
        code = main(argv)
        err = capsys.readouterr().err.strip()
        assert code == 2 and len(err.splitlines()) == 1 and "Traceback" not in err, err
        return err

    return check
