"""Near-duplicate images on Spark: the partitioned search and the ORB verification, both in executor tasks.

The local engine's rule (`dedup.verified_near_duplicates`), partitioned so that no task holds all descriptors
and the driver holds none of them:

1. Search. Up to `cells.ONE_CELL_VIEWS` views (or `--near-duplicate-cells 1`) one task runs the local search
   itself on every descriptor, so the pairs are the local engine's exactly. Beyond, the driver trains k-means
   centroids on a sample (SAMPLE_PER_CELL views per cell, the only descriptors it reads) and broadcasts them;
   a `mapInArrow` sends every view to its `--near-duplicate-probe` nearest cells, and one
   `groupBy(cell).applyInArrow` task per cell runs FAISS's exact range search there (`cells.search_cell`).
   Each pair (earlier row, later row) is kept once, at its best cosine, as `dedup.near_duplicate_pairs` does.
2. Pairs from `--near-duplicate-threshold` up are near-duplicates. Of the rest (down to the verification
   threshold), each later row's VERIFY_PER_ROW most similar (ties: the earlier row first) are joined with both
   thumbnails from the spool and checked by `verify.confirm_pairs` in a `mapInArrow`, pairs of one earlier row
   together so that its keypoints are computed once per batch.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from pyspark.sql import DataFrame, SparkSession, Window
from pyspark.sql import functions as F

from eclip.data.config import PrepareConfig
from eclip.data.dedup import VERIFY_PER_ROW
from eclip.data.spark.cells import SAMPLE_PER_CELL, cell_count, exact_pairs, probe_cells, search_cell, train_centroids

_PAIRS = pa.schema([("left", pa.int64()), ("right", pa.int64()), ("similarity", pa.float32())])
_PAIRS_DDL = "left long, right long, similarity float"
_PLACED_DDL = "cell int, row long, home boolean, vector array<float>"
_CONFIRMED_DDL = "left long, right long, same boolean"


def _views(batch: pa.RecordBatch | pa.Table, column: str, dim: int) -> np.ndarray:
    """A list<list<float>> (rows of V views) or list<float> column as (M, D) float32, views of a row adjacent."""
    values = batch.column(column)
    values = values.combine_chunks() if isinstance(values, pa.ChunkedArray) else values
    while pa.types.is_list(values.type) or pa.types.is_fixed_size_list(values.type):
        values = values.flatten()
    return values.to_numpy().reshape(-1, dim)


def _pairs_batch(left: np.ndarray, right: np.ndarray, similarity: np.ndarray) -> pa.RecordBatch:
    return pa.RecordBatch.from_arrays([pa.array(left, pa.int64()), pa.array(right, pa.int64()),
                                       pa.array(similarity, pa.float32())], schema=_PAIRS)


def spool_descriptor_shape(spool: Path) -> tuple[int, int]:
    """(views per row, dimension) of the spool's descriptors."""
    field = pq.read_schema(next(spool.glob("batch-*.parquet"))).field("descriptor").type
    return field.list_size, field.value_type.list_size


def candidate_pairs(spark: SparkSession, descriptors: DataFrame, views: int, dim: int, threshold: float,
                    cells: int, probe: int) -> DataFrame:
    """(left < right, similarity) of every pair of rows of `descriptors` (row, descriptor: V views of D floats)
    with some views at cosine >= threshold, each pair once at its best, checkpointed. `cells` 0: automatic."""
    rows = descriptors.count()
    cells = cell_count(rows * views, cells)
    if cells == 1:
        def one_cell(batches):
            tables = [pa.Table.from_batches([b]) for b in batches]
            if not tables:
                return
            table = pa.concat_tables(tables)
            found = exact_pairs(table.column("row").to_numpy(), _views(table, "descriptor", dim).reshape(-1, views, dim),
                                threshold)
            yield _pairs_batch(*found)

        return descriptors.repartition(1).mapInArrow(one_cell, _PAIRS_DDL).localCheckpoint(eager=True)

    fraction = min(1.0, SAMPLE_PER_CELL * cells / (rows * views))
    sample = descriptors.sample(fraction=fraction, seed=0).select("descriptor").toArrow()
    centroids = spark.sparkContext.broadcast(train_centroids(_views(sample, "descriptor", dim), cells))

    def place(batches):
        for batch in batches:
            vectors = _views(batch, "descriptor", dim)  # (n * V, D)
            near = probe_cells(vectors, centroids.value, probe)  # (n * V, P), home first
            width = near.shape[1]
            rows_of = np.repeat(batch.column("row").to_numpy(), views * width)
            flat = np.repeat(vectors, width, axis=0)  # (n * V * P, D)
            offsets = pa.array(np.arange(len(flat) + 1, dtype=np.int32) * dim)
            yield pa.RecordBatch.from_arrays(
                [pa.array(near.reshape(-1), pa.int32()), pa.array(rows_of, pa.int64()),
                 pa.array(np.tile(np.arange(width) == 0, len(vectors))),
                 pa.ListArray.from_arrays(offsets, pa.array(flat.reshape(-1), pa.float32()))],
                names=["cell", "row", "home", "vector"])

    def search(table: pa.Table) -> pa.Table:
        home = table.column("home").to_numpy(zero_copy_only=False)
        if not home.any():
            return _PAIRS.empty_table()
        return pa.Table.from_batches([_pairs_batch(*search_cell(
            table.column("row").to_numpy(), _views(table, "vector", dim), home, threshold))])

    found = descriptors.mapInArrow(place, _PLACED_DDL).groupBy("cell").applyInArrow(search, _PAIRS_DDL)
    best = found.groupBy("left", "right").agg(F.max("similarity").alias("similarity"))
    pairs = best.localCheckpoint(eager=True)
    centroids.unpersist()
    return pairs


def confirmed_pairs(spark: SparkSession, uncertain: DataFrame, spool: Path) -> DataFrame:
    """(left, right) of the `uncertain` pairs whose thumbnails `verify.confirm_pairs` finds to be one picture."""
    thumbnails = spark.read.parquet(str(spool)).select("row", "thumbnail")
    joined = (uncertain.join(thumbnails.select(F.col("row").alias("left"), F.col("thumbnail").alias("left_image")), "left")
              .join(thumbnails.select(F.col("row").alias("right"), F.col("thumbnail").alias("right_image")), "right"))

    def verify(batches):
        from threadpoolctl import threadpool_limits

        from eclip.data.verify import confirm_pairs

        with threadpool_limits(1, "blas"):  # the tasks are the parallelism; BLAS threads would only compete
            for batch in batches:
                left, right = batch.column("left").to_numpy(), batch.column("right").to_numpy()
                images = dict(zip(left.tolist(), batch.column("left_image").to_pylist()))
                images.update(zip(right.tolist(), batch.column("right_image").to_pylist()))
                same = confirm_pairs(images, list(zip(left.tolist(), right.tolist())))
                yield pa.RecordBatch.from_arrays([pa.array(left, pa.int64()), pa.array(right, pa.int64()),
                                                  pa.array(same, pa.bool_())], names=["left", "right", "same"])

    parts = max(1, spark.sparkContext.defaultParallelism * 2)
    checked = (joined.repartition(parts, "left").sortWithinPartitions("left")
               .mapInArrow(verify, _CONFIRMED_DDL))
    return checked.where("same").select("left", "right")


def near_pairs(spark: SparkSession, remaining: DataFrame, spool: Path, config: PrepareConfig) -> DataFrame | None:
    """(src, dst) = (later row, earlier row) of every near-duplicate pair among the `remaining` rows."""
    views, dim = spool_descriptor_shape(spool)
    descriptors = (spark.read.parquet(str(spool)).select("row", "descriptor")
                   .join(remaining.select("row"), "row", "left_semi"))
    verify_from = config.near_duplicate_verify_threshold or 1.0
    pairs = candidate_pairs(spark, descriptors, views, dim, min(config.near_duplicate_threshold, verify_from),
                            config.near_duplicate_cells, config.near_duplicate_probe)
    # numpy compares float32 similarities with a float32 threshold: so must Spark, or a pair at it could flip
    certain = F.col("similarity") >= F.lit(config.near_duplicate_threshold).cast("float")
    closest = Window.partitionBy("right").orderBy(F.col("similarity").desc(), F.col("left"))
    uncertain = (pairs.where(~certain).withColumn("rank", F.row_number().over(closest))
                 .where(F.col("rank") <= VERIFY_PER_ROW).select("left", "right"))
    near = pairs.where(certain).select("left", "right").unionByName(confirmed_pairs(spark, uncertain, spool))
    return near.select(F.col("right").alias("src"), F.col("left").alias("dst")).localCheckpoint(eager=True)
