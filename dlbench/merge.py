"""``dlbench merge``: combine the outputs of ``dlbench run SUITE --shard I/N`` into one run.

Refuses, with one line each: a cell (task, model, seed) present in two inputs; provenance that differs
between inputs (:data:`MUST_AGREE`: the same code and JAX must have produced every row); a run whose
settings differ between two inputs' manifests (naming the keys), a different suite file, or another
host allocator (``dlbench.host_memory.mismatch``: timings under two must not be pooled); different
suites or shard counts; and, unless ``partial``, a missing shard or a shard with unfinished runs
(killed mid-run: rows of a run without its final row). Every input is read by the strict reader. The merged ``rows.csv`` keeps every
row unchanged except ``run_id``, which becomes one new id (one run); ``plan.json`` is the union of the
shards' plans; ``merge.json`` records where each cell came from.
"""

from __future__ import annotations

import csv
import json
import os
from collections.abc import Sequence
from pathlib import Path

from dlbench import host_memory
from dlbench.errors import DlbenchError
from dlbench.rundir import ROWS_FILE, diff_settings, read_manifest, read_table, run_outcomes

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
    from dlbench.rundir import COLUMNS, Manifest, holding_lock, new_run_id

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
    settings: dict[str, tuple[dict, str]] = {}  # run key -> (settings, where)
    manifests: list[tuple[Manifest, str]] = []
    for source in map(Path, inputs):
        path = _rows_file(source)
        table = read_table(path)
        if table.header != COLUMNS:
            raise DlbenchError(f"{path}: not a dlbench rows.csv of this version (different columns)")
        if table.partial_line is not None and not partial:
            raise DlbenchError(f"{table.note}; that shard was killed mid-run: rerun it with --resume, or pass --partial")
        mine = table.rows
        unfinished = sorted(k for k, outcome in run_outcomes(mine).items() if outcome is None)
        if unfinished and not partial:
            raise DlbenchError(
                f"{source}: {len(unfinished)} unfinished run(s) ({', '.join(unfinished[:3])}{', ...' if len(unfinished) > 3 else ''}); "
                "finish it with `dlbench run --resume`, or pass --partial to merge anyway"
            )
        drop = set(unfinished)
        mine = [r for r in mine if f"{r['task']}/{r['model']}/{int(float(r['seed']))}" not in drop] if drop else mine
        manifest = read_manifest(path.parent)
        if manifest is not None:
            for other, where in manifests:
                if other.suite_sha256 != manifest.suite_sha256:
                    raise DlbenchError(f"{where} and {source} were run from different suite files (SHA-256 {other.suite_sha256[:12]} "
                                       f"vs {manifest.suite_sha256[:12]}); refusing to merge")
                allocator = host_memory.mismatch(other.host_allocator, manifest.host_allocator, where, str(source))
                if allocator:
                    raise DlbenchError(f"timed under different allocators: {allocator}; refusing to merge")
                if other.sets != manifest.sets:
                    only = sorted(set(other.sets) ^ set(manifest.sets))
                    raise DlbenchError(f"{where} and {source} were run with different settings (--set {', '.join(only)} "
                                       "in one but not the other); refusing to merge")
            manifests.append((manifest, str(source)))
            for key, entry in manifest.entries.items():
                if key in settings:
                    diffs = diff_settings(settings[key][0], entry["settings"])
                    if diffs:
                        name, a, b = diffs[0]
                        raise DlbenchError(f"{key}: {name} is {a} in {settings[key][1]} but {b} in {source}; refusing to merge")
                settings[key] = (entry["settings"], str(source))
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
    if manifests and len(manifests) != len(inputs):
        raise DlbenchError("some inputs have a manifest.json and some do not (different dlbench versions); refusing to merge")
    run_id = new_run_id()
    with holding_lock(out_dir):
        if target.exists() and target.stat().st_size:
            raise DlbenchError(f"{target} exists; choose another --out")
        with target.open("w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=COLUMNS)
            writer.writeheader()
            writer.writerows({**row, "run_id": run_id} for row in rows)
        if manifests:
            first = manifests[0][0]
            union = Manifest.new("train", first.suite, run_id)
            # The inputs' allocator (they agree on its policy), not the merging process's: it timed nothing.
            union.suite_file, union.suite_text, union.suite_sha256, union.sets, union.host_allocator = (
                first.suite_file, first.suite_text, first.suite_sha256, first.sets, first.host_allocator)
            for manifest, _ in manifests:
                union.entries.update(manifest.entries)
            union.write(out_dir)
    (out_dir / "plan.json").write_text(json.dumps(plan, indent=1))
    (out_dir / "merge.json").write_text(json.dumps(
        {"run_id": run_id, "inputs": [str(p) for p in inputs], "cells": {"/".join(k): v for k, v in sorted(owner.items())}},
        indent=1,
    ))
    return target, len(owner)


__all__ = ["merge_runs", "MUST_AGREE"]
