"""Expand a suite into runs and execute them: ``dlbench run`` and ``dlbench suites`` in Python.

Order of work in :func:`run_suite`, cheapest checks first so a mistake costs well under a second:
read and validate the suite (no JAX), check every task's user files, then import JAX, expand the
models and train. Rows go to ``<out>/rows.csv`` through one :class:`RowWriter`; ``<out>/plan.json``
records the resolved runs.

Resume: a run is finished once its final row (:data:`dlbench.train.FINAL_METRICS` or a ``status=nan``
row) is in ``rows.csv``. ``--resume`` keeps finished runs' rows, moves the rows of a run that was
killed half-way to ``rows.csv.partial`` (not a .csv, so readers skip it) and runs it again from its last
checkpoint (:mod:`dlbench.checkpoints`, which writes its earlier rows again) or from the start, so a
resumed suite ends with the same set of rows as an uninterrupted one.

Scaling out (:mod:`dlbench.distributed`): ``devices`` is the data-parallel mesh of every training run;
``shard`` ("I/N") keeps the runs at positions I, I+N, ... of the runs sorted by (model, task, seed),
recorded in ``<out>/shard.json`` for ``dlbench merge``; ``cluster`` joins a multi-process JAX job, in
which every process trains (the steps are global programs) but only process 0 writes files, and all
processes use process 0's run id.
"""

from __future__ import annotations

import collections
import dataclasses
import json
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from dlbench import distributed
from dlbench.config import ConfigError, RunSpec, SuiteConfig, load_suite, read_toml, suite_from_mapping, suite_paths
from dlbench.errors import DlbenchError, RunsFailed
from dlbench.plugins import loaded_plugins
from dlbench.rundir import ROWS_FILE, Manifest, check_resume, holding_lock, merged, read_manifest, rows_run_id
from dlbench.rundir import finished_runs as _finished_runs
from dlbench.rundir import trim_unfinished as _trim
from dlbench.tasks import check_data, check_files, get_task, resolve_data_dir

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
    from dlbench.config import MAX_SEED

    bad = [s for s in seeds if not 0 <= s <= MAX_SEED]
    if bad:
        raise DlbenchError(f"bad --seeds {text!r}: seeds must be in [0, {MAX_SEED}], got {bad[0]}")
    if len(set(seeds)) != len(seeds):
        raise DlbenchError(f"bad --seeds {text!r}: duplicate seeds")
    return seeds


def expand(suite: SuiteConfig, models: Sequence[str] | None = None, seeds: Sequence[int] | None = None) -> list[RunSpec]:
    """Every (task, seed, model) run of ``suite``, optionally narrowed; unknown models are errors."""
    from dlbench.plugins import load_models
    from dlbench.registry import get_model, model_names

    load_models()  # built-ins, entry points and $DLBENCH_PLUGINS
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
    """Cells (task, model, seed) whose run ended (ok or nan) in ``path`` (rules in :mod:`dlbench.rundir`)."""
    return _finished_runs(path)


def trim_unfinished(path: Path) -> int:
    """Move rows of unfinished runs from ``path`` to ``path.partial``; returns how many moved."""
    return _trim(path, kind="train")


def run_settings(run: RunSpec) -> dict[str, Any]:
    """The resolved settings of one run as the manifest records them: task / model / train sections."""
    from dlbench.config import TASK_DERIVED, to_dict

    model = {k: v for k, v in to_dict(run.model_settings).items() if k not in TASK_DERIVED}  # those come from the data
    return {"task": to_dict(run.task_config), "model": model, "train": to_dict(run.train)}


def run_key(run: RunSpec) -> str:
    return f"{run.task}/{run.model}/{run.seed}"


def check_out(out: str | os.PathLike | None) -> None:
    """``--out ""`` (or blanks) is refused rather than written into the current directory."""
    if out is not None and not str(out).strip():
        raise DlbenchError("--out is empty: give a directory")


def _out_dir(suite: SuiteConfig, out: str | os.PathLike | None, resume: bool) -> tuple[Path, str]:
    from dlbench.rundir import new_run_id

    if out is not None:
        out = Path(out)
        if resume:
            manifest = read_manifest(out)
            previous = manifest.run_id if manifest else rows_run_id(out / ROWS)
            if previous:
                return out, previous
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
    show_plan: Callable[[Table], None] | None = None,
    plan_details: bool = True,
) -> Path | None:
    """Run suite ``suite_ref`` (a name in ``suites/`` or a .toml path); returns the output directory.

    Args mirror ``dlbench run``: ``models`` narrows the suite's models, ``seeds`` replaces its seeds
    ("0,1" or a sequence), ``sets`` are ``KEY=VALUE`` overrides, ``data_dir`` defaults to
    ``$DLBENCH_DATA`` or ./data, ``out`` to runs/<suite>-<run id>[-shardIofN]. ``shard`` ("I/N") runs
    one deterministic 1/N of the runs, ``devices`` is the data-parallel device count (all by default),
    ``cluster`` the multi-process job to join (see :mod:`dlbench.distributed`).
    """
    console = console or Console()
    check_out(out)
    shard = distributed.parse_shard(shard) if isinstance(shard, str) else shard
    suite = load_suite(suite_ref, sets)
    from dlbench.plugins import request_plugins

    request_plugins(suite.plugins)  # imported with the models (expand), after the data checks
    if suite.kind == "profile":
        if shard is not None or devices is not None:
            raise DlbenchError(f"suite {suite.name!r} is a profile sweep: --shard and --devices apply to training suites")
        return _run_profile(suite, models, seeds, out, resume, dry_run, console, sets=tuple(sets))
    seeds = parse_seeds(seeds) if isinstance(seeds, str) or seeds is None else parse_seeds(",".join(map(str, seeds)))
    for task in suite.task_names:
        get_task(suite.task_config(task).dataset)  # an unknown task fails now, on --dry-run too
    data_root = resolve_data_dir(data_dir)
    if not dry_run:  # a dry run only shows the plan, so it works before the data are in place
        for task in suite.task_names:
            check_data(suite.task_config(task), data_root)
        for task in suite.task_names:  # every path first (one message), then the files' contents
            check_files(suite.task_config(task), (seeds or suite.seeds)[0], data_root)
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
        (show_plan or console.print)(plan_table(suite, runs))
        for run in runs if plan_details else ():  # csv/json plans stay machine-readable
            # One line per run, whatever the terminal's width, and JSON's brackets are not rich markup.
            line = f"{run.task} {run.model} seed={run.seed}: " + json.dumps(run.settings(), sort_keys=True)
            console.print(line, soft_wrap=True, markup=False, highlight=False)
        return None
    writer = distributed.is_writer()
    out_dir, run_id = _out_dir(suite, out, resume)  # reads only; every process checks before anyone writes
    agreed = distributed.agree_on(run_id)
    if out is None and not resume:
        out_dir = Path("runs") / (f"{suite.name}-{agreed}" + (f"-{distributed.shard_label(shard)}" if distributed.shard_label(shard) else ""))
    run_id = agreed
    rows_path = out_dir / ROWS
    shard_info = None
    if shard is not None:
        shard_info = {"suite": suite.name, "shard": str(shard), "index": shard.index, "count": shard.count,
                      "cells": [list(r.key) for r in runs], "suite_cells": len(all_runs)}
    manifest = Manifest.new("train", suite.name, run_id, suite_file=suite.path, sets=sets, shard=shard_info)
    manifest.plugins = loaded_plugins()
    hashes = {run.key: manifest.add(run_key(run), run_settings(run)) for run in runs}
    # Only process 0 writes, so only it holds the folder's lock (the others never open a writer).
    lock = holding_lock(out_dir) if writer else _no_lock()
    with lock:
        done: set = set()
        if writer:
            if not resume and rows_path.is_file() and rows_path.stat().st_size:
                raise DlbenchError(f"{rows_path} exists; pass --resume to continue it or choose another --out")
            old = read_manifest(out_dir) if resume else None
            for note in check_resume(out_dir, old, manifest) if resume else ():
                console.print(note)
            manifest = merged(old, manifest)
        moved = trim_unfinished(rows_path) if resume and writer else 0
        if resume:
            distributed.barrier("dlbench-resume")
            done = finished_cells(rows_path)
            console.print(f"resuming {out_dir}: {len(done)} runs finished" + (f", {moved} partial rows set aside" if moved else ""))
        console.print(f"dlbench run {suite.name}: {len(runs)} runs" + (f" (shard {shard} of {len(all_runs)})" if shard else "") + f" -> {rows_path}")
        if writer:
            out_dir.mkdir(parents=True, exist_ok=True)
            manifest.write(out_dir)
            (out_dir / "plan.json").write_text(
                json.dumps([{"task": r.task, "model": r.model, "seed": r.seed, "config_hash": hashes[r.key], **r.settings()} for r in runs], indent=1)
            )
            if shard_info is not None:
                (out_dir / SHARD_FILE).write_text(json.dumps(shard_info, indent=1))
        outcomes = _execute(suite, runs, done, data_root, rows_path, run_id, console, devices=devices, hashes=hashes, resume=resume)
    line, failed = summarize(runs, outcomes)
    console.print(line)
    if failed:
        raise RunsFailed(f"{line} ({rows_path})", out_dir)
    return out_dir


class _no_lock:
    def __enter__(self):
        return None

    def __exit__(self, *exc):
        return False


def summarize(runs: Sequence[RunSpec], outcomes: dict[tuple, str]) -> tuple[str, bool]:
    """("N of M runs ok; K nan, J error", failed) with failed = any run ended in error, or none ended ok.

    The exit-code rule of ``dlbench run`` (README "Exit codes"): 0 when no run ended in ``error`` and at
    least one run is ok; 1 otherwise (nan, oom and timeout are results of a model, error is a crash).
    """
    counts = collections.Counter(outcomes.get(r.key, "error") for r in runs)
    ok = counts.pop("ok", 0)
    rest = ", ".join(f"{n} {status}" for status, n in sorted(counts.items(), key=lambda kv: -kv[1]))
    line = f"{ok} of {len(runs)} runs ok" + (f"; {rest}" if rest else "")
    return line, bool(runs) and (counts.get("error", 0) > 0 or ok == 0)


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
    *, devices: int | None = None, hashes: dict[tuple, str] | None = None, resume: bool = False,
) -> dict[tuple, str]:
    import jax
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from dlbench.checkpoints import CHECKPOINTS
    from dlbench.rundir import NullWriter, RowWriter
    from dlbench.tasks import load_task
    from dlbench.train import progress_line, train_run

    enable_compilation_cache()
    defaults = {"run_id": run_id, "suite": suite.name, "source": "dlbench run"}
    writer = RowWriter(rows_path, defaults) if distributed.is_writer() else NullWriter(defaults)
    hashes = hashes or {}
    outcomes: dict[tuple, str] = {key: "ok" for key in done}
    if done and rows_path.is_file():
        from dlbench.rundir import run_outcomes

        for key, outcome in run_outcomes(_rows_of(rows_path)).items():
            task, model, seed = key.rsplit("/", 2)
            if (task, model, int(seed)) in done and outcome:
                outcomes[(task, model, int(seed))] = outcome
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
            run_writer = writer.bind(config_hash=hashes.get(run.key, ""))
            try:
                number = runs.index(run) + 1
                # Not a terminal (a log, a pipe): one plain line per evaluation instead of the bars.
                on_eval = None if console.is_terminal else (
                    lambda info, run=run, number=number: console.print(progress_line(info, run, number, len(runs)), soft_wrap=True))
                result = train_run(
                    run, loaded[key], run_writer, on_step=lambda i, n: progress.update(steps, completed=i), devices=devices,
                    on_eval=on_eval, checkpoint_dir=rows_path.parent / CHECKPOINTS, resume=resume,
                )
                outcomes[run.key] = result.status
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
                run_writer.write({"task": run.task, "model": run.model, "seed": run.seed, "metric": "test_loss", "value": None,
                                  "unit": "", "status": "error", "reason": reason})
                outcomes[run.key] = "error"
                summary = f"error ({reason})"
            progress.console.print(f"  {run.task} {run.model} seed {run.seed}: {summary}")
            progress.advance(overall)
    return outcomes


def _rows_of(path: Path) -> list[dict[str, str]]:
    from dlbench.rundir import read_table

    return read_table(path).rows


def _run_profile(suite: SuiteConfig, models, seeds, out, resume: bool, dry_run: bool, console: Console, sets=()) -> Path | None:
    if models or seeds:
        raise DlbenchError(f"suite {suite.name!r} is a profile sweep: narrow it with --set sweep.KEY=VALUE, not --model/--seeds")
    mapping = json.loads(json.dumps(dict(suite.sweep)))
    from dlbench.profile import ScanSweep, run_sweep

    where = f"{suite.path or suite.name} [sweep]"
    sweep = ScanSweep.from_mapping(mapping, where=where)  # a dry run checks the sweep too
    if dry_run:
        line = f"profile suite {suite.name}: sweep " + json.dumps(dataclasses.asdict(sweep), sort_keys=True)
        console.print(line, soft_wrap=True, markup=False, highlight=False)
        return None

    out_dir, run_id = _out_dir(suite, out, resume)  # the folder's name and its rows share one run id
    console.print(f"dlbench run {suite.name} (profile sweep) -> {out_dir}")
    run_sweep(sweep, out_dir, resume=resume, suite=suite.name, console=console, run_id=run_id, suite_file=suite.path, sets=sets)
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
