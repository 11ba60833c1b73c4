"""Task loaders on files the tests generate in the official layouts; bundled and synthetic tasks."""

import pickle
import time

import numpy as np
import pytest

from dlbench.config import TaskConfig
from dlbench.tasks import MissingDataError, check_data, load_task, protocol_split
from dlbench.tasks import ppg as ppg_module
from dlbench.tasks.synthetic import exponential_decay


def write_ts(path, series, labels, classes):
    """A UEA .ts file (equal or unequal lengths); series are (C, L_i) arrays."""
    equal = len({s.shape[1] for s in series}) == 1
    head = [
        f"@problemName {path.stem}",
        "@timeStamps false",
        "@missing false",
        "@univariate false",
        f"@dimensions {series[0].shape[0]}",
        f"@equalLength {'true' if equal else 'false'}",
    ]
    if equal:
        head.append(f"@seriesLength {series[0].shape[1]}")
    head += [f"@classLabel true {' '.join(classes)}", "@data"]
    lines = [":".join(",".join(f"{v:.6g}" for v in ch) for ch in s) + f":{y}" for s, y in zip(series, labels, strict=True)]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(head + lines) + "\n")


def make_uea(root, name, n_train, n_test, duplicates, channels=3, length=11, seed=0):
    rng = np.random.default_rng(seed)
    series = [rng.standard_normal((channels, length)).round(3) for _ in range(n_train + n_test - duplicates)]
    series += [series[i].copy() for i in range(duplicates)]  # exact repeats of earlier series, in TEST
    labels = [("a", "b")[i % 2] for i in range(len(series))]
    write_ts(root / name / f"{name}_TRAIN.ts", series[:n_train], labels[:n_train], ("a", "b"))
    write_ts(root / name / f"{name}_TEST.ts", series[n_train:], labels[n_train:], ("a", "b"))


@pytest.mark.parametrize("n, sizes", [(236, (165, 35, 36)), (561, (392, 84, 85)), (380, (266, 57, 57)), (409, (286, 61, 62))])
def test_protocol_split_sizes_match_published(n, sizes):
    parts = protocol_split(n, seed=2345)
    assert tuple(len(p) for p in parts) == sizes
    assert sorted(np.concatenate(parts)) == list(range(n))


def test_uea_loader_dedups_splits_and_caches(tmp_path, monkeypatch):
    monkeypatch.setenv("DLBENCH_CACHE", str(tmp_path / "cache"))
    make_uea(tmp_path, "EigenWorms", 130, 110, duplicates=4)
    config = TaskConfig(dataset="eigenworms")
    a = load_task(config, 2345, tmp_path)
    assert (len(a.train), len(a.val), len(a.test)) == (165, 35, 36)  # 240 - 4 duplicates = 236
    assert a.train.x.shape[1:] == (11, 3) and a.num_outputs == 2 and a.train.mask is None
    # Different seeds, different members; same seed, same split.
    b = load_task(config, 3456, tmp_path)
    assert not np.array_equal(a.test.x, b.test.x)
    assert np.array_equal(load_task(config, 2345, tmp_path).test.x, a.test.x)
    assert len(list((tmp_path / "cache").glob("uea-*.npz"))) == 1
    # The second parse is served from the cache.
    monkeypatch.setattr("dlbench.tasks.uea.parse_archive", lambda files: pytest.fail("re-parsed"))
    load_task(config, 2345, tmp_path)
    timed = load_task(TaskConfig(dataset="eigenworms", time_channel=True), 2345, tmp_path)
    assert timed.num_inputs == 4 and np.allclose(timed.train.x[0, :, 0], np.arange(11) / 11)


def test_uea_unequal_lengths_pad_and_mask(tmp_path, monkeypatch):
    monkeypatch.setenv("DLBENCH_CACHE", str(tmp_path / "cache"))
    rng = np.random.default_rng(1)
    series = [rng.standard_normal((2, n)) for n in (5, 9, 7, 9, 6, 8, 5, 9, 7, 9)]
    write_ts(tmp_path / "UEA/Heartbeat/Heartbeat_TRAIN.ts", series[:6], ["x", "y"] * 3, ("x", "y"))
    write_ts(tmp_path / "UEA/Heartbeat/Heartbeat_TEST.ts", series[6:], ["x", "y"] * 2, ("x", "y"))
    data = load_task(TaskConfig(dataset="heartbeat"), 0, tmp_path)
    split = data.train
    assert split.x.shape[1] == 9 and split.mask is not None
    lengths = split.mask.sum(1)
    for x, n in zip(split.x, lengths, strict=True):
        assert np.all(x[n:] == 0) and np.any(x[:n] != 0)


def test_missing_data_message_lists_paths_and_is_fast(tmp_path):
    start = time.perf_counter()
    with pytest.raises(MissingDataError) as info:
        check_data(TaskConfig(dataset="scp1"), tmp_path)
    assert time.perf_counter() - start < 0.5
    message = str(info.value)
    assert "SelfRegulationSCP1" in message and str(tmp_path / "UEA/SelfRegulationSCP1") in message
    assert "--data-dir" in message and "DLBENCH_DATA" in message and "never downloads" in message
    with pytest.raises(MissingDataError, match="PPG-DaLiA.*PPG_FieldStudy"):
        check_data(TaskConfig(dataset="ppg"), tmp_path)


def write_subject(root, i, seconds):
    """A PPG-DaLiA S{i}.pkl in the official layout: BVP encodes its 2 s block index, labels their own index."""
    t64 = np.arange(64 * seconds)
    record = {
        "signal": {
            "wrist": {
                "ACC": np.stack([np.arange(32 * seconds) % 7, np.zeros(32 * seconds), np.ones(32 * seconds)], 1).astype(float),
                "BVP": (t64 // 128).astype(float)[:, None],
                "EDA": np.sin(np.arange(4 * seconds))[:, None],
                "TEMP": np.cos(np.arange(4 * seconds))[:, None],
            }
        },
        # One label per 8 s window moved by 2 s: (seconds - 8) / 2 + 1 labels; value 3 + index.
        "label": 3.0 + np.arange((seconds - 8) // 2 + 1),
        "subject": f"S{i}",
    }
    path = root / "PPG_FieldStudy" / f"S{i}" / f"S{i}.pkl"
    path.parent.mkdir(parents=True)
    with path.open("wb") as f:
        pickle.dump(record, f, protocol=2)


def test_ppg_windowing_and_label_alignment(tmp_path, monkeypatch):
    monkeypatch.setenv("DLBENCH_CACHE", str(tmp_path / "cache"))
    seconds = 5400  # 2,700 labels after the 3 prepended: 1,890 / 405 / 405
    write_subject(tmp_path, 1, seconds)
    data = load_task(TaskConfig(dataset="ppg"), 0, tmp_path)
    assert data.train.x.shape == (39, 49_920, 6) and data.train.y.shape == (39, 390, 1)
    assert len(data.val) == len(data.test) == 1
    assert data.output_step == 128 and data.head == "regression" and data.output_activation == "tanh"
    for split in (data.train, data.val, data.test):
        assert split.x.min() >= -1 and split.x.max() <= 1 and np.abs(split.y).max() <= 1
    # Undo the [-1, 1] scaling: BVP gives each input's 2 s block index; the label its own index.
    n_blocks = 64 * seconds // 128
    block = (data.train.x[..., 3] + 1) / 2 * (n_blocks - 1)
    n_labels = (seconds - 8) // 2 + 1
    label = (data.train.y[..., 0] + 1) / 2 * (n_labels - 1) + 3  # raw value = 3 + raw index
    # Label j of a window is read at input step 128 j + 127: it is the label of that input's block
    # (3 copies of the first prepended, so block b carries raw label index b - 3, value b).
    read = block[:, 127::128]
    assert np.allclose(np.maximum(read, 3), label, atol=1e-2)
    # Windows move by 4,992 inputs = 39 labels.
    assert np.allclose(block[1, 0] - block[0, 0], 39, atol=1e-2)
    # Val starts right after train's last label (contiguous split).
    val_block = (data.val.x[..., 3] + 1) / 2 * (n_blocks - 1)
    assert np.isclose(val_block[0, 0], 1889, atol=1e-2)  # int(0.7 * 2700) == 1889 in floating point


def test_ppg_windows_function():
    x = np.arange(40, dtype=np.float32)[:, None]
    labels = np.arange(10, dtype=np.float32)
    wx, wy = ppg_module.windows(x, labels, window=16, stride=8, step=4)
    assert wx.shape == (4, 16, 1) and wy.shape == (4, 4)
    assert np.array_equal(wy[1], [2, 3, 4, 5]) and wx[1, 0, 0] == 8


def test_decay_recurrence_and_order_split():
    u, y = exponential_decay(3, 50, seed=0)
    assert np.all(y[:, 0] == 0)
    assert np.allclose(y[:, 1:], 0.8 * y[:, :-1] + u[:, :-1], atol=1e-5)
    data = load_task(TaskConfig(dataset="decay", num_sequences=20, seq_len=30), 5, None)
    assert (len(data.train), len(data.val), len(data.test)) == (14, 3, 3)
    assert data.train.y.shape == (14, 30, 1) and data.output_step == 1 and data.output_activation == "identity"
    # The data do not depend on the run seed, only on data_seed.
    assert np.array_equal(load_task(TaskConfig(dataset="decay", num_sequences=20, seq_len=30), 6, None).test.x, data.test.x)


def test_bundled_sets():
    bm = load_task(TaskConfig(dataset="basicmotions"), 0, None)
    assert (len(bm.train), len(bm.val), len(bm.test)) == (32, 8, 40) and bm.num_outputs == 4
    assert bm.train.x.shape[1:] == (100, 6)
    other = load_task(TaskConfig(dataset="basicmotions"), 1, None)
    assert not np.array_equal(other.val.x, bm.val.x) and np.array_equal(other.test.x, bm.test.x)
    jv = load_task(TaskConfig(dataset="japanesevowels"), 0, None)
    assert jv.train.mask is not None and jv.num_outputs == 9 and jv.seq_len == 29
    assert jv.train.mask.sum(1).min() < 29
    cov = load_task(TaskConfig(dataset="covid3month"), 0, None)
    assert cov.head == "regression" and cov.output_step == 84 and cov.train.y.shape[1:] == (1, 1)



def corrupt_ts(root):
    make_uea(root, "EigenWorms", 6, 4, 0)
    path = root / "EigenWorms" / "EigenWorms_TRAIN.ts"
    path.write_text(path.read_text().replace(",", ",oops", 1))
    return "eigenworms", path


def corrupt_ppg(root):
    path = root / "PPG_FieldStudy" / "S1" / "S1.pkl"
    path.parent.mkdir(parents=True)
    path.write_bytes(b"this is not a pickle")
    return "ppg", path


@pytest.mark.parametrize("corrupt", [corrupt_ts, corrupt_ppg])
def test_a_corrupt_user_file_is_a_one_line_error_naming_it(tmp_path, monkeypatch, corrupt):
    from dlbench.errors import DlbenchError

    monkeypatch.setenv("DLBENCH_CACHE", str(tmp_path / "cache"))
    dataset, path = corrupt(tmp_path)
    with pytest.raises(DlbenchError) as info:
        load_task(TaskConfig(dataset=dataset), 0, tmp_path)
    message = str(info.value)
    assert len(message.splitlines()) == 1 and str(path) in message and "could not read" in message, message
