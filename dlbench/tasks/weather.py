"""The Informer "WTH" weather data set from the user's ``WTH.csv`` (nothing is downloaded).

Hourly local climatological data of US weather stations, 2010-2013 (35,064 rows in the original
file): a ``date`` column and 12 numeric variables, target ``WetBulbCelsius`` (Zhou et al., "Informer",
AAAI 2021; the variable list is the file's header). Read from ``DATA/weather/WTH.csv`` or
``DATA/WTH.csv`` (DATA = ``--data-dir`` / ``$DLBENCH_DATA`` / ``./data``).

Protocol: :mod:`dlbench.tasks.forecast` (s4's ``InformerDataset``: chronological 70/10/20 borders,
train-only StandardScaler, L_in observed steps + L_out zero placeholders, the last L_out outputs are
the forecast); s4's ``_Dataset_Weather`` sets ``data_path="WTH.csv"``, ``target="WetBulbCelsius"``.
Lengths default to 720 in and 720 out, the setting the LinOSS papers' weather numbers are reported
for (docs/models.md section 8 records it from a secondary source; s4's own ``configs/dataset/weather.yaml``
default is 384 in, 96 out, features "S"); both are task keys.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from dlbench.config import TaskConfig
from dlbench.errors import DlbenchError
from dlbench.tasks import MissingDataError, TaskData, register_task
from dlbench.tasks.forecast import forecast_task

FILE = "WTH.csv"
TARGET = "WetBulbCelsius"
# Where the file may be, relative to the data directory, in search order.
PLACES = ("weather/WTH.csv", "WTH.csv")

# Published test MAE on the normalised scale, weather forecasting (one number per model, no std).
# Sources: the D-LinOSS paper (Boyer, Rusch & Rus, arXiv 2505.12171, weather table) for all three;
# the LinOSS paper (Rusch & Rus, ICLR 2025, arXiv 2410.03943) reports the two LinOSS rows first.
# The papers' baselines (Informer, S4, ...) are not listed: they could not be checked against a public
# source in this repository's history, and a number without a source is not shown.
# The papers' weather numbers live with the other published tables, in dlbench/report/published.py.


def locate_weather(data_dir: Path) -> Path:
    """The first of DATA/weather/WTH.csv, DATA/WTH.csv that exists, else :class:`MissingDataError`."""
    searched = [data_dir / place for place in PLACES]
    for path in searched:
        if path.is_file():
            return path
    raise MissingDataError(
        FILE,
        searched,
        f"Put the Informer weather file {FILE} (a 'date' column and 12 variables, target {TARGET}) at {searched[0]}.",
    )


def read_weather(path: Path, target: str = TARGET) -> tuple[np.ndarray, list[str]]:
    """(values (n, variables) float64, column names) of a WTH.csv in the official layout, date dropped."""
    import pandas as pd

    frame = pd.read_csv(path)
    if "date" not in frame.columns:
        raise DlbenchError(
            f"{path}: no 'date' column (header: {', '.join(map(str, frame.columns))}); expected the original WTH.csv"
        )
    frame["date"] = pd.to_datetime(frame["date"])
    if not frame["date"].is_monotonic_increasing:
        raise DlbenchError(f"{path}: the 'date' column is not in time order; the chronological split needs it")
    variables = [c for c in frame.columns if c != "date"]
    values = frame[variables].apply(pd.to_numeric, errors="coerce").to_numpy(np.float64)
    bad = ~np.isfinite(values)
    if bad.any():
        row, col = np.argwhere(bad)[0]
        raise DlbenchError(
            f"{path}: {int(bad.sum())} missing or non-numeric values (first: row {row + 2}, column {variables[col]!r})"
        )
    return values, variables


@register_task(
    "weather",
    description="Informer WTH weather forecasting from your WTH.csv (WetBulbCelsius, 720 -> 720, normalised MAE/MSE)",
    locate=lambda c, d: [locate_weather(d)],
)
def load_weather(config: TaskConfig, seed: int, data_dir: Path) -> TaskData:
    path = locate_weather(data_dir)
    target = config.target_column or TARGET
    values, variables = read_weather(path, target)
    return forecast_task("weather", values, variables, target, config, where=str(path))
