"""Reading a catalogue on Spark: each file in its own task, by the local reader (`catalog.open_catalog` and
`canonical_batch`), so the parsing, the column mapping and the bad-input messages (a missing column, an
unreadable file, a line that is not UTF-8, with its file and line) are the local engine's own.

Rows are numbered as one catalogue: a first job counts each file's rows (and meets any bad input before an
image is opened, as the local reader does), the driver turns the counts into offsets in file order, and the
reading job numbers each file's rows from its offset. One file gives the local engine's numbers exactly.
"""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql.pandas.types import from_arrow_schema

from eclip.data.catalog import ColumnMapping, canonical_batch, canonical_schema, open_catalog

_FILES = "file int, path string, first_row long"
_SCAN = "file int, rows long, schema binary"


def _files_frame(spark: SparkSession, files: list[Path], offsets: list[int]) -> DataFrame:
    """One row per file, each in its own partition, so that files are read in parallel."""
    rows = [(k, str(path), offset) for k, (path, offset) in enumerate(zip(files, offsets))]
    return spark.createDataFrame(spark.sparkContext.parallelize(rows, len(rows)), _FILES)


def _each_file(batches):
    for batch in batches:
        yield from batch.to_pylist()


def read_catalog_frame(spark: SparkSession, files: list[Path], mapping: ColumnMapping,
                       batch_rows: int) -> tuple[DataFrame, pa.Schema, int]:
    """The catalogue as a DataFrame of canonical rows (numbered `row`), their Arrow schema, and the row count.
    Files whose mapped columns differ (JSONL lines need not share keys) get nulls for the columns they lack."""

    def scan(batches):
        for task in _each_file(batches):
            resolved, raw = open_catalog(Path(task["path"]), mapping, batch_rows)
            rows = sum(batch.num_rows for batch in raw)
            schema = canonical_schema(resolved, mapping).serialize().to_pybytes()
            yield pa.RecordBatch.from_pydict({"file": [task["file"]], "rows": [rows], "schema": [schema]},
                                             schema=pa.schema([("file", pa.int32()), ("rows", pa.int64()),
                                                               ("schema", pa.binary())]))

    scanned = sorted(_files_frame(spark, files, [0] * len(files)).mapInArrow(scan, _SCAN).collect())
    offsets, fields = [0], {}
    for row in scanned:
        offsets.append(offsets[-1] + row["rows"])
        for field in pa.ipc.read_schema(pa.py_buffer(row["schema"])):
            fields.setdefault(field.name, field)
    schema = pa.schema(list(fields.values()))

    def read(batches):
        for task in _each_file(batches):
            resolved, raw = open_catalog(Path(task["path"]), mapping, batch_rows)
            first_row = task["first_row"] + 1
            for batch in raw:
                canonical = canonical_batch(batch, resolved, mapping, first_row)
                first_row += batch.num_rows
                yield pa.RecordBatch.from_arrays(
                    [canonical.column(f.name) if f.name in canonical.schema.names else pa.nulls(batch.num_rows, f.type)
                     for f in schema], schema=schema)

    frame = _files_frame(spark, files, offsets[:-1]).mapInArrow(read, from_arrow_schema(schema))
    return frame, schema, offsets[-1]
