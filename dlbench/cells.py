"""The isolated-cell launcher: run one measurement in a child process and relay its rows.

A child runs ``ENTRY(payload, emit)`` (``"module:function"``, imported in the child) and prints each
row as one ``DLBENCH-ROW {json}`` line; the parent relays them as they come. The child caps its own
address space (a ``preexec_fn`` would fork a multithreaded JAX parent, which Python documents as
deadlock-prone). A child that dies, or outlives ``timeout``, becomes one ``cell_s`` row whose status
comes from :func:`dlbench.timing_policy.classify_process_death`. The launcher knows no model and no JAX.

Compilation across rounds: every child of one sweep shares a persistent JAX compilation cache
(``cache_dir``, with no minimum compile time or size), so a cell's second and later rounds load its
executable instead of compiling it again.
"""

from __future__ import annotations

import importlib
import json
import os
import selectors
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any

from dlbench.timing_policy import classify_process_death

ROW_PREFIX = "DLBENCH-ROW "


def cache_env(cache_dir: str | None) -> dict[str, str]:
    """Environment that points a child's JAX at a shared persistent compilation cache."""
    if not cache_dir:
        return {}
    return {
        "JAX_COMPILATION_CACHE_DIR": str(cache_dir),
        "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0",
        "JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES": "0",
    }


def run_isolated(
    entry: str,
    payload: dict[str, Any],
    emit: Callable[[dict], None],
    *,
    base: dict[str, Any],
    timeout: float,
    memory_limit_gb: float | None = None,
    cache_dir: str | None = None,
) -> str:
    """Run ``entry`` on ``payload`` in a child process; return the status of its ``cell_s`` row.

    ``base`` holds the columns of the row written when the child reports no status of its own.
    """
    spec = json.dumps({"entry": entry, "payload": payload, "memory_limit_gb": memory_limit_gb}, default=str)
    # The child inherits this process's allocator settings (dlbench.host_memory): the cells are timed
    # under what the run folder records.
    env = {**os.environ, "PYTHONUNBUFFERED": "1", **cache_env(cache_dir)}
    started = time.perf_counter()
    proc = subprocess.Popen(
        [sys.executable, "-m", "dlbench.cells", spec],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        start_new_session=True,
    )
    status = None
    deadline = started + timeout
    selector = selectors.DefaultSelector()
    selector.register(proc.stdout, selectors.EVENT_READ)
    try:
        while True:
            remaining = deadline - time.perf_counter()
            if remaining <= 0:
                _kill(proc)
                break
            if not selector.select(timeout=min(remaining, 1.0)):
                if proc.poll() is not None:
                    break
                continue
            line = proc.stdout.readline()
            if not line:
                break
            if line.startswith(ROW_PREFIX):
                row = json.loads(line[len(ROW_PREFIX) :])
                emit(row)
                if row.get("metric") == "cell_s":
                    status = row.get("status") or "ok"
    except BaseException:
        _kill(proc)
        raise
    finally:
        selector.close()
    timed_out = status is None and time.perf_counter() >= deadline
    if proc.poll() is None:
        _kill(proc)
    proc.wait()
    stderr_tail = (proc.stderr.read() or "").strip().splitlines()[-20:]
    if status is not None:
        return status
    status, reason = classify_process_death(proc.returncode, stderr_tail, timed_out=timed_out, timeout=timeout)
    emit({**base, "metric": "cell_s", "value": time.perf_counter() - started, "unit": "s", "status": status, "reason": reason})
    return status


def _kill(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def limit_memory(gb: float | None) -> None:
    """Cap this process's address space at ``gb`` GiB (no-op for None)."""
    if not gb:
        return
    import resource

    limit = int(gb * 2**30)
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))


def child_main(spec: str) -> int:
    """Entry of an isolated cell: rows go to stdout as JSON lines."""
    job = json.loads(spec)
    limit_memory(job.get("memory_limit_gb"))
    module, _, name = job["entry"].partition(":")
    function = getattr(importlib.import_module(module), name)

    def emit(row):
        print(ROW_PREFIX + json.dumps(row, default=str), flush=True)

    function(job["payload"], emit)
    return 0


if __name__ == "__main__":
    sys.exit(child_main(sys.argv[1]))
