"""The manifest of an output folder and the rules of ``--resume``.

``DIR/manifest.json`` records the resolved settings of everything the folder holds: the suite file's
text and SHA-256, the ``--set`` overrides, every run's (or the sweep's) resolved settings under its
``config_hash`` (the same 12 hex digits are on every row), the run id, the dlbench version and git
commit. It is written before the first row and rewritten (atomically) when a resume adds runs.

Resume rules (:func:`check_resume`): the folder must hold the same kind (train or profile) and the
same suite; every run present in both the folder and the new plan must have identical settings, else
the resume is refused naming each differing key (``train.steps: 20 in DIR, 30 now``), and so is a
host allocator policy other than the folder's (``dlbench.host_memory.mismatch``). A folder
without a manifest (written by an older dlbench) cannot be checked: that is said, not refused.
Unfinished runs are trimmed (:func:`trim_unfinished`) so a resumed folder ends with the rows of an
uninterrupted one.
"""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import json
import os
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

from dlbench import host_memory
from dlbench.errors import DlbenchError
from dlbench.rundir.rows import MANIFEST_FILE, ROWS_FILE, code_provenance, read_table, utc_now
from dlbench.rundir.vocabulary import CELL_END_METRIC, FAILED, FINAL_METRICS, KEPT_ON_RESUME

FORMAT = 1
KINDS = ("train", "profile")


def _jsonable(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return _jsonable({f.name: getattr(value, f.name) for f in dataclasses.fields(value)})
    return value


def config_hash(settings: Mapping[str, Any]) -> str:
    """12 hex digits of SHA-256 over the canonical JSON of ``settings``."""
    text = json.dumps(_jsonable(settings), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def flatten(settings: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested settings -> ``{"train.steps": 20, ...}`` (lists stay values)."""
    out: dict[str, Any] = {}
    for key, value in settings.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            out.update(flatten(value, name + "."))
        else:
            out[name] = _jsonable(value)
    return out


def diff_settings(old: Mapping[str, Any], new: Mapping[str, Any]) -> list[tuple[str, Any, Any]]:
    """(key, old, new) for every dotted key whose value differs (a missing key is None)."""
    a, b = flatten(_jsonable(old)), flatten(_jsonable(new))
    return [(k, a.get(k), b.get(k)) for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)]


@dataclasses.dataclass
class Manifest:
    """What an output folder holds; ``entries`` maps a run key ("task/model/seed", or "sweep") to
    ``{"config_hash": ..., "settings": {...}}``."""

    kind: str
    suite: str
    run_id: str
    entries: dict[str, dict[str, Any]] = dataclasses.field(default_factory=dict)
    suite_file: str = ""
    suite_text: str = ""
    suite_sha256: str = ""
    sets: list[str] = dataclasses.field(default_factory=list)
    shard: dict[str, Any] | None = None
    plugins: list[dict[str, Any]] = dataclasses.field(default_factory=list)  # dlbench.plugins.loaded_plugins()
    dlbench_version: str = ""
    git_commit: str = ""
    git_dirty: bool | None = None
    created_utc: str = ""
    host_allocator: str = ""  # dlbench.host_memory.state() of the process that made the folder
    format: int = FORMAT

    @classmethod
    def new(cls, kind: str, suite: str, run_id: str, *, suite_file: str | os.PathLike | None = None,
            sets: Iterable[str] = (), shard: Mapping[str, Any] | None = None) -> Manifest:
        """A manifest for this process's code, with the suite file's text and hash if given."""
        text = Path(suite_file).read_text() if suite_file else ""
        return cls(
            kind=kind, suite=suite, run_id=run_id, suite_file=str(suite_file or ""), suite_text=text,
            suite_sha256=hashlib.sha256(text.encode()).hexdigest() if suite_file else "", sets=list(sets),
            shard=dict(shard) if shard else None, created_utc=utc_now(), host_allocator=host_memory.state(),
            **code_provenance(),
        )

    def add(self, key: str, settings: Mapping[str, Any]) -> str:
        """Record one run's settings; returns its config hash."""
        digest = config_hash(settings)
        self.entries[key] = {"config_hash": digest, "settings": _jsonable(settings)}
        return digest

    def write(self, directory: str | os.PathLike) -> Path:
        path = Path(directory) / MANIFEST_FILE
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(dataclasses.asdict(self), indent=1, sort_keys=True) + "\n")
        tmp.replace(path)
        return path


def read_manifest(directory: str | os.PathLike) -> Manifest | None:
    """The folder's manifest, None if it has none; a damaged one is an error naming the file."""
    path = Path(directory) / MANIFEST_FILE
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text())
        fields = {f.name for f in dataclasses.fields(Manifest)}
        return Manifest(**{k: v for k, v in data.items() if k in fields})
    except (ValueError, TypeError, UnicodeDecodeError) as error:
        raise DlbenchError(f"{path}: not a readable dlbench manifest ({str(error).splitlines()[0]})") from None


def _show(value: Any) -> str:
    return "(unset)" if value is None else json.dumps(value) if not isinstance(value, str) else value


def check_resume(directory: str | os.PathLike, old: Manifest | None, new: Manifest, *, limit: int = 6) -> list[str]:
    """Refuse (DlbenchError) to resume ``directory`` with ``new`` unless its settings match; returns notes."""
    directory = Path(directory)
    if old is None:
        return [f"{directory}: no manifest.json (written before dlbench recorded settings): settings cannot be checked"]
    if old.kind != new.kind:
        raise DlbenchError(f"--resume: {directory} holds a {old.kind} run, not a {new.kind} run; choose another --out")
    if old.suite != new.suite:
        raise DlbenchError(f"--resume: {directory} holds suite {old.suite!r}, not {new.suite!r}; choose another --out")
    problems = []
    allocator = host_memory.mismatch(old.host_allocator, new.host_allocator, str(directory), "this process")
    if allocator:
        problems.append(allocator)
    for key in sorted(set(old.entries) & set(new.entries)):
        for name, a, b in diff_settings(old.entries[key]["settings"], new.entries[key]["settings"]):
            problems.append(f"{key}: {name}: {_show(a)} in {directory}, {_show(b)} now")
    if problems:
        more = f"; and {len(problems) - limit} more" if len(problems) > limit else ""
        raise DlbenchError(f"--resume: settings differ, refusing to mix them: {'; '.join(problems[:limit])}{more}")
    notes = []
    if old.git_commit != new.git_commit or old.dlbench_version != new.dlbench_version:
        notes.append(f"note: {directory} was started by dlbench {old.dlbench_version} at commit {old.git_commit[:10] or '?'}; "
                     f"now {new.dlbench_version} at {new.git_commit[:10] or '?'} (rows carry their own provenance)")
    return notes


def merged(old: Manifest | None, new: Manifest) -> Manifest:
    """``new`` keeping ``old``'s run id, creation time and the runs it had that ``new`` does not plan."""
    if old is None:
        return new
    return dataclasses.replace(new, run_id=old.run_id, created_utc=old.created_utc, entries={**old.entries, **new.entries})


# --- which runs and cells have ended -------------------------------------------------------------


def run_key(row: Mapping[str, str]) -> str | None:
    """"task/model/seed" of a training row; None for rows that belong to no run."""
    if not row.get("seed"):
        return None
    return f"{row['task']}/{row['model']}/{int(float(row['seed']))}"


CELL_COLUMNS = ("model", "backend", "mode", "seq_len", "batch", "hidden", "state", "target", "dtype", "seed", "devices", "layer_options")


def cell_key(row: Mapping[str, str]) -> str | None:
    """The profile cell of a ``task=scan`` row; None for other rows (bandwidth)."""
    if row.get("task") != "scan":
        return None
    return "/".join(row.get(c, "") for c in CELL_COLUMNS)


def _outcomes(rows: Iterable[Mapping[str, str]], key_of, outcome_of) -> dict[str, str | None]:
    """Key -> outcome for every key ``key_of`` gives a row, None where no row gave an outcome yet.

    ``outcome_of(row, outcome_so_far)`` returns the key's outcome after ``row`` (None: unchanged)."""
    out: dict[str, str | None] = {}
    for row in rows:
        key = key_of(row)
        if key is None:
            continue
        out.setdefault(key, None)
        outcome = outcome_of(row, out[key])
        if outcome is not None:
            out[key] = outcome
    return out


def _run_outcome(row: Mapping[str, str], so_far: str | None) -> str | None:
    if row["metric"] in FINAL_METRICS and row["status"] == "ok":
        return "ok"
    # A failure row after a final ok row (a later evaluation's error) does not undo the finished run.
    return row["status"] if row["status"] in FAILED and so_far != "ok" else None


def run_outcomes(rows: Iterable[Mapping[str, str]]) -> dict[str, str | None]:
    """Training run key -> "ok" (its final metric row is there), a failure status, or None (unfinished)."""
    return _outcomes(rows, run_key, _run_outcome)


def cell_outcomes(rows: Iterable[Mapping[str, str]]) -> dict[str, str | None]:
    """Profile cell key -> the status of its ``cell_s`` row, or None (the cell never ended)."""
    return _outcomes(rows, cell_key, lambda row, _: row["status"] if row["metric"] == CELL_END_METRIC else None)


def trim_unfinished(rows_path: str | os.PathLike, *, kind: str = "train") -> int:
    """Move the rows of runs (cells) that must run again to ``rows.csv.partial``; returns how many moved.

    Kept: training runs that ended ok or nan (:data:`KEPT_ON_RESUME`), profile cells with a cell_s
    row. A final line cut mid-row is dropped. The file is rewritten atomically (tmp + rename).
    """
    path = Path(rows_path)
    if not path.is_file():
        return 0
    table = read_table(path)
    if not table.header:
        return 0
    if kind == "train":
        outcomes, key_of = run_outcomes(table.rows), run_key
        keep_key: Callable[[str | None], bool] = lambda k: k is None or outcomes.get(k) in KEPT_ON_RESUME  # noqa: E731
    else:
        outcomes, key_of = cell_outcomes(table.rows), cell_key
        keep_key = lambda k: k is None or outcomes.get(k) is not None  # noqa: E731
    keep = [r for r in table.rows if keep_key(key_of(r))]
    drop = [r for r in table.rows if not keep_key(key_of(r))]
    if not drop and table.partial_line is None:
        return 0
    partial = path.with_name(path.name + ".partial")
    with partial.open("a", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=table.header)
        if f.tell() == 0:
            writer.writeheader()
        writer.writerows(drop)
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=table.header)
        writer.writeheader()
        writer.writerows(keep)
    tmp.replace(path)
    return len(drop) + (table.partial_line is not None)


def finished_runs(rows_path: str | os.PathLike) -> set[tuple[str, str, int]]:
    """(task, model, seed) of the training runs in ``rows_path`` that --resume keeps."""
    path = Path(rows_path)
    if not path.is_file():
        return set()
    done = set()
    for key, outcome in run_outcomes(read_table(path).rows).items():
        if outcome in KEPT_ON_RESUME:
            task, model, seed = key.rsplit("/", 2)
            done.add((task, model, int(seed)))
    return done


def rows_run_id(rows_path: str | os.PathLike) -> str | None:
    """The run id of the first row of an existing rows.csv (older folders have no manifest)."""
    path = Path(rows_path)
    if not path.is_file():
        return None
    rows = read_table(path).rows
    return rows[0].get("run_id") or None if rows else None


__all__ = [
    "MANIFEST_FILE", "Manifest", "read_manifest", "check_resume", "merged", "config_hash", "flatten", "diff_settings",
    "run_key", "cell_key", "run_outcomes", "cell_outcomes", "trim_unfinished", "finished_runs", "rows_run_id", "ROWS_FILE",
]
