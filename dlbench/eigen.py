"""Learned eigenvalues of the oscillatory layers' transitions, as tidy rows.

For each block b of a :class:`dlbench.models.SequenceModel` whose sequence layer is oscillatory
(LinOSS IM / IMEX, D-LinOSS IMEX1 / IMEX2 / IM / EX), the layer's own projection of its raw
parameters gives (A, G, dt) and its own discretization the 2x2 transition M_i of every state i
(docs/models.md, "Oscillatory layers"; ``AbstractOscillatory.transition``). Its two eigenvalues
lambda_{i,1}, lambda_{i,2} are the poles of that oscillator per step: |lambda| < 1 forgets,
|lambda| = 1 keeps energy (LinOSS-IMEX), and for D-LinOSS IMEX1 |lambda| = 1 / sqrt(1 + dt G)
whenever the pair is complex (Boyer, Rusch & Rus, arXiv 2505.12171, Prop. 3.1).

Rows (the tidy schema's columns): ``metric`` = "eig_abs" (unit "1") and "eig_angle" (unit "rad",
in (-pi, pi]), ``index`` = eigenvalue number 2 i + j (state i, root j), ``source`` = "block{b}",
``value``; plus ``model`` and, from a run, ``task`` and ``seed``. The picture is drawn from these rows
by ``dlbench.report.eigenvalues`` (JAX-free).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from dlbench.errors import DlbenchError
from dlbench.layers.oscillatory import AbstractOscillatory
from dlbench.models import SequenceModel

METRICS = {"eig_abs": "1", "eig_angle": "rad"}


def oscillatory_layers(model: SequenceModel) -> Iterator[tuple[int, AbstractOscillatory]]:
    """(block number, layer) for every block whose sequence layer is oscillatory."""
    for b, block in enumerate(model.blocks):
        if isinstance(block.layer, AbstractOscillatory):
            yield b, block.layer


def layer_eigenvalues(layer: AbstractOscillatory) -> np.ndarray:
    """The eigenvalues of the layer's transition, (P, 2) complex128: row i holds state i's pair.

    M (P, 2, 2) comes from the layer itself (its own projection and discretization), evaluated in
    float64 from the stored parameters: near a double root (the edge of the complex band) a float32 M
    moves the roots by ~sqrt(float32 eps) ~ 3e-4, which would blur exactly the region the analysis
    looks at. The eigenvalues are NumPy's, ordered by decreasing imaginary part within each pair.
    """
    with jax.enable_x64(True):
        M = np.asarray(layer.transition(jnp.float64)[0], np.float64)
    lam = np.linalg.eigvals(M)
    order = np.argsort(-lam.imag, axis=-1, kind="stable")
    return np.take_along_axis(lam, order, axis=-1)


def eigen_rows(model: SequenceModel, model_name: str = "", **columns: Any) -> list[dict[str, Any]]:
    """Rows of eig_abs / eig_angle per eigenvalue and block of ``model`` (see the module docstring).

    Args:
      model: a built SequenceModel (``dlbench.models.build_model`` or a run's saved parameters).
      model_name: the registered name, written in the ``model`` column.
      columns: extra columns for every row (e.g. task, seed).
    Raises:
      DlbenchError: when no block holds an oscillatory layer.
    """
    rows: list[dict[str, Any]] = []
    for b, layer in oscillatory_layers(model):
        lam = layer_eigenvalues(layer).reshape(-1)  # index 2 i + j
        for index, value in enumerate(lam):
            for metric, number in (("eig_abs", float(abs(value))), ("eig_angle", float(np.angle(value)))):
                rows.append({"model": model_name, **columns, "metric": metric, "value": number,
                             "unit": METRICS[metric], "index": index, "source": f"block{b}"})  # fmt: skip
    if not rows:
        raise DlbenchError(
            f"model {model_name or type(model).__name__} has no oscillatory layer (LinOSS / D-LinOSS): "
            "its transition eigenvalues are not defined here"
        )
    return rows


def eigen_rows_for_run(run_dir: str | Path) -> list[dict[str, Any]]:
    """Eigenvalue rows of every finished oscillatory run in ``run_dir``, from its best-validation
    parameters (:func:`dlbench.checkpoints.load_run_params`); runs of other models are skipped."""
    from dlbench.checkpoints import load_run_params
    from dlbench.registry import get_model
    from dlbench.rundir import FINAL_METRICS, ROWS_FILE, read_rows

    run_dir = Path(run_dir)
    frame = read_rows([run_dir / ROWS_FILE])
    finished = frame[frame["metric"].isin(FINAL_METRICS) & (frame["status"] == "ok")]
    rows: list[dict[str, Any]] = []
    for (task, model_name, seed), run in finished.groupby(["task", "model", "seed"], sort=True):
        if not issubclass(get_model(model_name).layer, AbstractOscillatory):
            continue
        model = load_run_params(run_dir, model_name, task, int(seed))
        # The run's config_hash, so that readers keep these rows with the run that made them.
        settings = {"config_hash": run["config_hash"].iloc[0]} if run["config_hash"].notna().any() else {}
        rows.extend(eigen_rows(model, model_name, task=task, seed=int(seed), **settings))
    if not rows:
        raise DlbenchError(f"{run_dir}: no finished LinOSS / D-LinOSS run to take eigenvalues from")
    return rows


EIGENVALUES_DIR = "eigenvalues"


def write_run_eigenvalues(run_dir: str | Path) -> Path:
    """Compute the eigenvalue rows of ``run_dir`` and write them to RUN_DIR/eigenvalues/rows.csv
    (derived from the saved parameters, so rewritten whole on each call); returns that path.

    They live in their own rows file beside the run's so that every reader of the folder (export,
    show, report) sees them, while the run's own append-only rows.csv is never touched.
    """
    from dlbench.rundir import ROWS_FILE, RowWriter, rows_run_id

    run_dir = Path(run_dir)
    rows = eigen_rows_for_run(run_dir)
    path = run_dir / EIGENVALUES_DIR / ROWS_FILE
    path.unlink(missing_ok=True)
    writer = RowWriter(path, defaults={"run_id": rows_run_id(run_dir / ROWS_FILE) or "", "task": ""})
    for row in rows:
        writer.write(row)
    return path
