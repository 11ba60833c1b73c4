"""PPG-DaLiA heart-rate regression from the user's ``PPG_FieldStudy/S{i}/S{i}.pkl`` files.

Published preprocessing (LinOSS / D-LinOSS code, docs/models.md section 8), per subject:
  * wrist ACC (3 ch, 32 Hz) repeated x2, BVP (64 Hz), EDA and TEMP (4 Hz) repeated x16
    -> 6 channels at 64 Hz, truncated to the shortest;
  * each signal group (ACC's 3 channels together, BVP, EDA, TEMP) and the heart-rate label min-max
    scaled to [-1, 1] over the subject's whole recording;
  * 3 copies of the first label prepended: a label is the heart rate of an 8 s window moved by 2 s, so
    after the padding label j covers inputs [128 j, 128 (j + 1)) (2 s at 64 Hz);
  * a contiguous 70/15/15 split of the subject's labels (boundaries int(0.7 n), int(0.85 n)) and of
    the matching inputs;
  * windows of 49,920 inputs with stride 4,992, each with its 390 labels (one per 128 inputs, read by
    the regression head at steps 127, 255, ...; tanh output for the [-1, 1] labels).
Subjects' windows are concatenated per split. The pickles are Python 2 pickles: latin1 encoding.
"""

from __future__ import annotations

import functools
import pickle
import re
from pathlib import Path

import numpy as np

from dlbench.config import TaskConfig
from dlbench.tasks import MissingDataError, Split, TaskData, register_task
from dlbench.tasks.cache import cached_arrays

PROTOCOL = "ppg:v1:64hz-minmax-3pad-70/15/15-w49920-s4992"
WINDOW = 49_920
STRIDE = 4_992
LABEL_STEP = 128  # inputs per label: 2 s at 64 Hz
PAD_LABELS = 3
# Signal group -> repeat factor to 64 Hz.
GROUPS = {"ACC": 2, "BVP": 1, "EDA": 16, "TEMP": 16}
ROOTS = ("PPG_FieldStudy", "PPG-DaLiA/PPG_FieldStudy", "ppg_dalia/PPG_FieldStudy", "PPG_DaLiA/PPG_FieldStudy")


def locate_subjects(data_dir: Path) -> list[Path]:
    """Every ``S{i}/S{i}.pkl`` under the first root that has any, sorted by subject number."""
    searched = []
    for root in ROOTS:
        folder = data_dir / root
        found = [p for p in folder.glob("S*/S*.pkl") if p.stem == p.parent.name and re.fullmatch(r"S\d+", p.stem)]
        if found:
            return sorted(found, key=lambda p: int(p.stem[1:]))
        searched.append(folder / "S{i}" / "S{i}.pkl")
    raise MissingDataError(
        "PPG-DaLiA",
        searched,
        f"Unpack PPG_FieldStudy from the PPG-DaLiA archive (UCI Machine Learning Repository) so that "
        f"{data_dir / 'PPG_FieldStudy' / 'S1' / 'S1.pkl'} ... S15/S15.pkl exist.",
    )


def scale(v: np.ndarray) -> np.ndarray:
    """Min-max to [-1, 1] over all entries (a constant signal maps to 0)."""
    lo, hi = float(np.min(v)), float(np.max(v))
    return np.zeros_like(v) if hi == lo else 2.0 * (v - lo) / (hi - lo) - 1.0


def subject_arrays(record: dict) -> tuple[np.ndarray, np.ndarray]:
    """One subject's pickle -> inputs (n_labels * 128, 6) and scaled labels (n_labels,), aligned."""
    wrist = record["signal"]["wrist"]
    parts = [np.repeat(np.asarray(wrist[g], np.float64).reshape(len(wrist[g]), -1), r, axis=0) for g, r in GROUPS.items()]
    length = min(len(p) for p in parts)
    x = np.concatenate([scale(p[:length]) for p in parts], axis=1)
    label = scale(np.asarray(record["label"], np.float64).reshape(-1))
    label = np.concatenate([np.full(PAD_LABELS, label[0]), label])
    n = min(len(label), length // LABEL_STEP)
    return x[: n * LABEL_STEP].astype(np.float32), label[:n].astype(np.float32)


def windows(x: np.ndarray, labels: np.ndarray, window: int = WINDOW, stride: int = STRIDE, step: int = LABEL_STEP):
    """Sliding windows (k, window, C) and their labels (k, window // step); label j of a window sits at input step*(j+1)-1."""
    starts = range(0, len(x) - window + 1, stride)
    xs = [x[s : s + window] for s in starts]
    ys = [labels[s // step : s // step + window // step] for s in starts]
    c = x.shape[1]
    if not xs:
        return np.zeros((0, window, c), np.float32), np.zeros((0, window // step), np.float32)
    return np.stack(xs), np.stack(ys)


def split_subject(x: np.ndarray, labels: np.ndarray) -> list[tuple[np.ndarray, np.ndarray]]:
    """Contiguous 70/15/15 in label units (boundaries int(0.7 n), int(0.85 n)) -> [(x, labels)] x 3."""
    n = len(labels)
    bounds = [0, int(0.7 * n), int(0.85 * n), n]
    return [(x[a * LABEL_STEP : b * LABEL_STEP], labels[a:b]) for a, b in zip(bounds, bounds[1:], strict=False)]


def build(files: list[Path]) -> dict[str, np.ndarray]:
    out: dict[str, list] = {f"{s}_{k}": [] for s in ("train", "val", "test") for k in ("x", "y")}
    for f in files:
        with f.open("rb") as fh:
            record = pickle.load(fh, encoding="latin1")
        for name, (xs, ys) in zip(("train", "val", "test"), split_subject(*subject_arrays(record)), strict=True):
            wx, wy = windows(xs, ys)
            out[f"{name}_x"].append(wx)
            out[f"{name}_y"].append(wy)
    return {k: np.concatenate(v) for k, v in out.items()}


@register_task("ppg", description="PPG-DaLiA heart rate from your PPG_FieldStudy pickles, published windowing", locate=lambda c, d: locate_subjects(d))
def load_ppg(config: TaskConfig, seed: int, data_dir: Path) -> TaskData:
    files = locate_subjects(data_dir)
    a = cached_arrays(files, PROTOCOL, data_dir, functools.partial(build, files))
    split = {s: Split(a[f"{s}_x"], a[f"{s}_y"][..., None]) for s in ("train", "val", "test")}
    for s, part in split.items():
        if len(part) == 0:
            raise MissingDataError("PPG-DaLiA", files, f"the {s} split has no {WINDOW}-step window: recordings too short.")
    return TaskData(
        "ppg", split["train"], split["val"], split["test"], head="regression", num_outputs=1,
        output_step=LABEL_STEP, output_activation="tanh",
    )
