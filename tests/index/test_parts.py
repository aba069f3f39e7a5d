"""`eclip embed` shard by shard: one part per shard with the vectors a single-shard run gives, a re-run that embeds
only the shards whose part is missing or stale (a killed run resumes), torchrun ranks that split the shards, and
the one reader over the parts."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from eclip.errors import EclipError
from eclip.index.embed import embed_command
from eclip.index.parts import rank_shards, recorded_provenance
from eclip.index.vectors import PartRows, read_embeddings
from tests.ports import free_port

REPO = Path(__file__).resolve().parents[2]


def parts_of(emb_dir: Path) -> list[str]:
    return sorted(path.name for path in (emb_dir / "embeddings.parquet").iterdir())


def test_one_part_per_shard_with_the_single_shard_runs_vectors(local_emb, sharded_fashion, run_dir, prepared_fashion,
                                                               tmp_path):
    assert parts_of(local_emb) == [f"part-{n:05d}.parquet" for n in range(4)]
    assert [pq.read_metadata(local_emb / "embeddings.parquet" / name).num_rows for name in parts_of(local_emb)] \
        == [120, 120, 120, 115]
    whole = embed_command(run_dir, prepared_fashion, tmp_path / "whole", batch_size=64)
    assert whole["parts"] == 1
    table, vectors = read_embeddings(local_emb)
    whole_table, whole_vectors = read_embeddings(tmp_path / "whole")
    assert table.column("product_id").to_pylist() == whole_table.column("product_id").to_pylist()
    for view in ("image", "text", "fused"):
        assert np.allclose(vectors[view], whole_vectors[view], atol=1e-5)
    # Row lookups read one row group of one part and give the rows the whole read gives.
    rows = PartRows(local_emb / "embeddings.parquet", "image")
    assert len(rows) == 475
    for row in (0, 49, 50, 119, 120, 474):
        assert np.array_equal(rows[row], vectors["image"][row])
    with pytest.raises(IndexError):
        rows[475]


def test_a_rerun_embeds_only_the_stale_shard_and_a_killed_run_resumes(local_emb, sharded_fashion, run_dir, tmp_path):
    emb = Path(shutil.copytree(local_emb, tmp_path / "emb"))
    data = Path(shutil.copytree(sharded_fashion, tmp_path / "data"))
    before = {name: (emb / "embeddings.parquet" / name).stat().st_ino for name in parts_of(emb)}
    fresh = embed_command(run_dir, data, emb, batch_size=50)  # another DATA_DIR path: the signature differs
    assert fresh["reused"] is False and fresh["embedded_parts"] == 0  # every part's shard and weights match
    os.utime(data / "shards" / "part-00002.parquet")  # a shard rewritten since
    again = embed_command(run_dir, data, emb, batch_size=50)
    assert again["embedded_parts"] == 1
    after = {name: (emb / "embeddings.parquet" / name).stat().st_ino for name in parts_of(emb)}
    assert [name for name in before if before[name] != after[name]] == ["part-00002.parquet"]
    assert recorded_provenance(emb / "embeddings.parquet" / "part-00002.parquet")["shard_stat"][1] == \
        (data / "shards" / "part-00002.parquet").stat().st_mtime_ns

    # A run killed after two parts: its building folder keeps them, and the next run embeds the other two.
    killed = tmp_path / "killed"
    leftover = tmp_path / ".killed.building" / "embeddings.parquet"
    leftover.mkdir(parents=True)
    for name in parts_of(emb)[:2]:
        shutil.copyfile(emb / "embeddings.parquet" / name, leftover / name)
    (leftover / ".part-00002.parquet.999.tmp").write_bytes(b"half a part")  # atomic writes leave no half part
    resumed = embed_command(run_dir, data, killed, batch_size=50)
    assert resumed["embedded_parts"] == 2 and parts_of(killed) == parts_of(emb)
    assert not (tmp_path / ".killed.building").exists()
    _, resumed_vectors = read_embeddings(killed)
    _, vectors = read_embeddings(emb)
    assert np.allclose(resumed_vectors["fused"], vectors["fused"], atol=1e-6)


def test_ranks_take_disjoint_shares_of_the_shards():
    shards = [Path(f"part-{n:05d}.parquet") for n in range(5)]
    assert [rank_shards(shards, rank, 2) for rank in (0, 1)] == [shards[0::2], shards[1::2]]
    assert rank_shards(shards, 0, 1) == shards


def test_two_torchrun_ranks_write_the_parts_and_rank_0_the_index(local_emb, sharded_fashion, run_dir, tmp_path):
    port = free_port()
    out = tmp_path / "ranked"
    processes = [subprocess.Popen(
        [sys.executable, "-m", "eclip.cli", "embed", "--model", str(run_dir), "--data", str(sharded_fashion),
         "--out", str(out), "--batch-size", "50"], cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        env={**os.environ, "RANK": str(rank), "WORLD_SIZE": "2", "MASTER_ADDR": "127.0.0.1",
             "MASTER_PORT": str(port), "PYTHONPATH": str(REPO)}) for rank in (0, 1)]
    printed = [process.communicate(timeout=300)[0].decode() for process in processes]
    assert [process.returncode for process in processes] == [0, 0], printed
    assert "rank 1: 2 part(s) embedded; rank 0 builds the index" in printed[1]
    assert "475 products" in printed[0] and "(4 of 4 parts embedded)" in printed[0]
    _, ranked = read_embeddings(out)
    _, local = read_embeddings(local_emb)
    assert np.allclose(ranked["fused"], local["fused"], atol=1e-5)


def test_a_damaged_part_is_refused_in_one_line(local_emb, tmp_path):
    emb = Path(shutil.copytree(local_emb, tmp_path / "emb"))
    (emb / "embeddings.parquet" / "part-00001.parquet").write_bytes(b"not parquet")
    with pytest.raises(EclipError, match=r"part-00001.parquet: not a readable Parquet file"):
        read_embeddings(emb)
    shutil.rmtree(emb / "embeddings.parquet")
    (emb / "embeddings.parquet").mkdir()
    with pytest.raises(EclipError, match=r"embeddings.parquet: a folder without part-\*.parquet files"):
        read_embeddings(emb)
