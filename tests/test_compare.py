"""`dlbench compare`: matched cells, ratio of medians with a CI, Mann-Whitney U, the CI gate."""

import numpy as np
import pytest

from dlbench import report
from dlbench.cli import main
from dlbench.rundir import RowWriter


def write_scan(path, slow_cells=(), factor=1.0, oom_cells=()):
    """Fake profile rows: 7 repeats per cell; ``slow_cells`` are slowed by ``factor``."""
    w = RowWriter(path, defaults={"run_id": "p", "task": "scan", "target": "layer", "batch": 1, "hidden": 16,
                                  "state": 8, "mode": "fwd", "dtype": "float32"})  # fmt: skip
    for backend in ("associative", "chunked"):
        for length in (1024, 4096):
            cell = {"model": "dlinoss", "backend": backend, "seq_len": length}
            if (backend, length) in oom_cells:
                w.write({**cell, "metric": "wall_s", "status": "oom", "reason": "out of memory"})
                continue
            scale = factor if (backend, length) in slow_cells else 1.0
            for i in range(7):
                w.write({**cell, "metric": "wall_s", "value": 1e-6 * length * scale * (1 + 0.002 * i), "unit": "s",
                         "index": i})  # fmt: skip
            w.write({**cell, "metric": "compile_s", "value": 0.5 * scale, "unit": "s"})
    return path


def test_self_compare_passes(tmp_path, capsys):
    run = write_scan(tmp_path / "a.csv")
    assert main(["compare", str(run), str(run), "--fail-if", "median:5%"]) == 0
    out = capsys.readouterr().out
    assert "n.s." in out and "FAIL" not in out


def test_slowed_run_fails_and_names_cells(tmp_path, capsys):
    base = write_scan(tmp_path / "base.csv")
    new = write_scan(tmp_path / "new.csv", slow_cells={("chunked", 4096)}, factor=1.2)
    assert main(["compare", str(base), str(new), "--fail-if", "median:5%"]) == 1
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1
    assert "gate median:5% failed for 2 cell(s)" in err
    assert "dlinoss chunked L=4096 wall_s (worse" in err
    # compile_s is 1.2x slower too; one sample a side cannot be tested, so the point estimate decides.
    assert "dlinoss chunked L=4096 compile_s (not testable with n=1; ratio 1.2x)" in err
    assert main(["compare", str(base), str(new), "--fail-if", "median:5%", "--metric", "wall_s"]) == 1
    assert "failed for 1 cell(s)" in capsys.readouterr().err


def test_small_slowdown_under_threshold_passes(tmp_path, capsys):
    base = write_scan(tmp_path / "base.csv")
    new = write_scan(tmp_path / "new.csv", slow_cells={("chunked", 4096)}, factor=1.03)
    assert main(["compare", str(base), str(new), "--fail-if", "median:5%"]) == 0
    assert main(["compare", str(base), str(new), "--fail-if", "median:1%"]) == 1


def test_faster_run_and_new_oom(tmp_path, capsys):
    base = write_scan(tmp_path / "base.csv")
    faster = write_scan(tmp_path / "fast.csv", slow_cells={("chunked", 1024)}, factor=0.5)
    assert main(["compare", str(base), str(faster), "--fail-if", "median:5%"]) == 0
    assert "better" in capsys.readouterr().out
    oom = write_scan(tmp_path / "oom.csv", oom_cells={("associative", 4096)})
    assert main(["compare", str(base), str(oom), "--fail-if", "median:5%"]) == 1
    assert "dlinoss associative L=4096 wall_s (now oom" in capsys.readouterr().err


def write_training(path, accuracies):
    w = RowWriter(path, defaults={"run_id": "t", "suite": "smoke", "task": "BasicMotions", "model": "dlinoss"})
    for seed, acc in enumerate(accuracies):
        w.write({"seed": seed, "metric": "val_accuracy", "value": 0.1, "unit": "fraction", "index": 0})
        w.write({"seed": seed, "metric": "test_accuracy", "value": acc, "unit": "fraction"})
        w.write({"seed": seed, "metric": "param_count", "value": 1000, "unit": "count"})
    return path


def test_training_metrics_compare_per_seed(tmp_path):
    base = write_training(tmp_path / "a.csv", [0.95, 0.96, 0.97, 0.98, 0.99, 0.975])
    worse = write_training(tmp_path / "b.csv", [0.70, 0.71, 0.72, 0.73, 0.74, 0.725])
    result, unmatched = _compare(base, worse)
    row = result.set_index("metric").loc["test_accuracy"]
    assert row["n_base"] == 6 and row["n_new"] == 6  # one sample per seed
    assert row["verdict"] == "worse" and row["gate_failed"]
    assert result.set_index("metric").loc["param_count", "verdict"] == "same"
    assert unmatched == {"only_base": 0, "only_new": 0}


def _compare(base, new):
    from dlbench.rundir import read_rows

    return report.compare(read_rows([base]), read_rows([new]), gate=report.Gate.parse("median:5%"))


@pytest.mark.parametrize("gate", ["mode:5%", "median:five", "median:-1%"])
def test_bad_gate_is_one_line_exit_2(tmp_path, capsys, gate):
    run = write_scan(tmp_path / "a.csv")
    assert main(["compare", str(run), str(run), "--fail-if", gate]) == 2
    assert len(capsys.readouterr().err.strip().splitlines()) == 1


def test_no_common_cells(tmp_path, capsys):
    scan = write_scan(tmp_path / "a.csv")
    train = write_training(tmp_path / "b.csv", [0.9])
    assert main(["compare", str(scan), str(train)]) == 2
    assert "no cells in common" in capsys.readouterr().err


def test_p_value_is_scipys_mann_whitney():
    stats = pytest.importorskip("scipy.stats")
    rng = np.random.default_rng(3)
    for x, y in [(rng.normal(size=5), rng.normal(1, size=7)), (np.array([1, 1, 2, 3.0]), np.array([2, 3, 4, 4, 5.0]))]:
        expected = stats.mannwhitneyu(y, x, alternative="two-sided").pvalue
        assert report.significance(x, y) == pytest.approx(expected, rel=1e-12)


def test_smallest_p_value_decides_testability():
    from dlbench.report.compare import smallest_p_value, testable

    assert smallest_p_value(2, 2) == pytest.approx(1 / 3)  # 2 / C(4, 2)
    assert not testable(2, 2, 0.05) and not testable(3, 3, 0.05) and testable(4, 4, 0.05)  # 2/70 < 0.05
    assert not testable(5, 5, 0.005) and testable(5, 5, 0.01)  # 2/252 = 0.0079
    # The bound is what scipy's exact test really reaches on perfectly separated samples.
    stats = pytest.importorskip("scipy.stats")
    assert stats.mannwhitneyu([3.0, 4.0], [1.0, 2.0]).pvalue == pytest.approx(smallest_p_value(2, 2))


def test_accuracy_drop_with_two_seeds_a_side_fails_the_gate(tmp_path, capsys):
    # S5 dropping from 96% to 42% with 2 seeds a side: Mann-Whitney's smallest p is 0.33, so no test
    # can say "significant"; the gate fails on the point estimate and says why.
    w = lambda path, accs: write_training(path, accs)  # noqa: E731
    base = w(tmp_path / "base.csv", [0.95, 0.97])
    new = w(tmp_path / "new.csv", [0.41, 0.43])
    for path in (base, new):  # the model under test is S5
        path.write_text(path.read_text().replace("dlinoss", "s5"))
    assert main(["compare", str(base), str(new), "--fail-if", "median:5%", "--metric", "test_accuracy"]) == 1
    err = capsys.readouterr().err
    assert "s5 test_accuracy (not testable with n=2; ratio 0.438x)" in err, err
    # Unchanged: passes, and still says the test could not be made.
    assert main(["compare", str(base), str(base), "--fail-if", "median:5%"]) == 0
    assert "not testable with n=2" in capsys.readouterr().out


def write_sweep(path, factor=1.0, repeats=2):
    w = RowWriter(path, defaults={"run_id": "p", "task": "scan", "target": "layer", "batch": 1, "hidden": 16,
                                  "state": 8, "mode": "fwd", "dtype": "float32", "model": "s5", "backend": "auto"})  # fmt: skip
    for length in (512, 1024):
        for i in range(repeats):
            w.write({"seq_len": length, "metric": "wall_s", "value": factor * 1e-6 * length * (1 + 0.01 * i),
                     "unit": "s", "index": i})  # fmt: skip
    return path


def test_eight_times_slower_sweep_with_two_repeats_fails_and_unchanged_passes(tmp_path, capsys):
    base = write_sweep(tmp_path / "base.csv")
    slow = write_sweep(tmp_path / "slow.csv", factor=8.0)
    assert main(["compare", str(base), str(slow), "--fail-if", "median:5%"]) == 1
    err = capsys.readouterr().err
    assert "failed for 2 cell(s)" in err and "not testable with n=2; ratio 8x" in err, err
    same = write_sweep(tmp_path / "same.csv", factor=1.01)  # 1% slower: within the 5% threshold
    assert main(["compare", str(base), str(same), "--fail-if", "median:5%"]) == 0
    # With enough repeats the test decides: an unchanged sweep is n.s., not a point-estimate verdict.
    base7, same7 = write_sweep(tmp_path / "b7.csv", repeats=7), write_sweep(tmp_path / "s7.csv", repeats=7)
    assert main(["compare", str(base7), str(same7), "--fail-if", "median:0%"]) == 0
    assert "n.s." in capsys.readouterr().out


def test_bootstrap_ci_brackets_ratio():
    base = np.array([1.0, 1.01, 0.99, 1.02, 0.98])
    low, high = report.bootstrap_ratio_ci(base, 1.5 * base)
    assert low <= 1.5 <= high and high - low < 0.1


def test_a_cell_that_now_fails_the_way_a_sweep_records_it_fails_the_gate(tmp_path, capsys):
    # A real sweep records a failed cell as one cell_s row with the status, no wall_s rows at all.
    def sweep(path, timed_out=()):
        w = RowWriter(path, defaults={"run_id": "p", "task": "scan", "target": "layer", "batch": 1, "hidden": 16,
                                      "state": 8, "mode": "fwd", "dtype": "float32", "model": "s5", "backend": "auto"})  # fmt: skip
        for length in (512, 1024):
            if length in timed_out:
                w.write({"seq_len": length, "metric": "cell_s", "value": 9.0, "unit": "s", "status": "timeout",
                         "reason": "cell exceeded --timeout"})  # fmt: skip
                continue
            for i in range(5):
                w.write({"seq_len": length, "metric": "wall_s", "value": 1e-3 * length * (1 + 0.01 * i), "unit": "s", "index": i})
            w.write({"seq_len": length, "metric": "cell_s", "value": 2.0, "unit": "s"})
        return path

    base, new = sweep(tmp_path / "base.csv"), sweep(tmp_path / "new.csv", timed_out=(1024,))
    assert main(["compare", str(base), str(new), "--fail-if", "median:5%"]) == 1
    err = capsys.readouterr().err
    assert "s5 L=1024 wall_s (now timeout" in err and "L=512" not in err, err
    # Without a gate it is reported, not fatal; the other direction (it used to fail) never fails.
    assert main(["compare", str(base), str(new)]) == 0
    out = capsys.readouterr().out  # the table may wrap the verdict over two lines
    assert "now" in out and "timeout" in out
    assert main(["compare", str(new), str(base), "--fail-if", "median:5%"]) == 0
    out = capsys.readouterr().out
    assert "was" in out and "timeout" in out
