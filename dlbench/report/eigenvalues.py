"""The learned transition eigenvalues in the complex plane, from eig_abs / eig_angle rows (JAX-free).

Rows as :mod:`dlbench.eigen` writes them: ``metric`` in {"eig_abs", "eig_angle"}, ``value``,
``index`` (eigenvalue number), ``source`` ("block{b}") and ``model`` (optionally ``task``, ``seed``).
One panel per model, D-LinOSS first and beside LinOSS-IM and LinOSS-IMEX (the D-LinOSS paper's
comparison), the unit circle drawn, one colour per block. This module imports only numpy, pandas and
matplotlib.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

# Panel order: the paper's comparison first, any other model after, alphabetically.
MODEL_ORDER = ("dlinoss", "linoss-im", "linoss-imex")
KEYS = ("model", "task", "seed", "source", "index")


def eigenvalues_frame(rows: pd.DataFrame) -> pd.DataFrame:
    """One row per eigenvalue: the key columns present, ``abs``, ``angle`` and complex ``eigenvalue``.

    Raises ValueError when the rows hold no eig_abs / eig_angle pair.
    """
    rows = rows[rows["metric"].isin(["eig_abs", "eig_angle"])]
    if "status" in rows.columns:
        rows = rows[rows["status"].fillna("ok") == "ok"]
    keys = [k for k in KEYS if k in rows.columns]
    wide = rows.pivot_table(index=keys, columns="metric", values="value", aggfunc="first").reset_index()
    if wide.empty or not {"eig_abs", "eig_angle"} <= set(wide.columns):
        raise ValueError("no eig_abs / eig_angle rows to draw (compute them with dlbench.eigen)")
    wide = wide.dropna(subset=["eig_abs", "eig_angle"]).rename(columns={"eig_abs": "abs", "eig_angle": "angle"})
    wide.columns.name = None
    wide["eigenvalue"] = wide["abs"] * np.exp(1j * wide["angle"])
    return wide


def eigen_summary(rows: pd.DataFrame) -> pd.DataFrame:
    """Per model: eigenvalues, median / min / max |lambda| and the fraction with |lambda| < 0.99."""
    frame = eigenvalues_frame(rows)
    out = frame.groupby("model")["abs"].agg(
        count="size", median="median", min="min", max="max", inside=lambda a: float((a < 0.99).mean())
    )
    return out.reindex(_ordered(out.index))


def _ordered(models) -> list[str]:
    models = list(dict.fromkeys(models))
    return [m for m in MODEL_ORDER if m in models] + sorted(m for m in models if m not in MODEL_ORDER)


def plot_eigenvalues(rows: pd.DataFrame, out: str | Path | None = None, *, title: str = ""):
    """Draw every model's eigenvalues in the complex plane with the unit circle; save to ``out`` if given.

    Returns the matplotlib Figure.
    """
    import matplotlib

    if out is not None:
        matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    frame = eigenvalues_frame(rows)
    models = _ordered(frame["model"])
    fig, axes = plt.subplots(1, len(models), figsize=(3.6 * len(models), 3.8), squeeze=False)
    circle = np.exp(1j * np.linspace(0, 2 * np.pi, 512))
    blocks = sorted(frame["source"].unique(), key=lambda s: (len(s), s))
    colours = {b: plt.cm.viridis(i / max(len(blocks) - 1, 1)) for i, b in enumerate(blocks)}
    for ax, model in zip(axes[0], models, strict=True):
        part = frame[frame["model"] == model]
        ax.plot(circle.real, circle.imag, color="0.5", lw=0.8)
        for block, group in part.groupby("source", sort=False):
            lam = group["eigenvalue"].to_numpy()
            ax.scatter(lam.real, lam.imag, s=9, alpha=0.7, color=colours[block], label=block)
        ax.set_title(f"{model}: median |λ| {part['abs'].median():.3f}", fontsize=9)
        ax.set_aspect("equal")
        ax.set_xlim(-1.1, 1.1)
        ax.set_ylim(-1.1, 1.1)
        ax.axhline(0, color="0.85", lw=0.5, zorder=0)
        ax.axvline(0, color="0.85", lw=0.5, zorder=0)
        ax.set_xlabel("Re λ")
        if ax is axes[0][0]:
            ax.set_ylabel("Im λ")
        if len(blocks) > 1:
            ax.legend(fontsize=7, loc="lower left")
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    if out is not None:
        fig.savefig(out, dpi=130)
        plt.close(fig)
    return fig
