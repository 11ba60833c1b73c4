"""dlbench.host_memory: huge pages for XLA:CPU's per-call scratch (real processes, real page faults).

glibc reads its tunables when a process starts, so every case runs in a fresh interpreter.
"""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from dlbench import host_memory
from dlbench.errors import DlbenchError
from dlbench.rundir.manifest import Manifest, check_resume

REPO = Path(__file__).resolve().parents[1]

# A program whose 64 MB temporary XLA:CPU maps and unmaps on every call (16,384 pages of 4 KiB).
FAULTS_PER_CALL = """
import resource
import jax, jax.numpy as jnp
x = jnp.ones((4096, 4096), jnp.float32)
compiled = jax.jit(lambda x: (jnp.sin(x) / jnp.sin(x).sum(0)).sum(1)).lower(x).compile()
assert compiled.memory_analysis().temp_size_in_bytes >= 64 * 2**20
compiled(x).block_until_ready()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(4):
    compiled(x).block_until_ready()
print((resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / 4)
"""
PAGES = 64 * 2**20 // 4096


def python(code: str, *args: str, env: dict) -> subprocess.CompletedProcess:
    """Run ``code`` in a fresh interpreter whose allocator settings are ``env``'s alone."""
    env = {k: v for k, v in os.environ.items() if k not in (host_memory.ENV, "GLIBC_TUNABLES")} | env
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH", "")) if p)
    return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=300, env=env)


@pytest.mark.skipif(host_memory.transparent_huge_pages() not in ("madvise", "always"),
                    reason=f"the kernel's transparent huge pages are {host_memory.transparent_huge_pages()!r}")
def test_the_scratch_takes_one_fault_per_huge_page():
    plain = python(FAULTS_PER_CALL, env={})
    huge = python(FAULTS_PER_CALL, env=host_memory.environment({}))
    assert plain.returncode == 0 and huge.returncode == 0, plain.stderr[-2000:] + huge.stderr[-2000:]
    # The control: with glibc's defaults every call faults the whole temporary in again, page by page.
    assert float(plain.stdout) > PAGES / 2, f"glibc's defaults faulted only {plain.stdout.strip()} pages per call"
    # One fault per 2 MiB would be 32; the region's unaligned ends and huge pages the kernel could not
    # find at once still fault per 4 KiB (about 1,600 measured), so the bound is a fifth.
    assert float(huge.stdout) < min(PAGES, float(plain.stdout)) / 5, f"{huge.stdout.strip()} faults per call with huge pages"


RESTART = ("import os; from dlbench.host_memory import restart_with_huge_pages, state\n"
           "print('start', os.getpid(), flush=True); restart_with_huge_pages(); print(os.getpid(), state())")


def test_the_command_restarts_itself_once_with_the_tunable_and_the_same_pid():
    out = python(RESTART, env={})
    assert out.returncode == 0, out.stderr[-2000:]
    lines = out.stdout.splitlines()
    pid = lines[0].split()[1]
    if host_memory.state().startswith("system (not glibc)"):
        assert lines == [f"start {pid}", f"{pid} system (not glibc)"]
        return
    assert lines == [f"start {pid}", f"start {pid}",
                     f"{pid} {host_memory.TUNABLE} (transparent huge pages: {host_memory.transparent_huge_pages()})"]


def test_opting_out_keeps_glibcs_defaults_and_says_so():
    out = python(RESTART, env={host_memory.ENV: "system"})
    pid = out.stdout.split()[1]
    assert out.stdout.splitlines() == [f"start {pid}", f"{pid} system ({host_memory.ENV}=system)"]
    assert "GLIBC_TUNABLES" not in host_memory.environment({host_memory.ENV: "system"})


def test_the_tunable_is_added_to_other_tunables_once():
    env = host_memory.environment({"GLIBC_TUNABLES": "glibc.malloc.tcache_count=0"})
    if "GLIBC_TUNABLES" in env and host_memory.TUNABLE in env["GLIBC_TUNABLES"]:
        assert env["GLIBC_TUNABLES"] == f"glibc.malloc.tcache_count=0:{host_memory.TUNABLE}"
        assert host_memory.environment(env) == env


def test_an_unknown_choice_is_one_line_naming_the_choices():
    out = python("from dlbench.cli import run; run()", "models", env={host_memory.ENV: "jemalloc"})
    assert out.returncode == 2
    assert out.stderr.strip() == f"dlbench: error: {host_memory.ENV}='jemalloc' is not a choice; valid: huge-pages, system"
    with pytest.raises(DlbenchError, match="valid: huge-pages, system"):
        host_memory.environment({host_memory.ENV: "jemalloc"})


def test_run_folders_record_the_allocator_and_refuse_to_mix_two(tmp_path):
    new = Manifest.new("train", "quick", "run")
    assert new.host_allocator == host_memory.state()
    old = Manifest.new("train", "quick", "run")
    old.host_allocator = f"{host_memory.TUNABLE} (transparent huge pages: madvise)"
    new.host_allocator = f"system ({host_memory.ENV}=system)"
    with pytest.raises(DlbenchError, match="host allocator: glibc.malloc.hugetlb=1 .* now .*set DLBENCH_HOST_ALLOCATOR"):
        check_resume(tmp_path, old, new)
    new.host_allocator = f"{host_memory.TUNABLE} (transparent huge pages: always)"  # the same policy on another kernel
    assert check_resume(tmp_path, old, new) == []
    old.host_allocator = ""  # a folder from before dlbench recorded it was timed under glibc's defaults
    with pytest.raises(DlbenchError, match=r"host allocator: system \(not recorded\) in .*, glibc.malloc.hugetlb=1 .* now"):
        check_resume(tmp_path, old, new)
    new.host_allocator = f"system ({host_memory.ENV}=system)"
    assert check_resume(tmp_path, old, new) == []
