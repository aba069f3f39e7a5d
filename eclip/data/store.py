"""The prepared dataset on disk (layout in docs/data.md): Parquet shards, rejects, duplicate groups, DuckDB, report.

A DATA_DIR is complete only when `report.json` exists; `prepare` builds into a sibling temporary folder and
renames it into place, so a killed run never leaves something that looks finished.
"""

from __future__ import annotations

import json
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
import pyarrow.parquet as pq

from eclip.errors import EclipError
from eclip.runs.provenance import DATA_REPORT as REPORT
from eclip.runs.provenance import data_report

SHARDS = "shards"
REJECTED = "rejected.parquet"
DUPLICATE_GROUPS = "duplicate_groups.parquet"
CATALOG_DB = "catalog.duckdb"
FEATURES = "features"  # `eclip train`'s cache of locked text-tower features (eclip/train/features.py)
# Everything at the top of a DATA_DIR that `prepare` may replace: what it writes (DuckDB may leave its write-ahead
# log beside the database) and the features cache derived from it.
PREPARED_ENTRIES = (SHARDS, REPORT, REJECTED, DUPLICATE_GROUPS, CATALOG_DB, CATALOG_DB + ".wal", FEATURES)

# Accepted products: fixed columns first, then attr_* in the catalogue's order.
PRODUCT_FIELDS = [
    pa.field("row", pa.int64()), pa.field("product_id", pa.string()), pa.field("title", pa.string()),
    pa.field("title_norm", pa.string()), pa.field("category", pa.string()), pa.field("catalog_id", pa.string()),
    pa.field("group_id", pa.string()), pa.field("brand", pa.string()), pa.field("description", pa.string()),
    pa.field("price", pa.float64()), pa.field("adult", pa.bool_()), pa.field("image_path", pa.string()),
    pa.field("thumbnail", pa.binary()), pa.field("width", pa.int32()), pa.field("height", pa.int32()),
    pa.field("image_hash", pa.string()), pa.field("split", pa.string()),
]
REJECTED_SCHEMA = pa.schema([("product_id", pa.string()), ("row", pa.int64()), ("reason", pa.string()),
                             ("detail", pa.string())])
DUPLICATE_GROUPS_SCHEMA = pa.schema([("group_id", pa.string()), ("product_id", pa.string()), ("row", pa.int64()),
                                     ("method", pa.string()), ("kept", pa.bool_())])


def product_schema(attribute_names: list[str]) -> pa.Schema:
    return pa.schema(PRODUCT_FIELDS + [pa.field(name, pa.string()) for name in attribute_names])


class ShardWriter:
    """Writes accepted products into `shards/part-NNNNN.parquet`, a new file every `rows_per_shard` rows, numbered
    from `first_shard` (on Spark each task writes its own run of shards)."""

    def __init__(self, folder: Path, schema: pa.Schema, rows_per_shard: int, first_shard: int = 0):
        self.folder = folder / SHARDS
        self.folder.mkdir(parents=True, exist_ok=True)
        self.schema, self.rows_per_shard = schema, rows_per_shard
        self.writer, self.rows_in_shard, self.shards = None, 0, first_shard

    def write(self, table: pa.Table) -> None:
        while table.num_rows:
            if self.writer is None:
                path = self.folder / f"part-{self.shards:05d}.parquet"
                self.writer = pq.ParquetWriter(path, self.schema, compression="zstd")
                self.shards += 1
            take = min(table.num_rows, self.rows_per_shard - self.rows_in_shard)
            self.writer.write_table(table.slice(0, take).cast(self.schema))
            self.rows_in_shard += take
            table = table.slice(take)
            if self.rows_in_shard == self.rows_per_shard:
                self.close()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer, self.rows_in_shard = None, 0


def prepared_report(data_dir: Path) -> dict | None:
    """The report of a DATA_DIR that `prepare` finished, or None: a report.json that is not prepare's (`eclip eval`
    writes one too) has no `fingerprint`."""
    try:
        report = json.loads((Path(data_dir) / REPORT).read_text())
    except (OSError, ValueError):
        return None
    return report if isinstance(report, dict) and "fingerprint" in report else None


def read_products(data_dir: str | Path, split: str | None = None, columns: list[str] | None = None) -> pa.Table:
    """Accepted products of a prepared DATA_DIR as one Arrow table (optionally one split, some columns)."""
    data_dir = Path(data_dir)
    data_report(data_dir)
    shards = sorted((data_dir / SHARDS).glob("part-*.parquet"))
    if not shards:
        return product_schema([]).empty_table().select(columns) if columns else product_schema([]).empty_table()
    dataset = ds.dataset(shards, format="parquet")
    missing = sorted(set(columns or []) - set(dataset.schema.names))
    if missing:
        raise EclipError(f"{data_dir}: no column(s) {', '.join(missing)}; it has {', '.join(dataset.schema.names)}")
    condition = pc.field("split") == split if split else None
    return dataset.to_table(columns=columns, filter=condition)


def connect(data_dir: str | Path) -> duckdb.DuckDBPyConnection:
    """An in-memory DuckDB connection with views `products`, `rejected`, `duplicate_groups` over DATA_DIR."""
    data_dir = Path(data_dir).resolve()
    data_report(data_dir)
    con = duckdb.connect()
    _create_views(con, data_dir)
    return con


def _create_views(con: duckdb.DuckDBPyConnection, data_dir: Path) -> None:
    quote = lambda path: str(path).replace("'", "''")
    shards = data_dir / SHARDS / "part-*.parquet"
    if any((data_dir / SHARDS).glob("part-*.parquet")):
        con.execute(f"create or replace view products as select * from read_parquet('{quote(shards)}')")
    else:
        con.execute("create or replace view products as select * from (select null::bigint as row) where false")
    con.execute(f"create or replace view rejected as select * from read_parquet('{quote(data_dir / REJECTED)}')")
    con.execute(f"create or replace view duplicate_groups as select * from read_parquet('{quote(data_dir / DUPLICATE_GROUPS)}')")


def write_catalog_db(data_dir: Path) -> None:
    """`catalog.duckdb` beside the shards, its views naming this folder's absolute path (`connect` re-points them)."""
    path = data_dir / CATALOG_DB
    path.unlink(missing_ok=True)
    con = duckdb.connect(str(path))
    try:
        _create_views(con, data_dir.resolve())
    finally:
        con.close()
