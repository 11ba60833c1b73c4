"""What two runs of the same cells must agree on: every row except the machine's measurements.

Times (unit ``s``) vary from run to run, and ``peak_bytes`` on CPU is the process's peak RSS so far,
which grows over the runs of one test process: neither is a property of the cell.
"""

import pandas as pd

MACHINE_UNITS = ("s", "bytes")


def deterministic_cells(frame: pd.DataFrame) -> list[tuple]:
    frame = frame[~frame.unit.isin(MACHINE_UNITS)]
    return sorted(zip(frame.task, frame.model, frame.seed, frame.metric, frame["index"].fillna(-1), frame.value.round(6), strict=True))
