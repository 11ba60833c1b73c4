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
    """Run ``code`` (or the script file it names) in a fresh interpreter whose allocator settings are ``env``'s alone."""
    env = {k: v for k, v in os.environ.items() if k not in (host_memory.ENV, "GLIBC_TUNABLES")} | env
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH", "")) if p)
    program = [code] if code.endswith(".py") and os.path.isfile(code) else ["-c", code]  # a script file, or code
    return subprocess.run([sys.executable, *program, *args], capture_output=True, text=True, timeout=300, env=env)


@pytest.mark.skipif(host_memory.transparent_huge_pages() not in ("madvise", "always"),
                    reason=f"the kernel's transparent huge pages are {host_memory.transparent_huge_pages()!r}")
def test_the_scratch_takes_one_fault_per_huge_page():
    huge = python(FAULTS_PER_CALL, env=host_memory.environment({}))
    assert huge.returncode == 0, huge.stderr[-2000:]
    # One fault per 2 MiB would be 32; the region's unaligned ends and huge pages the kernel could not
    # find at once still fault per 4 KiB (about 1,600 measured), so the bound is a fifth.
    assert float(huge.stdout) < PAGES / 5, f"{huge.stdout.strip()} faults per call with huge pages"
    if host_memory.transparent_huge_pages() == "madvise":
        # The control: with glibc's defaults every call faults the whole temporary in again, page by
        # page (with THP "always" the kernel would give huge pages without being asked).
        plain = python(FAULTS_PER_CALL, env={})
        assert plain.returncode == 0, plain.stderr[-2000:]
        assert float(plain.stdout) > PAGES / 2, f"glibc's defaults faulted only {plain.stdout.strip()} pages per call"


RESTART = ("import os; from dlbench.host_memory import restart_with_huge_pages, state\n"
           "print('start', os.getpid(), flush=True); restart_with_huge_pages(); print(os.getpid(), state())")
supported = pytest.mark.skipif(not host_memory._supported(), reason="needs glibc >= 2.35 (glibc.malloc.hugetlb)")


def script(tmp_path, code: str) -> str:
    """``code`` as a script file: the re-exec happens only for ``python FILE`` (as the console script runs)."""
    path = tmp_path / "probe.py"
    path.write_text(code)
    return str(path)


@supported
def test_the_command_restarts_itself_once_with_the_tunable_and_the_same_pid(tmp_path):
    out = python(script(tmp_path, RESTART), env={})
    assert out.returncode == 0, out.stderr[-2000:]
    pid = out.stdout.split()[1]
    assert out.stdout.splitlines() == [f"start {pid}", f"start {pid}",
                                       f"{pid} {host_memory.TUNABLE} (transparent huge pages: {host_memory.transparent_huge_pages()})"]
    # Not from ``python -c`` (or -m, stdin, a REPL): there the program would run twice or not at all.
    once = python(RESTART, env={})
    assert once.stdout.splitlines() == [f"start {once.stdout.split()[1]}", f"{once.stdout.split()[1]} {host_memory.state()}"]


@supported
def test_the_console_entry_point_runs_the_cli_with_the_tunable_and_no_marker(tmp_path):
    probe = ("import os, sys; import dlbench.cli\n"
             "dlbench.cli.main = lambda argv=None: print(os.environ.get('GLIBC_TUNABLES'), sorted(k for k in os.environ if 'RESTART' in k)) or 0\n"
             "from dlbench.launch import run; run()")
    out = python(script(tmp_path, probe), "models", env={"GLIBC_TUNABLES": "glibc.malloc.tcache_count=0"})
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.splitlines() == [f"glibc.malloc.tcache_count=0:{host_memory.TUNABLE} []"]


def test_isolated_cells_are_timed_under_the_parents_setting(tmp_path, monkeypatch):
    from dlbench.cells import run_isolated

    (tmp_path / "cellprobe.py").write_text("import os\n\ndef probe(payload, emit):\n"
                                           "    emit({'metric': 'cell_s', 'value': 0.0, 'unit': 's', 'source': os.environ.get('GLIBC_TUNABLES', '')})\n")
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(tmp_path), str(REPO), os.environ.get("PYTHONPATH", "")]))
    for parent in (host_memory.TUNABLE, ""):
        monkeypatch.setenv("GLIBC_TUNABLES", parent)
        rows = []
        assert run_isolated("cellprobe:probe", {}, rows.append, base={}, timeout=120) == "ok"
        assert [r["source"] for r in rows] == [parent]


def test_opting_out_keeps_glibcs_defaults_and_says_so(tmp_path):
    out = python(script(tmp_path, RESTART), env={host_memory.ENV: "system"})
    pid = out.stdout.split()[1]
    assert out.stdout.splitlines() == [f"start {pid}", f"{pid} {host_memory.state() if not host_memory._supported() else f'system ({host_memory.ENV}=system)'}"]
    assert "GLIBC_TUNABLES" not in host_memory.environment({host_memory.ENV: "system"})


@supported
def test_the_tunable_is_added_to_other_tunables_once_and_never_over_the_users(monkeypatch):
    env = host_memory.environment({"GLIBC_TUNABLES": "glibc.malloc.tcache_count=0"})
    assert env["GLIBC_TUNABLES"] == f"glibc.malloc.tcache_count=0:{host_memory.TUNABLE}"
    assert host_memory.environment(env) == env
    assert host_memory.environment({host_memory.ENV: ""})["GLIBC_TUNABLES"] == host_memory.TUNABLE  # empty: the default
    users = {"GLIBC_TUNABLES": f"{host_memory.TUNABLE}:glibc.malloc.hugetlb=0"}  # the last value wins in glibc
    assert host_memory.environment(users) == users
    monkeypatch.setenv("GLIBC_TUNABLES", users["GLIBC_TUNABLES"])
    assert host_memory.state() == "system (glibc.malloc.hugetlb=0 in GLIBC_TUNABLES)"
    assert host_memory.policy(host_memory.state()) == "system"
    assert host_memory.policy(f"{host_memory.TUNABLE} (transparent huge pages: never)") == "system"


def test_an_unknown_choice_is_one_line_naming_the_choices(tmp_path):
    out = python(script(tmp_path, "from dlbench.launch import run; run()"), "models", env={host_memory.ENV: "jemalloc"})
    assert out.returncode == 2
    assert out.stderr.strip() == f"dlbench: error: unknown {host_memory.ENV} 'jemalloc'; valid choices: huge-pages, system"
    with pytest.raises(DlbenchError, match="valid choices: huge-pages, system"):
        host_memory.environment({host_memory.ENV: "jemalloc"})


def test_run_folders_record_the_allocator_and_refuse_to_mix_two(tmp_path):
    new = Manifest.new("train", "quick", "run")
    assert new.host_allocator == host_memory.state()
    old = Manifest.new("train", "quick", "run")
    old.host_allocator = f"{host_memory.TUNABLE} (transparent huge pages: madvise)"
    new.host_allocator = f"system ({host_memory.ENV}=system)"
    with pytest.raises(DlbenchError, match=r"host allocator glibc.malloc.hugetlb=1 .* \(.*\) vs system .* \(this process\); match it with the dlbench command"):
        check_resume(tmp_path, old, new)
    new.host_allocator = f"{host_memory.TUNABLE} (transparent huge pages: always)"  # the same policy on another kernel
    assert check_resume(tmp_path, old, new) == []
    old.host_allocator = ""  # a folder from before dlbench recorded it was timed under glibc's defaults
    with pytest.raises(DlbenchError, match=r"host allocator system \(not recorded\) \(.*\) vs glibc.malloc.hugetlb=1 .* \(this process\); match it with DLBENCH_HOST_ALLOCATOR=system"):
        check_resume(tmp_path, old, new)
    new.host_allocator = f"system ({host_memory.ENV}=system)"
    assert check_resume(tmp_path, old, new) == []
