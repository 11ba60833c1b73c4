"""profile scan: failures are rows and the sweep goes on; resume; the CLI's errors."""

import pytest

from dlbench.cli import main
from dlbench.profile import ScanSweep, run_sweep
from dlbench.rundir import read_rows


def cell_status(rows):
    done = rows[rows.metric == "cell_s"]
    return {(r.mode, int(r.seq_len)): r.status for r in done.itertuples()}


def small(**overrides):
    base = dict(models=("attention",), hidden=16, state=16, repeats=2, min_time=0.0, bandwidth=False)
    return ScanSweep(**{**base, **overrides})


def test_out_of_memory_cell_is_recorded_and_the_sweep_continues(tmp_path):
    # A 2.5 GiB address-space limit per cell: L=64 fits, L=16384 attention cannot allocate its scores.
    sweep = small(lengths=(64, 16384, 32768), modes=("fwd", "fwdbwd"), memory_limit_gb=2.5, isolate=True)
    rows = read_rows([run_sweep(sweep, tmp_path, plot=False)])
    status = cell_status(rows)
    for mode in ("fwd", "fwdbwd"):
        assert status[(mode, 64)] == "ok"
        assert status[(mode, 16384)] == "oom"
        assert status[(mode, 32768)] == "skipped"
    ok = rows[(rows.seq_len == 64) & (rows["mode"] == "fwd")]
    assert len(ok[ok.metric == "wall_s"]) == 2
    assert set(ok.metric) >= {"lower_s", "compile_s", "first_call_s", "wall_s", "peak_bytes", "min_bytes_per_token", "cell_s"}
    skipped = rows[(rows.metric == "cell_s") & (rows.status == "skipped")]
    assert skipped.reason.str.contains("oom at seq_len 16384").all()


def test_timeout_is_recorded_and_longer_lengths_are_skipped(tmp_path):
    # No isolated cell can even import JAX in 0.2 s: the first cell must time out and be killed.
    sweep = small(lengths=(64, 128), modes=("fwd",), timeout=0.2, isolate=True)
    rows = read_rows([run_sweep(sweep, tmp_path, plot=False)])
    assert cell_status(rows) == {("fwd", 64): "timeout", ("fwd", 128): "skipped"}


def test_backend_a_model_lacks_is_not_applicable(tmp_path):
    sweep = small(lengths=(32,), modes=("fwd",), backends=("associative", "auto"), isolate=False)
    rows = read_rows([run_sweep(sweep, tmp_path, plot=False)])
    done = rows[rows.metric == "cell_s"].set_index("backend")
    assert done.loc["associative", "status"] == "n/a"
    assert "valid choices" in done.loc["associative", "reason"]
    assert done.loc["auto", "status"] == "ok"


@pytest.mark.parametrize("model", ["dlinoss", "mamba"])
def test_ssm_cells_succeed_in_both_modes_with_every_row(tmp_path, model):
    sweep = small(models=(model,), lengths=(40,), backends=("auto", "associative"), bandwidth=True, isolate=False)
    rows = read_rows([run_sweep(sweep, tmp_path, plot=False)])
    done = rows[rows.metric == "cell_s"]
    assert list(done.status) == ["ok"] * 4, done.reason.tolist()
    per_cell = rows[rows.task == "scan"].groupby(["backend", "mode"]).metric.agg(set)
    for metrics in per_cell:
        assert metrics >= {"compile_s", "wall_s", "peak_bytes", "min_bytes_per_token", "bandwidth_fraction"}
    assert (rows[rows.metric == "bandwidth_fraction"].value > 0).all()


def test_resume_skips_measured_cells(tmp_path):
    first = small(lengths=(16, 32), modes=("fwd",), isolate=False)
    run_sweep(first, tmp_path, plot=False)
    with pytest.raises(Exception, match="--resume"):
        run_sweep(first, tmp_path, plot=False)
    more = small(lengths=(16, 32, 48), modes=("fwd",), isolate=False)
    with pytest.raises(Exception, match=r"settings differ.*lengths: \[16, 32\] in .*, \[16, 32, 48\] now"):
        run_sweep(more, tmp_path, resume=True, plot=False)  # a resume continues the saved sweep, never another
    # A cell that never ended (its cell_s row missing: the writer was killed) is measured again.
    lines = (tmp_path / "rows.csv").read_text().splitlines(keepends=True)
    (tmp_path / "rows.csv").write_text("".join(lines[:-1]))
    rows = read_rows([run_sweep(first, tmp_path, resume=True, plot=False)])
    done = rows[rows.metric == "cell_s"]
    assert sorted(done.seq_len.astype(int)) == [16, 32]
    assert rows.run_id.nunique() == 1 and len(rows[(rows.metric == "wall_s") & (rows.seq_len == 32)]) == first.repeats


@pytest.mark.parametrize(
    "argv, fragment",
    [
        (["profile", "scan", "--models", "dlinoss,nope"], "unknown model 'nope'"),
        (["profile", "scan", "--mode", "sideways"], "unknown mode 'sideways'; valid choices: fwd, fwdbwd"),
        (["profile", "scan", "--lengths", "1024,lots"], "--lengths takes comma-separated integers"),
        (["profile", "scan", "--dtype", "float16"], "unknown dtype 'float16'"),
    ],
)
def test_bad_sweep_options_are_one_line_errors(capsys, argv, fragment):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert fragment in err and len(err.strip().splitlines()) == 1


def test_a_sweep_with_nothing_to_plot_still_finishes(tmp_path, capsys):
    sweep = small(lengths=(32,), modes=("fwd",), backends=("associative",), isolate=False)
    rows = read_rows([run_sweep(sweep, tmp_path)])
    assert list(rows[rows.metric == "cell_s"].status) == ["n/a"]
    assert "no plot: no successful cells to plot" in capsys.readouterr().out
    assert not (tmp_path / "throughput.png").exists()


def test_unknown_backend_and_plot_type_are_one_line_errors(error_line, tmp_path):
    assert "unknown backend 'nosuch'; valid choices: associative" in error_line(["profile", "scan", "--backends", "nosuch"])
    assert "unknown plot file type '.txt'" in error_line(["plot", str(tmp_path), "--out", str(tmp_path / "p.txt")])


def test_ctrl_c_keeps_every_finished_row(tmp_path):
    import signal
    import subprocess
    import sys
    import time

    # A job started in the background by a non-interactive shell inherits SIGINT ignored, and Python
    # then installs no KeyboardInterrupt handler: restore the terminal's default, where Ctrl-C comes from.
    entry = "import signal; signal.signal(signal.SIGINT, signal.default_int_handler); from dlbench.cli import run; run()"
    command = [sys.executable, "-c", entry, "profile", "scan", "--models", "attention",
               "--lengths", "16,32,64,128,256,512", "--hidden", "8", "--state", "8", "--mode", "fwd", "--repeats", "2",
               "--min-time", "0.5", "--out", str(tmp_path)]  # fmt: skip
    proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    rows_file = tmp_path / "rows.csv"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and not (rows_file.exists() and "cell_s" in rows_file.read_text()):
        time.sleep(0.2)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130 and "dlbench: interrupted" in err and "Traceback" not in err
    rows = read_rows([rows_file])
    finished = rows[rows.metric == "cell_s"]
    assert 1 <= len(finished) < 6 and set(finished.status) == {"ok"}
    assert len(rows[(rows.metric == "wall_s") & (rows.seq_len == 16)]) >= 2
