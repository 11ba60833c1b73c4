"""The one writer and reader of result rows."""

import pandas as pd
import pytest

from dlbench.errors import DlbenchError
from dlbench.rundir import COLUMNS, RowWriter, read_rows


def test_writer_appends_and_never_rewrites(tmp_path):
    path = tmp_path / "rows.csv"
    RowWriter(path, defaults={"run_id": "a"}).write({"model": "lru", "metric": "wall_s", "value": 0.5, "unit": "s"})
    first = path.read_text()
    RowWriter(path, defaults={"run_id": "a"}).write({"model": "lru", "metric": "wall_s", "value": 0.25, "unit": "s"})
    assert path.read_text().startswith(first)
    rows = read_rows([path])
    assert list(rows.value) == [0.5, 0.25] and set(rows.status) == {"ok"}
    assert rows.jax_version.notna().all() and rows.time_utc.notna().all()


def test_unknown_column_or_status_is_refused(tmp_path):
    writer = RowWriter(tmp_path / "rows.csv")
    with pytest.raises(ValueError, match="unknown result columns"):
        writer.write({"model": "lru", "metric": "m", "value": 1, "unit": "s", "colour": "red"})
    with pytest.raises(ValueError, match="unknown status"):
        writer.write({"model": "lru", "metric": "m", "value": 1, "unit": "s", "status": "meh"})


def test_directory_read_takes_rows_files_only(tmp_path):
    RowWriter(tmp_path / "run" / "rows.csv").write({"model": "s5", "metric": "wall_s", "value": 1.0, "unit": "s"})
    pd.DataFrame({"model": ["s5"], "rank": [1]}).to_csv(tmp_path / "run" / "leaderboard.csv", index=False)
    rows = read_rows([tmp_path])
    assert len(rows) == 1 and list(rows.columns[: len(COLUMNS)]) == list(COLUMNS)


def test_foreign_csv_names_file_and_missing_columns(tmp_path):
    foreign = tmp_path / "other.csv"
    pd.DataFrame({"a": [1]}).to_csv(foreign, index=False)
    with pytest.raises(DlbenchError, match=r"other.csv: not a dlbench result table; missing columns: model, metric"):
        read_rows([foreign])
