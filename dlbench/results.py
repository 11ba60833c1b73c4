"""The tidy row schema: one row per measurement, provenance on every row.

One writer (:class:`RowWriter`, append-only, flushed per row so nothing measured is lost) and one
reader (:func:`read_rows`, which validates the columns). ``results/README.md`` documents each column.
Derived values (tokens/s, ratios, mean +- std) are computed from these rows, never stored.
"""

from __future__ import annotations

import csv
import datetime
import functools
import importlib.metadata
import os
import platform
import subprocess
import uuid
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import pandas as pd

from dlbench.errors import DlbenchError

IDENTITY = ("run_id", "suite", "task", "model", "layer_options", "backend", "target")
AXES = ("seq_len", "batch", "hidden", "state", "blocks", "dtype", "mode", "seed", "devices", "round")
MEASUREMENT = ("metric", "value", "unit", "index", "source")
OUTCOME = ("status", "reason")
PROVENANCE = (
    "dlbench_version",
    "jax_version",
    "jaxlib_version",
    "flax_version",
    "optax_version",
    "platform",
    "device_kind",
    "device_count",
    "git_commit",
    "git_dirty",
    "host",
    "time_utc",
)
COLUMNS = IDENTITY + AXES + MEASUREMENT + OUTCOME + PROVENANCE
# The columns without which a file is not a dlbench result table.
REQUIRED = ("model", "metric", "value", "unit", "status")
STATUSES = ("ok", "oom", "timeout", "nan", "error", "skipped", "n/a")
INTEGER_COLUMNS = ("seq_len", "batch", "hidden", "state", "blocks", "seed", "devices", "round", "index", "device_count")


def _version(package: str) -> str:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return ""


def _git(*args: str) -> str:
    try:
        out = subprocess.run(
            ["git", *args], capture_output=True, text=True, timeout=5, cwd=Path(__file__).resolve().parent
        )
    except (OSError, subprocess.SubprocessError):
        return ""
    return out.stdout.strip() if out.returncode == 0 else ""


@functools.cache
def provenance() -> dict[str, Any]:
    """Versions, device, git state and host of this process (time is added per row)."""
    import jax

    devices = jax.devices()
    commit = _git("rev-parse", "HEAD")
    dirty = bool(_git("status", "--porcelain", "--untracked-files=no")) if commit else None
    return {
        "dlbench_version": _version("dlbench"),
        "jax_version": _version("jax"),
        "jaxlib_version": _version("jaxlib"),
        "flax_version": _version("flax"),
        "optax_version": _version("optax"),
        "platform": jax.default_backend(),
        "device_kind": devices[0].device_kind,
        "device_count": len(devices),
        "git_commit": commit,
        "git_dirty": dirty,
        "host": platform.node() or os.environ.get("HOSTNAME", ""),
    }


def new_run_id() -> str:
    """A sortable, unique run id: UTC time plus a random suffix."""
    stamp = datetime.datetime.now(datetime.UTC).strftime("%Y%m%dT%H%M%SZ")
    return f"{stamp}-{uuid.uuid4().hex[:6]}"


def utc_now() -> str:
    return datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")


class RowWriter:
    """Append rows to a CSV file; the header is written once, each row is flushed as it is made.

    ``defaults`` fill columns a row leaves out (the run id, suite, axes shared by a cell...).
    Existing files are appended to, never rewritten.
    """

    def __init__(self, path: str | os.PathLike, defaults: Mapping[str, Any] | None = None):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.defaults = dict(defaults or {})
        if self.path.exists() and self.path.stat().st_size > 0:
            with self.path.open(newline="") as f:
                header = next(csv.reader(f), [])
            if tuple(header) != COLUMNS:
                raise DlbenchError(
                    f"{self.path}: existing file has a different column layout; write to a new --out directory"
                )
            self._needs_header = False
        else:
            self._needs_header = True

    def write(self, row: Mapping[str, Any]) -> dict[str, Any]:
        unknown = set(row) - set(COLUMNS)
        if unknown:
            raise ValueError(f"unknown result columns: {sorted(unknown)}")
        full = {**provenance(), "time_utc": utc_now(), **self.defaults, **row}
        status = full.get("status") or "ok"
        if status not in STATUSES:
            raise ValueError(f"unknown status {status!r}; valid: {', '.join(STATUSES)}")
        full["status"] = status
        with self.path.open("a", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=COLUMNS, extrasaction="raise")
            if self._needs_header:
                writer.writeheader()
                self._needs_header = False
            writer.writerow({c: _cell(full.get(c)) for c in COLUMNS})
        return full

    def write_many(self, rows: Iterable[Mapping[str, Any]]) -> None:
        for row in rows:
            self.write(row)


class NullWriter:
    """A :class:`RowWriter` that writes nothing: the other processes of a multi-process job (only process 0 writes)."""

    def __init__(self, defaults: Mapping[str, Any] | None = None):
        self.defaults = dict(defaults or {})

    def write(self, row: Mapping[str, Any]) -> dict[str, Any]:
        return {**self.defaults, **row}

    def write_many(self, rows: Iterable[Mapping[str, Any]]) -> None:
        for row in rows:
            self.write(row)


def _cell(value: Any) -> Any:
    if value is None:
        return ""
    if isinstance(value, float):
        return repr(value)
    return value


ROWS_FILE = "rows.csv"


def result_files(paths: Iterable[str | os.PathLike]) -> list[Path]:
    """CSV files named directly, or every ``rows.csv`` found (recursively) in the named directories.

    Only ``rows.csv`` counts inside a directory: exported leaderboards and other derived CSVs live
    beside the rows and are not result tables.
    """
    files: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            files.extend(sorted(p.rglob(ROWS_FILE)))
        elif p.exists():
            files.append(p)
        else:
            raise DlbenchError(f"{p}: no such file or directory")
    return files


def read_rows(paths: Iterable[str | os.PathLike]) -> pd.DataFrame:
    """Read and validate result CSVs (files or directories) into one DataFrame with typed columns."""
    files = result_files(paths)
    if not files:
        raise DlbenchError("no result CSV files found in " + ", ".join(map(str, paths)))
    frames = []
    for f in files:
        try:
            frame = pd.read_csv(f, keep_default_na=False, na_values=[""], low_memory=False)
        except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as error:
            raise DlbenchError(f"{f}: not a readable CSV ({str(error).splitlines()[0]})") from None
        missing = [c for c in REQUIRED if c not in frame.columns]
        if missing:
            raise DlbenchError(f"{f}: not a dlbench result table; missing columns: {', '.join(missing)}")
        for c in COLUMNS:
            if c not in frame.columns:
                frame[c] = pd.NA
        frame["source_file"] = str(f)
        frames.append(frame)
    rows = pd.concat(frames, ignore_index=True)
    rows["value"] = pd.to_numeric(rows["value"], errors="coerce")
    for c in INTEGER_COLUMNS:
        rows[c] = pd.to_numeric(rows[c], errors="coerce").astype("Int64")
    return rows
