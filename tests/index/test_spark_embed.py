"""`eclip embed --engine spark`: one Spark task per shard writes the part the local engine writes, with the same
vectors (within float tolerance), and the index built from them is the same. On the tests' one Spark session (tests/conftest.py)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from eclip.cli import main
from eclip.index.vectors import read_embeddings

pytest.importorskip("pyspark")


def test_spark_embeddings_equal_the_local_ones(spark, local_emb, sharded_fashion, run_dir, tmp_path, capsys):
    out = tmp_path / "spark-emb"
    capsys.readouterr()
    assert main(["embed", "--model", str(run_dir), "--data", str(sharded_fashion), "--out", str(out),
                 "--batch-size", "50", "--engine", "spark"]) == 0
    assert "(4 of 4 parts embedded)" in capsys.readouterr().out
    table, vectors = read_embeddings(out)
    local_table, local_vectors = read_embeddings(local_emb)
    assert table.to_pylist() == local_table.to_pylist()  # ids, splits, categories, titles, row order
    for view in ("image", "text", "fused"):
        assert np.allclose(vectors[view], local_vectors[view], atol=1e-5)
    assert json.loads((out / "index.json").read_text()) == json.loads((local_emb / "index.json").read_text())


def test_spark_master_needs_the_spark_engine(run_dir, sharded_fashion, tmp_path, capsys):
    capsys.readouterr()
    assert main(["embed", "--model", str(run_dir), "--data", str(sharded_fashion), "--out", str(tmp_path / "e"),
                 "--spark-master", "local[1]"]) == 2
    error = capsys.readouterr().err
    assert "--spark-master needs --engine spark" in error and error.count("\n") == 1
