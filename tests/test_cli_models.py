"""`dlbench models` and the CLI's error contract: one line, exit code 2, no traceback."""

import subprocess
import sys
from pathlib import Path

import pytest

from dlbench.cli import main
from dlbench.registry import model_names

EXPECTED_MODELS = {"dlinoss", "linoss-im", "linoss-imex", "s5", "lru", "s6", "mamba", "attention"}


def test_all_eight_models_are_registered():
    assert set(model_names()) == EXPECTED_MODELS


def test_models_lists_every_model(capsys):
    assert main(["models", "--hidden", "128", "--state", "64"]) == 0
    out = capsys.readouterr().out
    for name in EXPECTED_MODELS:
        assert name in out


@pytest.mark.parametrize(
    "argv, fragment",
    [
        (["models", "nope"], "unknown model 'nope'; valid choices: "),
        (["models", "--norm", "group"], "norm: unknown value 'group'; valid: batch, layer, batch-ema, batch-debiased"),
        (["models", "--hidden", "x"], "Invalid value for '--hidden'"),
        (["models", "--frobnicate"], "No such option: --frobnicate"),
    ],
)
def test_bad_input_is_one_line_exit_2(capsys, argv, fragment):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert fragment in err
    assert len(err.strip().splitlines()) == 1


def test_console_script_has_no_traceback():
    result = subprocess.run(
        [sys.executable, "-c", "from dlbench.cli import run; run()", "models", "mamba2"],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert result.stderr.startswith("dlbench: error: unknown model 'mamba2'")


@pytest.mark.parametrize(
    ("argv", "named"),
    [
        (["models", "--model", "s5"], ["--hidden", "--state", "--blocks", "--inputs", "--classes", "--norm"]),
        (["profile", "scan", "--lenghts", "1024"], ["did you mean --lengths?", "--models", "--backends"]),
        (["run", "smoke", "--sed", "1"], ["--seeds", "--set", "--model", "--data-dir"]),
    ],
)
def test_an_unknown_option_names_the_commands_real_options(error_line, argv, named):
    err = error_line(argv)
    assert "No such option" in err and "--help" not in err, err
    for text in named:
        assert text in err, (text, err)


def test_models_marks_a_model_it_cannot_build_and_lists_the_rest(capsys):
    assert main(["models", "--state", "7", "--hidden", "8"]) == 0
    out = capsys.readouterr().out
    assert "n/a" in out and "divisible by 2" in " ".join(out.split())
    for name in model_names():
        assert name in out


def test_version_prints_and_exits_zero(capsys):
    import dlbench

    assert main(["--version"]) == 0
    assert capsys.readouterr().out.strip() == f"dlbench {dlbench.__version__}"


@pytest.mark.parametrize(
    ("argv", "fragment"),
    [
        (["profile", "scan", "--models", ""], "no model given; valid choices: all, "),
        (["profile", "scan", "--timeout", "0"], "timeout must be a finite number"),
        (["run", "scan", "--set", "sweep.batch=1.5", "--dry-run"], "batch: expected an integer, got 1.5"),
        (["run", "scan", "--set", "sweep.lenghts=[64]", "--dry-run"], "did you mean 'lengths'"),
    ],
)
def test_bad_sweep_values_are_one_line_errors_even_on_a_dry_run(error_line, argv, fragment):
    assert fragment in error_line(argv)


def test_an_unusable_output_path_is_one_line(error_line, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    committed = Path(__file__).resolve().parents[1] / "results" / "cpu-smoke"
    err = error_line(["export", "leaderboard", str(committed), "--out", str(blocker / "x.csv")])
    assert str(blocker) in err
