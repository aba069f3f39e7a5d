"""The Spark engine's near-duplicate search and ORB verification against the local engine's, pair by pair, on
the spool of 480 real fashion-dev offers (160 products, 3 sellers each: crops, pads, borders, re-encodes)."""

from __future__ import annotations

from pathlib import Path

import faiss
import numpy as np
import pyarrow.parquet as pq
import pytest

from eclip.data.catalog import ColumnMapping
from eclip.data.config import PrepareConfig
from eclip.data.dedup import near_duplicate_pairs, verified_near_duplicates
from eclip.data.prepare import descriptors_for, thumbnails_for

pytest.importorskip("pyspark")
SEARCH, CERTAIN = PrepareConfig().near_duplicate_verify_threshold, PrepareConfig().near_duplicate_threshold


@pytest.fixture(scope="module")
def offers_spool(spark, prepared_fashion, tmp_path_factory) -> tuple[Path, np.ndarray]:
    """The spool stage 1 of `--engine spark` writes for the offers, and the rows that passed it."""
    from eclip.data.spark.rows import run_per_row_stage
    from eclip.data.spark.source import read_catalog_frame

    catalog = prepared_fashion.parent / "offers" / "catalog.csv"
    config = PrepareConfig(workers=1)
    frame, schema, rows = read_catalog_frame(spark, [catalog], ColumnMapping(), config.batch_rows)
    spool = tmp_path_factory.mktemp("near") / "spool"
    run_per_row_stage(frame, schema, rows, catalog.parent, config, spool)
    table = pq.read_table(spool, columns=["row", "reject_reason"])
    passed = table.filter(table.column("reject_reason").is_null()).column("row").to_numpy()
    return spool, np.sort(passed)


def _pairs(frame, left: str = "left", right: str = "right") -> dict[tuple[int, int], float | None]:
    table = frame.toArrow()
    similarity = table.column("similarity").to_pylist() if "similarity" in table.column_names else [None] * len(table)
    return dict(zip(zip(table.column(left).to_pylist(), table.column(right).to_pylist()), similarity))


@pytest.mark.slow
def test_the_partitioned_search_finds_the_exact_search_pairs(spark, offers_spool):
    from eclip.data.spark.near import candidate_pairs, spool_descriptor_shape

    spool, rows = offers_spool
    views, dim = spool_descriptor_shape(spool)
    descriptors = spark.read.parquet(str(spool)).where("reject_reason is null").select("row", "descriptor")
    vectors = descriptors_for(spool, rows)
    left, right, similarity = near_duplicate_pairs(vectors, SEARCH)
    exact = dict(zip(zip(rows[left].tolist(), rows[right].tolist()), similarity.tolist()))
    assert len(exact) > 400 and sum(s < CERTAIN for s in exact.values()) > 100  # both bands are populated

    one_cell = _pairs(candidate_pairs(spark, descriptors, views, dim, SEARCH, cells=1, probe=1))
    assert one_cell.keys() == exact.keys()
    # FAISS's summation order follows its thread count, and Spark's Python workers run one thread
    # (OMP_NUM_THREADS=1): with one thread here too, the one cell is the local search bit for bit
    threads = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(1)
    try:
        left, right, similarity = near_duplicate_pairs(vectors, SEARCH)
    finally:
        faiss.omp_set_num_threads(threads)
    assert one_cell == dict(zip(zip(rows[left].tolist(), rows[right].tolist()), similarity.tolist()))

    several = _pairs(candidate_pairs(spark, descriptors, views, dim, SEARCH, cells=8,
                                     probe=PrepareConfig().near_duplicate_probe))
    assert several.keys() == exact.keys()
    assert max(abs(several[pair] - exact[pair]) for pair in exact) < 1e-6  # float32 rounding, as above

    home_only = _pairs(candidate_pairs(spark, descriptors, views, dim, SEARCH, cells=8, probe=1))
    assert home_only.keys() < exact.keys()  # without multi-probe, pairs across a cell border are lost


@pytest.mark.slow
def test_uncertain_pairs_are_verified_on_the_executors_as_the_local_engine_does(spark, offers_spool):
    from eclip.data.spark.near import near_pairs

    spool, rows = offers_spool
    config = PrepareConfig(workers=1, near_duplicate_cells=8)

    def thumbnails(positions: np.ndarray) -> dict[int, bytes]:
        found = thumbnails_for(spool, rows[positions])
        return {int(k): found[int(rows[k])] for k in positions}

    left, right, verified = verified_near_duplicates(descriptors_for(spool, rows), CERTAIN, SEARCH, thumbnails, 1)
    local = set(zip(rows[left].tolist(), rows[right].tolist()))
    certain_left, certain_right, _ = near_duplicate_pairs(descriptors_for(spool, rows), CERTAIN)
    certain = set(zip(rows[certain_left].tolist(), rows[certain_right].tolist()))
    confirmed = len(local - certain)
    assert 0 < confirmed < verified  # ORB confirmed some uncertain pairs and refused others

    remaining = spark.read.parquet(str(spool)).where("reject_reason is null").select("row")
    on_spark = set(_pairs(near_pairs(spark, remaining, spool, config), "dst", "src"))
    assert on_spark == local
