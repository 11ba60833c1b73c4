"""`dlbench models` and the CLI's error contract: one line, exit code 2, no traceback."""

import subprocess
import sys

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
        (["models", "--norm", "group"], "unknown norm 'group'; valid choices: batch, layer"),
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
