"""A really killed `dlbench run` resumed from its last checkpoint ends with the rows of an uninterrupted run."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd

REPO = Path(__file__).resolve().parents[1]
SUITE = """
name = "killme"
kind = "train"
description = "tiny regression run for the kill-and-resume test"
include = ["attention"]
seeds = [0]

[model]
hidden_dim = 4
state_dim = 2
num_blocks = 1

[train]
steps = 4000
batch_size = 4
eval_every = 100
checkpoint_every = 5
lr = 1e-3

[tasks.decay]
dataset = "decay"
num_sequences = 20
seq_len = 12
"""
# Times and provenance differ between processes; every other column must match.
TIMES = {"lower_s", "compile_s", "first_window_s", "window_s", "step_time_s", "train_time_s", "peak_bytes"}


def dlbench(*args):
    env = {**os.environ, "PYTHONPATH": str(REPO), "DLBENCH_JAX_CACHE": "off"}
    return [sys.executable, "-c", "import sys; from dlbench.cli import main; sys.exit(main(sys.argv[1:]))", *args], env


def values(path: Path) -> pd.DataFrame:
    frame = pd.read_csv(path, keep_default_na=False, na_values=[""])
    frame = frame[~frame.metric.isin(TIMES)]
    return frame[["task", "model", "seed", "metric", "index", "value", "unit", "status"]].reset_index(drop=True)


def test_killed_run_resumes_to_the_same_rows(tmp_path):
    suite = tmp_path / "killme.toml"
    suite.write_text(SUITE)
    argv, env = dlbench("run", str(suite), "--out", str(tmp_path / "ref"))
    subprocess.run(argv, env=env, check=True, capture_output=True, timeout=600)

    argv, env = dlbench("run", str(suite), "--out", str(tmp_path / "killed"))
    proc = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    state = tmp_path / "killed" / "checkpoints" / "decay" / "attention" / "seed0" / "state"
    deadline = time.monotonic() + 300
    try:
        # orbax finalises a step by renaming its temporary folder to the bare step number.
        while not (state.is_dir() and any(p.name.isdigit() for p in state.iterdir())):
            assert proc.poll() is None, f"run ended before a checkpoint existed: {proc.stderr.read()[-2000:]}"
            assert time.monotonic() < deadline, "no checkpoint within 300 s"
            time.sleep(0.01)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL, "the run finished before it could be killed"
    killed = pd.read_csv(tmp_path / "killed" / "rows.csv", keep_default_na=False)
    assert "test_rmse" not in set(killed.metric), "the killed run had already finished"
    # The killed folder as a shard: merge refuses its unfinished run unless told --partial.
    argv, env = dlbench("merge", str(tmp_path / "killed"), "--out", str(tmp_path / "merged"))
    merged = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=120)
    assert merged.returncode == 2 and "1 unfinished run(s) (decay/attention/0)" in merged.stderr, merged.stderr
    assert "--partial" in merged.stderr and not (tmp_path / "merged" / "rows.csv").exists()

    argv, env = dlbench("run", str(suite), "--out", str(tmp_path / "killed"), "--resume")
    out = subprocess.run(argv, env=env, check=True, capture_output=True, text=True, timeout=600)
    assert "resuming" in out.stdout
    rows = pd.read_csv(tmp_path / "killed" / "rows.csv", keep_default_na=False, na_values=[""])
    resumed = rows[rows.metric == "window_s"].reason.fillna("")
    assert (resumed == "first window after resume").sum() == 1, "the run restarted from step 0 instead of its checkpoint"
    pd.testing.assert_frame_equal(values(tmp_path / "ref" / "rows.csv"), values(tmp_path / "killed" / "rows.csv"))
    assert {"test_mse", "test_mae", "test_rmse", "checkpoint_step"} <= set(rows.metric)
