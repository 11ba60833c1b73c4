"""The report package as a leaf: no JAX on import, output that survives pipes, the end-of-run summary,
readable `show`, plots with plain ticks and honest labels, the throughput board's intervals."""

import io
import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from rich.console import Console
from rich.table import Table

from dlbench import report
from dlbench.cli import main
from dlbench.report.render import plain_text, render
from dlbench.report.summary import summary
from dlbench.rundir import RowWriter, read_rows

ROOT = Path(__file__).resolve().parents[1]
LONG = "a-model-name-that-is-much-longer-than-any-column-rich-would-give-it-on-80-columns"


def test_export_leaderboard_does_not_import_jax():
    code = (
        "import sys\nfrom dlbench.cli import main\n"
        "code = main(['export', 'leaderboard', 'results/cpu-smoke', '--format', 'csv'])\n"
        "heavy = sorted(m for m in sys.modules if m.split('.')[0] in ('jax', 'jaxlib', 'flax') "
        "or m in ('dlbench.models', 'dlbench.layers') or m.startswith('dlbench.layers.'))\n"
        "print('HEAVY', heavy, 'CODE', code)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "HEAVY [] CODE 0" in out.stdout, out.stdout[-500:]
    assert "rank,model" in out.stdout or "task,metric" in out.stdout


def test_report_modules_import_nothing_heavy():
    # A static check of every module of the package: no import of jax, flax, models or layers.
    import ast

    for path in (ROOT / "dlbench" / "report").glob("*.py"):
        tree = ast.parse(path.read_text())
        names = [a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names]
        names += [n.module or "" for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)]
        bad = [n for n in names if n.split(".")[0] in ("jax", "flax") or n in ("dlbench.models", "dlbench.layers")
               or n.startswith("dlbench.layers.") or n == "dlbench.timing"]  # fmt: skip
        assert not bad, (path.name, bad)
        assert len(path.read_text().splitlines()) <= 600, path.name


def _table():
    table = Table(title="t")
    table.add_column("model", no_wrap=True)
    table.add_column("value", justify="right")
    table.add_row(LONG, "1.5")
    table.add_row("s5", "22")
    return table


@pytest.mark.parametrize("fmt", [None, "table", "plain"])
def test_tables_are_never_cut_when_piped(fmt, tmp_path):
    with open(tmp_path / "out.txt", "w") as f:
        console = Console(file=f, width=80)  # a file: not a terminal
        render(_table(), fmt, console)
    text = (tmp_path / "out.txt").read_text()
    assert LONG in text and "…" not in text
    if fmt in (None, "plain"):  # plain by default off a terminal: no box characters
        assert "┃" not in text and "│" not in text


def test_plain_text_aligns_and_json_csv_parse(tmp_path):
    lines = plain_text(_table()).splitlines()
    assert lines[0] == "t" and lines[1].split() == ["model", "value"]
    assert lines[3].endswith("1.5") and lines[4].endswith(" 22") and len(lines[3]) == len(lines[4])
    for fmt, parse in (("json", json.loads), ("csv", lambda t: pd.read_csv(__import__("io").StringIO(t)))):
        with open(tmp_path / fmt, "w") as f:
            render(_table(), fmt, Console(file=f))
        parsed = parse((tmp_path / fmt).read_text())
        assert len(parsed) == 2


def test_show_json_and_plain_on_committed_results(capsys):
    assert main(["show", str(ROOT / "results/cpu-scan-acceptance"), "--format", "json"]) == 0
    records = json.loads(capsys.readouterr().out)
    cells = {r["cell"] for r in records}
    # One record per cell (not per metric), readable names with the resolved backend, no raw JSON.
    assert "linoss-imex discretization=IMEX auto->blocked L=1024" in cells, cells
    assert not any("{" in c for c in cells)
    attention = next(r for r in records if r["cell"].startswith("attention") and r["cell"].endswith("L=1024"))
    assert attention["bandwidth_fraction"] > 1
    assert main(["show", str(ROOT / "results/cpu-scan-acceptance")]) == 0
    out = capsys.readouterr().out
    assert "(cache-resident)" in out and "GB/s" in out and "GiB/s" not in out


def test_compare_json_parses(capsys):
    run = str(ROOT / "results/cpu-smoke")
    assert main(["compare", run, run, "--format", "json"]) == 0
    records = json.loads(capsys.readouterr().out)
    assert {"ratio", "ci_low", "p_value", "testable", "verdict"} <= set(records[0])


def test_models_and_suites_formats(capsys):
    assert main(["suites", "--format", "json"]) == 0
    assert any(r["name"] == "smoke" for r in json.loads(capsys.readouterr().out))
    assert main(["suites", "--format", "yaml"]) == 2
    assert "unknown output format 'yaml'" in capsys.readouterr().err


def test_export_refuses_a_file_type_it_does_not_write(tmp_path, capsys):
    out = tmp_path / "x.html"
    assert main(["export", "leaderboard", str(ROOT / "results/cpu-smoke"), "--out", str(out)]) == 2
    assert "unknown --out file type '.html'" in capsys.readouterr().err and not out.exists()
    assert main(["export", "leaderboard", str(ROOT / "results/cpu-smoke"), "--out", str(tmp_path / "x.md"),
                 "--format", "csv"]) == 2  # fmt: skip


def test_summary_counts_failures_and_points_to_next_commands(tmp_path):
    w = RowWriter(tmp_path / "rows.csv", defaults={"run_id": "r", "suite": "smoke", "task": "BasicMotions"})
    for seed, acc in enumerate((0.9, 0.8)):
        w.write({"model": "s5", "seed": seed, "metric": "test_accuracy", "value": acc, "unit": "fraction"})
    w.write({"model": "lru", "seed": 0, "metric": "train_loss", "status": "nan", "reason": "loss is nan at step 3"})
    w.write({"model": "lru", "seed": 1, "metric": "train_loss", "status": "error", "reason": "boom"})
    text = summary(tmp_path)
    assert "2 of 4 runs ok; 1 nan, 1 error" in text
    assert "nan: BasicMotions lru 0: loss is nan at step 3" in text
    assert "s5" in text and "85.0 ± 5.0" in text  # the leaderboard of what ran
    assert f"rows: {tmp_path / 'rows.csv'}" in text and f"dlbench report {tmp_path}" in text


def _profile(path, ci=True):
    w = RowWriter(path, defaults={"run_id": "p", "task": "scan", "target": "layer", "batch": 1, "hidden": 16,
                                  "state": 8, "mode": "fwd", "dtype": "float32", "model": "s5", "seq_len": 64})  # fmt: skip
    for backend, seconds in (("associative", 2e-3), ("sequential", 1e-3)):
        options = json.dumps({"resolved_scan": backend, "scan": backend})
        for i in range(5):
            w.write({"backend": backend, "layer_options": options, "metric": "wall_s", "value": seconds * (1 + 0.01 * i),
                     "unit": "s", "index": i})  # fmt: skip
        if ci:
            w.write({"backend": backend, "layer_options": options, "metric": "wall_s_ci_low", "value": seconds * 0.99, "unit": "s"})
            w.write({"backend": backend, "layer_options": options, "metric": "wall_s_ci_high", "value": seconds * 1.05, "unit": "s"})
    return path


def test_intervals_beside_medians_and_on_x_fastest(tmp_path, capsys):
    path = _profile(tmp_path / "rows.csv")
    text = report.export_leaderboard(read_rows([path]), "md")
    assert "95% CI" in text
    # associative: ratio 1.02e-3 / 2.04e-3 = 0.50; interval [0.99e-3 / 2.1e-3, 1.05e-3 / 1.98e-3] = [0.47, 0.53]
    assert "0.50 [0.47, 0.53]" in text, text
    assert main(["show", str(path), "--format", "plain"]) == 0
    assert "[1.98 ms, 2.1 ms]" in capsys.readouterr().out
    # Without CI rows nothing claims an interval.
    assert "95% CI" not in report.export_leaderboard(read_rows([_profile(tmp_path / "old.csv", ci=False)]), "md")


def test_plots_plain_ticks_resolved_backend_single_points_and_regression_units(tmp_path):
    rows = read_rows([_profile(tmp_path / "rows.csv")])
    figure = report.plot_throughput(rows)
    ax = figure.axes[0]
    figure.canvas.draw()
    assert [t.get_text() for t in ax.get_xticklabels()] == ["64"]
    assert all("10^" not in t.get_text() and "times" not in t.get_text() for t in ax.get_yticklabels())
    legend = [t.get_text() for t in ax.get_legend().get_texts()]
    assert any("associative" in t for t in legend)
    w = RowWriter(tmp_path / "train.csv", defaults={"run_id": "t", "suite": "decay", "task": "decay", "model": "dlinoss"})
    w.write({"seed": 0, "metric": "train_loss", "value": 0.5, "unit": "nats", "index": 10})  # an older row's unit
    w.write({"seed": 0, "metric": "val_mse", "value": 0.4, "unit": "target^2", "index": 10})
    figure = report.plot_training(read_rows([tmp_path / "train.csv"]))
    loss = next(a for a in figure.axes if "train_loss" in a.get_title())
    assert "nats" not in loss.get_ylabel() and "target^2" in loss.get_ylabel()
    line = loss.get_lines()[0]
    assert line.get_marker() == "o" and len(line.get_xdata()) == 1  # one point is visible
    assert any("one evaluation point" in t.get_text() for t in loss.texts)


def test_views_refuse_to_pool_two_runs_of_one_seed_or_two_settings(tmp_path, error_line):
    from dlbench.cli import main

    tiny = ["--model", "attention", "--seeds", "0", "--set", "train.eval_every=1", "--set", "model.hidden_dim=4",
            "--set", "model.state_dim=2", "--set", "model.num_blocks=1", "--set", "train.batch_size=4"]
    for name, steps in (("a", 2), ("b", 2), ("c", 3)):
        assert main(["run", "smoke", *tiny, "--set", f"train.steps={steps}", "--out", str(tmp_path / name)]) == 0
    assert main(["export", "leaderboard", str(tmp_path / "a")]) == 0
    # Same settings, same seed, two runs: would count as two seeds of one.
    line = error_line(["export", "leaderboard", str(tmp_path / "a"), str(tmp_path / "b")])
    assert "basicmotions/attention seed 0 is in 2 runs" in line
    # Different settings (train.steps 2 and 3): refused naming both config hashes.
    line = error_line(["show", str(tmp_path / "a"), str(tmp_path / "c")])
    assert "basicmotions/attention has 2 different settings" in line
    for argv in (["plot", str(tmp_path / "a"), str(tmp_path / "c"), "--out", str(tmp_path / "x.png")],
                 ["compare", str(tmp_path / "a"), f"{tmp_path / 'b'}"]):
        if argv[0] == "compare":
            assert main(argv) in (0, 1)  # each side is one run: comparing two runs is what compare is for
        else:
            assert "different settings" in error_line(argv)


def test_a_run_cut_by_a_killed_writer_is_named_not_dropped(tmp_path, capsys):
    """The final row of seed 1 cut mid-row: the leaderboard and show say the seed is unfinished."""
    out = tmp_path / "cut"
    tiny = ["--set", "train.steps=2", "--set", "train.eval_every=1", "--set", "model.hidden_dim=4",
            "--set", "model.state_dim=2", "--set", "model.num_blocks=1", "--set", "train.batch_size=4"]  # fmt: skip
    assert main(["run", "smoke", "--model", "attention", "--seeds", "0,1", *tiny, "--out", str(out)]) == 0
    data = (out / "rows.csv").read_bytes()
    assert b",test_accuracy," in data.splitlines()[-1]  # the last run's final row ends the file
    (out / "rows.csv").write_bytes(data[:-40])
    capsys.readouterr()
    assert main(["export", "leaderboard", str(out), "--format", "csv"]) == 0
    captured = capsys.readouterr()
    board = pd.read_csv(io.StringIO(captured.out))
    assert board[["model", "seeds", "failed", "unfinished"]].values.tolist() == [["attention", 1, 0, 1]]
    assert "1 partial row at" in captured.err
    assert main(["show", str(out), "--format", "plain"]) == 0
    shown = capsys.readouterr().out
    assert "attention: 1 unfinished run(s), seed 1" in " ".join(shown.split()) and "no failed cells" not in shown
