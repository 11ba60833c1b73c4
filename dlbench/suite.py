"""Expand a suite into runs and execute them: ``dlbench run`` and ``dlbench suites`` in Python.

Order of work in :func:`run_suite`, cheapest checks first so a mistake costs well under a second:
read and validate the suite (no JAX), check every task's user files, then import JAX, expand the
models and train. Rows go to ``<out>/rows.csv`` through one :class:`RowWriter`; ``<out>/plan.json``
records the resolved runs.

Resume: a run is finished once its final row (:data:`dlbench.train.FINAL_METRICS` or a ``status=nan``
row) is in ``rows.csv``. ``--resume`` keeps finished runs' rows, moves the rows of a run that was
killed half-way to ``rows.csv.partial`` (not a .csv, so readers skip it) and runs it again from the
start, so a resumed suite ends with the same set of rows as an uninterrupted one.

Scaling out (:mod:`dlbench.distributed`): ``devices`` is the data-parallel mesh of every training run;
``shard`` ("I/N") keeps the runs at positions I, I+N, ... of the runs sorted by (model, task, seed),
recorded in ``<out>/shard.json`` for ``dlbench merge``; ``cluster`` joins a multi-process JAX job, in
which every process trains (the steps are global programs) but only process 0 writes files, and all
processes use process 0's run id.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from dlbench import distributed
from dlbench.config import ConfigError, RunSpec, SuiteConfig, load_suite, read_toml, suite_from_mapping, suite_paths
from dlbench.errors import DlbenchError
from dlbench.results import ROWS_FILE
from dlbench.tasks import check_data, resolve_data_dir

ROWS = ROWS_FILE
SHARD_FILE = "shard.json"


def select_shard(runs: Sequence[RunSpec], shard: distributed.Shard | None) -> list[RunSpec]:
    """The runs of shard ``I/N``: round-robin over the runs sorted by (model, task, seed), in run order."""
    if shard is None:
        return list(runs)
    return shard.select(list(runs), key=lambda r: (r.model, r.task, r.seed))


def parse_seeds(text: str | None) -> tuple[int, ...] | None:
    """``"0,1"`` -> (0, 1); ``None`` keeps the suite's seeds."""
    if text is None:
        return None
    try:
        seeds = tuple(int(s) for s in text.split(",") if s.strip())
    except ValueError:
        raise DlbenchError(f"bad --seeds {text!r}: expected comma-separated integers, e.g. 0,1") from None
    if not seeds:
        raise DlbenchError(f"bad --seeds {text!r}: no seeds")
    return seeds


def expand(suite: SuiteConfig, models: Sequence[str] | None = None, seeds: Sequence[int] | None = None) -> list[RunSpec]:
    """Every (task, seed, model) run of ``suite``, optionally narrowed; unknown models are errors."""
    from dlbench.registry import get_model, model_names

    available = model_names()
    for name in [n for n in suite.include if n != "all"] + list(models or []):
        get_model(name)
    names = suite.model_names(available)
    if models:
        outside = [m for m in models if m not in names]
        if outside:
            raise DlbenchError(f"--model {', '.join(outside)}: not in suite {suite.name!r} (its models: {', '.join(names)})")
        names = tuple(m for m in names if m in models)
    for m in list(suite.models) + [m for t in suite.tasks.values() for m in t["models"]]:
        get_model(m)  # a typo in [models.NAME] should not silently do nothing
    runs = [suite.resolve(t, m, s) for t in suite.task_names for s in (seeds or suite.seeds) for m in names]
    for run in runs:
        # Layer options and scan backends are checked against the layer here, before anything runs
        # (suite loading stays free of JAX, so a missing dataset is reported at once).
        try:
            get_model(run.model).check_options(run.model_settings.layer_options, run.model_settings.scan)
        except DlbenchError as error:
            raise DlbenchError(f"{suite.path}: run {run.task}/{run.model}/seed {run.seed}: {error}") from None
    return runs


def finished_cells(path: Path) -> set[tuple[str, str, int]]:
    """Cells (task, model, seed) whose final row is in ``path``."""
    from dlbench.train import FINAL_METRICS

    done = set()
    for row in _read_csv(path)[1]:
        if row["metric"] in FINAL_METRICS or row["status"] == "nan":
            done.add((row["task"], row["model"], int(row["seed"])))
    return done


def _read_csv(path: Path) -> tuple[list[str], list[dict[str, str]]]:
    if not path.is_file():
        return [], []
    with path.open(newline="") as f:
        reader = csv.reader(f)
        header = next(reader, [])
        # A row cut short by a kill has fewer cells: it is dropped.
        rows = [dict(zip(header, r, strict=True)) for r in reader if len(r) == len(header)]
    return header, rows


def trim_unfinished(path: Path) -> int:
    """Move rows of unfinished cells from ``path`` to ``path.partial``; returns how many moved."""
    header, rows = _read_csv(path)
    if not rows:
        return 0
    done = finished_cells(path)
    keep = [r for r in rows if (r["task"], r["model"], int(r["seed"])) in done]
    drop = [r for r in rows if (r["task"], r["model"], int(r["seed"])) not in done]
    if not drop and sum(1 for _ in path.open()) == len(rows) + 1:
        return 0
    for target, part, mode in ((path.with_name(path.name + ".partial"), drop, "a"), (path.with_suffix(".tmp"), keep, "w")):
        with target.open(mode, newline="") as f:
            writer = csv.DictWriter(f, fieldnames=header)
            if mode == "w" or f.tell() == 0:
                writer.writeheader()
            writer.writerows(part)
    path.with_suffix(".tmp").replace(path)
    return len(drop)


def _out_dir(suite: SuiteConfig, out: str | os.PathLike | None, resume: bool) -> tuple[Path, str]:
    from dlbench.results import new_run_id

    if out is not None:
        out = Path(out)
        if resume and (out / ROWS).is_file():
            _, rows = _read_csv(out / ROWS)
            if rows and rows[0].get("run_id"):
                return out, rows[0]["run_id"]
        if not resume and (out / ROWS).is_file() and (out / ROWS).stat().st_size:
            raise DlbenchError(f"{out / ROWS} exists; pass --resume to continue it or choose another --out")
        return out, new_run_id()
    if resume:
        previous = sorted(Path("runs").glob(f"{suite.name}-*"))
        if not previous:
            raise DlbenchError(f"--resume: no earlier runs/{suite.name}-* directory; pass --out DIR")
        return _out_dir(suite, previous[-1], True)
    run_id = new_run_id()
    return Path("runs") / f"{suite.name}-{run_id}", run_id


def run_suite(
    suite_ref: str,
    *,
    models: Sequence[str] | None = None,
    seeds: str | Sequence[int] | None = None,
    sets: Sequence[str] = (),
    data_dir: str | os.PathLike | None = None,
    out: str | os.PathLike | None = None,
    resume: bool = False,
    dry_run: bool = False,
    console: Console | None = None,
    shard: str | distributed.Shard | None = None,
    devices: int | None = None,
    cluster: distributed.ClusterConfig | None = None,
) -> Path | None:
    """Run suite ``suite_ref`` (a name in ``suites/`` or a .toml path); returns the output directory.

    Args mirror ``dlbench run``: ``models`` narrows the suite's models, ``seeds`` replaces its seeds
    ("0,1" or a sequence), ``sets`` are ``KEY=VALUE`` overrides, ``data_dir`` defaults to
    ``$DLBENCH_DATA`` or ./data, ``out`` to runs/<suite>-<run id>[-shardIofN]. ``shard`` ("I/N") runs
    one deterministic 1/N of the runs, ``devices`` is the data-parallel device count (all by default),
    ``cluster`` the multi-process job to join (see :mod:`dlbench.distributed`).
    """
    console = console or Console()
    shard = distributed.parse_shard(shard) if isinstance(shard, str) else shard
    suite = load_suite(suite_ref, sets)
    if suite.kind == "profile":
        if shard is not None or devices is not None:
            raise DlbenchError(f"suite {suite.name!r} is a profile sweep: --shard and --devices apply to training suites")
        return _run_profile(suite, models, seeds, out, resume, dry_run, console)
    seeds = parse_seeds(seeds) if isinstance(seeds, str) or seeds is None else tuple(seeds)
    data_root = resolve_data_dir(data_dir)
    if not dry_run:  # a dry run only shows the plan, so it works before the data are in place
        for task in suite.task_names:
            check_data(suite.task_config(task), data_root)
    if not dry_run:
        # Before anything touches a device: a multi-process job must be joined first.
        distributed.initialize(cluster or distributed.ClusterConfig())
        if not distributed.is_writer():
            console = Console(quiet=True)
        if devices is not None:
            distributed.resolve_devices(devices)  # more devices than exist: refuse before writing anything
    all_runs = expand(suite, models, seeds)
    runs = select_shard(all_runs, shard)
    if dry_run:
        if shard is not None:
            console.print(f"shard {shard}: {len(runs)} of {len(all_runs)} runs")
        console.print(plan_table(suite, runs))
        for run in runs:
            console.print(f"{run.task} {run.model} seed={run.seed}: " + json.dumps(run.settings(), sort_keys=True))
        return None
    writer = distributed.is_writer()
    out_dir, run_id = _out_dir(suite, out, resume)  # reads only; every process checks before anyone writes
    agreed = distributed.agree_on(run_id)
    if out is None and not resume:
        out_dir = Path("runs") / (f"{suite.name}-{agreed}" + (f"-{distributed.shard_label(shard)}" if distributed.shard_label(shard) else ""))
    run_id = agreed
    rows_path = out_dir / ROWS
    done: set = set()
    if resume:
        moved = trim_unfinished(rows_path) if writer else 0
        distributed.barrier("dlbench-resume")
        done = finished_cells(rows_path)
        console.print(f"resuming {out_dir}: {len(done)} runs finished" + (f", {moved} partial rows set aside" if moved else ""))
    console.print(f"dlbench run {suite.name}: {len(runs)} runs" + (f" (shard {shard} of {len(all_runs)})" if shard else "") + f" -> {rows_path}")
    if writer:
        out_dir.mkdir(parents=True, exist_ok=True)
        (out_dir / "plan.json").write_text(
            json.dumps([{"task": r.task, "model": r.model, "seed": r.seed, **r.settings()} for r in runs], indent=1)
        )
        if shard is not None:
            (out_dir / SHARD_FILE).write_text(json.dumps({
                "suite": suite.name, "shard": str(shard), "index": shard.index, "count": shard.count,
                "cells": [list(r.key) for r in runs], "suite_cells": len(all_runs),
            }, indent=1))
    _execute(suite, runs, done, data_root, rows_path, run_id, console, devices=devices)
    return out_dir


def enable_compilation_cache() -> str:
    """Turn on JAX's persistent compilation cache (``$DLBENCH_JAX_CACHE``, default ~/.cache/dlbench/jax; "off" disables).

    Seeds of one model compile to identical programs, so every seed after the first skips the compile;
    ``compile_s`` rows say whether the cache was on (``reason``). Returns the directory or "".
    """
    import jax

    if jax.config.jax_compilation_cache_dir:
        return jax.config.jax_compilation_cache_dir  # the user's own setting wins
    where = os.environ.get("DLBENCH_JAX_CACHE", str(Path.home() / ".cache" / "dlbench" / "jax"))
    if where == "off":
        return ""
    jax.config.update("jax_compilation_cache_dir", where)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    return where


def _execute(
    suite: SuiteConfig, runs: list[RunSpec], done: set, data_root: Path, rows_path: Path, run_id: str, console: Console,
    *, devices: int | None = None,
) -> None:
    import jax
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from dlbench.results import NullWriter, RowWriter
    from dlbench.tasks import load_task
    from dlbench.train import train_run

    enable_compilation_cache()
    defaults = {"run_id": run_id, "suite": suite.name, "source": "dlbench run"}
    writer = RowWriter(rows_path, defaults) if distributed.is_writer() else NullWriter(defaults)
    loaded: dict[tuple[str, int], Any] = {}
    todo = [r for r in runs if r.key not in done]
    with Progress(
        TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), console=console, transient=False
    ) as progress:
        overall = progress.add_task("runs", total=len(runs), completed=len(runs) - len(todo))
        steps = progress.add_task("steps", total=1)
        for run in todo:
            key = (run.task_config, run.seed)
            if key not in loaded:
                if all(k[1] != run.seed or k[0].dataset != run.task_config.dataset for k in loaded):
                    loaded.clear()  # runs are ordered task -> seed -> model: keep one (task, seed) in memory
                loaded[key] = load_task(run.task_config, run.seed, data_root)
            progress.reset(steps, total=run.train.steps, description=f"{run.task} {run.model} seed {run.seed}")
            try:
                result = train_run(
                    run, loaded[key], writer, on_step=lambda i, n: progress.update(steps, completed=i), devices=devices
                )
                summary = ", ".join(f"{k}={v:.4g}" for k, v in result.test.items()) or result.reason
            except DlbenchError:
                raise
            except Exception as error:  # one failing run (OOM, a layer bug) must not stop the suite
                if jax.process_count() > 1:
                    # The processes of one job run the same collectives in lockstep: one that skipped
                    # ahead would leave the others waiting forever, so the whole job stops, loudly.
                    raise DlbenchError(
                        f"process {jax.process_index()}: {run.task} {run.model} seed {run.seed} failed: "
                        f"{type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}"[:400]
                    ) from None
                reason = f"{type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}"[:300]
                writer.write({"task": run.task, "model": run.model, "seed": run.seed, "metric": "test_loss", "value": None,
                              "unit": "", "status": "error", "reason": reason})
                summary = f"error ({reason})"
            progress.console.print(f"  {run.task} {run.model} seed {run.seed}: {summary}")
            progress.advance(overall)


def _run_profile(suite: SuiteConfig, models, seeds, out, resume: bool, dry_run: bool, console: Console) -> Path | None:
    if models or seeds:
        raise DlbenchError(f"suite {suite.name!r} is a profile sweep: narrow it with --set sweep.KEY=VALUE, not --model/--seeds")
    mapping = json.loads(json.dumps(dict(suite.sweep)))
    from dlbench.profile import ScanSweep, run_sweep

    where = f"{suite.path or suite.name} [sweep]"
    sweep = ScanSweep.from_mapping(mapping, where=where)  # a dry run checks the sweep too
    if dry_run:
        console.print(f"profile suite {suite.name}: sweep " + json.dumps(dataclasses.asdict(sweep), sort_keys=True))
        return None

    out_dir = Path(out) if out is not None else _out_dir(suite, None, resume)[0]
    console.print(f"dlbench run {suite.name} (profile sweep) -> {out_dir}")
    run_sweep(sweep, out_dir, resume=resume, suite=suite.name, console=console)
    return out_dir


# --- dlbench suites ------------------------------------------------------------------------------


def list_suites() -> list[dict[str, str]]:
    """Name, kind, description, models and tasks of every suite in ``suites/``."""
    out = []
    for name, path in suite_paths().items():
        try:
            suite = suite_from_mapping(read_toml(path), path=str(path))
        except ConfigError as error:
            out.append({"name": name, "kind": "?", "description": f"invalid: {error}", "models": "", "tasks": ""})
            continue
        profile = suite.kind == "profile"
        out.append(
            {
                "name": suite.name,
                "kind": suite.kind,
                "description": suite.description,
                "models": str(suite.sweep.get("models", "")) if profile else ", ".join(suite.include),
                "tasks": "scan sweep" if profile else ", ".join(suite.task_names),
            }
        )
    return out


def suites_table() -> Table:
    table = Table(title="dlbench suites (dlbench run NAME)")
    for column in ("name", "kind", "description", "models", "tasks"):
        table.add_column(column, overflow="fold")
    for s in list_suites():
        table.add_row(s["name"], s["kind"], s["description"], s["models"], s["tasks"])
    return table


def plan_table(suite: SuiteConfig, runs: list[RunSpec]) -> Table:
    table = Table(title=f"{suite.name}: {len(runs)} runs")
    keys = ("steps", "lr", "ssm_lr", "batch_size", "hidden_dim", "state_dim", "num_blocks", "eval_every", "patience")
    for column in ("task", "model", "seed") + keys:
        table.add_column(column)
    for run in runs:
        s = run.settings()
        table.add_row(run.task, run.model, str(run.seed), *(str(s[k]) for k in keys))
    return table


__all__ = ["run_suite", "list_suites", "suites_table", "expand", "parse_seeds", "trim_unfinished", "finished_cells"]
