"""UEA archive datasets from the user's files, with the LinOSS protocol (docs/models.md section 8).

Protocol: read the archive's TRAIN and TEST files with aeon's readers (``.ts`` preferred, ``.arff``
accepted), concatenate them, drop later duplicates of an identical input series (whatever their
label), no input normalisation, then a seeded random 70/15/15 split per seed
(:func:`dlbench.tasks.protocol_split`: sizes int(0.7 n) / int(0.85 n) - int(0.7 n) / rest). The time
channel t_k = k/L is the task option ``time_channel``. Unequal lengths are zero-padded at the end
with a mask; missing values (NaN) become 0.

Files are looked for under the data directory in the archive's own layouts:
``<dir>/<Name>/``, ``<dir>/UEA/<Name>/``, ``<dir>/Multivariate_ts/<Name>/``,
``<dir>/Multivariate_arff/<Name>/``, ``<dir>/raw/UEA/Multivariate_arff/<Name>/`` (the LinOSS code's).
"""

from __future__ import annotations

import functools
from pathlib import Path

import numpy as np

from dlbench.config import TaskConfig
from dlbench.errors import DlbenchError
from dlbench.tasks import (
    MissingDataError,
    Split,
    TaskData,
    encode_labels,
    fill_missing,
    pad_series,
    protocol_split,
    register_task,
)
from dlbench.tasks.cache import cached_arrays

# Bump when the parsed arrays change, so old caches are not read.
PROTOCOL = "uea:v1:dedup-concat"
LAYOUTS = ("{name}", "UEA/{name}", "Multivariate_ts/{name}", "Multivariate_arff/{name}", "raw/UEA/Multivariate_arff/{name}")
SUFFIXES = (".ts", ".arff")

# Task name -> archive name (the six long-sequence datasets of the LinOSS / D-LinOSS papers).
UEA_DATASETS = {
    "eigenworms": "EigenWorms",
    "scp1": "SelfRegulationSCP1",
    "scp2": "SelfRegulationSCP2",
    "ethanol": "EthanolConcentration",
    "heartbeat": "Heartbeat",
    "motorimagery": "MotorImagery",
}


def locate_archive(name: str, data_dir: Path) -> list[Path]:
    """The (TRAIN, TEST) files of archive ``name``, or :class:`MissingDataError` listing every path tried."""
    searched = []
    for layout in LAYOUTS:
        folder = data_dir / layout.format(name=name)
        for suffix in SUFFIXES:
            pair = [folder / f"{name}_{split}{suffix}" for split in ("TRAIN", "TEST")]
            if all(p.is_file() for p in pair):
                return pair
            searched.append(folder / f"{name}_{{TRAIN,TEST}}{suffix}")
    raise MissingDataError(
        f"UEA {name}",
        searched,
        f"Put {name}_TRAIN.ts and {name}_TEST.ts (or .arff) from the UEA archive "
        f"(timeseriesclassification.com, Multivariate_ts.zip) in {data_dir / name}/.",
    )


def deduplicate(series: list[np.ndarray], labels: np.ndarray) -> tuple[list[np.ndarray], np.ndarray]:
    """Keep the first occurrence of each distinct input series (compared bytewise, shape included)."""
    seen: set[tuple] = set()
    keep = []
    for i, s in enumerate(series):
        key = (s.shape, np.ascontiguousarray(s).tobytes())
        if key not in seen:
            seen.add(key)
            keep.append(i)
    return [series[i] for i in keep], labels[keep]


def check_partners(files: list[Path], train: list[np.ndarray], test: list[np.ndarray]) -> None:
    """Refuse a file that parses to zero series, or whose series differ in shape from its partner's.

    Channels must agree; lengths must agree too when each file has one length (equal-length archives;
    unequal-length archives are padded with a mask, so their lengths may differ)."""
    for path, series in zip(files, (train, test), strict=True):
        if not series:
            raise DlbenchError(f"{path}: parses to zero series (damaged or not a UEA .ts/.arff file)")
    channels = [{s.shape[-1] if s.ndim > 1 else 1 for s in part} for part in (train, test)]
    if len(channels[0] | channels[1]) > 1:
        raise DlbenchError(
            f"{files[0]} has series with {sorted(channels[0])} channels but {files[1]} with {sorted(channels[1])}; "
            "the TRAIN and TEST files must come from the same archive"
        )
    lengths = [{len(s) for s in part} for part in (train, test)]
    if len(lengths[0]) == 1 and len(lengths[1]) == 1 and lengths[0] != lengths[1]:
        raise DlbenchError(
            f"{files[0]} has series of length {min(lengths[0])} but {files[1]} of length {min(lengths[1])}; "
            "the TRAIN and TEST files must come from the same archive"
        )


def parse_archive(files: list[Path]) -> dict[str, np.ndarray]:
    """TRAIN + TEST -> de-duplicated, padded arrays: x (n, L, C), mask (n, L), y (n,), classes."""
    from dlbench.tasks.bundled import read_ts

    train, train_y = read_ts(files[0])  # unreadable files: dlbench.tasks.load_task names them
    test, test_y = read_ts(files[1])
    check_partners(files, train, test)
    series, labels = deduplicate(train + test, np.concatenate([train_y, test_y]))
    x, mask = pad_series(series)
    (y,), classes = encode_labels(labels)
    out = {"x": fill_missing(x), "y": y, "classes": np.array(classes)}
    if mask is not None:
        out["mask"] = mask
    return out


def protocol_task(key: str, arrays: dict[str, np.ndarray], seed: int) -> TaskData:
    """The seeded 70/15/15 split of parsed arrays."""
    full = Split(arrays["x"], arrays["y"], arrays.get("mask"))
    train, val, test = (full.take(i) for i in protocol_split(len(full), seed))
    classes = tuple(str(c) for c in arrays["classes"])
    return TaskData(key, train, val, test, head="classification", num_outputs=len(classes), classes=classes)


def _register(key: str, name: str) -> None:
    def locate(config: TaskConfig, data_dir: Path) -> list[Path]:
        return locate_archive(name, data_dir)

    @register_task(key, description=f"UEA {name} from your files, LinOSS protocol (dedup, seeded 70/15/15)", locate=locate)
    def load(config: TaskConfig, seed: int, data_dir: Path) -> TaskData:
        files = locate_archive(name, data_dir)
        arrays = cached_arrays(files, PROTOCOL, data_dir, functools.partial(parse_archive, files))
        return protocol_task(key, arrays, seed)


for _key, _name in UEA_DATASETS.items():
    _register(_key, _name)
