"""Stage 1 on Spark: `inspection.inspect_batch` under `mapInArrow`, each task writing its batches to the spool.

The rows are range-partitioned by `row` and sorted in each partition, so partition p holds one run of rows and
its spool files `batch-<p>-<k>.parquet` sort, by name, in row order: the spool is laid out as the local one is
(the same Arrow schema, one file per `--batch-rows` batch, in row order), and the local engine's spool readers
(`prepare.descriptors_for`, `thumbnails_for`) read it unchanged. Tasks write the spool themselves rather than
through Spark's writer so that its columns keep their Arrow types (the descriptor is a fixed-size list).
"""

from __future__ import annotations

import math
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
from pyspark import TaskContext
from pyspark.sql import DataFrame

from eclip.data.config import PrepareConfig
from eclip.runs.atomic import atomic_write

ROWS_PER_TASK = 5000  # a few minutes of image decoding per task at worst: a lost task costs little to redo
_SUMMARY = "part int, rows long"


def run_per_row_stage(frame: DataFrame, schema: pa.Schema, input_rows: int, root: Path, config: PrepareConfig,
                      spool: Path) -> dict[int, int]:
    """Inspect every row into `spool`; returns rows per stage-1 partition."""
    spool.mkdir(parents=True)
    parts = max(frame.sparkSession.sparkContext.defaultParallelism, math.ceil(input_rows / ROWS_PER_TASK))
    parts = max(1, min(parts, input_rows))
    config_dict = config.to_dict()

    def inspect(batches):
        from threadpoolctl import threadpool_limits

        from eclip.data.descriptors import make_descriptor
        from eclip.data.inspection import inspect_batch

        cfg = PrepareConfig(**config_dict)
        part = TaskContext.get().partitionId()
        written, files = 0, 0
        # One BLAS thread per task, as per local worker: Spark already runs one task per core.
        with threadpool_limits(1, "blas"):
            descriptor = make_descriptor(cfg.near_duplicate_model)
            for batch in batches:
                batch = pa.Table.from_batches([batch]).cast(schema).combine_chunks()
                for start in range(0, batch.num_rows, cfg.batch_rows):
                    piece = batch.slice(start, cfg.batch_rows).to_batches()[0]
                    out = pa.Table.from_batches([inspect_batch(piece, root, cfg, descriptor)])
                    path = spool / f"batch-{part:05d}-{files:07d}.parquet"
                    atomic_write(path, lambda temporary: pq.write_table(out, temporary, compression="zstd"))
                    written, files = written + piece.num_rows, files + 1
        yield pa.RecordBatch.from_pydict({"part": [part], "rows": [written]},
                                         schema=pa.schema([("part", pa.int32()), ("rows", pa.int64())]))

    ranged = frame.repartitionByRange(parts, "row").sortWithinPartitions("row")
    return {row["part"]: row["rows"] for row in ranged.mapInArrow(inspect, _SUMMARY).collect()}
