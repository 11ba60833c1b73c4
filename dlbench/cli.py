"""The ``dlbench`` command line: each command parses its options and calls one library function.

Errors the user can fix become one line on stderr and exit code 2; no traceback.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from dlbench.errors import DlbenchError, RunsFailed

app = typer.Typer(
    name="dlbench",
    help="Benchmark long-sequence state-space models: scan throughput, training suites, leaderboards.",
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)
console = Console()
FormatOption = Annotated[
    str | None, typer.Option("--format", help="table, plain, csv or json (default: table in a terminal, plain otherwise).")
]


def _print_version(value: bool) -> None:
    if value:
        from importlib.metadata import PackageNotFoundError, version

        import dlbench

        try:
            installed = version("dlbench")
        except PackageNotFoundError:  # a source tree that was never installed
            installed = dlbench.__version__
        print(f"dlbench {installed}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool, typer.Option("--version", callback=_print_version, is_eager=True, help="Print the version and exit.")
    ] = False,
) -> None:
    """Benchmark long-sequence state-space models: scan throughput, training suites, leaderboards."""


def _model_option(name: str, flag: str = ""):
    """A ``dlbench models`` option whose help comes from :class:`dlbench.config.ModelConfig`'s field."""
    from dlbench.config import ModelConfig, field_help

    return typer.Option(*((flag,) if flag else ()), help=field_help(ModelConfig, name))


# Plugins (dlbench.plugins): every command that takes model names takes --plugin.
PluginOption = Annotated[
    list[str] | None,
    typer.Option("--plugin", help="Plugin module name or .py file registering models (repeatable; also $DLBENCH_PLUGINS)."),
]


def _load_models(plugin: list[str] | None) -> None:
    """Built-in models, entry points, $DLBENCH_PLUGINS and --plugin (exported to child processes)."""
    from dlbench.plugins import load_models

    load_models(plugin or ())


def _load_named_plugins(plugin: list[str] | None) -> None:
    """Plugins only where some are named: commands on plain result files stay free of JAX otherwise."""
    import os

    from dlbench.plugins import ENV_VAR

    if plugin or os.environ.get(ENV_VAR):
        _load_models(plugin)


@app.command("check")
def check_command(
    models: Annotated[list[str], typer.Argument(help="Models to check (or 'all').")],
    plugin: PluginOption = None,
) -> None:
    """Conformance of registered layers: shape, batch independence, causality, jit, float64, gradients, backends."""
    from dlbench.check import check_models, failures, report_table
    from dlbench.registry import parse_model_list

    _load_models(plugin)
    results = check_models(parse_model_list(",".join(models)))
    console.print(report_table(results))
    failed = failures(results)
    if failed:
        for line in failed:
            print(f"dlbench: check failed: {line}", file=sys.stderr)
        raise typer.Exit(1)


@app.command("models")
def models_command(
    names: Annotated[list[str] | None, typer.Argument(help="Models to show (default: all registered).")] = None,
    hidden: Annotated[int, _model_option("hidden_dim", "--hidden")] = 128,
    state: Annotated[int, _model_option("state_dim", "--state")] = 64,
    blocks: Annotated[int, _model_option("num_blocks", "--blocks")] = 2,
    inputs: Annotated[int, _model_option("num_inputs", "--inputs")] = 1,
    classes: Annotated[int, _model_option("num_outputs", "--classes")] = 10,
    norm: Annotated[str, _model_option("norm")] = "batch",
    format: FormatOption = None,
    plugin: PluginOption = None,
) -> None:
    """List registered models with their layer, options and parameter count."""
    _load_models(plugin)
    from dlbench.catalog import models_table
    from dlbench.config import ModelConfig, build
    from dlbench.report.render import render

    config = build(ModelConfig, dict(num_inputs=inputs, hidden_dim=hidden, state_dim=state, num_blocks=blocks,
                                     num_outputs=classes, norm=norm), "")
    render(models_table(names or None, config), format, console)


# --- profile commands (dlbench profile ...) ---

profile_app = typer.Typer(help="Time scans and measure the device.", no_args_is_help=True)
app.add_typer(profile_app, name="profile")


# Options shared by `run` and `profile scan`: data-parallel devices and joining a multi-process job.
DevicesOption = Annotated[
    int | None, typer.Option(help="Data-parallel devices: the batch is split over a mesh of N (default: all devices).")
]
CoordinatorOption = Annotated[
    str | None, typer.Option(help="Multi-host: HOST:PORT of process 0 (or $JAX_COORDINATOR_ADDRESS; SLURM is auto-detected).")
]
NumProcessesOption = Annotated[int | None, typer.Option(help="Multi-host: number of processes (or $JAX_NUM_PROCESSES).")]
ProcessIdOption = Annotated[int | None, typer.Option(help="Multi-host: this process's id, 0..N-1 (or $JAX_PROCESS_ID).")]


def _cluster(coordinator: str | None, num_processes: int | None, process_id: int | None):
    from dlbench.distributed import ClusterConfig

    return ClusterConfig(coordinator, num_processes, process_id)


def _split(text: str, option: str = "") -> tuple[str, ...]:
    items = tuple(t.strip() for t in text.split(",") if t.strip())
    if option and not items:
        raise DlbenchError(f"{option} is empty: give a comma-separated list (or leave the option out for its default)")
    return items


def _ints(option: str, text: str) -> tuple[int, ...]:
    try:
        return tuple(int(t.replace("_", "")) for t in _split(text, option))
    except ValueError:
        raise DlbenchError(f"{option} takes comma-separated integers, got {text!r}") from None


def _sweep(name: str):
    """(default, help) of ScanSweep field ``name``: the sweep's dataclass is the one place they live."""
    from dlbench.profile import option_default, option_help

    return option_default(name), option_help(name)


def _sweep_option(name: str, **kwargs):
    return typer.Option(help=_sweep(name)[1], **kwargs)


@profile_app.command("scan")
def profile_scan_command(
    ctx: typer.Context,
    models: Annotated[str, typer.Option(help="Comma-separated model names, or 'all'.")] = "all",
    backends: Annotated[str, typer.Option(help="associative,sequential,chunked,auto, a layer's own backend, or 'all'.")] = "auto",
    lengths: Annotated[str | None, typer.Option(help="Comma-separated sequence lengths (default 2^10..2^16 and 50000; duplicates dropped).")] = None,
    batch: Annotated[int, _sweep_option("batch")] = _sweep("batch")[0],
    hidden: Annotated[int, _sweep_option("hidden")] = _sweep("hidden")[0],
    state: Annotated[int, _sweep_option("state")] = _sweep("state")[0],
    mode: Annotated[str, typer.Option(help="fwd, fwdbwd, train (the whole training step), both (fwd,fwdbwd), all, or a comma-separated list.")] = "both",
    target: Annotated[str, _sweep_option("target")] = _sweep("target")[0],
    dtype: Annotated[str, _sweep_option("dtype")] = _sweep("dtype")[0],
    repeats: Annotated[int, _sweep_option("repeats")] = _sweep("repeats")[0],
    min_time: Annotated[float, _sweep_option("min_time")] = _sweep("min_time")[0],
    warmup: Annotated[int, _sweep_option("warmup")] = _sweep("warmup")[0],
    rounds: Annotated[int, _sweep_option("rounds")] = _sweep("rounds")[0],
    max_rounds: Annotated[int, _sweep_option("max_rounds")] = _sweep("max_rounds")[0],
    ci_target: Annotated[float, _sweep_option("ci_target")] = _sweep("ci_target")[0],
    budget: Annotated[float, _sweep_option("budget")] = _sweep("budget")[0],
    timeout: Annotated[float, _sweep_option("timeout")] = _sweep("timeout")[0],
    memory_limit_gb: Annotated[float | None, _sweep_option("memory_limit_gb")] = _sweep("memory_limit_gb")[0],
    seed: Annotated[int, _sweep_option("seed")] = _sweep("seed")[0],
    verify: Annotated[bool, _sweep_option("verify")] = _sweep("verify")[0],
    bandwidth: Annotated[bool, _sweep_option("bandwidth")] = _sweep("bandwidth")[0],
    out: Annotated[str, typer.Option(help="Output directory for rows.csv and throughput.png.")] = "",
    resume: Annotated[
        bool, typer.Option(help="Continue the sweep saved in --out (its manifest); other options given must match it.")
    ] = False,
    isolate: Annotated[bool, _sweep_option("isolate")] = _sweep("isolate")[0],
    devices: DevicesOption = None,
    seq_shard: Annotated[
        bool, typer.Option("--seq-shard", help="Split each sequence over all devices (sequence-parallel scan; --target layer).")
    ] = False,
    coordinator: CoordinatorOption = None,
    num_processes: NumProcessesOption = None,
    process_id: ProcessIdOption = None,
    plugin: PluginOption = None,
) -> None:
    """Throughput of every model's scan against sequence length (rows + log-log plot); exit 1 when a
    cell ended in error or every cell failed."""
    from dlbench import distributed
    from dlbench.profile import ALL_BACKENDS, DEFAULT_LENGTHS, ScanSweep, expand_modes, run_sweep
    from dlbench.registry import parse_model_list
    from dlbench.rundir import ROWS_FILE, new_run_id

    _load_models(plugin)

    multi = distributed.initialize(_cluster(coordinator, num_processes, process_id))

    parsed = dict(
        models=parse_model_list(models),
        backends=ALL_BACKENDS if backends.strip() == "all" else _split(backends, "--backends"),
        lengths=_ints("--lengths", lengths) if lengths is not None else DEFAULT_LENGTHS,
        modes=expand_modes(_split(mode, "--mode")),
        max_rounds=max(max_rounds, rounds),  # --rounds 12 alone raises the cap with it
        isolate=isolate and not multi,  # the processes of one job time each cell together, in-process
    )
    sweep = ScanSweep(**{**_as_given(ctx, ScanSweep), **parsed})
    if _given(ctx, "out") and not out.strip():
        raise DlbenchError("--out is empty: give a directory")
    if resume and not out:
        raise DlbenchError("--resume needs --out DIR (the folder of the sweep to continue)")
    if resume:
        sweep = _saved_sweep(ctx, out, sweep, ScanSweep)
    run_id = distributed.agree_on(new_run_id())
    out = out or f"runs/scan-{run_id}"
    rows_file = Path(out) / ROWS_FILE
    before = _file_state(rows_file)
    try:
        run_sweep(sweep, out, resume=resume, console=console if distributed.is_writer() else Console(quiet=True), run_id=run_id)
    finally:  # failed cells (exit 1) still get their plot; a refused start (rows untouched) draws nothing
        if distributed.is_writer() and rows_file.is_file() and _file_state(rows_file) != before:
            _plot_sweep(Path(out))
    if distributed.is_writer():
        _print_summary(out)


# `profile scan` options -> the ScanSweep fields they set (for --resume: which given options to compare).
_SWEEP_OPTIONS = {
    "models": "models", "backends": "backends", "lengths": "lengths", "batch": "batch", "hidden": "hidden", "state": "state",
    "mode": "modes", "target": "target", "dtype": "dtype", "repeats": "repeats", "min_time": "min_time", "timeout": "timeout",
    "memory_limit_gb": "memory_limit_gb", "isolate": "isolate", "devices": "devices", "seq_shard": "seq_shard",
}


def _as_given(ctx: typer.Context, settings_class) -> dict:
    """The command's options named after a field of the ``settings_class`` dataclass, as given.

    An option declared from a field (``_sweep_option``) goes into it unchanged; the command parses
    the others itself and passes them beside these.
    """
    import dataclasses

    return {f.name: ctx.params[f.name] for f in dataclasses.fields(settings_class) if f.name in ctx.params}


def _given(ctx: typer.Context, option: str) -> bool:
    """Whether ``option`` was given (command line or environment), not left at its default."""
    source = ctx.get_parameter_source(option)
    return source is not None and source.name not in ("DEFAULT", "DEFAULT_MAP")


def _saved_sweep(ctx: typer.Context, out: str, given, sweep_class):
    """The sweep saved in ``out``'s manifest; options given on the command line must equal it."""
    import dataclasses

    from dlbench.rundir import diff_settings, read_manifest

    manifest = read_manifest(out)
    if manifest is None or "sweep" not in manifest.entries:
        console.print(f"note: {out} has no manifest with a saved sweep (an older dlbench): settings cannot be checked; "
                      "using the options given")
        return given
    saved = sweep_class.from_mapping(manifest.entries["sweep"]["settings"], where=f"{out}/manifest.json")
    explicit = {field for option, field in _SWEEP_OPTIONS.items() if _given(ctx, option)}
    mine = {f: v for f, v in dataclasses.asdict(given).items() if f in explicit}
    theirs = {f: v for f, v in dataclasses.asdict(saved).items() if f in explicit}
    problems = [f"{key}: {a} in {out}, {b} now" for key, a, b in diff_settings(theirs, mine)]
    if problems:
        raise DlbenchError(f"--resume: options differ from the saved sweep: {'; '.join(problems)} (leave them out to resume it)")
    return saved


@profile_app.command("bandwidth")
def profile_bandwidth_command(
    megabytes: Annotated[int, typer.Option(help="Array size in MiB (read once, written once).")] = 256,
    out: Annotated[str, typer.Option(help="Append a row to OUT/rows.csv as well.")] = "",
) -> None:
    """The default device's copy bandwidth (the limit scan rows are compared with)."""
    from pathlib import Path

    from dlbench.rundir import ROWS_FILE, RowWriter, new_run_id
    from dlbench.timing import bandwidth_row, measure_bandwidth

    if megabytes < 1:
        raise DlbenchError(f"--megabytes must be at least 1, got {megabytes}")
    value = measure_bandwidth(megabytes)
    console.print(f"copy bandwidth: {value / 1e9:.2f} GB/s ({megabytes} MiB, read + write)")
    if out:
        RowWriter(Path(out) / ROWS_FILE, defaults={"run_id": new_run_id()}).write(bandwidth_row(value, megabytes))

# --- run / suites commands ---


@app.command("run")
def run_command(
    suite: Annotated[str, typer.Argument(help="Suite name (see `dlbench suites`) or path to a .toml file.")],
    model: Annotated[list[str] | None, typer.Option("--model", help="Run only this model (repeatable).")] = None,
    seeds: Annotated[str | None, typer.Option(help="Comma-separated seeds replacing the suite's, e.g. 0,1.")] = None,
    set_: Annotated[list[str] | None, typer.Option("--set", help="Override KEY=VALUE (TOML value), e.g. train.steps=50.")] = None,
    data_dir: Annotated[str | None, typer.Option(help="Directory with user datasets (default $DLBENCH_DATA or ./data).")] = None,
    out: Annotated[str | None, typer.Option(help="Output directory (default runs/SUITE-RUNID).")] = None,
    resume: Annotated[bool, typer.Option("--resume", help="Continue a killed run in --out (or the latest runs/SUITE-*).")] = False,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Print the expanded runs and their settings; train nothing.")] = False,
    shard: Annotated[
        str | None, typer.Option(help="Run shard I/N: every N-th run of the sorted (model, task, seed) list (job arrays).")
    ] = None,
    devices: DevicesOption = None,
    coordinator: CoordinatorOption = None,
    num_processes: NumProcessesOption = None,
    process_id: ProcessIdOption = None,
    format: Annotated[str | None, typer.Option("--format", help="With --dry-run: the plan as table, plain, csv or json.")] = None,
    plugin: PluginOption = None,
) -> None:
    """Train and evaluate the models of a suite; rows go to OUT/rows.csv."""
    from dlbench import distributed
    from dlbench.plugins import request_plugins
    from dlbench.report.render import render, resolve_format
    from dlbench.suite import run_suite

    if format is not None:
        resolve_format(format, console)  # a bad --format fails before anything runs
    request_plugins(plugin or ())  # imported with the models, after the suite's data checks
    out_dir = run_suite(
        suite, models=model, seeds=seeds, sets=set_ or (), data_dir=data_dir, out=out, resume=resume, dry_run=dry_run,
        console=console, shard=shard, devices=devices, cluster=_cluster(coordinator, num_processes, process_id),
        show_plan=lambda table: render(table, format, console), plan_details=format not in ("csv", "json"),
    )
    if out_dir is not None and distributed.is_writer():  # None: --dry-run
        from dlbench.rundir import read_manifest

        manifest = read_manifest(out_dir)
        if manifest is not None and manifest.kind == "profile":  # a profile suite (`dlbench run scan`)
            _plot_sweep(out_dir)
        _print_summary(out_dir)


def _file_state(path: Path) -> tuple[int, int] | None:
    """(size, mtime in ns) of ``path``, None when it does not exist: whether a command wrote to it."""
    try:
        stat = path.stat()
    except OSError:
        return None
    return stat.st_size, stat.st_mtime_ns


def _plot_sweep(run_dir) -> None:
    """The throughput plot beside a sweep's rows (the loops never draw); nothing to draw is a note."""
    from dlbench.report import plot_results

    try:
        console.print(f"plot: {plot_results([run_dir], 'throughput', Path(run_dir) / 'throughput.png')}")
    except DlbenchError as error:
        console.print(f"no plot: {error}")


def _print_summary(run_dir) -> None:
    """The end-of-run summary (leaderboard, failures, where things are, next commands), as plain text."""
    from dlbench.report.summary import summary

    console.out(summary(run_dir), highlight=False, end="")


@app.command("suites")
def suites_command(format: FormatOption = None) -> None:
    """List the suites: name, kind, description, models and tasks."""
    from dlbench.report.render import render
    from dlbench.suite import suites_table

    render(suites_table(), format, console)

# --- export / compare / plot / show / merge commands ---

export_app = typer.Typer(help="Export derived tables (leaderboards) from result rows.", no_args_is_help=True)
app.add_typer(export_app, name="export")
_EXPORT_SUFFIXES = {".csv": "csv", ".md": "md", ".tex": "latex"}


@export_app.command("leaderboard")
def export_leaderboard_command(
    results: Annotated[list[str], typer.Argument(help="Result CSV files or directories (searched recursively).")],
    format: Annotated[
        str | None, typer.Option("--format", help="csv, md or latex (default: from --out's suffix, else md).")
    ] = None,
    metric: Annotated[
        str | None, typer.Option(help="Training metric to rank by (default: test_accuracy, test_mse or test_rmse).")
    ] = None,
    kind: Annotated[str, typer.Option(help="auto, training or throughput (profile rows).")] = "auto",
    out: Annotated[str | None, typer.Option(help="Write here instead of standard output.")] = None,
    plugin: PluginOption = None,
) -> None:
    """Leaderboards: per task mean ± std over seeds beside the published numbers; tokens/s per length."""
    from pathlib import Path

    from dlbench.errors import check_choice

    _load_named_plugins(plugin)
    from dlbench.report import export_leaderboard
    from dlbench.rundir import read_rows

    if out is not None:  # never write one format under another's name (x.html holding Markdown)
        suffix = Path(out).suffix.lower() or "(none)"
        check_choice("--out file type", suffix, _EXPORT_SUFFIXES)
        if format is not None and _EXPORT_SUFFIXES[suffix] != format:
            raise DlbenchError(f"--format {format} does not match --out {out} (a {_EXPORT_SUFFIXES[suffix]} file name)")
    fmt = format or _EXPORT_SUFFIXES.get(Path(out).suffix.lower() if out else "", "md")
    text = export_leaderboard(read_rows(results), fmt, metric=metric, kind=kind)
    if out is None:
        sys.stdout.write(text)
    else:
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        Path(out).write_text(text)
        console.print(f"wrote {out}")


@app.command("compare")
def compare_command(
    base: Annotated[str, typer.Argument(help="BASE run: a result CSV or directory.")],
    new: Annotated[str, typer.Argument(help="NEW run: a result CSV or directory.")],
    fail_if: Annotated[
        str | None, typer.Option(help="Gate such as median:5%: exit 1 if a cell got significantly worse by more.")
    ] = None,
    alpha: Annotated[float, typer.Option(help="Significance level of the Mann-Whitney U test and CI.")] = 0.01,
    metric: Annotated[list[str] | None, typer.Option(help="Only these metrics (repeatable).")] = None,
    format: FormatOption = None,
) -> None:
    """Compare matching cells of two runs: ratio of medians, CI, Mann-Whitney U; gate for CI."""
    from dlbench.report import compare_runs

    compare_runs([base], [new], fail_if=fail_if, alpha=alpha, metrics=metric or None, console=console, fmt=format)


@app.command("plot")
def plot_command(
    results: Annotated[list[str], typer.Argument(help="Result CSV files or directories.")],
    kind: Annotated[
        str, typer.Option(help="auto, throughput, memory, training, or eigenvalues (of a run's saved best parameters).")
    ] = "auto",
    out: Annotated[str | None, typer.Option(help="PNG path (default: KIND.png beside the results).")] = None,
) -> None:
    """Plot throughput or peak memory against length (log-log), training curves, or learned eigenvalues."""
    from dlbench.report import plot_results

    if kind == "eigenvalues":
        # Eigenvalues are derived from saved parameters (JAX), written as rows, then drawn like any plot.
        from pathlib import Path

        from dlbench.eigen import write_run_eigenvalues
        from dlbench.plugins import load_models

        load_models()
        written = [write_run_eigenvalues(run) for run in results]
        for path in written:
            console.print(f"wrote {path}")
        results = [str(path.parent) for path in written]
        out = out or str(Path(results[0]).parent / "eigenvalues.png")
    console.print(f"wrote {plot_results(results, kind, out)}")


@app.command("show")
def show_command(
    results: Annotated[list[str], typer.Argument(help="Result CSV files or directories.")],
    format: FormatOption = None,
) -> None:
    """Summarise a run: median ± IQR per cell, range, n, and warnings (outliers, slow first run, failures)."""
    from dlbench.report import show

    show(results, console=console, fmt=format)


@app.command("report")
def report_command(
    results: Annotated[list[str], typer.Argument(help="Run directories (or result CSV files), one section each.")],
    out: Annotated[str, typer.Option(help="The HTML file to write (one self-contained page).")] = "report.html",
) -> None:
    """One self-contained HTML page per set of runs: leaderboards, plots, warnings, provenance."""
    from dlbench.report.html import write_report

    console.print(f"wrote {write_report(results, out)}")


@app.command("merge")
def merge_command(
    results: Annotated[list[str], typer.Argument(help="Output directories of `dlbench run --shard I/N` (or their rows.csv).")],
    out: Annotated[str, typer.Option(help="Directory for the merged run (rows.csv, plan.json).")],
    partial: Annotated[bool, typer.Option("--partial", help="Allow merging before every shard of 0..N-1 is present.")] = False,
    plugin: PluginOption = None,
) -> None:
    """Combine shard outputs into one run; refuses duplicate cells and mismatched provenance."""
    from dlbench.merge import merge_runs

    _load_named_plugins(plugin)

    path, cells = merge_runs(results, out, partial=partial)
    console.print(f"merged {len(results)} outputs: {cells} cells -> {path}")


def _with_valid_options(error: Exception, message: str) -> str:
    """An unknown option's message with the command's real options (Typer suggests only near misses)."""
    ctx = getattr(error, "ctx", None)
    if type(error).__name__ != "NoSuchOption" or ctx is None:
        return message
    names = sorted({opt for param in ctx.command.params for opt in getattr(param, "opts", []) if opt.startswith("--")})
    message = message.split(" (Possible options:")[0].split(" Did you mean")[0]
    near = [name for name in getattr(error, "possibilities", None) or [] if name != "--help"]
    hint = f"; did you mean {' or '.join(sorted(near))}?" if near else ""
    return f"{message}{hint}; valid options of `{ctx.command_path}`: {', '.join(names)}"


INTERRUPTED = 130  # the shell's code for a process ended by SIGINT


def main(argv: list[str] | None = None) -> int:
    """Entry point: run the app and turn every user error into one line and an exit code.

    Exit codes: 0 success; 1 a gate or a run failed (`run`: some run ended in error, or none ended ok;
    `compare --fail-if`: a cell got worse); 2 a usage or input error (one line, no traceback); 130 Ctrl-C.
    """

    # Readers' notes (a cut-off row left out, settings that cannot be checked) are printed after the
    # command, on stderr; a command that fails prints its one error line instead.
    notes: list[str] = []
    handler = _NoteHandler(notes)
    logger = logging.getLogger("dlbench")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        return _main(argv, notes)
    finally:
        logger.removeHandler(handler)


class _NoteHandler(logging.Handler):
    def __init__(self, notes: list[str]):
        super().__init__(logging.INFO)
        self.notes = notes

    def emit(self, record: logging.LogRecord) -> None:
        if record.getMessage() not in self.notes:
            self.notes.append(record.getMessage())


def _main(argv: list[str] | None, notes: list[str]) -> int:
    try:
        from dlbench.host_memory import choice

        choice()  # an unknown DLBENCH_HOST_ALLOCATOR: one line, whichever way the command was started
        code = app(args=argv, standalone_mode=False)
    except DlbenchError as error:
        print(f"dlbench: {error}" if isinstance(error, RunsFailed) else f"dlbench: error: {error}", file=sys.stderr)
        return error.exit_code
    except typer.TyperException as error:
        message = error.format_message()
        if type(error).__name__ == "NoArgsIsHelpError":
            # Bare `dlbench`: the message is the help text itself.
            print(message, file=sys.stderr)
        else:
            print(f"dlbench: error: {' '.join(_with_valid_options(error, message).split())}", file=sys.stderr)
        return error.exit_code
    except MemoryError:
        print("dlbench: error: out of memory (sizes too large for this machine)", file=sys.stderr)
        return 2
    except OSError as error:
        # Unusable paths (--out under a file, no permission, disk full): the OS's own one-line reason.
        where = f": {error.filename}" if getattr(error, "filename", None) else ""
        print(f"dlbench: error: {error.strerror or error}{where}", file=sys.stderr)
        return 2
    except typer.Exit as exit_:
        code = exit_.exit_code
    except (typer.Abort, KeyboardInterrupt):
        code = INTERRUPTED
    code = code if isinstance(code, int) else 0
    if code == 0:
        for note in notes:
            print(f"dlbench: note: {note}", file=sys.stderr)
    if code == INTERRUPTED:  # Typer turns Ctrl-C into this exit code and returns it
        print("dlbench: interrupted", file=sys.stderr)
    return code


def run() -> None:
    """The ``dlbench`` command (:func:`dlbench.launch.run`: huge pages first, then :func:`main`)."""
    from dlbench.launch import run as launch

    launch()
