"""The run directory (issue 9): strict reader, folder lock, manifest, resume rules, exit codes, input checks.

Process-level claims are tested on real processes: two `dlbench run` writers at once, a writer
killed mid-row, a resume with changed settings, a resumed `profile scan`.
"""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from dlbench.cli import main
from dlbench.errors import DlbenchError
from dlbench.rundir import (
    COLUMNS,
    METRICS,
    FolderLockedError,
    Manifest,
    RowWriter,
    check_resume,
    lock_dir,
    read_rows,
    read_table,
    trim_unfinished,
)
from dlbench.rundir.vocabulary import render_readme

REPO = Path(__file__).resolve().parents[1]
TINY = ["--model", "attention", "--seeds", "0", "--set", "train.steps=2", "--set", "train.eval_every=1",
        "--set", "model.hidden_dim=4", "--set", "model.state_dim=2", "--set", "model.num_blocks=1", "--set", "train.batch_size=4"]
ENV = {**os.environ, "PYTHONPATH": str(REPO), "DLBENCH_JAX_CACHE": "off"}


def _row(**extra):
    return {"model": "lru", "metric": "wall_s", "value": 0.5, "unit": "s", **extra}


def _rows_file(tmp_path, n=3):
    path = tmp_path / "rows.csv"
    writer = RowWriter(path, {"run_id": "r"})
    for i in range(n):
        writer.write(_row(index=i))
    writer.lock.release()
    return path


# --- strict reader -------------------------------------------------------------------------------


def test_final_line_cut_mid_row_is_reported_and_left_out(tmp_path):
    path = _rows_file(tmp_path)
    text = path.read_bytes()
    path.write_bytes(text[: len(text) - 40])  # what a writer killed during its last write leaves
    notes = []
    rows = read_rows([path], note=notes.append)
    assert len(rows) == 2
    assert notes[0] == f"1 partial row at {path}:4 ignored (a writer was killed)"


@pytest.mark.parametrize(
    "damage, message",
    [
        (lambda lines: lines[:2] + [lines[2].rstrip("\r\n") + ",extra\r\n"] + lines[3:], rf"rows.csv:3: {len(COLUMNS) + 1} cells where the header has {len(COLUMNS)} \(extra columns\)"),
        (lambda lines: lines[:2] + [lines[0]] + lines[2:], r"rows.csv:3: a second header \(two writers wrote this file at once\)"),
        (lambda lines: lines[:1] + [lines[1].replace(",0.5,", ",fast,")] + lines[2:], r"rows.csv:2: value is 'fast', not a number"),
        (lambda lines: lines[:3] + ["\0\0\0\r\n"] + lines[3:], r"rows.csv:4: NUL byte"),
    ],
)
def test_malformed_rows_are_one_error_naming_file_and_line(tmp_path, damage, message):
    path = _rows_file(tmp_path)
    lines = path.read_text().splitlines(keepends=True)
    path.write_text("".join(damage(lines)))
    with pytest.raises(DlbenchError, match=message):
        read_rows([path])


def test_unknown_header_column_is_refused(tmp_path):
    path = _rows_file(tmp_path)
    text = path.read_text().replace("source,", "colour,", 1)
    path.write_text(text)
    with pytest.raises(DlbenchError, match=r"rows.csv:1: unknown column\(s\) colour"):
        read_rows([path])


def test_folders_written_before_manifests_are_still_readable_and_say_so(tmp_path):
    # The first release wrote rows.csv without config_hash and round, and no manifest.json.
    legacy = tmp_path / "legacy"
    legacy.mkdir()
    current = pd.read_csv(REPO / "results" / "cpu-smoke" / "rows.csv", dtype=str, keep_default_na=False)
    current.drop(columns=["config_hash", "round"]).to_csv(legacy / "rows.csv", index=False)
    notes = []
    rows = read_rows([legacy], note=notes.append)
    assert len(rows) == len(current) and rows.config_hash.isna().all()
    assert notes == [f"{legacy}: no manifest.json (written before dlbench recorded settings): settings cannot be checked"]


def test_writer_refuses_unknown_metric_and_wrong_unit(tmp_path):
    writer = RowWriter(tmp_path / "rows.csv")
    with pytest.raises(ValueError, match="unknown metric 'speed'"):
        writer.write(_row(metric="speed"))
    with pytest.raises(ValueError, match="'test_loss' is written in nats or target\\^2, not 'bytes'"):
        writer.write(_row(metric="test_loss", unit="bytes"))


def test_every_vocabulary_addition_of_the_plan_is_there():
    names = {m.name for m in METRICS}
    for metric in ("test_mae", "val_mae", "test_mse", "val_mse", "eig_abs", "eig_angle", "max_rel_err", "wall_s_ci_low",
                   "wall_s_ci_high", "first_window_s", "window_s", "lower_s", "compile_s", "checkpoint_step"):
        assert metric in names
    assert "round" in COLUMNS and "config_hash" in COLUMNS
    assert {m.name: m.units for m in METRICS}["eig_angle"] == ("rad",)
    assert "nats" not in {m.name: m.units for m in METRICS}["test_mse"]


def test_results_readme_is_the_vocabulary_in_code():
    readme = (REPO / "results" / "README.md").read_text()
    assert render_readme(readme) == readme, "results/README.md drifted: run python -m dlbench.rundir.vocabulary"


# --- lock ------------------------------------------------------------------------------------------


def test_second_writer_process_is_refused_naming_the_holder(tmp_path):
    holder = subprocess.Popen(
        [sys.executable, "-c", f"from dlbench.rundir import lock_dir; lock_dir({str(tmp_path)!r}); print('held', flush=True); "
                               "import time; time.sleep(60)"],
        env=ENV, stdout=subprocess.PIPE, text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(FolderLockedError, match=rf"another dlbench process \(pid {holder.pid} on "):
            RowWriter(tmp_path / "rows.csv")
    finally:
        holder.kill()
        holder.wait()
    lock_dir(tmp_path).release()  # the OS released the dead holder's lock


def test_two_dlbench_runs_into_one_folder_at_once(tmp_path):
    out = tmp_path / "same"
    cmd = [sys.executable, "-c", "import sys; from dlbench.cli import main; sys.exit(main(sys.argv[1:]))", "run", "smoke", *TINY, "--out", str(out)]
    procs = [subprocess.Popen(cmd, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    results = [(p.wait(timeout=300), p.stderr.read()) for p in procs]
    codes = sorted(code for code, _ in results)
    assert codes == [0, 2], results
    loser = next(err for code, err in results if code == 2)
    assert "being written by another dlbench process (pid" in loser or "rows.csv exists" in loser
    table = read_table(out / "rows.csv")  # one header, every row whole
    assert table.partial_line is None and {r["run_id"] for r in table.rows} == {json.loads((out / "manifest.json").read_text())["run_id"]}


def test_writer_killed_mid_run_leaves_a_readable_file(tmp_path):
    script = (f"from dlbench.rundir import RowWriter\nw = RowWriter({str(tmp_path / 'rows.csv')!r}, {{'run_id': 'k'}})\n"
              "print('go', flush=True)\ni = 0\nwhile True:\n    w.write({'model': 'lru', 'metric': 'wall_s', 'value': 0.5, "
              "'unit': 's', 'index': i, 'reason': 'x' * 2000})\n    i += 1\n")
    writer = subprocess.Popen([sys.executable, "-c", script], env=ENV, stdout=subprocess.PIPE, text=True)
    assert writer.stdout.readline().strip() == "go"
    rows_csv = tmp_path / "rows.csv"
    deadline = time.monotonic() + 120
    while (not rows_csv.exists() or rows_csv.stat().st_size < 200_000) and time.monotonic() < deadline:
        time.sleep(0.05)
    writer.send_signal(signal.SIGKILL)
    writer.wait()
    notes = []
    rows = read_rows([tmp_path / "rows.csv"], note=notes.append)  # whatever the kill cut, the reader copes
    assert len(rows) > 0 and list(rows["index"]) == list(range(len(rows)))
    assert all("partial row" in n for n in notes if "manifest" not in n)


# --- resume, manifest, exit codes ----------------------------------------------------------------


def test_resume_with_changed_settings_is_refused_naming_the_key(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["run", "smoke", *TINY, "--out", str(out)]) == 0
    manifest = json.loads((out / "manifest.json").read_text())
    (entry,) = manifest["entries"].values()
    rows = read_rows([out])
    assert set(rows.config_hash) == {entry["config_hash"]} and set(rows.run_id) == {manifest["run_id"]}
    assert manifest["suite_sha256"] and "name = \"smoke\"" in manifest["suite_text"]
    capsys.readouterr()
    written = {name: (out / name).read_bytes() for name in ("manifest.json", "plan.json", "rows.csv")}
    changed = [a if a != "train.steps=2" else "train.steps=3" for a in TINY]
    assert main(["run", "smoke", *changed, "--out", str(out), "--resume"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.endswith(f"basicmotions/attention/0: train.steps: 2 in {out}, 3 now") and len(err.splitlines()) == 1
    assert main(["run", "decay", "--out", str(out), "--resume", "--set", "train.steps=2"]) == 2
    assert f"{out} holds suite 'smoke', not 'decay'" in capsys.readouterr().err
    # A refused resume leaves the folder as it was: plan.json still says what the rows were made with.
    assert {name: (out / name).read_bytes() for name in written} == written
    assert main(["run", "smoke", *TINY, "--out", str(out), "--resume"]) == 0  # same settings: nothing to do
    assert "resuming" in capsys.readouterr().out and len(read_rows([out])) == len(rows)


def test_resume_trims_an_unfinished_run_and_reruns_it(tmp_path):
    out = tmp_path / "run"
    assert main(["run", "smoke", *TINY, "--out", str(out)]) == 0
    full = read_table(out / "rows.csv").rows
    lines = (out / "rows.csv").read_text().splitlines(keepends=True)
    (out / "rows.csv").write_text("".join(lines[:-3]) + lines[-3][:30])  # killed before its final row, mid-row
    assert trim_unfinished(out / "rows.csv") == len(full) - 3 + 1  # 12 whole rows of the unfinished run + the cut one
    assert read_table(out / "rows.csv").rows == []
    assert main(["run", "smoke", *TINY, "--out", str(out), "--resume"]) == 0
    assert [r["metric"] for r in read_table(out / "rows.csv").rows] == [r["metric"] for r in full]


def test_old_folder_without_manifest_cannot_be_checked_and_says_so(tmp_path):
    notes = check_resume(tmp_path, None, Manifest.new("train", "smoke", "r"))
    assert notes == [f"{tmp_path}: no manifest.json (written before dlbench recorded settings): settings cannot be checked"]


def test_exit_code_and_summary_when_runs_fail(tmp_path, capsys, monkeypatch):
    import dlbench.train

    def broken(*args, **kwargs):
        raise RuntimeError("layer bug")

    monkeypatch.setattr(dlbench.train, "train_run", broken)
    assert main(["run", "smoke", *TINY, "--out", str(tmp_path / "bad")]) == 1
    captured = capsys.readouterr()
    assert "0 of 1 runs ok; 1 error" in captured.out
    assert captured.err.strip().startswith("dlbench: 0 of 1 runs ok; 1 error (")


def test_summary_rule():
    from dlbench.config import load_suite
    from dlbench.suite import expand, summarize

    runs = expand(load_suite("smoke"), ["attention", "lru"], (0,))
    assert summarize(runs, {runs[0].key: "ok", runs[1].key: "nan"}) == ("1 of 2 runs ok; 1 nan", False)
    assert summarize(runs, {runs[0].key: "ok", runs[1].key: "error"}) == ("1 of 2 runs ok; 1 error", True)
    assert summarize(runs, {runs[0].key: "nan", runs[1].key: "oom"})[1] is True  # all failed


# --- merge -----------------------------------------------------------------------------------------


def test_merge_refuses_unfinished_shards_and_different_settings(tmp_path, capsys, error_line):
    a, b = tmp_path / "a", tmp_path / "b"
    assert main(["run", "smoke", *TINY, "--shard", "0/2", "--out", str(a)]) == 0
    assert main(["run", "smoke", *TINY, "--shard", "1/2", "--seeds", "0,1", "--set", "train.lr=0.002", "--out", str(b)]) == 0
    err = error_line(["merge", str(a), str(b), "--out", str(tmp_path / "m")])
    assert "run with different settings (--set train.lr=0.002 in one but not the other); refusing to merge" in err
    lines = (a / "rows.csv").read_text().splitlines(keepends=True)
    (a / "rows.csv").write_text("".join(lines[:-1]))  # the final row of the run is gone: unfinished
    err = error_line(["merge", str(a), "--out", str(tmp_path / "m2")])
    assert "1 unfinished run(s) (basicmotions/attention/0)" in err and "--partial" in err


# --- inputs checked before anything runs ---------------------------------------------------------


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--set", "train.lr=nan"], "lr: must be a finite number, got nan"),
        (["--set", "train.lr=inf"], "lr: must be a finite number, got inf"),
        (["--set", "train.steps=100000000"], "steps: must be in [1, 10_000_000]"),
        (["--set", "train.steps=1e20"], "steps: expected an integer"),
        (["--seeds=-1"], "seeds must be in [0, 2147483647], got -1"),
        (["--set", "seeds=[100000000000000000000000]"], "seeds"),
        (["--set", "name='../../../tmp/evil'"], "is not a valid name"),
        (["--set", "tasks.basicmotions.val_fraction=0.99"], "val_fraction: must be in (0, 0.5], got 0.99"),
        (["--set", "tasks.nosuch={}"], "unknown task 'nosuch'"),
        (["--out", ""], "--out is empty"),
        (["--set", "model.norm='bach'"], "did you mean 'batch'"),
    ],
)
def test_bad_inputs_are_one_line_before_anything_runs(argv, message, error_line):
    assert message in error_line(["run", "smoke", *argv, "--dry-run"])


def test_resume_on_damaged_rows_is_one_line(tmp_path, error_line):
    out = tmp_path / "x"
    out.mkdir()
    (out / "rows.csv").write_bytes(os.urandom(300) + b"\0")
    assert "rows.csv" in error_line(["run", "smoke", *TINY, "--out", str(out), "--resume"])
    header = ",".join(COLUMNS) + "\r\n"
    (out / "rows.csv").write_text(header + header)
    assert "a second header" in error_line(["run", "smoke", *TINY, "--out", str(out), "--resume"])


def test_uea_file_with_zero_series_is_refused(tmp_path):
    import numpy as np

    from dlbench.tasks.uea import check_partners

    with pytest.raises(DlbenchError, match="Heartbeat_TRAIN.ts: parses to zero series"):
        check_partners([Path("Heartbeat_TRAIN.ts"), Path("Heartbeat_TEST.ts")], [], [np.zeros((5, 2))])
    with pytest.raises(DlbenchError, match=r"with \[2\] channels but .* with \[3\]"):
        check_partners([Path("a"), Path("b")], [np.zeros((5, 2))], [np.zeros((5, 3))])
    with pytest.raises(DlbenchError, match="length 5 but b of length 6"):
        check_partners([Path("a"), Path("b")], [np.zeros((5, 2))], [np.zeros((6, 2))])


def test_garbage_train_file_is_refused_before_the_run_folder_is_written(tmp_path, monkeypatch, error_line):
    from test_tasks import make_uea

    monkeypatch.setenv("DLBENCH_CACHE", str(tmp_path / "cache"))
    make_uea(tmp_path / "data", "Heartbeat", 6, 4, 0)
    train = tmp_path / "data" / "Heartbeat" / "Heartbeat_TRAIN.ts"
    train.write_text("this is not a UEA file\n" * 40)
    suite = tmp_path / "one.toml"
    suite.write_text('name = "one"\nkind = "train"\nseeds = [0]\ninclude = ["attention"]\n[tasks.heartbeat]\n')
    out = tmp_path / "out"
    line = error_line(["run", str(suite), "--data-dir", str(tmp_path / "data"), "--out", str(out), *TINY[2:]])
    assert "Heartbeat_TRAIN.ts" in line and "zero series" in line, line
    assert not out.exists()  # no manifest, plan or rows of a run that never started


# --- profile scan resume -------------------------------------------------------------------------

SCAN = ["profile", "scan", "--models", "lru", "--lengths", "8", "--hidden", "4", "--state", "2", "--mode", "fwd",
        "--repeats", "1", "--min-time", "0.0", "--no-isolate"]


def test_profile_scan_resume_continues_the_saved_sweep(tmp_path, capsys, error_line):
    out = tmp_path / "scan"
    assert main([*SCAN, "--out", str(out)]) == 0
    capsys.readouterr()
    assert main(["profile", "scan", "--resume", "--out", str(out)]) == 0  # no flags: the saved sweep, not the default
    assert "1 cells (1 already measured)" in capsys.readouterr().out
    err = error_line(["profile", "scan", "--resume", "--out", str(out), "--hidden", "8"])
    assert f"hidden: 4 in {out}, 8 now" in err
    rows = read_rows([out])
    manifest = json.loads((out / "manifest.json").read_text())
    assert set(rows.run_id) == {manifest["run_id"]} and set(rows.config_hash) == {manifest["entries"]["sweep"]["config_hash"]}


def test_cli_model_defaults_are_the_config_defaults():
    """`dlbench models` option defaults equal ModelConfig's (the help comes from the field)."""
    import inspect

    from dlbench.cli import models_command
    from dlbench.config import ModelConfig, field_default

    params = inspect.signature(models_command).parameters
    for option, field in (("hidden", "hidden_dim"), ("state", "state_dim"), ("blocks", "num_blocks"), ("inputs", "num_inputs"),
                          ("classes", "num_outputs"), ("norm", "norm")):
        assert params[option].default == field_default(ModelConfig, field)


def test_model_config_validates_itself():
    from dlbench.config import ConfigError, ModelConfig

    for norm in ("batch", "layer", "batch-ema", "batch-debiased"):
        assert ModelConfig(norm=norm).norm == norm
    with pytest.raises(ConfigError, match="hidden_dim: must be in"):
        ModelConfig(hidden_dim=0)
    with pytest.raises(ConfigError, match="dropout: must be a finite number"):
        ModelConfig(dropout=float("nan"))


def test_run_scan_rows_carry_the_suite_and_the_folder_run_id(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    sets = ["sweep.models=['lru']", "sweep.lengths=[8]", "sweep.hidden=4", "sweep.state=2", "sweep.modes=['fwd']",
            "sweep.repeats=1", "sweep.min_time=0.0", "sweep.isolate=false", "sweep.bandwidth=false"]
    assert main(["run", "scan", *[a for s in sets for a in ("--set", s)]]) == 0
    (folder,) = (tmp_path / "runs").iterdir()
    rows = read_rows([folder])
    assert set(rows.suite) == {"scan"} and folder.name == f"scan-{rows.run_id.iloc[0]}" and rows.run_id.nunique() == 1
    assert json.loads((folder / "manifest.json").read_text())["suite"] == "scan"
