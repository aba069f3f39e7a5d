"""Stage 3 on Spark: executors write the shards, rejected.parquet and duplicate_groups.parquet into the building
folder, with the local engine's writers and schemas (`store.ShardWriter`, `prepare.product_table`).

Shards are written per stage-1 partition (a run of rows): a first job counts each partition's accepted rows,
the driver gives each partition its first shard number, and each task writes its partitions' rows in row order
into shards of `--shard-rows` (the last one of a partition may be shorter). The single-file outputs are
written by one task each, in row order.
"""

from __future__ import annotations

import math
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from eclip.data import store
from eclip.data.config import PrepareConfig
from eclip.data.prepare import product_table

_SUMMARY = "part int, rows long"


def _single_file(frame: DataFrame, path: Path, schema: pa.Schema) -> None:
    """`frame` (with `schema`'s columns) as one Parquet file, in row order, written by one task."""
    def write(batches):
        with pq.ParquetWriter(path, schema, compression="zstd") as writer:
            for batch in batches:
                writer.write_table(pa.Table.from_batches([batch]).select(schema.names).cast(schema))
        yield pa.RecordBatch.from_pydict({"part": [0], "rows": [0]},
                                         schema=pa.schema([("part", pa.int32()), ("rows", pa.int64())]))

    frame.select(*schema.names).repartition(1).sortWithinPartitions("row").mapInArrow(write, _SUMMARY).collect()
    if not path.exists():  # no task ran: nothing to write, but the file is part of the layout
        pq.write_table(schema.empty_table(), path)


def write_outputs(spark: SparkSession, spool: Path, building: Path, config: PrepareConfig, decisions: DataFrame,
                  groups: DataFrame) -> tuple[int, dict[str, int]]:
    """Accepted rows into shards, every other row into rejected.parquet; (accepted, rejected by reason)."""
    files = sorted(spool.glob("batch-*.parquet"))
    spool_schema = pq.read_schema(files[0])
    spool_schema = pa.schema([f for f in spool_schema if f.name != "descriptor"])
    attributes = [n for n in spool_schema.names if n.startswith("attr_")]
    schema = store.product_schema(attributes)
    spooled = (spark.read.parquet(str(spool)).drop("descriptor")
               .withColumn("_part", F.split(F.col("_metadata.file_name"), "-").getItem(1).cast("int")))  # batch-<part>-<k>
    chosen = decisions.select("row", F.col("reason").alias("_reason"), F.col("detail").alias("_detail"),
                              "weak_catalog")
    stage1 = F.col("reject_reason").isNull()
    decided = (spooled.join(chosen, "row", "left")
               .withColumn("reject_detail", F.when(stage1, F.col("_detail")).otherwise(F.col("reject_detail")))
               .withColumn("reject_reason", F.when(stage1, F.col("_reason")).otherwise(F.col("reject_reason")))
               .drop("_reason", "_detail"))
    counts = decided.groupBy("_part", "reject_reason").count().collect()
    accepted_by_part = {r["_part"]: r["count"] for r in counts if r["reject_reason"] is None}
    rejected: dict[str, int] = {}
    for r in counts:
        if r["reject_reason"] is not None:
            rejected[r["reject_reason"]] = rejected.get(r["reject_reason"], 0) + r["count"]
    first_shard, shards = {}, 0
    for part in sorted(accepted_by_part):
        first_shard[part], shards = shards, shards + math.ceil(accepted_by_part[part] / config.shard_rows)
    (building / store.SHARDS).mkdir(parents=True, exist_ok=True)
    config_dict = config.to_dict()
    kept_schema = pa.schema([*spool_schema, pa.field("weak_catalog", pa.string()), pa.field("_part", pa.int32())])

    def write_shards(batches):
        cfg = PrepareConfig(**config_dict)
        part, writer, rows = None, None, 0
        for batch in batches:
            table = pa.Table.from_batches([batch]).select(kept_schema.names).cast(kept_schema)
            parts = table.column("_part").to_numpy()
            for value in dict.fromkeys(parts.tolist()):  # the batch is sorted by part, then row
                if value != part:
                    if writer is not None:
                        writer.close()
                    part, writer = value, store.ShardWriter(building, schema, cfg.shard_rows, first_shard[value])
                kept = table.filter(pa.array(parts == value))
                weak = {r: w for r, w in zip(kept.column("row").to_pylist(), kept.column("weak_catalog").to_pylist())
                        if w is not None}
                writer.write(product_table(kept.drop_columns(["weak_catalog", "_part"]), weak, schema, cfg))
                rows += kept.num_rows
        if writer is not None:
            writer.close()
        yield pa.RecordBatch.from_pydict({"part": [part or 0], "rows": [rows]},
                                         schema=pa.schema([("part", pa.int32()), ("rows", pa.int64())]))

    accepted_rows = decided.where(F.col("reject_reason").isNull())
    partitions = max(1, min(len(accepted_by_part), spark.sparkContext.defaultParallelism * 4))
    written = (accepted_rows.select(*kept_schema.names).repartition(partitions, "_part")
               .sortWithinPartitions("_part", "row").mapInArrow(write_shards, _SUMMARY).collect())
    accepted = sum(r["rows"] for r in written)
    _single_file(decided.where(F.col("reject_reason").isNotNull())
                 .select("product_id", "row", F.col("reject_reason").alias("reason"),
                         F.col("reject_detail").alias("detail")), building / store.REJECTED, store.REJECTED_SCHEMA)
    _single_file(groups, building / store.DUPLICATE_GROUPS, store.DUPLICATE_GROUPS_SCHEMA)
    return accepted, rejected
