"""An exclusive lock on an output folder: one writing process at a time.

``fcntl.flock`` on ``DIR/.dlbench.lock``; the OS releases it when the process ends, however it ends
(a killed writer never leaves a stale lock). The file holds the holder's pid and host, so a refused
second writer can name it. Re-entrant within one process: the orchestrator takes the lock before
checking the folder, and the :class:`~dlbench.rundir.RowWriter` it opens later reuses it.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import platform
from collections.abc import Iterator
from pathlib import Path

from dlbench.errors import DlbenchError

LOCK_FILE = ".dlbench.lock"


class FolderLockedError(DlbenchError):
    """Another process holds the folder's lock."""


class DirLock:
    """A held lock on ``directory`` (see :func:`lock_dir`)."""

    def __init__(self, directory: Path, fd: int):
        self.directory, self._fd = directory, fd

    @property
    def held(self) -> bool:
        return self._fd >= 0

    def release(self) -> None:
        if self._fd >= 0:
            _HELD.pop(self.directory, None)
            os.close(self._fd)  # closing the descriptor releases the flock
            self._fd = -1


_HELD: dict[Path, DirLock] = {}


def holder(directory: str | os.PathLike) -> str:
    """What the lock file says about its holder ("pid 123 on host"), or "" if unknown."""
    try:
        return (Path(directory) / LOCK_FILE).read_text().strip()
    except OSError:
        return ""


def lock_dir(directory: str | os.PathLike) -> DirLock:
    """Take (or reuse, within this process) the exclusive lock of ``directory``; refuse if another process has it."""
    directory = Path(directory).resolve()
    if directory in _HELD:
        return _HELD[directory]
    directory.mkdir(parents=True, exist_ok=True)
    fd = os.open(directory / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        who = holder(directory) or "another process"
        raise FolderLockedError(
            f"{directory} is being written by another dlbench process ({who}); wait for it to end or choose another --out"
        ) from None
    os.ftruncate(fd, 0)
    os.write(fd, f"pid {os.getpid()} on {platform.node() or 'this host'}\n".encode())
    lock = _HELD[directory] = DirLock(directory, fd)
    return lock


@contextlib.contextmanager
def holding_lock(directory: str | os.PathLike) -> Iterator[DirLock]:
    """Hold ``directory``'s lock for a block; released at the end only if this block took it."""
    already = Path(directory).resolve() in _HELD
    lock = lock_dir(directory)
    try:
        yield lock
    finally:
        if not already:
            lock.release()
