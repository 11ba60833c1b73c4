"""`dlbench run` / `dlbench suites` through the CLI: one-line errors, exit codes, resume."""

import subprocess
import sys
import time

import pandas as pd
from rowcompare import deterministic_cells

from dlbench.cli import main
from dlbench.rundir import RowWriter

TINY = ["--seeds", "0,1", "--set", "train.steps=3", "--set", "train.eval_every=1", "--set", "model.hidden_dim=4",
        "--set", "model.state_dim=2", "--set", "model.num_blocks=1", "--set", "train.batch_size=4"]


def test_one_line_errors(capsys, tmp_path, error_line):
    assert "unknown suite 'smok'; did you mean 'smoke'?" in error_line(["run", "smok"])
    assert "unknown model 'nope'" in error_line(["run", "smoke", "--model", "nope", "--dry-run"])
    bad = tmp_path / "bad.toml"
    bad.write_text('include = ["attention"]\n[tasks.basicmotions]\n[train]\nlearning_rate = 1e-3\n')
    err = error_line(["run", str(bad)])
    assert str(bad) in err and "unknown key 'train.learning_rate'" in err
    assert "bad --set 'train.steps'" in error_line(["run", "smoke", "--set", "train.steps"])
    assert "did you mean 'train.steps'" in error_line(["run", "smoke", "--set", "train.step=3"])
    assert "bad --seeds" in error_line(["run", "smoke", "--seeds", "a,b", "--dry-run"])


def test_missing_data_fails_fast_in_a_fresh_process(tmp_path):
    start = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-c", "import sys; from dlbench.cli import main; sys.exit(main(sys.argv[1:]))",
         "run", "uea", "--data-dir", str(tmp_path)], capture_output=True, text=True, timeout=60,
    )
    elapsed = time.perf_counter() - start
    assert proc.returncode == 2 and "dataset 'UEA EigenWorms' not found" in proc.stderr
    assert str(tmp_path / "EigenWorms") in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
    assert elapsed < 3.0, f"took {elapsed:.2f} s (the check must run before JAX is imported)"


def test_suites_and_dry_run(capsys):
    assert main(["suites"]) == 0
    out = capsys.readouterr().out
    assert "smoke" in out and "decay" in out and "uea" in out
    assert main(["run", "uea", "--dry-run", "--model", "dlinoss", "--seeds", "2345"]) == 0
    out = capsys.readouterr().out
    assert "eigenworms dlinoss seed=2345" in out and '"hidden_dim": 128' in out


def _cells(path):
    return deterministic_cells(pd.read_csv(path, keep_default_na=False, na_values=[""]))


def test_killed_and_resumed_run_has_the_same_rows(tmp_path, monkeypatch, capsys):
    args = ["run", "smoke", "--model", "attention", *TINY]
    assert main([*args, "--out", str(tmp_path / "full")]) == 0
    # Kill the second run part-way: the row writer raises after a few of its rows.
    original, count = RowWriter.write, {"n": 0}

    def dying_write(self, row):
        count["n"] += 1
        if count["n"] == 20:
            raise KeyboardInterrupt
        return original(self, row)

    monkeypatch.setattr(RowWriter, "write", dying_write)
    assert main([*args, "--out", str(tmp_path / "killed")]) == 130
    monkeypatch.setattr(RowWriter, "write", original)
    assert main([*args, "--out", str(tmp_path / "killed"), "--resume"]) == 0
    assert _cells(tmp_path / "killed" / "rows.csv") == _cells(tmp_path / "full" / "rows.csv")
    # Resuming a finished run does nothing more.
    before = (tmp_path / "killed" / "rows.csv").read_text()
    assert main([*args, "--out", str(tmp_path / "killed"), "--resume"]) == 0
    assert (tmp_path / "killed" / "rows.csv").read_text() == before


def test_layer_options_and_scan_are_checked_before_anything_runs(error_line, tmp_path):
    out = tmp_path / "never"
    err = error_line(["run", "smoke", "--model", "lru", "--set", "model.layer_options.foo=1", "--out", str(out)])
    assert "run basicmotions/lru/seed 0: unknown layer option for lru 'foo'; valid choices: chunk_size" in err
    assert not out.exists()
    err = error_line(["run", "smoke", "--model", "s5", "--set", 'model.scan="nosuch"', "--dry-run"])
    assert "unknown scan backend for s5 'nosuch'" in err


def test_too_many_devices_is_refused_before_anything_is_written(error_line, tmp_path):
    out = tmp_path / "out"
    err = error_line(["run", "smoke", "--model", "s5", "--seeds", "0", "--devices", "64", "--out", str(out)])
    assert "--devices 64" in err and not out.exists(), err
