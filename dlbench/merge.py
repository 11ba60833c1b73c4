"""``dlbench merge``: combine the outputs of ``dlbench run SUITE --shard I/N`` into one run.

Refuses, with one line each: a cell (task, model, seed) present in two inputs; provenance that differs
between inputs (:data:`MUST_AGREE`: the same code and JAX must have produced every row); different
suites or shard counts; and, unless ``partial``, a missing shard. The merged ``rows.csv`` keeps every
row unchanged except ``run_id``, which becomes one new id (one run); ``plan.json`` is the union of the
shards' plans; ``merge.json`` records where each cell came from.
"""

from __future__ import annotations

import csv
import json
import os
from collections.abc import Sequence
from pathlib import Path

from dlbench.errors import DlbenchError
from dlbench.rundir import ROWS_FILE

# Columns every row of the merged run must share: the code, its git state and JAX.
MUST_AGREE = ("suite", "dlbench_version", "jax_version", "jaxlib_version", "git_commit")


def _rows_file(path: Path) -> Path:
    if path.is_dir():
        if not (path / ROWS_FILE).is_file():
            raise DlbenchError(f"{path}: no rows.csv (not a dlbench run output)")
        return path / ROWS_FILE
    if not path.is_file():
        raise DlbenchError(f"{path}: no such file or directory")
    return path


def merge_runs(inputs: Sequence[str | os.PathLike], out: str | os.PathLike, *, partial: bool = False) -> tuple[Path, int]:
    """Merge shard outputs ``inputs`` into ``out``; returns (merged rows.csv, number of cells)."""
    from dlbench.rundir import COLUMNS, new_run_id

    if not inputs:
        raise DlbenchError("merge: no inputs")
    out_dir = Path(out)
    target = out_dir / ROWS_FILE
    if target.exists() and target.stat().st_size:
        raise DlbenchError(f"{target} exists; choose another --out")
    owner: dict[tuple, str] = {}
    agree: dict[str, dict[str, str]] = {c: {} for c in MUST_AGREE}
    rows: list[dict[str, str]] = []
    plan: list = []
    shards: dict[int, str] = {}
    counts: set[int] = set()
    for source in map(Path, inputs):
        path = _rows_file(source)
        with path.open(newline="") as f:
            reader = csv.reader(f)
            header = next(reader, [])
            if tuple(header) != COLUMNS:
                raise DlbenchError(f"{path}: not a dlbench rows.csv of this version (different columns)")
            mine = [dict(zip(header, r, strict=True)) for r in reader if len(r) == len(header)]
        cells = set()
        for row in mine:
            cell = (row["task"], row["model"], row["seed"])
            cells.add(cell)
            for column in MUST_AGREE:
                agree[column].setdefault(row[column], str(source))
                if len(agree[column]) > 1:
                    (a, where_a), (b, where_b) = list(agree[column].items())[:2]
                    raise DlbenchError(
                        f"mismatched provenance: {column} is {a!r} in {where_a} but {b!r} in {where_b}; refusing to merge"
                    )
        for cell in sorted(cells):
            if cell in owner:
                raise DlbenchError(
                    f"duplicate cell task={cell[0]} model={cell[1]} seed={cell[2]}: in {owner[cell]} and {source}; refusing to merge"
                )
            owner[cell] = str(source)
        rows.extend(mine)
        directory = path.parent
        if (directory / "plan.json").is_file():
            plan.extend(json.loads((directory / "plan.json").read_text()))
        if (directory / "shard.json").is_file():
            info = json.loads((directory / "shard.json").read_text())
            counts.add(int(info["count"]))
            if int(info["index"]) in shards:
                raise DlbenchError(f"duplicate shard {info['shard']}: {shards[int(info['index'])]} and {source}; refusing to merge")
            shards[int(info["index"])] = str(source)
    if len(counts) > 1:
        raise DlbenchError(f"inputs come from different shardings (N = {', '.join(map(str, sorted(counts)))}); refusing to merge")
    if counts and not partial:
        missing = sorted(set(range(next(iter(counts)))) - set(shards))
        if missing:
            n = next(iter(counts))
            raise DlbenchError(f"missing shard(s) {', '.join(f'{i}/{n}' for i in missing)}; pass --partial to merge anyway")
    run_id = new_run_id()
    out_dir.mkdir(parents=True, exist_ok=True)
    with target.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=COLUMNS)
        writer.writeheader()
        writer.writerows({**row, "run_id": run_id} for row in rows)
    (out_dir / "plan.json").write_text(json.dumps(plan, indent=1))
    (out_dir / "merge.json").write_text(json.dumps(
        {"run_id": run_id, "inputs": [str(p) for p in inputs], "cells": {"/".join(k): v for k, v in sorted(owner.items())}},
        indent=1,
    ))
    return target, len(owner)


__all__ = ["merge_runs", "MUST_AGREE"]
