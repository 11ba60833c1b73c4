"""Tasks: the data a training run reads, behind one registry.

A task loader is registered with ``@register_task("name", ...)`` beside its code and returns a
:class:`TaskData` of NumPy arrays with a fixed layout:

    x:    (n, seq, inputs) float32, padding (if any) at the end of each series
    mask: (n, seq) bool or None; True marks the valid steps
    y:    (n,) int32 class indices (classification) or (n, targets, outputs) float32 (regression:
          one target every ``output_step`` inputs, read at steps s-1, 2s-1, ...; forecasting:
          ``output_last`` = L_out targets read at the last L_out steps, see :mod:`dlbench.tasks.forecast`)

Loaders that read user files declare them through ``locate`` so that ``dlbench run`` can check every
file before importing JAX or building a model; a missing file is one :class:`MissingDataError` that
names the dataset, every path searched and where to put the files. Nothing is ever downloaded.

Modules: ``bundled`` (real datasets shipped inside aeon), ``synthetic`` (exponential decay),
``uea`` (UEA archive files, LinOSS protocol), ``ppg`` (PPG-DaLiA pickles), ``forecast`` (the
Informer forecasting protocol and the aeon-bundled forecasting series), ``weather`` (the user's WTH.csv),
``cache`` (.npz cache).
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from dlbench.config import TaskConfig
from dlbench.errors import DlbenchError, UnknownChoiceError

DATA_ENV = "DLBENCH_DATA"


class MissingDataError(DlbenchError, FileNotFoundError):
    """A dataset's files are not where dlbench looked; the message says where to put them."""

    def __init__(self, dataset: str, searched: Sequence[Path], instructions: str):
        self.dataset, self.searched = dataset, tuple(searched)
        paths = ", ".join(str(p) for p in self.searched)
        super().__init__(
            f"dataset {dataset!r} not found; searched: {paths}. {instructions} "
            f"(set the data directory with --data-dir DIR or {DATA_ENV}=DIR; dlbench never downloads)"
        )


@dataclasses.dataclass(frozen=True)
class Split:
    """One split: inputs (n, seq, inputs), targets, and the valid-step mask (n, seq) or None."""

    x: np.ndarray
    y: np.ndarray
    mask: np.ndarray | None = None

    def __post_init__(self):
        if len(self.x) != len(self.y) or (self.mask is not None and self.mask.shape != self.x.shape[:2]):
            raise ValueError(f"inconsistent split shapes x {self.x.shape}, y {self.y.shape}")

    def __len__(self) -> int:
        return len(self.x)

    def take(self, index: np.ndarray) -> Split:
        return Split(self.x[index], self.y[index], None if self.mask is None else self.mask[index])


@dataclasses.dataclass(frozen=True)
class TaskData:
    """A task's three splits and what the model head needs to know about them."""

    name: str
    train: Split
    val: Split
    test: Split
    head: str  # "classification" or "regression"
    num_outputs: int  # classes, or target channels
    output_step: int = 1  # regression: one target every output_step inputs
    output_activation: str = "identity"  # regression head's activation ("tanh" for targets in [-1, 1])
    output_last: int = 0  # forecasting: targets are read at the last output_last steps (output_step unused)
    classes: tuple[str, ...] = ()  # original class labels, index -> label

    @property
    def num_inputs(self) -> int:
        return int(self.train.x.shape[-1])

    @property
    def seq_len(self) -> int:
        return int(self.train.x.shape[1])

    @property
    def has_mask(self) -> bool:
        return any(s.mask is not None for s in (self.train, self.val, self.test))


Loader = Callable[[TaskConfig, int, Path], TaskData]
Locator = Callable[[TaskConfig, Path], list[Path]]


@dataclasses.dataclass(frozen=True)
class TaskSpec:
    """A registered task: its loader, its user files (if any), and a one-line description."""

    name: str
    load: Loader
    description: str
    locate: Locator | None = None  # returns the files to read, or raises MissingDataError


_TASKS: dict[str, TaskSpec] = {}


def register_task(name: str, *, description: str, locate: Locator | None = None) -> Callable[[Loader], Loader]:
    """Function decorator: register ``load(config, seed, data_dir) -> TaskData`` as task ``name``."""

    def decorate(load: Loader) -> Loader:
        if name in _TASKS:
            raise ValueError(f"task {name!r} is already registered")
        _TASKS[name] = TaskSpec(name, load, description, locate)
        return load

    return decorate


def task_names() -> tuple[str, ...]:
    return tuple(_TASKS)


def get_task(name: str) -> TaskSpec:
    try:
        return _TASKS[name]
    except KeyError:
        raise UnknownChoiceError("task", name, _TASKS) from None


def resolve_data_dir(data_dir: str | os.PathLike | None) -> Path:
    """``--data-dir``, else ``$DLBENCH_DATA``, else ``./data``."""
    return Path(data_dir or os.environ.get(DATA_ENV) or "data")


def check_data(config: TaskConfig, data_dir: Path) -> None:
    """Raise :class:`MissingDataError` now if the task's user files are missing (no heavy imports)."""
    spec = get_task(config.dataset)
    if spec.locate is not None:
        spec.locate(config, data_dir)


def check_files(config: TaskConfig, seed: int, data_dir: Path) -> None:
    """Read the task's user files now, so that a damaged one (a garbage TRAIN file beside a valid TEST
    file) is refused before a run folder is written; generated and bundled data are not the user's
    input and are read when their run starts. Parsed archives are cached, so the run reads them again cheaply."""
    if get_task(config.dataset).locate is not None:
        load_task(config, seed, data_dir)


def load_task(config: TaskConfig, seed: int, data_dir: Path) -> TaskData:
    """The task's splits for ``seed`` (seeded splits differ per seed; file parsing is cached)."""
    spec = get_task(config.dataset)
    try:
        data = spec.load(config, seed, data_dir)
    except DlbenchError:
        raise
    except Exception as error:
        if spec.locate is None:  # generated or bundled data: a failure here is a bug, keep its traceback
            raise
        # The user's own files: a truncated download or a foreign file is bad input, not a crash.
        files = spec.locate(config, data_dir)
        shown = ", ".join(str(f) for f in (files if isinstance(files, (list, tuple)) else [files])[:3])
        detail = str(error).splitlines()[0] if str(error) else ""
        raise DlbenchError(
            f"could not read dataset {config.dataset!r} from {shown}: {type(error).__name__}: {detail}"[:500]
            + " (expected the archive's original, unmodified files)"
        ) from None
    if config.time_channel:
        data = with_time_channel(data)
    return data


# --- helpers shared by the loaders ---------------------------------------------------------------


def pad_series(series: Sequence[np.ndarray]) -> tuple[np.ndarray, np.ndarray | None]:
    """Variable-length (L_i, C) series -> (n, max L, C) zero-padded at the end, and the mask (None if equal)."""
    lengths = np.array([len(s) for s in series])
    width = series[0].shape[1]
    x = np.zeros((len(series), lengths.max(), width), np.float32)
    mask = np.arange(lengths.max())[None, :] < lengths[:, None]
    for i, s in enumerate(series):
        x[i, : len(s)] = s
    return x, (None if (lengths == lengths.max()).all() else mask)


def fill_missing(x: np.ndarray) -> np.ndarray:
    """Missing values (NaN) become 0, the value padding uses: explicit, not silent propagation into the loss."""
    return np.where(np.isfinite(x), x, 0.0).astype(np.float32)


def with_time_channel(data: TaskData) -> TaskData:
    """Prepend t_k = k / L (L the padded length) as channel 0, as the LinOSS code does with T = 1."""

    def add(split: Split) -> Split:
        n, length, _ = split.x.shape
        t = np.broadcast_to((np.arange(length, dtype=np.float32) / length)[None, :, None], (n, length, 1))
        return Split(np.concatenate([t, split.x], axis=-1), split.y, split.mask)

    return dataclasses.replace(data, train=add(data.train), val=add(data.val), test=add(data.test))


def protocol_split(n: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The LinOSS/Log-NCDE random 70/15/15 split: boundaries int(0.7 n) and int(0.85 n) of a seeded permutation.

    So 236 -> 165 / 35 / 36 (train / val / test); the truncation puts the rounding into the test split.
    The permutation is NumPy's (seeded by ``seed``), not the authors' JAX key, so the members differ
    from theirs while the sizes match.
    """
    perm = np.random.default_rng(seed).permutation(n)
    a, b = int(n * 0.7), int(n * 0.85)
    return perm[:a], perm[a:b], perm[b:]


def carve_validation(train: Split, fraction: float, seed: int) -> tuple[Split, Split]:
    """Split a dataset's original train split into (train, validation), seeded."""
    perm = np.random.default_rng(seed).permutation(len(train))
    n_val = max(1, int(round(len(train) * fraction)))
    return train.take(np.sort(perm[n_val:])), train.take(np.sort(perm[:n_val]))


def encode_labels(*label_arrays: np.ndarray) -> tuple[list[np.ndarray], tuple[str, ...]]:
    """String labels -> int32 indices over the sorted union of labels."""
    classes = tuple(sorted({str(v) for arr in label_arrays for v in arr}))
    index = {c: i for i, c in enumerate(classes)}
    return [np.array([index[str(v)] for v in arr], np.int32) for arr in label_arrays], classes


# Importing the loader modules runs their registrations.
from dlbench.tasks import bundled, forecast, ppg, synthetic, uea, weather  # noqa: E402,F401
