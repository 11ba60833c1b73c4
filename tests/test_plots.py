"""Plots: the files exist, have a sensible size, and their axes are labelled with units."""

import pytest

from dlbench import report
from dlbench.cli import main
from dlbench.rundir import RowWriter, read_rows


@pytest.fixture(scope="module")
def scan_rows(tmp_path_factory):
    path = tmp_path_factory.mktemp("plots") / "scan.csv"
    w = RowWriter(path, defaults={"run_id": "p", "task": "scan", "target": "layer", "batch": 1, "hidden": 16,
                                  "state": 8, "dtype": "float32"})  # fmt: skip
    for mode in ("fwd", "fwdbwd"):
        for model, backend, cost in (("dlinoss", "chunked", 1.0), ("dlinoss", "associative", 2.0), ("attention", "auto", 0.5)):
            for length in (1024, 4096, 16384):
                cell = {"model": model, "backend": backend, "seq_len": length, "mode": mode}
                if model == "attention" and length == 16384:
                    w.write({**cell, "metric": "wall_s", "status": "oom", "reason": "out of memory"})
                    continue
                seconds = cost * 1e-6 * length * (length / 1024 if model == "attention" else 1)
                for i in range(3):
                    w.write({**cell, "metric": "wall_s", "value": seconds * (1 + 0.01 * i), "unit": "s", "index": i})
                w.write({**cell, "metric": "peak_bytes", "value": 4e3 * length * cost, "unit": "bytes", "source": "rss"})
                w.write({**cell, "metric": "peak_bytes", "value": 3e3 * length * cost, "unit": "bytes",
                         "source": "memory_analysis"})  # fmt: skip
    return path


@pytest.fixture(scope="module")
def train_rows(tmp_path_factory):
    path = tmp_path_factory.mktemp("plots") / "train.csv"
    w = RowWriter(path, defaults={"run_id": "t", "suite": "smoke", "task": "BasicMotions"})
    for model in ("dlinoss", "s5"):
        for seed in (0, 1):
            for step in range(0, 100, 10):
                w.write({"model": model, "seed": seed, "metric": "train_loss", "value": 1 / (1 + step + seed),
                         "unit": "nats", "index": step})  # fmt: skip
                w.write({"model": model, "seed": seed, "metric": "val_accuracy", "value": step / 100, "unit": "fraction",
                         "index": step})  # fmt: skip
    return path


def _labels(figure):
    return [(ax.get_xlabel(), ax.get_ylabel(), ax.get_xscale(), ax.get_yscale()) for ax in figure.axes if ax.get_visible()]


def test_plot_throughput_public_function(scan_rows, tmp_path):
    out = tmp_path / "throughput.png"
    figure = report.plot_throughput(read_rows([scan_rows]), out)
    assert out.stat().st_size > 20_000
    assert _labels(figure) == [("sequence length (tokens)", "throughput (tokens/s)", "log", "log")] * 2  # fwd, fwdbwd
    ax = figure.axes[0]
    legend = [t.get_text() for t in ax.get_legend().get_texts()]
    assert {"attention auto", "dlinoss associative", "dlinoss chunked", "oom (cell failed)"} <= set(legend)
    assert ax.get_title().endswith("fwd")


def test_plot_memory(scan_rows, tmp_path):
    out = tmp_path / "memory.png"
    figure = report.plot_memory(read_rows([scan_rows]), out)
    assert out.stat().st_size > 20_000
    assert _labels(figure)[0] == ("sequence length (tokens)", "peak memory (MiB)", "log", "log")
    legend = [t.get_text() for t in figure.axes[0].get_legend().get_texts()]
    assert "dlinoss chunked rss" in legend and "dlinoss chunked memory_analysis" in legend


def test_plot_training(train_rows, tmp_path):
    out = tmp_path / "training.png"
    figure = report.plot_training(read_rows([train_rows]), out)
    assert out.stat().st_size > 20_000
    labels = _labels(figure)
    assert ("training step", "train loss (nats)", "linear", "log") in labels  # the rows' unit (vocabulary)
    assert ("training step", "val accuracy (fraction)", "linear", "linear") in labels


def test_plot_cli_default_path_and_errors(scan_rows, train_rows, capsys):
    assert main(["plot", str(scan_rows)]) == 0  # auto: profile rows -> throughput
    png = scan_rows.with_name("scan-throughput.png")
    assert png.exists() and png.stat().st_size > 20_000
    assert str(png) in capsys.readouterr().out
    assert main(["plot", str(train_rows), "--kind", "memory"]) == 2
    assert "no peak_bytes rows" in capsys.readouterr().err
    assert main(["plot", str(train_rows), "--kind", "bars"]) == 2
    assert "unknown plot kind 'bars'" in capsys.readouterr().err
