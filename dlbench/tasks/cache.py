"""Parsed arrays cached as ``.npz``, keyed by the content hash of the source files and the protocol.

Parsing a large ``.ts`` file or fifteen PPG pickles takes far longer than reading one ``.npz``; the key
changes whenever a source file's bytes or the preprocessing (``protocol``, a version string the
loader bumps when its output changes) change, so a stale cache is never read.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

CACHE_ENV = "DLBENCH_CACHE"


def file_digest(path: Path) -> str:
    with path.open("rb") as f:
        return hashlib.file_digest(f, "blake2b").hexdigest()[:32]


def cache_key(files: Sequence[Path], protocol: str) -> str:
    h = hashlib.blake2b(protocol.encode(), digest_size=16)
    for f in files:
        h.update(f.name.encode())
        h.update(file_digest(f).encode())
    return h.hexdigest()


def cache_dir(data_dir: Path) -> Path:
    """``$DLBENCH_CACHE``, else ``<data dir>/.dlbench-cache``."""
    return Path(os.environ.get(CACHE_ENV) or data_dir / ".dlbench-cache")


def cached_arrays(
    files: Sequence[Path], protocol: str, data_dir: Path, build: Callable[[], dict[str, np.ndarray]]
) -> dict[str, np.ndarray]:
    """``build()``'s arrays, read from the cache when the files and protocol are unchanged.

    An unwritable cache directory only costs the re-parse next time; it is not an error.
    """
    path = cache_dir(data_dir) / f"{protocol.split(':')[0]}-{cache_key(files, protocol)}.npz"
    if path.is_file():
        with np.load(path, allow_pickle=False) as z:
            return {k: z[k] for k in z.files}
    arrays = build()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp.npz")
        np.savez(tmp, **arrays)
        tmp.replace(path)  # atomic: a killed run never leaves a truncated cache file behind
    except OSError:
        pass
    return arrays
