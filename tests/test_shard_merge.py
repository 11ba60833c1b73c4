"""Cluster sweeps: `dlbench run --shard I/N` covers each cell once; `dlbench merge` rebuilds the run."""

import json
import shutil

import pandas as pd
import pytest
from rowcompare import deterministic_cells

from dlbench.cli import main
from dlbench.config import load_suite
from dlbench.distributed import Shard, parse_shard
from dlbench.suite import expand, select_shard

TINY = ["--set", "train.steps=2", "--set", "train.eval_every=1", "--set", "model.hidden_dim=4",
        "--set", "model.state_dim=2", "--set", "model.num_blocks=1", "--set", "train.batch_size=4"]


@pytest.mark.parametrize("bad", ["3/3", "x/2", "1/0", "-1/2", "1", "0/2/3"])
def test_bad_shard_values_are_one_line_errors(capsys, bad, error_line):
    assert "bad --shard" in error_line(["run", "smoke", "--shard", bad, "--dry-run"])


def test_shards_cover_every_cell_exactly_once():
    runs = expand(load_suite("smoke", ["seeds=[0, 1, 2, 3, 4]"]))
    assert len(runs) >= 20
    parts = [select_shard(runs, parse_shard(f"{i}/3")) for i in range(3)]
    keys = [[r.key for r in part] for part in parts]
    flat = [k for part in keys for k in part]
    assert sorted(flat) == sorted(r.key for r in runs) and len(set(flat)) == len(flat)
    assert max(map(len, parts)) - min(map(len, parts)) <= 1  # round-robin balances the shards
    # Deterministic and independent of the order runs are listed in; each shard keeps the run order.
    assert [r.key for r in select_shard(list(reversed(runs)), Shard(1, 3))] == list(reversed(keys[1]))
    assert keys[0] == [r.key for r in runs if r.key in set(keys[0])]


def test_dry_run_prints_the_shard(capsys):
    assert main(["run", "smoke", "--shard", "2/3", "--dry-run", "--seeds", "0,1,2"]) == 0
    out = capsys.readouterr().out
    assert "shard 2/3" in out


def _cells(frame):
    return deterministic_cells(frame)


def test_three_shards_merged_equal_one_unsharded_run(tmp_path, capsys, error_line):
    args = ["run", "smoke", "--model", "attention", "--seeds", "0,1,2", *TINY]
    assert main([*args, "--out", str(tmp_path / "full")]) == 0
    for i in range(3):
        assert main([*args, "--shard", f"{i}/3", "--out", str(tmp_path / f"s{i}")]) == 0
    shards = [str(tmp_path / f"s{i}") for i in range(3)]
    capsys.readouterr()
    assert main(["merge", *shards, "--out", str(tmp_path / "merged")]) == 0
    full = pd.read_csv(tmp_path / "full" / "rows.csv", keep_default_na=False, na_values=[""])
    merged = pd.read_csv(tmp_path / "merged" / "rows.csv", keep_default_na=False, na_values=[""])
    assert set(zip(merged.task, merged.model, merged.seed, strict=True)) == set(zip(full.task, full.model, full.seed, strict=True))
    assert len(set(merged.seed)) == 3 and merged.run_id.nunique() == 1
    assert _cells(merged) == _cells(full)  # same cells, same measured metrics (training is deterministic)
    shard_allocator = json.loads((tmp_path / "s0" / "manifest.json").read_text())["host_allocator"]
    assert json.loads((tmp_path / "merged" / "manifest.json").read_text())["host_allocator"] == shard_allocator

    # Refusals, one line each: a missing shard, a cell twice, different provenance.
    assert "missing shard(s) 2/3" in error_line(["merge", *shards[:2], "--out", str(tmp_path / "m2")])
    assert main(["merge", *shards[:2], "--partial", "--out", str(tmp_path / "m3")]) == 0
    assert "duplicate" in error_line(["merge", *shards, str(tmp_path / "full"), "--out", str(tmp_path / "m4")])
    other = tmp_path / "other"
    shutil.copytree(shards[2], other)
    rows = pd.read_csv(other / "rows.csv", keep_default_na=False, na_values=[""], dtype=str)
    rows["git_commit"] = "0" * 40
    rows.to_csv(other / "rows.csv", index=False)
    err = error_line(["merge", *shards[:2], str(other), "--out", str(tmp_path / "m5")])
    assert "mismatched provenance: git_commit" in err
    assert not (tmp_path / "m5" / "rows.csv").exists()
    # A shard timed under another host allocator (dlbench.host_memory) is not pooled either.
    timed = tmp_path / "timed"
    shutil.copytree(shards[2], timed)
    manifest = json.loads((timed / "manifest.json").read_text())
    manifest["host_allocator"] = "glibc.malloc.hugetlb=1 (transparent huge pages: madvise)"
    (timed / "manifest.json").write_text(json.dumps(manifest))
    err = error_line(["merge", *shards[:2], str(timed), "--out", str(tmp_path / "m6")])
    assert "timed under different allocators: host allocator" in err and not (tmp_path / "m6" / "rows.csv").exists()
