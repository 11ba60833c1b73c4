"""Learned-eigenvalue rows (dlbench.eigen) against a direct NumPy eig of the MODELS table, and the plot."""

import importlib
import importlib.util
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from dlbench.eigen import eigen_rows, layer_eigenvalues, oscillatory_layers
from dlbench.errors import DlbenchError
from dlbench.models import ModelConfig, build_model

EIGEN_PLOT = Path(__file__).resolve().parents[1] / "dlbench" / "report" / "eigenvalues.py"


def plot_module():
    return importlib.import_module("dlbench.report.eigenvalues")


def projected64(layer):
    """(A, G, dt) of the layer's own projection, in float64 (the eigenvalues are taken in float64)."""
    import jax
    import jax.numpy as jnp

    with jax.enable_x64(True):
        return tuple(np.asarray(v, np.float64) for v in layer.projected(jnp.float64))


def table_matrix(variant: str, A, G, dt) -> np.ndarray:
    """The 2x2 M per state written out from the docs/models.md table, float64, (P, 2, 2)."""
    one = np.ones_like(A)
    if variant == "IMEX1":
        S = 1 + dt * G
        rows = [[1 / S, -dt * A / S], [dt / S, 1 - dt**2 * A / S]]
    elif variant in ("IMEX2", "IMEX"):  # LinOSS-IMEX is IMEX2 with G = 0
        rows = [[1 - dt * G, -dt * A], [dt * (1 - dt * G), 1 - dt**2 * A]]
    elif variant == "IM":  # LinOSS-IM is D-LinOSS IM with G = 0
        S = 1 + dt * G + dt**2 * A
        rows = [[1 / S, -dt * A / S], [dt / S, (1 + dt * G) / S]]
    else:  # EX
        rows = [[1 - dt * G, -dt * A], [dt, one]]
    return np.stack([np.stack([r[0], r[1]], -1) for r in rows], -2)


CASES = [
    ("linoss-im", {}, "IM"),
    ("linoss-imex", {}, "IMEX"),
    ("dlinoss", {}, "IMEX1"),
    ("dlinoss", {"discretization": "IMEX2", "r_min": 0.95}, "IMEX2"),
    ("dlinoss", {"discretization": "IM", "init": "uniform"}, "IM"),
    ("dlinoss", {"discretization": "EX", "init": "uniform"}, "EX"),
]


def model(name, options, seed=0):
    config = ModelConfig(num_inputs=3, hidden_dim=5, state_dim=7, num_blocks=2, num_outputs=2, layer_options=options)
    return build_model(name, config, seed=seed)


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
@pytest.mark.parametrize("name, options, variant", CASES)
def test_eigenvalues_equal_numpy_eig_of_the_table(name, options, variant):
    m = model(name, options)
    rows = pd.DataFrame(eigen_rows(m, name, seed=0))
    assert set(rows.source) == {"block0", "block1"} and set(rows.metric) == {"eig_abs", "eig_angle"}
    assert set(rows.unit[rows.metric == "eig_abs"]) == {"1"} and set(rows.unit[rows.metric == "eig_angle"]) == {"rad"}
    for b, layer in oscillatory_layers(m):
        A, G, dt = projected64(layer)
        expected = np.linalg.eigvals(table_matrix(variant, A, G, dt))  # (7, 2)
        got = layer_eigenvalues(layer)
        # Same pair per state, whatever the root order.
        for i in range(7):
            np.testing.assert_allclose(np.sort_complex(got[i]), np.sort_complex(expected[i]), rtol=1e-9, atol=1e-12)
        part = rows[rows.source == f"block{b}"]
        modulus = part[part.metric == "eig_abs"].sort_values("index").value.to_numpy()
        angle = part[part.metric == "eig_angle"].sort_values("index").value.to_numpy()
        assert len(modulus) == 14 and list(part[part.metric == "eig_abs"].sort_values("index")["index"]) == list(
            range(14)
        )
        np.testing.assert_allclose(modulus * np.exp(1j * angle), got.reshape(-1), rtol=1e-6, atol=1e-7)


def test_imex1_modulus_is_one_over_sqrt_one_plus_dt_g():
    m = model("dlinoss", {})
    for _, layer in oscillatory_layers(m):
        A, G, dt = projected64(layer)
        lam = layer_eigenvalues(layer)
        complex_pair = (G - dt * A) ** 2 < 4 * A  # strictly inside the band (ring init: all of them)
        assert complex_pair.all()
        expected = 1 / np.sqrt(1 + dt * G)
        np.testing.assert_allclose(np.abs(lam), np.broadcast_to(expected[:, None], lam.shape), rtol=1e-12)
        assert (np.abs(lam) < 1).all() and (np.abs(lam) >= np.sqrt(1 / (1 + dt * G)).min() - 1e-6).all()


def test_linoss_imex_keeps_energy_and_im_dissipates():
    imex = np.concatenate([layer_eigenvalues(la) for _, la in oscillatory_layers(model("linoss-imex", {}))])
    im = np.concatenate([layer_eigenvalues(la) for _, la in oscillatory_layers(model("linoss-im", {}))])
    np.testing.assert_allclose(np.abs(imex), 1.0, rtol=1e-5)  # symplectic: det M = 1, complex pair
    assert (np.abs(im) < 1).all()


def test_models_without_oscillators_are_refused():
    with pytest.raises(DlbenchError, match="no oscillatory layer"):
        eigen_rows(model("lru", {}), "lru")


TINY = ["--seeds", "0", "--set", "train.steps=2", "--set", "train.eval_every=1", "--set", "model.hidden_dim=4",
        "--set", "model.state_dim=3", "--set", "model.num_blocks=2", "--set", "train.batch_size=4"]


def test_plot_eigenvalues_of_a_run_uses_its_saved_best_parameters(tmp_path, capsys):
    from dlbench.checkpoints import load_run_params
    from dlbench.cli import main
    from dlbench.rundir import read_rows

    out = tmp_path / "run"
    assert main(["run", "smoke", "--model", "dlinoss", "--model", "lru", *TINY, "--out", str(out)]) == 0
    assert main(["plot", str(out), "--kind", "eigenvalues"]) == 0
    rows = read_rows([out / "eigenvalues"])
    assert set(rows["model"]) == {"dlinoss"}  # lru has no oscillator: skipped
    assert (out / "eigenvalues.png").stat().st_size > 0
    # The rows are the eigenvalues of the saved best model, 2 per state and block (P 3, 2 blocks).
    expected = eigen_rows(load_run_params(out, "dlinoss", "basicmotions", 0), "dlinoss")
    got = rows[rows["metric"] == "eig_abs"].sort_values(["source", "index"])["value"].to_numpy()
    want = sorted((r["source"], r["index"], r["value"]) for r in expected if r["metric"] == "eig_abs")
    np.testing.assert_allclose(got, [v for *_, v in want], rtol=1e-12)
    assert len(got) == 2 * 3 * 2
    # Computed again, the rows are replaced, not appended to.
    assert main(["plot", str(out), "--kind", "eigenvalues"]) == 0
    assert len(read_rows([out / "eigenvalues"])) == len(rows)


def test_plot_eigenvalues_without_oscillatory_runs_is_one_line(tmp_path, error_line):
    from dlbench.cli import main

    out = tmp_path / "run"
    assert main(["run", "smoke", "--model", "lru", *TINY, "--out", str(out)]) == 0
    assert "no finished LinOSS / D-LinOSS run" in error_line(["plot", str(out), "--kind", "eigenvalues"])
    from dlbench.report import plot_results

    with pytest.raises(DlbenchError, match="no eigenvalue rows"):
        plot_results([out], "eigenvalues", tmp_path / "x.png")


def test_plot_and_summary_from_rows(tmp_path):
    plots = plot_module()
    rows = pd.DataFrame(
        eigen_rows(model("dlinoss", {}), "dlinoss", seed=0)
        + eigen_rows(model("linoss-im", {}), "linoss-im", seed=0)
        + eigen_rows(model("linoss-imex", {}), "linoss-imex", seed=0)
    )
    frame = plots.eigenvalues_frame(rows)
    assert len(frame) == 3 * 2 * 14
    summary = plots.eigen_summary(rows)
    assert list(summary.index) == ["dlinoss", "linoss-im", "linoss-imex"]
    assert summary.loc["linoss-imex", "inside"] == 0.0 and summary.loc["linoss-im", "max"] < 1.0
    np.testing.assert_allclose(summary.loc["linoss-imex", "median"], 1.0, rtol=1e-5)
    out = tmp_path / "eig.png"
    plots.plot_eigenvalues(rows, out, title="init")
    assert out.stat().st_size > 5000 and out.read_bytes()[:4] == b"\x89PNG"
    with pytest.raises(ValueError, match="no eig_abs"):
        plots.eigenvalues_frame(rows[rows.metric == "eig_abs"].iloc[0:0])


def test_plot_module_imports_no_jax():
    code = (
        "import importlib.util, sys; spec = importlib.util.spec_from_file_location('m', sys.argv[1]); "
        "m = importlib.util.module_from_spec(spec); spec.loader.exec_module(m); "
        "bad = [k for k in sys.modules if k.split('.')[0] in ('jax', 'flax') or k.startswith('dlbench')]; "
        "sys.exit(1 if bad else 0)"
    )
    assert subprocess.run([sys.executable, "-c", code, str(EIGEN_PLOT)]).returncode == 0
