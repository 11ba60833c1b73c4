"""The end-of-run summary that ``dlbench run`` and ``dlbench profile scan`` print: the leaderboard of
what just ran, "N of M ok" with failures by status and their reasons, where the rows and plots are,
and the next commands. Plain text, so it reads the same in a terminal and in a log file.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pandas as pd
from rich.table import Table

from dlbench.errors import DlbenchError
from dlbench.report.cells import FAILED_STATUSES, _key_text
from dlbench.report.leaderboard import DISPLAYS, PLAIN_NOTES, _is_profile, leaderboards
from dlbench.report.render import plain_text

# What one "run" is: a training run (task, model, options, seed) or a profile cell (its grid point).
TRAINING_RUN = ("task", "model", "layer_options", "seed")
PROFILE_CELL = ("target", "model", "layer_options", "backend", "mode", "dtype", "batch", "hidden", "state", "seq_len")
# Order in which a run's statuses decide its outcome (the worst first).
OUTCOMES = (*FAILED_STATUSES, "skipped", "n/a", "ok")


def outcomes(rows: pd.DataFrame) -> pd.DataFrame:
    """One row per run or profile cell: its key columns, ``kind`` (training or profile), ``status``
    (the worst status among its rows, see :data:`OUTCOMES`) and the first ``reason`` of that status."""
    out = []
    for kind, mask, keys in (("profile", _is_profile(rows), PROFILE_CELL), ("training", None, TRAINING_RUN)):
        part = rows[mask] if mask is not None else rows[~_is_profile(rows) & (_key_text(rows, ("task",))["task"] != "bandwidth")]
        if part.empty:
            continue
        text = _key_text(part, keys)
        for key, index in text.groupby(list(keys), sort=True).groups.items():
            group = part.loc[index]
            statuses = set(group["status"].astype(str))
            status = next((s for s in OUTCOMES if s in statuses), "ok")
            reasons = group.loc[group["status"].astype(str) == status, "reason"].dropna().astype(str)
            out.append({**dict(zip(keys, key, strict=True)), "kind": kind, "status": status,
                        "reason": reasons.iloc[0] if len(reasons) else ""})  # fmt: skip
    return pd.DataFrame(out)


def _count_line(found: pd.DataFrame, noun: str) -> str:
    counts = found["status"].value_counts()
    others = ", ".join(f"{counts[s]} {s}" for s in OUTCOMES if s != "ok" and s in counts)
    return f"{counts.get('ok', 0)} of {len(found)} {noun} ok" + (f"; {others}" if others else "")


def _board_text(rows: pd.DataFrame) -> list[str]:
    try:
        boards = leaderboards(rows)
    except DlbenchError as error:
        return [f"(no leaderboard: {error})"]
    out = []
    for kind, board in boards.items():
        for title, (header, *body) in DISPLAYS[kind](board, False).items():
            table = Table(title=title)
            for i, column in enumerate(header):
                table.add_column(column, justify="left" if i < 3 else "right")
            for line in body:
                table.add_row(*(cell.replace("**", "") for cell in line))
            out.append(plain_text(table).rstrip("\n"))
        out.append(PLAIN_NOTES[kind])
    return out


def summary(source: pd.DataFrame | str | Path | Sequence[str | Path], *, failures_shown: int = 10) -> str:
    """The summary text of a finished (or interrupted) run.

    Args:
      source: the run's rows (a frame from ``read_rows``), or its directory / rows files.
      failures_shown: at most this many failed runs are listed with their reasons.
    """
    from dlbench.rundir import read_rows

    paths: list[Path] = []
    if isinstance(source, pd.DataFrame):
        rows = source
    else:
        paths = [Path(p) for p in ([source] if isinstance(source, str | Path) else source)]
        rows = read_rows(paths)
    lines = ["", "== summary =="]
    found = outcomes(rows)
    for kind, noun in (("training", "runs"), ("profile", "cells")):
        part = found[found["kind"] == kind] if len(found) else found
        if len(part):
            lines.append(_count_line(part, noun))
            failed = part[part["status"].isin(FAILED_STATUSES)]
            for r in failed.head(failures_shown).itertuples():
                where = " ".join(str(getattr(r, k)) for k in (TRAINING_RUN if kind == "training" else PROFILE_CELL)
                                 if str(getattr(r, k)) and k != "layer_options")  # fmt: skip
                lines.append(f"  {r.status}: {where}" + (f": {r.reason}" if r.reason else ""))
            if len(failed) > failures_shown:
                lines.append(f"  ... and {len(failed) - failures_shown} more (dlbench show)")
    lines += ["", *_board_text(rows)]
    directory = next((p if p.is_dir() else p.parent for p in paths), None)
    if directory is not None:
        plots = sorted(str(p) for p in directory.glob("*.png"))
        lines += ["", f"rows: {directory / 'rows.csv'}" + (f"; plots: {', '.join(plots)}" if plots else "")]
        lines += [
            "next: "
            + "; ".join(f"dlbench {c}" for c in (f"show {directory}", f"export leaderboard {directory}",
                                                 f"plot {directory}", f"report {directory} --out {directory / 'report.html'}"))  # fmt: skip
        ]
    return "\n".join(lines) + "\n"
