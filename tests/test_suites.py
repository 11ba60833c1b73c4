"""Every suite file loads, expands and runs at tiny size (user-data suites on generated files)."""

import pandas as pd
import pytest
from test_forecast import write_wth
from test_tasks import make_uea

from dlbench.config import load_suite, suite_paths
from dlbench.suite import expand, list_suites, run_suite
from dlbench.tasks.uea import UEA_DATASETS

TINY = [
    "seeds=[0]",
    "train.steps=2",
    "train.eval_every=1",
    "train.batch_size=4",
    "train.eval_batch_size=8",
    "train.warmup_steps=0",
    "model.hidden_dim=4",
    "model.state_dim=2",
    "model.num_blocks=1",
    "tasks.decay.seq_len=20",
]
NEEDS_FILES_TOO_BIG = {"ppg"}  # one PPG window is 49,920 steps: its loader is tested in test_tasks.py


def train_suites():
    return [n for n, p in suite_paths().items() if load_suite(n).kind == "train"]


@pytest.mark.parametrize("name", train_suites())
def test_suite_runs_at_tiny_size(name, tmp_path, monkeypatch, capsys):
    suite = load_suite(name, [s for s in TINY if not s.startswith("tasks.decay") or "decay" in load_suite(name).tasks])
    assert expand(suite)  # every model it names is registered
    if name in NEEDS_FILES_TOO_BIG:
        run_suite(name, models=["attention"], sets=TINY[:-1], dry_run=True)
        assert "ppg attention seed=0" in capsys.readouterr().out
        return
    monkeypatch.setenv("DLBENCH_CACHE", str(tmp_path / "cache"))
    for archive in UEA_DATASETS.values():
        make_uea(tmp_path / "data", archive, 14, 8, duplicates=1, length=9)
    write_wth(tmp_path / "data" / "weather" / "WTH.csv", n=260)
    sets = [s for s in TINY if not s.startswith("tasks.decay") or "decay" in suite.tasks]
    if "weather" in suite.tasks:  # the 720 -> 720 setting needs years of rows; the generated file is short
        sets += ["tasks.weather.input_len=24", "tasks.weather.pred_len=12"]
    models = ["attention"] if "all" in suite.include else None  # the fastest model; decay names its own
    out = run_suite(name, models=models, sets=sets, data_dir=tmp_path / "data", out=tmp_path / "out")
    frame = pd.read_csv(out / "rows.csv", keep_default_na=False, na_values=[""])
    finals = frame[frame.metric.isin(["test_accuracy", "test_rmse"])]
    assert len(finals) == len(suite.tasks) * len({r.model for r in expand(suite, models)})
    assert set(frame.status) == {"ok"}


def test_list_suites_names_every_file():
    listed = {s["name"]: s for s in list_suites()}
    assert set(listed) == set(suite_paths())
    assert listed["smoke"]["tasks"] == "basicmotions" and listed["smoke"]["kind"] == "train"
    assert "dlinoss" in listed["decay"]["models"]
