"""The run directory: the one owner of output folders and their rows.

  vocabulary  columns, metrics and units, statuses, what ends a run (results/README.md is generated from it)
  rows        RowWriter / NullWriter (the one writer), read_table / read_rows (the one, strict, reader), run ids
  lock        the folder's exclusive lock (one writing process)
  manifest    manifest.json (resolved settings, config_hash), the --resume rules, trimming unfinished runs

This package imports no JAX at import time (only :func:`provenance`, called by the writer, does).
"""

from dlbench.rundir.lock import LOCK_FILE, FolderLockedError, holding_lock, lock_dir
from dlbench.rundir.manifest import (
    MANIFEST_FILE,
    Manifest,
    cell_outcomes,
    check_resume,
    config_hash,
    diff_settings,
    finished_runs,
    merged,
    read_manifest,
    rows_run_id,
    run_outcomes,
    trim_unfinished,
)
from dlbench.rundir.rows import (
    ROWS_FILE,
    BoundWriter,
    NullWriter,
    RowWriter,
    Table,
    check_row,
    new_run_id,
    provenance,
    read_rows,
    read_table,
    result_files,
    utc_now,
)
from dlbench.rundir.vocabulary import (
    AXES,
    COLUMNS,
    FAILED,
    FINAL_METRICS,
    HIGHER_IS_BETTER,
    IDENTITY,
    INTEGER_COLUMNS,
    LOSS_UNITS,
    MEASUREMENT,
    METRIC,
    METRIC_NAMES,
    METRICS,
    OUTCOME,
    PROVENANCE,
    REQUIRED,
    STATUSES,
    UNIT_NAMES,
)

__all__ = [
    "AXES", "COLUMNS", "FAILED", "FINAL_METRICS", "HIGHER_IS_BETTER", "IDENTITY", "INTEGER_COLUMNS", "LOSS_UNITS",
    "MEASUREMENT", "METRIC", "METRIC_NAMES", "METRICS", "OUTCOME", "PROVENANCE", "REQUIRED", "STATUSES", "UNIT_NAMES",
    "ROWS_FILE", "RowWriter", "NullWriter", "BoundWriter", "Table", "check_row", "new_run_id", "provenance",
    "read_rows", "read_table", "result_files", "utc_now",
    "LOCK_FILE", "FolderLockedError", "holding_lock", "lock_dir",
    "MANIFEST_FILE", "Manifest", "cell_outcomes", "check_resume", "config_hash", "diff_settings", "finished_runs",
    "merged", "read_manifest", "rows_run_id", "run_outcomes", "trim_unfinished",
]
