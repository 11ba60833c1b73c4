"""Synthetic tasks generated in-process (no files).

Exponential decay (D-LinOSS paper, docs/models.md section 8): u_k ~ N(0, 1), y_0 = 0,
y_{k+1} = 0.8 y_k + u_k, target y_k at every step k; 100 sequences x 1000 steps x 1 channel,
split in order 70/15/15, per-step MSE. The data come from ``data_seed`` (fixed across run seeds, so
every seed trains on the same sequences and only initialisation and batch order vary).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from dlbench.config import TaskConfig
from dlbench.tasks import Split, TaskData, register_task

DECAY = 0.8


def exponential_decay(num_sequences: int, seq_len: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Inputs u (n, L, 1) and targets y (n, L, 1) with y_0 = 0 and y_{k+1} = 0.8 y_k + u_k."""
    u = np.random.default_rng(seed).standard_normal((num_sequences, seq_len, 1)).astype(np.float64)
    y = np.zeros_like(u)
    for k in range(seq_len - 1):
        y[:, k + 1] = DECAY * y[:, k] + u[:, k]
    return u.astype(np.float32), y.astype(np.float32)


@register_task("decay", description="exponential decay y_{k+1} = 0.8 y_k + u_k, per-step regression (D-LinOSS paper)")
def load_decay(config: TaskConfig, seed: int, data_dir: Path) -> TaskData:
    u, y = exponential_decay(config.num_sequences, config.seq_len, config.data_seed)
    n = len(u)
    a, b = int(n * 0.7), int(n * 0.85)  # in order, as in the paper: 70 / 15 / 15
    return TaskData(
        name="decay",
        train=Split(u[:a], y[:a]),
        val=Split(u[a:b], y[a:b]),
        test=Split(u[b:], y[b:]),
        head="regression",
        num_outputs=1,
        output_step=1,
        output_activation="identity",  # y is unbounded (std ~1.7), so no tanh
    )
