"""Long-horizon forecasting: the Informer protocol as the LinOSS line runs it, and bundled series.

Protocol (state-spaces/s4 ``src/dataloaders/et.py``: ``InformerDataset._borders``, ``__read_data__``
and ``__getitem__``, itself adapted from Informer's loader, Zhou et al. AAAI 2021), for a table of
n time steps:

* chronological split: train = the first int(0.7 n) steps, test = the last int(0.2 n) steps,
  validation = the rest in between (fractions configurable: ``train_fraction``, ``test_fraction``);
* windows start anywhere, stride 1, and the validation and test parts begin L_in steps early (the
  borders ``num_train - L_in`` and ``n - num_test - L_in``), so their first prediction is the step
  right after the previous part;
* a StandardScaler (mean and population std per variable, NumPy ``std(0)``) fitted on the train
  part only, applied to everything; metrics are on this normalised scale, as the papers report them;
* variables: "S" the target alone in and out (s4's ``configs/dataset/weather.yaml`` default),
  "MS" every variable in and the target out, "M" every variable in and out; Informer's column order
  (date dropped, the target moved last);
* the model reads L_in observed steps followed by L_out placeholder steps of zeros (s4 appends
  ``np.zeros((pred_len, C))``) and its per-step outputs at the last L_out steps are the forecast
  (``TaskData.output_last`` = L_out, identity output activation).

Bundled series (nothing downloaded): univariate forecasting data sets that ship inside aeon
(``aeon/datasets/data``), read with pandas from the package directory.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from dlbench.config import TaskConfig
from dlbench.errors import DlbenchError
from dlbench.tasks import Split, TaskData, register_task


def informer_borders(n: int, input_len: int, train_fraction: float = 0.7, test_fraction: float = 0.2):
    """(starts, ends) of the train / val / test parts of an n-step table (s4 ``InformerDataset._borders``).

    num_train = int(train_fraction n), num_test = int(test_fraction n), num_val = the rest;
    starts = [0, num_train - L_in, n - num_test - L_in], ends = [num_train, num_train + num_val, n].
    """
    num_train = int(n * train_fraction)
    num_test = int(n * test_fraction)
    num_val = n - num_train - num_test
    starts = [0, num_train - input_len, n - num_test - input_len]
    ends = [num_train, num_train + num_val, n]
    return starts, ends


def standardise(values: np.ndarray, num_train: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(scaled values, mean, std): a per-column StandardScaler fitted on ``values[:num_train]`` only.

    Population std (ddof 0) as s4's and Informer's scaler; a constant training column keeps std 1
    instead of dividing by zero.
    """
    train = values[:num_train].astype(np.float64)
    mean, std = train.mean(axis=0), train.std(axis=0)
    std = np.where(std > 0, std, 1.0)
    return (values - mean) / std, mean, std


def windows(inputs: np.ndarray, targets: np.ndarray, input_len: int, pred_len: int) -> tuple[np.ndarray, np.ndarray]:
    """All stride-1 windows of one part: x (k, L_in + L_out, C_in) with L_out zero placeholders, y (k, L_out, C_out).

    k = len - L_in - L_out + 1 (s4 ``InformerDataset.__len__``); window i observes steps i .. i+L_in-1
    and predicts steps i+L_in .. i+L_in+L_out-1.
    """
    k = len(inputs) - input_len - pred_len + 1
    if k < 1:
        return np.zeros((0, input_len + pred_len, inputs.shape[1]), np.float32), np.zeros(
            (0, pred_len, targets.shape[1]), np.float32
        )
    x = np.zeros((k, input_len + pred_len, inputs.shape[1]), np.float32)
    index = np.arange(k)[:, None]
    x[:, :input_len] = inputs[index + np.arange(input_len)[None, :]]
    y = targets[index + input_len + np.arange(pred_len)[None, :]].astype(np.float32)
    return x, y


def forecast_task(
    name: str,
    values: np.ndarray,
    columns: Sequence[str],
    target: str,
    config: TaskConfig,
    *,
    where: str,
) -> TaskData:
    """The protocol above on a (n, variables) table whose column ``target`` is the forecast target.

    Args:
      values: (n, variables) float, time along axis 0, in the file's column order (date removed).
      columns: the variables' names, len = variables.
      target: the target column's name.
      config: input_len, pred_len, train_fraction, test_fraction, features.
      where: the file or data set named in errors.
    """
    columns = list(columns)
    if target not in columns:
        raise DlbenchError(f"{where}: no target column {target!r}; columns: {', '.join(columns)}")
    # Informer's order: the other variables, then the target last.
    order = [c for c in columns if c != target] + [target]
    table = values[:, [columns.index(c) for c in order]].astype(np.float64)
    if config.features == "S":
        table = table[:, -1:]
    n, L_in, L_out = len(table), config.input_len, config.pred_len
    starts, ends = informer_borders(n, L_in, config.train_fraction, config.test_fraction)
    scaled, _, _ = standardise(table, ends[0])
    target_slice = slice(None) if config.features == "M" else slice(-1, None)
    splits = []
    for part, start, end in zip(("train", "val", "test"), starts, ends, strict=True):
        chunk = scaled[max(start, 0) : end]
        x, y = windows(chunk, chunk[:, target_slice], L_in, L_out)
        if len(x) == 0 or start < 0:
            raise DlbenchError(
                f"{where}: {n} steps are too few for input_len={L_in} + pred_len={L_out}: the {part} part "
                f"(steps {start}..{end}) holds no whole window; lower input_len / pred_len"
            )
        splits.append(Split(x, y))
    return TaskData(
        name=name,
        train=splits[0],
        val=splits[1],
        test=splits[2],
        head="regression",
        num_outputs=splits[0].y.shape[-1],
        output_step=1,
        output_activation="identity",  # standardised targets are unbounded
        output_last=L_out,
    )


# --- series bundled with aeon ---------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class BundledSeries:
    """A forecasting series inside aeon: its folder/file, the value column and a description."""

    folder: str
    column: str
    description: str


BUNDLED_SERIES = {
    "airline": BundledSeries("Airline", "Passengers", "Airline passengers, monthly 1949-1960, 144 steps, univariate"),
    "solar": BundledSeries("solar", "solar_gen", "GB national solar generation, half-hourly, 289 steps, univariate"),
}


def aeon_series(folder: str) -> Path:
    import aeon.datasets

    return Path(aeon.datasets.__file__).parent / "data" / folder / f"{folder}.csv"


def _series_loader(key: str, spec: BundledSeries):
    def load(config: TaskConfig, seed: int, data_dir: Path) -> TaskData:
        import pandas as pd

        path = aeon_series(spec.folder)
        frame = pd.read_csv(path)
        values = frame[[spec.column]].to_numpy(np.float64)
        return forecast_task(key, values, [spec.column], spec.column, config, where=str(path))

    return load


for _key, _spec in BUNDLED_SERIES.items():
    register_task(_key, description=_spec.description + ", Informer forecasting protocol (bundled with aeon)")(
        _series_loader(_key, _spec)
    )
