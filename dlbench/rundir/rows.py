"""The one writer and the one (strict) reader of ``rows.csv``.

Writer: append-only, flushed per row, header written once, every row checked against the vocabulary
(:mod:`dlbench.rundir.vocabulary`); it holds the folder's lock (:mod:`dlbench.rundir.lock`) so a
second process cannot interleave rows into the same file.

Reader: a file is accepted only if its header is a dlbench header (the required columns, no unknown
ones, possibly an older layout without the later columns) and every line has exactly the header's
cells, a known status and numbers where numbers belong. A final line cut mid-row (the writer was
killed) is reported and left out; anything else malformed (extra cells, NUL bytes, a second header,
text in a numeric column) is one :class:`~dlbench.errors.DlbenchError` naming the file and line.
"""

from __future__ import annotations

import csv
import dataclasses
import datetime
import functools
import importlib.metadata
import io
import logging
import math
import os
import platform
import subprocess
import uuid
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

from dlbench.errors import DlbenchError
from dlbench.rundir.vocabulary import (
    COLUMNS,
    INTEGER_COLUMNS,
    METRIC,
    REQUIRED,
    STATUSES,
    UNIT_NAMES,
)

ROWS_FILE = "rows.csv"
MANIFEST_FILE = "manifest.json"  # written by dlbench.rundir.manifest; named here so the reader can look for it
log = logging.getLogger("dlbench")


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
def code_provenance() -> dict[str, Any]:
    """dlbench version and git state of this checkout (no JAX import)."""
    commit = _git("rev-parse", "HEAD")
    dirty = bool(_git("status", "--porcelain", "--untracked-files=no")) if commit else None
    return {"dlbench_version": _version("dlbench"), "git_commit": commit, "git_dirty": dirty}


@functools.cache
def provenance() -> dict[str, Any]:
    """Versions, device, git state and host of this process (time is added per row)."""
    import jax

    devices = jax.devices()
    return {
        **code_provenance(),
        "jax_version": _version("jax"),
        "jaxlib_version": _version("jaxlib"),
        "flax_version": _version("flax"),
        "optax_version": _version("optax"),
        "platform": jax.default_backend(),
        "device_kind": devices[0].device_kind,
        "device_count": len(devices),
        "host": platform.node() or os.environ.get("HOSTNAME", ""),
    }


def new_run_id() -> str:
    """A sortable, unique run id: UTC time plus a random suffix."""
    stamp = datetime.datetime.now(datetime.UTC).strftime("%Y%m%dT%H%M%SZ")
    return f"{stamp}-{uuid.uuid4().hex[:6]}"


def utc_now() -> str:
    return datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")


def check_row(row: Mapping[str, Any]) -> None:
    """Raise ValueError unless ``row`` uses only known columns, a known status, metric and unit."""
    unknown = set(row) - set(COLUMNS)
    if unknown:
        raise ValueError(f"unknown result columns: {sorted(unknown)}")
    status = row.get("status") or "ok"
    if status not in STATUSES:
        raise ValueError(f"unknown status {status!r}; valid: {', '.join(STATUSES)}")
    metric = row.get("metric")
    if metric not in METRIC:
        raise ValueError(f"unknown metric {metric!r}: add it to dlbench/rundir/vocabulary.py (METRICS) first")
    unit = row.get("unit") or ""
    if unit and unit not in METRIC[metric].units:
        raise ValueError(f"metric {metric!r} is written in {' or '.join(METRIC[metric].units)}, not {unit!r}")


class RowWriter:
    """Append rows to a CSV file; the header is written once, each row is flushed as it is made.

    ``defaults`` fill columns a row leaves out (the run id, suite, axes shared by a cell...).
    Existing files are appended to, never rewritten; the writer takes the folder's lock
    (re-entrant within this process) so that no other process writes the same file.
    """

    def __init__(self, path: str | os.PathLike, defaults: Mapping[str, Any] | None = None):
        from dlbench.rundir.lock import lock_dir

        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.lock = lock_dir(self.path.parent)
        self.defaults = dict(defaults or {})
        if self.path.exists() and self.path.stat().st_size > 0:
            with self.path.open(newline="", errors="replace") as f:
                header = next(csv.reader(f), [])
            if tuple(header) != COLUMNS:
                raise DlbenchError(
                    f"{self.path}: existing file has a different column layout (an older dlbench, or not a rows.csv); "
                    "write to a new --out directory"
                )
            self._needs_header = False
        else:
            self._needs_header = True

    def write(self, row: Mapping[str, Any]) -> dict[str, Any]:
        full = {**provenance(), "time_utc": utc_now(), **self.defaults, **row}
        full["status"] = full.get("status") or "ok"
        check_row(full)
        with self.path.open("a", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=COLUMNS, extrasaction="raise")
            if self._needs_header:
                writer.writeheader()
                self._needs_header = False
            writer.writerow({c: _cell(full.get(c)) for c in COLUMNS})
        return full

    def bind(self, **defaults: Any) -> BoundWriter:
        """A writer into the same file with more defaults (e.g. one run's ``config_hash``)."""
        return BoundWriter(self, defaults)


class NullWriter:
    """A :class:`RowWriter` that writes nothing: the other processes of a multi-process job (only process 0 writes)."""

    def __init__(self, defaults: Mapping[str, Any] | None = None):
        self.defaults = dict(defaults or {})

    def write(self, row: Mapping[str, Any]) -> dict[str, Any]:
        full = {**self.defaults, **row}
        full["status"] = full.get("status") or "ok"
        check_row(full)
        return full

    def bind(self, **defaults: Any) -> BoundWriter:
        return BoundWriter(self, defaults)


@dataclasses.dataclass
class BoundWriter:
    """A writer that adds ``defaults`` to every row before handing it to ``parent``."""

    parent: RowWriter | NullWriter
    defaults: dict[str, Any]

    def write(self, row: Mapping[str, Any]) -> dict[str, Any]:
        return self.parent.write({**self.defaults, **row})

    def bind(self, **defaults: Any) -> BoundWriter:
        return BoundWriter(self.parent, {**self.defaults, **defaults})


def _cell(value: Any) -> Any:
    if value is None:
        return ""
    if isinstance(value, float):
        return repr(value)
    return value


# --- the strict reader ---------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Table:
    """A validated ``rows.csv``: its header, its complete rows (cells as text) and what was left out."""

    path: Path
    header: tuple[str, ...]
    rows: list[dict[str, str]]
    text: str  # the file's text without a cut-off final line
    partial_line: int | None = None  # line number of a final line cut mid-row, if any

    @property
    def note(self) -> str:
        if self.partial_line is None:
            return ""
        return f"1 partial row at {self.path}:{self.partial_line} ignored (a writer was killed)"


def _is_number(text: str, integer: bool) -> bool:
    if integer:
        try:
            int(text)
            return True
        except ValueError:
            try:
                value = float(text)  # pandas writes integer columns with missing values as 3.0
            except ValueError:
                return False
            return math.isfinite(value) and value == int(value)
    try:
        float(text)
    except ValueError:
        return False
    return True


def read_table(path: str | os.PathLike) -> Table:
    """Read and check one ``rows.csv`` (see the module docstring); an empty file has no rows."""
    path = Path(path)
    raw = path.read_bytes()
    if b"\0" in raw:
        line = raw[: raw.index(b"\0")].count(b"\n") + 1
        raise DlbenchError(f"{path}:{line}: NUL byte: not a text rows.csv (damaged or binary file)")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as error:
        line = raw[: error.start].count(b"\n") + 1
        raise DlbenchError(f"{path}:{line}: not UTF-8 text (damaged or binary file)") from None
    if not text.strip():
        return Table(path, (), [], "")
    reader = csv.reader(io.StringIO(text, newline=""))
    try:
        header = tuple(next(reader))
    except csv.Error as error:
        raise DlbenchError(f"{path}:1: not a readable CSV header ({error})") from None
    missing = [c for c in REQUIRED if c not in header]
    if missing:
        raise DlbenchError(f"{path}: not a dlbench result table; missing columns: {', '.join(missing)}")
    unknown = [c for c in header if c not in COLUMNS]
    if unknown:
        raise DlbenchError(f"{path}:1: unknown column(s) {', '.join(unknown)}: not a dlbench rows.csv")
    if len(set(header)) != len(header):
        raise DlbenchError(f"{path}:1: a column appears twice in the header")
    numeric = [(i, c, c in INTEGER_COLUMNS) for i, c in enumerate(header) if c == "value" or c in INTEGER_COLUMNS]
    status_at = header.index("status")
    ends_with_newline = text.endswith(("\n", "\r"))
    last_line = text.count("\n") + (0 if ends_with_newline else 1)
    rows: list[dict[str, str]] = []
    partial = None
    line = 1
    while True:
        start = line + 1
        try:
            cells = next(reader)
        except StopIteration:
            break
        except csv.Error as error:
            raise DlbenchError(f"{path}:{start}: not a readable CSV line ({error})") from None
        line = reader.line_num
        last = line >= last_line
        if not cells:
            continue
        if last and not ends_with_newline:
            # The writer writes a row and its newline in one call: a last line without a newline is
            # a row cut off when the writer was killed, whatever its cells look like.
            partial = start
            break
        if tuple(cells) == header:
            raise DlbenchError(f"{path}:{start}: a second header (two writers wrote this file at once)")
        if len(cells) != len(header):
            what = "extra" if len(cells) > len(header) else "missing"
            raise DlbenchError(f"{path}:{start}: {len(cells)} cells where the header has {len(header)} ({what} columns)")
        for i, column, integer in numeric:
            if cells[i] and not _is_number(cells[i], integer):
                kind = "an integer" if integer else "a number"
                raise DlbenchError(f"{path}:{start}: {column} is {cells[i]!r}, not {kind}")
        if cells[status_at] not in STATUSES:
            raise DlbenchError(f"{path}:{start}: unknown status {cells[status_at]!r}; valid: {', '.join(STATUSES)}")
        rows.append(dict(zip(header, cells, strict=True)))
    if partial is not None:
        text = text[: _line_offset(text, partial)]
    return Table(path, header, rows, text, partial)


def _line_offset(text: str, line: int) -> int:
    """Offset of the start of (1-based) ``line`` in ``text``."""
    offset = 0
    for _ in range(line - 1):
        offset = text.index("\n", offset) + 1
    return offset


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


def read_rows(paths: Iterable[str | os.PathLike], *, note: Callable[[str], None] | None = None):
    """Read and validate result CSVs (files or directories) into one DataFrame with typed columns.

    Every file goes through :func:`read_table`. Notes (a cut-off final row left out, a folder whose
    settings cannot be checked because it has no manifest) go to ``note`` (default: the "dlbench"
    logger at INFO, which the CLI prints) and to ``frame.attrs["notes"]``.
    """
    import pandas as pd

    paths = list(paths)
    files = result_files(paths)
    if not files:
        raise DlbenchError("no result CSV files found in " + ", ".join(map(str, paths)))
    note = note or log.info
    notes: list[str] = []
    frames = []
    for f in files:
        table = read_table(f)
        if table.note:
            notes.append(table.note)
        # Rows derived from a run (RUN/eigenvalues/rows.csv) are covered by the run's own manifest.
        if f.name == ROWS_FILE and not any((d / MANIFEST_FILE).is_file() for d in (f.parent, f.parent.parent)):
            notes.append(f"{f.parent}: no manifest.json (written before dlbench recorded settings): settings cannot be checked")
        if not table.header:
            continue
        frame = pd.read_csv(io.StringIO(table.text), keep_default_na=False, na_values=[""], low_memory=False)
        for c in COLUMNS:
            if c not in frame.columns:
                frame[c] = pd.NA
        frame["source_file"] = str(f)
        frames.append(frame)
    for text in notes:
        note(text)
    if not frames:
        raise DlbenchError("no rows in " + ", ".join(map(str, files)))
    rows = pd.concat(frames, ignore_index=True)
    rows["value"] = pd.to_numeric(rows["value"], errors="coerce")
    for c in INTEGER_COLUMNS:
        rows[c] = pd.to_numeric(rows[c], errors="coerce").astype("Int64")
    rows.attrs["notes"] = notes
    return rows


__all__ = [
    "ROWS_FILE", "RowWriter", "NullWriter", "BoundWriter", "Table", "read_table", "read_rows", "result_files",
    "check_row", "provenance", "code_provenance", "new_run_id", "utc_now", "UNIT_NAMES",
]
