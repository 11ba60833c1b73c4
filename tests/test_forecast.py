"""Forecasting: the Informer protocol (borders, train-only scaling, windows), WTH.csv, the head, the CLI."""

from pathlib import Path

import jax.numpy as jnp
import numpy as np
import pandas as pd
import pytest

from dlbench.cli import main
from dlbench.config import TaskConfig
from dlbench.errors import DlbenchError
from dlbench.tasks import load_task
from dlbench.tasks.forecast import forecast_task, informer_borders, standardise, windows

# The official WTH.csv header: date, then 12 variables, target WetBulbCelsius last.
WTH_COLUMNS = [
    "Visibility", "DryBulbFarenheit", "DryBulbCelsius", "WetBulbFarenheit", "DewPointFarenheit", "DewPointCelsius",
    "RelativeHumidity", "WindSpeed", "WindDirection", "StationPressure", "Altimeter", "WetBulbCelsius",
]  # fmt: skip


def write_wth(path: Path, n: int = 331, seed: int = 0) -> pd.DataFrame:
    """A WTH.csv in the official layout: hourly dates and 12 numeric variables (daily cycle + noise)."""
    rng = np.random.default_rng(seed)
    t = np.arange(n)
    frame = pd.DataFrame({"date": pd.date_range("2010-01-01", periods=n, freq="h").strftime("%Y-%m-%d %H:%M:%S")})
    for i, column in enumerate(WTH_COLUMNS):
        frame[column] = 10 * i + np.sin(2 * np.pi * t / 24 + i) + 0.1 * rng.standard_normal(n)
    path.parent.mkdir(parents=True, exist_ok=True)
    frame.to_csv(path, index=False)
    return frame


def config(**keys) -> TaskConfig:
    return TaskConfig(**keys)


def test_borders_are_s4s():
    # s4 InformerDataset._borders: int(0.7 n), int(0.2 n), the rest; val/test start input_len early.
    assert informer_borders(1000, 96) == ([0, 604, 704], [700, 800, 1000])
    assert informer_borders(35064, 720) == ([0, 24544 - 720, 35064 - 7012 - 720], [24544, 35064 - 7012, 35064])
    assert informer_borders(101, 7, 0.5, 0.3) == ([0, 50 - 7, 101 - 30 - 7], [50, 71, 101])


def test_scaler_is_fitted_on_the_train_part_only():
    rng = np.random.default_rng(1)
    values = rng.normal(3.0, 2.0, (53, 3))
    scaled, mean, std = standardise(values, 37)
    np.testing.assert_allclose(scaled[:37].mean(0), 0.0, atol=1e-12)
    np.testing.assert_allclose(scaled[:37].std(0), 1.0, rtol=1e-12)  # population std, as s4/Informer
    changed = values.copy()
    changed[37:] *= 100.0  # the later parts do not move the scaler
    np.testing.assert_allclose(standardise(changed, 37)[0][:37], scaled[:37])
    assert np.isfinite(standardise(np.ones((5, 1)), 3)[0]).all()  # a constant column keeps std 1


def test_windows_observe_then_predict_the_next_steps():
    series = np.arange(17, dtype=np.float64)[:, None]
    x, y = windows(series, series, input_len=5, pred_len=3)
    assert x.shape == (17 - 5 - 3 + 1, 8, 1) and y.shape == (10, 3, 1)
    np.testing.assert_array_equal(x[2, :5, 0], [2, 3, 4, 5, 6])
    np.testing.assert_array_equal(x[:, 5:], 0.0)  # the L_out placeholders are zeros (s4)
    np.testing.assert_array_equal(y[2, :, 0], [7, 8, 9])
    np.testing.assert_array_equal(y[-1, :, 0], [14, 15, 16])  # the last window ends at the last step


def test_each_part_forecasts_right_after_the_previous_one():
    n, L_in, L_out = 211, 11, 7
    values = np.arange(n, dtype=np.float64)[:, None]  # value = step index, recoverable after scaling
    data = forecast_task("t", values, ["v"], "v", config(input_len=L_in, pred_len=L_out), where="t")
    _, mean, std = standardise(values, int(0.7 * n))
    step = lambda a: np.rint(a * std[0] + mean[0]).astype(int)  # noqa: E731
    num_train, num_test = int(0.7 * n), int(0.2 * n)
    assert step(data.val.y[0, 0, 0]) == num_train  # first validation forecast: the step after train
    assert step(data.test.y[0, 0, 0]) == n - num_test  # first test forecast: the first test step
    assert step(data.train.y[-1, -1, 0]) == num_train - 1 and step(data.val.y[-1, -1, 0]) == n - num_test - 1
    assert step(data.test.y[-1, -1, 0]) == n - 1
    assert len(data.train) == num_train - L_in - L_out + 1
    assert data.output_last == L_out and data.output_activation == "identity" and data.head == "regression"


def test_wth_file_in_the_official_layout(tmp_path):
    frame = write_wth(tmp_path / "weather" / "WTH.csv")
    data = load_task(config(dataset="weather", input_len=24, pred_len=12), 0, tmp_path)
    assert data.train.x.shape[1:] == (36, 1) and data.train.y.shape[1:] == (12, 1) and data.num_outputs == 1
    # features "S": the one channel is WetBulbCelsius, scaled with its train-part statistics.
    wet = frame["WetBulbCelsius"].to_numpy()
    train = wet[: int(0.7 * len(wet))]
    np.testing.assert_allclose(data.train.x[0, :24, 0], (wet[:24] - train.mean()) / train.std(), rtol=1e-5, atol=1e-6)
    multi = load_task(config(dataset="weather", input_len=24, pred_len=12, features="M"), 0, tmp_path)
    assert multi.train.x.shape[-1] == 12 and multi.num_outputs == 12
    np.testing.assert_allclose(multi.train.x[0, :24, -1], data.train.x[0, :24, 0])  # target moved last
    ms = load_task(config(dataset="weather", input_len=24, pred_len=12, features="MS"), 0, tmp_path)
    assert ms.train.x.shape[-1] == 12 and ms.num_outputs == 1
    np.testing.assert_allclose(ms.train.y, data.train.y)
    # DATA/WTH.csv is accepted too.
    (tmp_path / "weather" / "WTH.csv").rename(tmp_path / "WTH.csv")
    assert len(load_task(config(dataset="weather", input_len=24, pred_len=12), 0, tmp_path).train) == len(data.train)


def test_bad_files_and_too_short_series(tmp_path):
    frame = write_wth(tmp_path / "WTH.csv", n=100)
    with pytest.raises(DlbenchError, match="too few for input_len=720"):
        load_task(config(dataset="weather"), 0, tmp_path)
    frame.loc[5, "Visibility"] = np.nan
    frame.to_csv(tmp_path / "WTH.csv", index=False)
    with pytest.raises(DlbenchError, match="1 missing or non-numeric values .*row 7, column 'Visibility'"):
        load_task(config(dataset="weather", input_len=8, pred_len=4), 0, tmp_path)
    frame.drop(columns="date").to_csv(tmp_path / "WTH.csv", index=False)
    with pytest.raises(DlbenchError, match="no 'date' column"):
        load_task(config(dataset="weather", input_len=8, pred_len=4), 0, tmp_path)
    write_wth(tmp_path / "WTH.csv", n=100)
    with pytest.raises(DlbenchError, match="no target column 'Nope'"):
        load_task(config(dataset="weather", input_len=8, pred_len=4, target_column="Nope"), 0, tmp_path)


def test_config_keys_are_checked():
    with pytest.raises(DlbenchError, match="features"):
        config(features="X")
    with pytest.raises(DlbenchError, match="leave a validation part"):
        config(train_fraction=0.8, test_fraction=0.2)
    with pytest.raises(DlbenchError, match="pred_len"):
        config(pred_len=0)


def test_bundled_series_need_no_data_dir():
    for name, L_in, L_out in (("airline", 24, 12), ("solar", 48, 24)):
        data = load_task(config(dataset=name, input_len=L_in, pred_len=L_out), 0, Path("/nonexistent"))
        assert data.train.x.shape[1:] == (L_in + L_out, 1) and data.test.y.shape[1:] == (L_out, 1)
        assert min(len(data.train), len(data.val), len(data.test)) >= 5


def test_forecast_head_reads_the_last_steps_and_mae_is_computed():
    from dlbench import train
    from dlbench.models import ModelConfig, build_model

    cfg = dict(num_inputs=3, hidden_dim=5, state_dim=7, num_blocks=1, num_outputs=2, head="regression",
               norm="layer", dropout=0.0, output_activation="identity")  # fmt: skip
    full = build_model("dlinoss", ModelConfig(**cfg), seed=0)
    last = build_model("dlinoss", ModelConfig(**cfg, output_last=4), seed=0)
    x = jnp.asarray(np.random.default_rng(0).standard_normal((2, 11, 3)), jnp.float32)
    full.eval(), last.eval()
    out = last(x)
    assert out.shape == (2, 4, 2)
    np.testing.assert_allclose(out, full(x)[:, -4:], rtol=1e-6)
    y = jnp.asarray(np.random.default_rng(1).standard_normal((2, 4, 2)), jnp.float32)
    sums = train.batch_sums(last, x, y, None, jnp.ones(2, jnp.float32))
    err = np.asarray(out) - np.asarray(y)
    np.testing.assert_allclose(float(sums["ae"]) / float(sums["count"]), np.abs(err).mean(), rtol=1e-5)
    np.testing.assert_allclose(float(sums["se"]) / float(sums["count"]), (err**2).mean(), rtol=1e-5)
    metrics = train._metrics("regression", {k: float(v) for k, v in sums.items()}, "test")
    assert {"test_mae", "test_mse", "test_rmse"} <= set(metrics)


def test_weather_missing_file_is_one_line(tmp_path, error_line):
    err = error_line(["run", "weather", "--data-dir", str(tmp_path)])
    assert "WTH.csv" in err and str(tmp_path / "weather" / "WTH.csv") in err and str(tmp_path / "WTH.csv") in err
    assert "never downloads" in err


def test_weather_suite_runs_and_shows_the_published_mae(tmp_path, capsys):
    write_wth(tmp_path / "data" / "weather" / "WTH.csv", n=260)
    out = tmp_path / "run"
    args = ["run", "weather", "--data-dir", str(tmp_path / "data"), "--out", str(out), "--seeds", "0",
            "--model", "dlinoss", "--model", "linoss-im", "--set", "tasks.weather.input_len=24", "--set", "tasks.weather.pred_len=12",
            "--set", "train.steps=4", "--set", "train.eval_every=2", "--set", "model.hidden_dim=4",
            "--set", "model.state_dim=3", "--set", "model.num_blocks=1", "--set", "train.batch_size=8"]  # fmt: skip
    assert main(args) == 0
    rows = pd.read_csv(out / "rows.csv")
    for model in ("dlinoss", "linoss-im"):
        got = rows[(rows.model == model)].set_index("metric")
        assert {"test_mae", "test_mse", "test_rmse", "val_mae", "val_mse"} <= set(got.index)
        assert got.loc["test_mae", "unit"] == "target" and np.isfinite(got.loc["test_mae", "value"])
    capsys.readouterr()
    assert main(["export", "leaderboard", str(out), "--out", str(out / "leaderboard.md")]) == 0
    board = (out / "leaderboard.md").read_text()
    assert "test_mae" in board and "0.486" in board and "0.528" in board
