"""Real datasets that ship inside the aeon package: no download, no data directory.

Each keeps its original train/test split; a seeded fraction (``val_fraction``) of the original train
split becomes the validation split, so the test split is exactly the archive's. Files are read with
aeon's own ``.ts`` reader.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np

from dlbench.config import TaskConfig
from dlbench.tasks import Split, TaskData, carve_validation, encode_labels, fill_missing, pad_series, register_task


@dataclasses.dataclass(frozen=True)
class Bundled:
    """One aeon-bundled dataset: its archive name and the head it needs."""

    archive: str
    head: str
    description: str


BUNDLED = {
    "basicmotions": Bundled("BasicMotions", "classification", "BasicMotions: 6-ch accelerometer/gyro, 100 steps, 4 classes"),
    "japanesevowels": Bundled("JapaneseVowels", "classification", "JapaneseVowels: 12 ch, unequal lengths 7-29 (padded + mask), 9 classes"),
    "gunpoint": Bundled("GunPoint", "classification", "GunPoint: univariate, 150 steps, 2 classes"),
    "italypowerdemand": Bundled("ItalyPowerDemand", "classification", "ItalyPowerDemand: univariate, 24 steps, 2 classes"),
    "covid3month": Bundled("Covid3Month", "regression", "Covid3Month: univariate, 84 steps, one real target per series"),
    "cardanosentiment": Bundled("CardanoSentiment", "regression", "CardanoSentiment: 2 ch, 24 steps, one real target in [-1, 1]"),
}


def aeon_file(archive: str, split: str) -> Path:
    import aeon.datasets

    return Path(aeon.datasets.__file__).parent / "data" / archive / f"{archive}_{split}.ts"


def read_ts(path: Path) -> tuple[list[np.ndarray], np.ndarray]:
    """A ``.ts`` or ``.arff`` file through aeon's readers -> list of (L_i, C) float series and labels."""
    from aeon.datasets import load_from_arff_file, load_from_ts_file

    if path.suffix == ".arff":
        x, y = load_from_arff_file(str(path))
    else:
        x, y = load_from_ts_file(str(path), return_type="auto")
    # aeon gives (n, C, L) or a list of (C, L_i); dlbench works in (L, C).
    return [np.asarray(s, np.float64).T for s in x], np.asarray(y)


def _loader(key: str, spec: Bundled):
    def load(config: TaskConfig, seed: int, data_dir: Path) -> TaskData:
        train_series, train_y = read_ts(aeon_file(spec.archive, "TRAIN"))
        test_series, test_y = read_ts(aeon_file(spec.archive, "TEST"))
        x, mask = pad_series(train_series + test_series)
        x = fill_missing(x)
        n_train = len(train_series)
        if spec.head == "classification":
            (y_train, y_test), classes = encode_labels(train_y, test_y)
            num_outputs = len(classes)
        else:
            # One real target per series, read at the last step (output_step = L).
            y_train = train_y.astype(np.float32).reshape(-1, 1, 1)
            y_test = test_y.astype(np.float32).reshape(-1, 1, 1)
            classes, num_outputs = (), 1
        m = (lambda s: None) if mask is None else (lambda s: mask[s])
        train = Split(x[:n_train], y_train, m(slice(None, n_train)))
        test = Split(x[n_train:], y_test, m(slice(n_train, None)))
        train, val = carve_validation(train, config.val_fraction, seed)
        return TaskData(
            name=key,
            train=train,
            val=val,
            test=test,
            head=spec.head,
            num_outputs=num_outputs,
            output_step=x.shape[1] if spec.head == "regression" else 1,
            output_activation="identity",
            classes=classes,
        )

    return load


for _key, _spec in BUNDLED.items():
    register_task(_key, description=_spec.description + " (bundled with aeon)")(_loader(_key, _spec))
