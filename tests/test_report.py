"""Leaderboards, `dlbench show`, the column dictionary and the reader's errors, on fake rows."""

import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from dlbench import report
from dlbench.cli import main
from dlbench.rundir import COLUMNS, RowWriter, read_rows

README = Path(__file__).resolve().parents[1] / "results" / "README.md"
# Hand-picked seeds' test accuracies (fractions) and step times: the leaderboard must reproduce
# the hand computation below.
ACCURACY = {"dlinoss": (0.90, 0.95, 1.00), "s5": (0.80, 0.85, 0.93)}
STEP_TIMES = (0.010, 0.012, 0.030)  # per seed, three steps each -> median over all nine = 0.012


def write_training(path):
    w = RowWriter(path, defaults={"run_id": "t1", "suite": "smoke", "task": "EigenWorms"})
    for model, accs in ACCURACY.items():
        for seed, acc in enumerate(accs):
            c = {"model": model, "seed": seed}
            for step, t in enumerate(STEP_TIMES):
                w.write({**c, "metric": "step_time_s", "value": t, "unit": "s", "index": step})
                w.write({**c, "metric": "train_loss", "value": 1.0 / (step + 1), "unit": "nats", "index": step})
            w.write({**c, "metric": "param_count", "value": 4356, "unit": "count"})
            w.write({**c, "metric": "test_accuracy", "value": acc, "unit": "fraction"})
    # A third model whose only seed diverged: listed, ranked last, counted as failed.
    w.write({"model": "lru", "seed": 0, "metric": "train_loss", "status": "nan", "reason": "loss is nan", "unit": "nats"})
    return path


def write_profile(path, slow=1.0, repeats=5):
    w = RowWriter(
        path, defaults={"run_id": "p1", "task": "scan", "target": "layer", "batch": 2, "hidden": 16, "state": 8,
                        "mode": "fwd", "dtype": "float32"}  # fmt: skip
    )
    for backend, seconds in (("associative", 0.004), ("chunked", 0.001)):
        for length in (1024, 4096):
            cell = {"model": "dlinoss", "backend": backend, "seq_len": length}
            for i in range(repeats):
                w.write({**cell, "metric": "wall_s", "value": seconds * length / 1024 * slow * (1 + 0.01 * i),
                         "unit": "s", "index": i})  # fmt: skip
            w.write({**cell, "metric": "peak_bytes", "value": 1000.0 * length, "unit": "bytes", "source": "rss"})
    w.write({"model": "attention", "backend": "auto", "seq_len": 4096, "metric": "wall_s", "status": "oom",
             "reason": "RESOURCE_EXHAUSTED: out of memory"})  # fmt: skip
    return path


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("runs")
    return {"train": write_training(root / "train.csv"), "scan": write_profile(root / "scan.csv")}


def test_training_leaderboard_matches_hand_computation(runs, tmp_path, capsys):
    out = tmp_path / "board.csv"
    assert main(["export", "leaderboard", str(runs["train"]), "--out", str(out)]) == 0
    board = pd.read_csv(out)
    assert tuple(board.columns) == report.TRAINING_COLUMNS
    dl = board.set_index("model").loc["dlinoss"]
    # mean of 90, 95, 100 = 95; population std = sqrt((25 + 0 + 25) / 3)
    assert dl["mean"] == pytest.approx(95.0)
    assert dl["std"] == pytest.approx(np.sqrt(50 / 3))
    assert dl["seeds"] == 3 and dl["rank"] == 1 and dl["params"] == 4356
    assert dl["time_per_1k_steps_s"] == pytest.approx(12.0)
    assert dl["unit"] == "%"
    # docs/models.md section 7: D-LinOSS on EigenWorms 93.9 +- 3.2 -> delta +1.1
    assert (dl["published_mean"], dl["published_std"]) == (93.9, 3.2)
    assert dl["delta"] == pytest.approx(1.1)
    s5 = board.set_index("model").loc["s5"]
    assert s5["rank"] == 2 and s5["mean"] == pytest.approx(86.0) and s5["published_mean"] == 81.1
    lru = board.set_index("model").loc["lru"]
    assert lru["rank"] == 3 and lru["seeds"] == 0 and lru["failed"] == 1


def test_markdown_leaderboard_is_a_table(runs, capsys):
    assert main(["export", "leaderboard", str(runs["train"]), "--format", "md"]) == 0
    text = capsys.readouterr().out
    lines = [line for line in text.splitlines() if line.startswith("|")]
    assert re.fullmatch(r"\|(---\|)+", lines[1])  # header separator right under the header
    assert len({line.count("|") for line in lines}) == 1  # every row has the same number of cells
    assert "| 1 | dlinoss | 95.0 ± 4.1 | 3 | 93.9 ± 3.2 | +1.1 |" in text
    assert "### EigenWorms" in text


def test_latex_leaderboard(runs, capsys):
    assert main(["export", "leaderboard", str(runs["train"]), "--format", "latex"]) == 0
    text = capsys.readouterr().out
    assert r"\begin{tabular}" in text and r"95.0 $\pm$ 4.1" in text and r"test\_accuracy" in text


def test_throughput_leaderboard_marks_fastest(runs, tmp_path):
    out = tmp_path / "scan.csv"
    assert main(["export", "leaderboard", str(runs["scan"]), "--format", "csv", "--out", str(out)]) == 0
    board = pd.read_csv(out)
    assert tuple(board.columns) == report.THROUGHPUT_COLUMNS
    row = board[(board.backend == "chunked") & (board.seq_len == 4096)].iloc[0]
    # 5 repeats of 0.004 * (1, 1.01, ..., 1.04) s: median 0.00408 s for 2 x 4096 tokens.
    assert row["tokens_per_s"] == pytest.approx(2 * 4096 / (0.004 * 1.02))
    assert bool(row["fastest"]) and row["relative_to_fastest"] == 1.0
    slow = board[(board.backend == "associative") & (board.seq_len == 4096)].iloc[0]
    assert not bool(slow["fastest"]) and slow["relative_to_fastest"] == pytest.approx(0.25)
    oom = board[board.model == "attention"].iloc[0]
    assert oom["status"] == "oom" and np.isnan(oom["tokens_per_s"])


def test_markdown_throughput_bolds_fastest(runs):
    text = report.export_leaderboard(read_rows([runs["scan"]]), "md")
    assert "**2,007,843**" in text  # chunked at 1024: 2*1024 / (0.001*1.02)
    assert "| 1,024 | dlinoss | associative | 501,961 |" in text


def test_csv_with_both_kinds_needs_kind(runs, capsys):
    assert main(["export", "leaderboard", str(runs["train"]), str(runs["scan"]), "--format", "csv"]) == 2
    assert "pick one with --kind" in capsys.readouterr().err
    assert main(["export", "leaderboard", str(runs["train"]), str(runs["scan"]), "--format", "csv",
                 "--kind", "throughput"]) == 0  # fmt: skip


def test_published_aliases():
    reference, entry = report.published("ppg", "dlinoss", "test_mse")
    assert reference.scale == 100 and entry == (6.16, 0.73)
    assert report.published("decay", "linoss-im", "test_rmse")[1] == (8.0, None)
    assert report.published("EigenWorms", "dlinoss", "test_mse") == (None, None)  # other metric
    assert set(report.PUBLISHED) == {*report._UEA_DATASETS, "PPG-DaLiA", "decay", "weather"}
    assert report.published("weather", "dlinoss", "test_mae")[1] == (0.486, None)


def test_show_summarises_and_warns(tmp_path, capsys):
    path = write_profile(tmp_path / "scan.csv", repeats=8)
    w = RowWriter(path, defaults={"run_id": "p1", "task": "scan", "target": "layer", "batch": 2, "hidden": 16,
                                  "state": 8, "mode": "fwd", "dtype": "float32"})  # fmt: skip
    # A cell with a slow first repeat and a far outlier.
    for i, t in enumerate([0.05, 0.010, 0.0101, 0.0102, 0.0099, 0.0100, 0.0101, 0.50]):
        w.write({"model": "s5", "backend": "chunked", "seq_len": 1024, "metric": "wall_s", "value": t, "unit": "s",
                 "index": i})  # fmt: skip
    assert main(["show", str(path)]) == 0
    out = " ".join(capsys.readouterr().out.split())
    assert "scan layer fwd float32 B=2 H=16 P=8" in out
    assert "outlier(s) beyond 3 IQR" in out
    assert "slow first run" in out
    assert "oom: RESOURCE_EXHAUSTED" in out


def test_readme_documents_every_column():
    text = README.read_text()
    documented = set(re.findall(r"^\| `([a-z_0-9]+)`", text, flags=re.M))
    documented |= {name for row in re.findall(r"^\| (`[^|]+`(?:, `[^|]+`)+) \|", text, flags=re.M)
                   for name in re.findall(r"`([a-z_0-9]+)`", row)}  # fmt: skip
    for columns in (COLUMNS, report.TRAINING_COLUMNS, report.THROUGHPUT_COLUMNS):
        assert set(columns) <= documented, set(columns) - documented


@pytest.mark.parametrize(
    "content, fragment",
    [
        ("a,b\n1,2\n", "missing columns: model, metric, value, unit, status"),
        ("model,metric,value\nx,wall_s,1\n", "missing columns: unit, status"),
    ],
)
@pytest.mark.parametrize("command", [["show"], ["plot"], ["export", "leaderboard"]])
def test_foreign_csv_is_one_line_error(tmp_path, capsys, content, fragment, command):
    path = tmp_path / "foreign.csv"
    path.write_text(content)
    assert main([*command, str(path)]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1
    assert str(path) in err and fragment in err


def test_bad_format_and_missing_file(runs, tmp_path, capsys):
    assert main(["export", "leaderboard", str(runs["train"]), "--format", "xlsx"]) == 2
    assert "unknown format 'xlsx'; valid choices: csv, md, latex" in capsys.readouterr().err
    assert main(["show", str(tmp_path / "nope.csv")]) == 2
    assert "no such file or directory" in capsys.readouterr().err


def test_format_value_units():
    assert report.format_value(0.0021, "s") == "2.1 ms"
    assert report.format_value(3 * 2**20, "bytes") == "3 MiB"
    assert report.format_value(float("nan"), "s") == "-"
    # Never "1.02e+03 MiB": a value that rounds to 1000 of a unit is written in the next one.
    assert report.format_value(1020 * 2**20, "bytes") == "0.996 GiB"
    assert report.format_value(989 * 2**20, "bytes") == "989 MiB"
    assert report.format_value(0.9997, "s") == "1 s" and report.format_value(0.9994, "s") == "999 ms"
    assert report.format_value(3 * 2**40, "bytes") == "3 TiB" and report.format_value(12, "bytes") == "12 B"
