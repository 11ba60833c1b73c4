"""profile scan: failures are rows and the sweep goes on; resume; the CLI's errors."""

import json

import pytest

from dlbench.cli import main
from dlbench.profile import ScanSweep, run_sweep
from dlbench.rundir import read_rows


def cell_status(rows):
    done = rows[rows.metric == "cell_s"]
    return {(r.mode, int(r.seq_len)): r.status for r in done.itertuples()}


def small(**overrides):
    base = dict(models=("attention",), hidden=16, state=16, repeats=2, min_time=0.0, bandwidth=False, rounds=1, max_rounds=1)
    return ScanSweep(**{**base, **overrides})


def test_out_of_memory_cell_is_recorded_and_the_sweep_continues(tmp_path):
    # A 2.5 GiB address-space limit per cell: L=64 fits, L=16384 attention cannot allocate its scores.
    sweep = small(lengths=(64, 16384, 32768), modes=("fwd", "fwdbwd"), memory_limit_gb=2.5, isolate=True)
    rows = read_rows([run_sweep(sweep, tmp_path)])
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
    with pytest.raises(Exception, match="every cell failed"):
        run_sweep(sweep, tmp_path)
    rows = read_rows([tmp_path / "rows.csv"])
    assert cell_status(rows) == {("fwd", 64): "timeout", ("fwd", 128): "skipped"}


def test_backend_a_model_lacks_is_not_applicable(tmp_path):
    sweep = small(lengths=(32,), modes=("fwd",), backends=("associative", "auto"), isolate=False)
    rows = read_rows([run_sweep(sweep, tmp_path)])
    done = rows[rows.metric == "cell_s"].set_index("backend")
    assert done.loc["associative", "status"] == "n/a"
    assert "valid choices" in done.loc["associative", "reason"]
    assert done.loc["auto", "status"] == "ok"


@pytest.mark.parametrize("model", ["dlinoss", "mamba"])
def test_ssm_cells_succeed_in_both_modes_with_every_row(tmp_path, model):
    sweep = small(models=(model,), lengths=(40,), backends=("auto", "associative"), bandwidth=True, isolate=False)
    rows = read_rows([run_sweep(sweep, tmp_path)])
    done = rows[rows.metric == "cell_s"]
    assert list(done.status) == ["ok"] * 4, done.reason.tolist()
    per_cell = rows[rows.task == "scan"].groupby(["backend", "mode"]).metric.agg(set)
    for metrics in per_cell:
        assert metrics >= {"compile_s", "wall_s", "peak_bytes", "min_bytes_per_token", "bandwidth_fraction"}
    assert (rows[rows.metric == "bandwidth_fraction"].value > 0).all()


def test_resume_skips_measured_cells(tmp_path):
    first = small(lengths=(16, 32), modes=("fwd",), isolate=False)
    run_sweep(first, tmp_path)
    with pytest.raises(Exception, match="--resume"):
        run_sweep(first, tmp_path)
    more = small(lengths=(16, 32, 48), modes=("fwd",), isolate=False)
    with pytest.raises(Exception, match=r"settings differ.*lengths: \[16, 32\] in .*, \[16, 32, 48\] now"):
        run_sweep(more, tmp_path, resume=True)  # a resume continues the saved sweep, never another
    # A cell that never ended (its cell_s row missing: the writer was killed) is measured again.
    lines = (tmp_path / "rows.csv").read_text().splitlines(keepends=True)
    (tmp_path / "rows.csv").write_text("".join(lines[:-1]))
    rows = read_rows([run_sweep(first, tmp_path, resume=True)])
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
    # Attention has no associative scan: the one cell is n/a, and the CLI's plot says why there is none.
    argv = ["profile", "scan", "--models", "attention", "--backends", "associative", "--lengths", "32", "--mode", "fwd",
            "--hidden", "16", "--state", "16", "--no-isolate", "--no-bandwidth", "--rounds", "1", "--max-rounds", "1",
            "--out", str(tmp_path)]
    main(argv)
    rows = read_rows([tmp_path])
    assert list(rows[rows.metric == "cell_s"].status) == ["n/a"]
    assert "no plot: no successful cells to plot" in capsys.readouterr().out
    assert not (tmp_path / "throughput.png").exists()


def test_a_refused_resume_leaves_the_folder_and_its_plot_untouched(tmp_path, capsys):
    argv = ["profile", "scan", "--models", "lru", "--lengths", "32", "--mode", "fwd", "--hidden", "8", "--state", "4",
            "--no-isolate", "--no-bandwidth", "--rounds", "1", "--max-rounds", "1", "--repeats", "1", "--out", str(tmp_path)]
    assert main(argv) == 0
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    manifest["host_allocator"] = "glibc.malloc.hugetlb=1 (transparent huge pages: madvise)"  # timed under another policy
    (tmp_path / "manifest.json").write_text(json.dumps(manifest))
    names = ("manifest.json", "rows.csv", "throughput.png")
    before = {name: ((tmp_path / name).read_bytes(), (tmp_path / name).stat().st_mtime_ns) for name in names}
    capsys.readouterr()
    assert main([*argv, "--resume"]) == 2
    captured = capsys.readouterr()
    assert "host allocator glibc.malloc.hugetlb=1" in captured.err and "plot:" not in captured.out
    assert {name: ((tmp_path / name).read_bytes(), (tmp_path / name).stat().st_mtime_ns) for name in names} == before


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
               "--min-time", "0.5", "--rounds", "1", "--max-rounds", "1", "--out", str(tmp_path)]  # fmt: skip
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    rows_file = tmp_path / "rows.csv"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and not (rows_file.exists() and "cell_s" in rows_file.read_text()):
        time.sleep(0.2)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130 and "dlbench: interrupted" in err and "Traceback" not in err
    rows = read_rows([rows_file])
    finished = rows[rows.metric == "cell_s"]
    assert 1 <= len(finished) < 6 and set(finished.status) == {"ok"}
    assert len(rows[(rows.metric == "wall_s") & (rows.seq_len == 16)]) >= 2
    # Doing what the interrupt message says, in a new process with no other option, continues the saved
    # sweep (not the default one): the remaining lengths of this model only, the finished cells kept as they were.
    assert f"--resume --out {tmp_path}" in " ".join((out + err).split())
    resumed = subprocess.run([sys.executable, "-c", entry, "profile", "scan", "--resume", "--out", str(tmp_path)],
                             capture_output=True, text=True, timeout=300)  # fmt: skip
    assert resumed.returncode == 0, resumed.stdout[-2000:] + resumed.stderr[-2000:]
    assert "dlbench profile scan: 6 cells" in resumed.stdout
    after = read_rows([rows_file])
    done = after[after.metric == "cell_s"]
    # One round per cell (--max-rounds 1 is saved with the sweep): each length ends exactly once.
    assert sorted(done.seq_len) == [16, 32, 64, 128, 256, 512], done[["seq_len", "round", "status"]].to_string()
    assert set(after.model.dropna()) == {"attention"}
    assert set(done.status) == {"ok"} and set(after.hidden.dropna()) == {8}
    key = ["seq_len", "metric", "value", "index", "round"]
    kept = rows[rows.seq_len.isin(finished.seq_len)][key].astype(str)
    assert set(map(tuple, kept.values)) <= set(map(tuple, after[key].astype(str).values))
    # A finished round is not measured again.
    for length in finished.seq_len:
        walls = [frame[(frame.metric == "wall_s") & (frame.seq_len == length)] for frame in (rows, after)]
        assert len(walls[0]) == len(walls[1]), length


# --- rounds, intervals, the stop rule -----------------------------------------------------------

import csv  # noqa: E402
import io  # noqa: E402
import math  # noqa: E402
import random  # noqa: E402

from rich.console import Console  # noqa: E402

from dlbench.rounds import CellProgress, round_order, run_rounds  # noqa: E402
from dlbench.scan_cell import Cell  # noqa: E402
from dlbench.timing_policy import ratio_interval  # noqa: E402


def fake_cell(model, seq_len=64, backend="b"):
    return Cell(model, backend, "fwd", seq_len, 1, 4, 4, "layer", "float32", 0)


class LoadedMachine:
    """A fake clock and a machine whose load comes and goes: every call of a cell takes its true time
    times the load factor at that moment (and a deterministic +-0.5% jitter)."""

    def __init__(self, true_s, load):
        self.now, self.true_s, self.load = 0.0, true_s, load
        self.jitter = random.Random(7)

    def clock(self):
        return self.now

    def measure(self, repeats):
        def measure(cell, round_index):
            samples = []
            for _ in range(repeats):
                self.now += self.true_s[cell.model]  # the untimed partner call
                took = self.true_s[cell.model] * self.load(self.now) * (1 + self.jitter.uniform(-0.005, 0.005))
                self.now += took
                samples.append(took)
            return "ok", "", samples

        return measure


def blocked_over_associative(progress):
    by_model = {p.cell.model: p for p in progress}
    return ratio_interval(by_model["blocked"].interval(), by_model["associative"].interval())


def test_rounds_and_the_interval_stop_a_drifting_machine_from_a_confident_wrong_ratio():
    # True times: blocked 2 s, associative 1 s, ratio 2. The machine is 2.5x slower 37% of the
    # time, in bursts of 22 s every 60 s (load that comes and goes, as on a shared host).
    true_s = {"blocked": 2.0, "associative": 1.0}

    def load(t):
        return 2.5 if (t % 60.0) < 22.0 else 1.0

    # Without rounds (today's policy: one visit per cell, one after another) the burst lands on
    # associative alone: a tight interval around a wrong ratio. The test can fail.
    machine = LoadedMachine(true_s, load)
    once = [CellProgress(fake_cell("associative")), CellProgress(fake_cell("blocked"))]
    ordered = lambda todo, rng: sorted(todo, key=lambda p: p.cell.model)  # noqa: E731
    import dlbench.rounds as rounds_module

    original = rounds_module.round_order
    rounds_module.round_order = ordered
    try:
        run_rounds(once, machine.measure(6), rounds=1, max_rounds=1, target=0.05, budget=math.inf, seed=0, clock=machine.clock)
    finally:
        rounds_module.round_order = original
    ratio, low, high = blocked_over_associative(once)
    assert not low <= 2.0 <= high and all(p.interval().within(0.05) for p in once)  # confident and wrong

    # With rounds in random order and the interval rule, the ratio's interval holds the truth, or
    # the cells say they stopped short of the target: never a confident wrong ratio.
    for seed in range(10):
        machine = LoadedMachine(true_s, load)
        progress = [CellProgress(fake_cell("associative")), CellProgress(fake_cell("blocked"))]
        run_rounds(progress, machine.measure(6), rounds=3, max_rounds=30, target=0.05, budget=math.inf, seed=seed,
                   clock=machine.clock)
        ratio, low, high = blocked_over_associative(progress)
        confident = all(p.interval().within(0.05) and not p.stopped_short for p in progress)
        assert low <= 2.0 <= high or not confident, (seed, ratio, low, high)
        # Here the bursts are rarer than quiet time, so extra rounds reach the target and the truth.
        assert confident and low <= 2.0 <= high and high / low < 1.05, (seed, ratio, low, high)
        assert all(p.rounds_done >= 3 for p in progress)


def test_extra_rounds_until_the_interval_is_within_target_and_budget_says_so():
    calls = []

    def measure(cell, round_index):
        calls.append((cell.model, round_index))
        noisy = cell.model == "noisy" and round_index < 5
        return "ok", "", [1.0, 1.6, 0.7, 1.3, 1.0] if noisy else [1.0, 1.001, 0.999, 1.0, 1.0]

    progress = [CellProgress(fake_cell("steady")), CellProgress(fake_cell("noisy"))]
    run_rounds(progress, measure, rounds=3, max_rounds=20, target=0.05, budget=math.inf, seed=0)
    steady, noisy = progress
    assert steady.rounds_done == 3 and noisy.rounds_done > 5
    assert noisy.interval().within(0.05) and not noisy.stopped_short
    # The budget stops extra rounds (never the minimum ones) and the cell says why.
    clock = iter(range(0, 10_000, 100))
    progress = [CellProgress(fake_cell("noisy2"))]
    run_rounds(progress, lambda c, r: ("ok", "", [1.0, 1.6, 0.7, 1.3, 1.0]), rounds=3, max_rounds=20, target=0.05,
               budget=250, seed=0, clock=lambda: next(clock))
    assert progress[0].rounds_done == 3 + 2 and progress[0].stopped_short == "time budget spent"
    progress = [CellProgress(fake_cell("noisy3"))]
    run_rounds(progress, lambda c, r: ("ok", "", [1.0, 1.6, 0.7, 1.3, 1.0]), rounds=2, max_rounds=4, target=0.05,
               budget=math.inf, seed=0)
    assert progress[0].rounds_done == 4 and progress[0].stopped_short == "max rounds reached"


def test_each_round_is_a_fresh_seeded_order_with_first_visits_ascending_in_length():
    progress = [CellProgress(fake_cell(m, L)) for m in "abcd" for L in (16, 32, 64)]
    orders = [[(p.cell.model, p.cell.seq_len) for p in round_order(progress, random.Random(s))] for s in range(4)]
    assert len({tuple(o) for o in orders}) == 4
    for order in orders:
        for m in "abcd":
            assert [L for name, L in order if name == m] == [16, 32, 64]
    for p in progress:
        p.samples[0] = [1.0]
    later = [[(p.cell.model, p.cell.seq_len) for p in round_order(progress, random.Random(s))] for s in range(20)]
    assert any([L for name, L in o if name == "a"] != [16, 32, 64] for o in later)
    # Same seed, same orders: a sweep is repeatable.
    seen = []
    for _ in range(2):
        visits = []
        run_rounds([CellProgress(fake_cell(m)) for m in "abcde"], lambda c, r, visits=visits: (visits.append(c.model), ("ok", "", [1.0] * 6))[1],
                   rounds=3, max_rounds=3, target=0.05, budget=math.inf, seed=3)
        seen.append(visits)
    assert seen[0] == seen[1] and len(seen[0]) == 15 and seen[0][:5] != seen[0][5:10]


def test_an_oom_in_a_round_stops_the_longer_lengths_of_its_series():
    skipped = []

    def measure(cell, round_index):
        return ("oom", "out of memory", []) if cell.seq_len >= 32 else ("ok", "", [1.0] * 6)

    progress = [CellProgress(fake_cell("a", L)) for L in (16, 32, 64, 128)]
    run_rounds(progress, measure, rounds=2, max_rounds=2, target=0.05, budget=math.inf, seed=0,
               skip=lambda p, stop: skipped.append(p.cell.seq_len))
    assert [p.status for p in progress] == ["ok", "oom", "skipped", "skipped"] and sorted(skipped) == [64, 128]


def test_sweep_rows_keep_rounds_and_intervals_and_compile_once(tmp_path):
    sweep = small(models=("dlinoss",), lengths=(24,), modes=("fwd",), isolate=False, rounds=3, max_rounds=3)
    out = io.StringIO()
    rows = read_rows([run_sweep(sweep, tmp_path, console=Console(file=out))])
    walls = rows[rows.metric == "wall_s"]
    assert sorted(walls["round"].unique()) == [0, 1, 2] and len(walls) == 6
    assert len(rows[rows.metric == "compile_s"]) == 1 and len(rows[rows.metric == "lower_s"]) == 1
    assert (rows[rows.metric == "compile_s"]["round"] == 0).all()
    assert len(rows[rows.metric == "first_call_s"]) == 3  # every round warms up
    low = rows[rows.metric == "wall_s_ci_low"].value.item()
    high = rows[rows.metric == "wall_s_ci_high"].value.item()
    assert low <= walls.value.median() <= high
    text = out.getvalue()
    # Not a terminal: one plain line per finished cell, then the summary.
    assert "dlinoss auto L=24 fwd: median" in text and "95% CI [" in text and ": ok" in text
    assert "1 of 1 cells ok" in text
    assert "resolved_scan" in rows[rows.metric == "wall_s_ci_low"].layer_options.item()


def test_a_cell_that_stops_short_of_the_target_says_so_in_rows_and_output(tmp_path):
    # 2 repeats x 2 rounds = 4 samples: no interval of 4 samples reaches 95%, so the cell stops short.
    sweep = small(models=("lru",), lengths=(16,), modes=("fwd",), isolate=False, rounds=2, max_rounds=2)
    out = io.StringIO()
    rows = read_rows([run_sweep(sweep, tmp_path, console=Console(file=out))])
    assert "stopped short" in rows[rows.metric == "wall_s_ci_low"].reason.item()
    text = out.getvalue()
    assert "(stopped short: max rounds reached)" in text and "is wider than the target +-5.0%" in text


def test_isolated_rounds_share_a_compilation_cache_and_record_compile_once(tmp_path):
    sweep = small(models=("lru",), lengths=(24,), modes=("fwd",), isolate=True, rounds=2, max_rounds=2)
    rows = read_rows([run_sweep(sweep, tmp_path, console=Console(file=io.StringIO()))])
    assert sorted(rows[rows.metric == "wall_s"]["round"].unique()) == [0, 1]
    assert list(rows[rows.metric == "compile_s"]["round"]) == [0]
    assert list(rows[rows.metric == "cell_s"].status) == ["ok", "ok"]


def test_resume_continues_the_rounds_of_an_unfinished_cell(tmp_path):
    sweep = small(models=("lru",), lengths=(16,), modes=("fwd",), isolate=False, rounds=2, max_rounds=2)
    run_sweep(sweep, tmp_path, console=Console(file=io.StringIO()))
    rows_file = tmp_path / "rows.csv"
    # Cut the file after round 0's rows: round 1 and the interval rows are gone.
    with rows_file.open(newline="") as f:
        header, *body = list(csv.reader(f))  # cells hold JSON with commas: parse, never split
    metric, rnd = header.index("metric"), header.index("round")
    keep = [r for r in body if r[rnd] in ("", "0") and not r[metric].startswith("wall_s_ci")]
    assert len(keep) < len(body)
    with rows_file.open("w", newline="") as f:
        csv.writer(f).writerows([header, *keep])
    rows = read_rows([run_sweep(sweep, tmp_path, resume=True, console=Console(file=io.StringIO()))])
    assert sorted(rows[rows.metric == "wall_s"]["round"]) == [0, 0, 1, 1]
    assert len(rows[rows.metric == "wall_s_ci_low"]) == 1 and len(rows[rows.metric == "compile_s"]) == 1


@pytest.mark.parametrize(
    "option, value, fragment",
    [
        ("--min-time", "nan", "min-time must be a finite number"),
        ("--timeout", "inf", "timeout must be a finite number"),
        ("--repeats", "0", "repeats must be a finite number in [1, 10_000]"),
        ("--lengths", "0", "lengths must be a finite number in [1, 134_217_728], got 0"),
        ("--rounds", "0", "rounds must be"),
        ("--ci-target", "2", "ci-target must be"),
        ("--lengths", "16,0", "lengths must be"),
        ("--budget", "-1", "budget must be"),
    ],
)
def test_absurd_sweep_values_are_refused(error_line, option, value, fragment):
    assert fragment in error_line(["profile", "scan", "--models", "lru", option, value])


def test_duplicate_lengths_are_dropped_with_a_note(tmp_path):
    sweep = small(models=("lru",), lengths=(16, 16, 8), modes=("fwd",), isolate=False)
    out = io.StringIO()
    rows = read_rows([run_sweep(sweep, tmp_path, console=Console(file=out))])
    assert "duplicate lengths dropped: 16" in out.getvalue()
    assert sorted(rows[rows.metric == "cell_s"].seq_len) == [8, 16]


def test_a_cell_in_error_makes_the_sweep_exit_1_with_the_count(tmp_path, monkeypatch, capsys):
    import dlbench.scan_cell as scan_cell

    real = scan_cell.build_workload

    def broken(cell, **kw):
        if cell.seq_len == 16:
            raise ValueError("a broken layer")
        return real(cell, **kw)

    monkeypatch.setattr(scan_cell, "build_workload", broken)
    code = main(["profile", "scan", "--models", "lru", "--lengths", "8,16", "--mode", "fwd", "--hidden", "4", "--state", "4",
                 "--repeats", "1", "--min-time", "0", "--rounds", "1", "--no-isolate", "--no-bandwidth", "--out", str(tmp_path)])
    captured = capsys.readouterr()
    assert code == 1
    assert "1 of 2 cells ok; 1 error" in captured.out
    assert "1 cell(s) ended in error" in captured.err and "Traceback" not in captured.err
    assert "lru auto L=16 fwd: no timing: error (ValueError: a broken layer)" in captured.out


def test_train_mode_times_the_whole_training_step_and_verify_checks_every_mode(tmp_path):
    sweep = small(models=("dlinoss",), lengths=(33,), modes=("fwd", "fwdbwd", "train"), isolate=False, verify=True)
    rows = read_rows([run_sweep(sweep, tmp_path, console=Console(file=io.StringIO()))])
    done = rows[rows.metric == "cell_s"]
    assert set(done["mode"]) == {"fwd", "fwdbwd", "train"} and set(done.status) == {"ok"}
    assert set(rows[rows["mode"] == "train"].target) == {"model"}
    errors = rows[rows.metric == "max_rel_err"]
    assert len(errors) == 3 and (errors.value < 1e-3).all() and set(errors.status) == {"ok"}
    assert set(errors.source) == {"vs sequential float64"}


def test_verify_fails_a_backend_that_drifts(tmp_path, monkeypatch):
    import dlbench.scan_cell as scan_cell

    monkeypatch.setitem(scan_cell.VERIFY_TOLERANCE, "float32", 1e-12)  # float32 cannot meet this
    sweep = small(models=("lru",), lengths=(33,), modes=("fwd",), isolate=False, verify=True)
    with pytest.raises(Exception, match="ended in error"):
        run_sweep(sweep, tmp_path, console=Console(file=io.StringIO()))
    rows = read_rows([tmp_path / "rows.csv"])
    assert rows[rows.metric == "max_rel_err"].status.item() == "error"


def test_sweep_defaults_and_help_come_from_the_dataclass():
    import dataclasses

    from typer.main import get_command

    from dlbench.cli import app

    scan = get_command(app).commands["profile"].commands["scan"]
    params = {p.name: p for p in scan.params}
    for field in dataclasses.fields(ScanSweep):
        # --devices is the option `run` shares; --seq-shard is a flag without a --no- form.
        if field.name in params and not isinstance(field.default, tuple) and field.name not in ("devices", "seq_shard"):
            assert params[field.name].default == field.default, field.name
            assert field.metadata["help"][1:] in params[field.name].help, field.name
