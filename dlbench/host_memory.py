"""Host memory: back XLA:CPU's per-call scratch with transparent huge pages (glibc ``malloc.hugetlb``).

XLA:CPU allocates each execution's temporary buffer (330 MB for a LinOSS-IM training step at the
EigenWorms widths) with ``posix_memalign`` on a worker thread and frees it when the call ends. glibc
serves a worker thread from a per-thread arena, which cannot hold a block over 64 MB, so every call
mmaps a fresh region and munmaps it afterwards (``strace`` shows one pair per call): every 4 KiB page
of it is faulted in again on every call, ~25,000 faults for one layer's forward and backward pass at
L 4,096, batch 4, H 128, P 64, a third of its time.

With the glibc tunable ``glibc.malloc.hugetlb=1`` glibc asks for transparent huge pages
(``madvise(MADV_HUGEPAGE)``) on what it maps, so the same region takes one fault per 2 MiB. The
arithmetic is untouched and the memory is still given back after each call, so peak resident memory
stays what the program needs (measured: 904 MB against 893 MB for 30 training steps; the alternative
of keeping freed memory in the process, one arena and no mmap, held three extra scratch buffers,
1,492 MB). The kernel must allow it: ``/sys/kernel/mm/transparent_hugepage/enabled`` set to
``madvise`` or ``always``; with ``never`` the tunable changes nothing.

glibc reads tunables only when a process starts, so the ``dlbench`` command re-executes itself once
with ``GLIBC_TUNABLES`` extended (:func:`restart_with_huge_pages`) and isolated cells are started with
it (:func:`environment`). ``DLBENCH_HOST_ALLOCATOR=system`` leaves glibc's defaults alone. Nothing
changes off glibc (macOS, musl). :func:`state` says what a process runs with; run folders record it.
This module imports no JAX.
"""

from __future__ import annotations

import os
import platform
import sys
from collections.abc import Mapping
from pathlib import Path

ENV = "DLBENCH_HOST_ALLOCATOR"
CHOICES = ("huge-pages", "system")
TUNABLE = "glibc.malloc.hugetlb=1"
_RESTARTED = "DLBENCH_RESTARTED_FOR_TUNABLES"  # set across the one re-exec, so it never loops
_THP = Path("/sys/kernel/mm/transparent_hugepage/enabled")


def _choice(env: Mapping[str, str]) -> str:
    choice = env.get(ENV, "huge-pages")
    if choice not in CHOICES:
        from dlbench.errors import DlbenchError

        raise DlbenchError(f"{ENV}={choice!r} is not a choice; valid: {', '.join(CHOICES)}")
    return choice


def _glibc() -> bool:
    return platform.system() == "Linux" and platform.libc_ver()[0] == "glibc"


def _has_tunable(env: Mapping[str, str]) -> bool:
    return TUNABLE in env.get("GLIBC_TUNABLES", "").split(":")


def environment(env: Mapping[str, str] | None = None) -> dict[str, str]:
    """``env`` (default: this process's) with the tunable added for a child process, unless opted out.

    Raises :class:`dlbench.errors.DlbenchError` for an unknown ``DLBENCH_HOST_ALLOCATOR``.
    """
    env = dict(os.environ if env is None else env)
    if _choice(env) == "huge-pages" and _glibc() and not _has_tunable(env):
        env["GLIBC_TUNABLES"] = ":".join(t for t in (env.get("GLIBC_TUNABLES", ""), TUNABLE) if t)
    return env


def restart_with_huge_pages() -> None:
    """Re-execute this command once with the tunable set, if it is wanted and not yet in effect.

    Call before anything else happens (the ``dlbench`` entry point does): the process is replaced,
    with the same pid, arguments, standard streams and working directory.
    """
    if _has_tunable(os.environ) or os.environ.get(_RESTARTED) or not hasattr(sys, "orig_argv"):
        return
    env = environment()
    if not _has_tunable(env):
        return
    env[_RESTARTED] = "1"
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(sys.executable, [sys.executable, *sys.orig_argv[1:]], env)


def transparent_huge_pages() -> str:
    """The kernel's THP mode (``always``, ``madvise``, ``never``), or ``unknown``."""
    try:
        text = _THP.read_text()
    except OSError:
        return "unknown"
    chosen = [word.strip("[]") for word in text.split() if word.startswith("[")]
    return chosen[0] if chosen else "unknown"


def policy(recorded_state: str) -> str:
    """The allocator policy of a :func:`state` string, without the reason or the kernel's THP mode
    (``glibc.malloc.hugetlb=1`` or ``system``): runs timed under different policies must not be mixed.
    An empty string, a folder written before dlbench recorded it, is ``system``: no dlbench set a
    tunable before this module."""
    return recorded_state.split(" (", 1)[0] or "system"


def state() -> str:
    """What this process's host allocator runs with, in words (recorded in run folders)."""
    if not _glibc():
        return "system (not glibc)"
    if _has_tunable(os.environ):
        return f"{TUNABLE} (transparent huge pages: {transparent_huge_pages()})"
    if os.environ.get(ENV) == "system":
        return f"system ({ENV}=system)"
    return "system (started without the tunable, not through the dlbench command)"
