"""Host memory: back XLA:CPU's per-call scratch with transparent huge pages (glibc ``malloc.hugetlb``).

XLA:CPU allocates each execution's temporary buffer (346 MB for a LinOSS-IM training step at the
EigenWorms widths) with ``posix_memalign`` on a worker thread and frees it when the call ends. glibc
serves a worker thread from a per-thread arena, which cannot hold a block over 64 MB, so every call
mmaps a fresh region and munmaps it afterwards (``strace`` shows one pair per call): every 4 KiB page
of it is faulted in again on every call, ~25,000 faults for one layer's forward and backward pass at
L 4,096, batch 4, H 128, P 64.

With the glibc tunable ``glibc.malloc.hugetlb=1`` glibc asks for transparent huge pages
(``madvise(MADV_HUGEPAGE)``) on what it maps, and a call faults a fraction of the pages. The
arithmetic is untouched and the memory is still given back after each call, so peak resident memory
stays what the program needs (results/cpu-train-speed/README.md has the figures; keeping freed
memory in the process instead, one arena and no mmap, is faster per call but held 1.67x the peak
memory, which would inflate every ``peak_bytes`` row). The kernel must allow it:
``/sys/kernel/mm/transparent_hugepage/enabled`` set to ``madvise`` or ``always``.

glibc reads tunables only when a process starts, so the ``dlbench`` command re-executes itself once
with ``GLIBC_TUNABLES`` extended (:func:`restart_with_huge_pages`, from :mod:`dlbench.launch` before
anything heavy is imported); its isolated cells inherit the environment. A ``glibc.malloc.hugetlb``
the user set is left as it is, and glibc before 2.35 (which lacks the tunable) is left alone.
``DLBENCH_HOST_ALLOCATOR=system`` keeps glibc's defaults. Nothing changes off glibc (macOS, musl).
:func:`state` says what a process runs with; run folders record it, and :func:`mismatch` is the one
rule by which ``--resume`` and ``merge`` refuse to pool timings. This module imports no JAX.
"""

from __future__ import annotations

import os
import platform
import sys
from collections.abc import Mapping
from pathlib import Path

from dlbench.errors import DlbenchError, check_choice

ENV = "DLBENCH_HOST_ALLOCATOR"
CHOICES = ("huge-pages", "system")
NAME = "glibc.malloc.hugetlb"
TUNABLE = f"{NAME}=1"
_RESTARTED = "DLBENCH_RESTARTED_FOR_TUNABLES"  # set across the one re-exec, so it never loops
_THP = Path("/sys/kernel/mm/transparent_hugepage/enabled")


def choice(env: Mapping[str, str] | None = None) -> str:
    """``DLBENCH_HOST_ALLOCATOR`` of ``env`` (default: this process's); empty means ``huge-pages``.

    Raises :class:`dlbench.errors.DlbenchError`, one line naming the choices, for any other value.
    """
    env = os.environ if env is None else env
    value = env.get(ENV) or "huge-pages"
    check_choice(ENV, value, CHOICES)
    return value


def _glibc_version() -> tuple[int, int] | None:
    """(major, minor) of this process's glibc, None off glibc."""
    if platform.system() != "Linux":
        return None
    try:
        name, _, version = (os.confstr("CS_GNU_LIBC_VERSION") or "").partition(" ")
        return (int(version.split(".")[0]), int(version.split(".")[1])) if name == "glibc" else None
    except (ValueError, OSError, IndexError):
        return None


def _supported() -> bool:
    version = _glibc_version()
    return version is not None and version >= (2, 35)  # glibc.malloc.hugetlb appeared in 2.35


def _hugetlb(env: Mapping[str, str]) -> str | None:
    """The value of glibc.malloc.hugetlb in ``env``'s GLIBC_TUNABLES (the last one wins, as in glibc)."""
    values = [item.partition("=")[2] for item in env.get("GLIBC_TUNABLES", "").split(":") if item.startswith(f"{NAME}=")]
    return values[-1] if values else None


def environment(env: Mapping[str, str] | None = None) -> dict[str, str]:
    """``env`` (default: this process's) with the tunable added, unless opted out, already set to any
    value by the user, or unsupported (off glibc, glibc < 2.35).

    Raises :class:`dlbench.errors.DlbenchError` for an unknown ``DLBENCH_HOST_ALLOCATOR``.
    """
    env = dict(os.environ if env is None else env)
    if choice(env) == "huge-pages" and _supported() and _hugetlb(env) is None:
        env["GLIBC_TUNABLES"] = ":".join(t for t in (env.get("GLIBC_TUNABLES", ""), TUNABLE) if t)
    return env


def _script_mode() -> bool:
    """Whether this process runs a script file as ``python [options] FILE ARGS`` (the console script),
    so that re-executing it repeats nothing else: not ``-c``, ``-m``, stdin or an interactive session."""
    orig = getattr(sys, "orig_argv", None)
    return bool(orig and sys.argv and os.path.isfile(sys.argv[0]) and orig[-len(sys.argv):] == sys.argv
                and len(orig) > len(sys.argv) and orig[-len(sys.argv) - 1] not in ("-c", "-m"))


def restart_with_huge_pages() -> None:
    """Re-execute this command once with the tunable set, if it is wanted and not yet in effect.

    Call before anything else happens (:mod:`dlbench.launch` does): the process is replaced, with the
    same pid, arguments, standard streams and working directory. Nothing happens outside script mode
    (``python -c``, ``-m``, a REPL), for an unknown ``DLBENCH_HOST_ALLOCATOR`` (the command reports
    it) or when the exec itself fails (the command then runs as it is).
    """
    if os.environ.pop(_RESTARTED, None) or not _script_mode():
        return
    try:
        env = environment()
    except DlbenchError:  # an unknown DLBENCH_HOST_ALLOCATOR: the command itself reports it, once
        return
    if env.get("GLIBC_TUNABLES") == os.environ.get("GLIBC_TUNABLES"):
        return
    env[_RESTARTED] = "1"
    sys.stdout.flush()
    sys.stderr.flush()
    try:
        os.execve(sys.executable, [sys.executable, *sys.orig_argv[1:]], env)
    except (OSError, ValueError):  # no usable interpreter path: run without the tunable
        return


def transparent_huge_pages() -> str:
    """The kernel's THP mode (``always``, ``madvise``, ``never``), or ``unknown``."""
    try:
        text = _THP.read_text()
    except OSError:
        return "unknown"
    chosen = [word.strip("[]") for word in text.split() if word.startswith("[")]
    return chosen[0] if chosen else "unknown"


def policy(recorded_state: str) -> str:
    """The allocator policy of a :func:`state` string: ``huge pages`` when glibc asked the kernel for
    them and the kernel could give them, else ``system``. Runs timed under different policies must not
    be mixed. An empty string, a folder written before dlbench recorded it, is ``system``: no dlbench
    set a tunable before this module."""
    if recorded_state.startswith(TUNABLE) and "transparent huge pages: never" not in recorded_state:
        return "huge pages"
    return "system"


def mismatch(first: str, second: str, first_at: str, second_at: str) -> str | None:
    """Why timings recorded under allocator states ``first`` and ``second`` must not be pooled, or None.

    Compares :func:`policy`; an empty state (a folder written before dlbench recorded it) reads as
    glibc's defaults. The text names both, where each comes from, and how to match the first.
    """
    if policy(first) == policy(second):
        return None
    fix = f"{ENV}=system" if policy(first) == "system" else "the dlbench command"
    return (f"host allocator {first or 'system (not recorded)'} ({first_at}) vs {second or 'system (not recorded)'} "
            f"({second_at}); match it with {fix}")


def state() -> str:
    """What this process's host allocator runs with, in words (recorded in run folders)."""
    version = _glibc_version()
    if version is None:
        return "system (not glibc)"
    value = _hugetlb(os.environ)
    if value == "1" and version >= (2, 35):
        return f"{TUNABLE} (transparent huge pages: {transparent_huge_pages()})"
    if value is not None:
        return f"system ({NAME}={value} in GLIBC_TUNABLES{'' if version >= (2, 35) else ', unknown to glibc < 2.35'})"
    if choice() == "system":
        return f"system ({ENV}=system)"
    if version < (2, 35):
        return f"system (glibc {version[0]}.{version[1]} has no {NAME})"
    return "system (started without the tunable, not through the dlbench command)"
