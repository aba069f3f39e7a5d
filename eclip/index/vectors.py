"""The embeddings Parquet format, one writer and one reader: a string `product_id`, other scalar columns, and
vector columns as lists of float32 (fixed-size when written here; any list of numbers of one length is read).
An embeddings path is one Parquet file or a folder of part files (`part-NNNNN.parquet`, read in name order), as
`eclip embed` writes EMB_DIR/embeddings.parquet: one part per DATA_DIR shard."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from eclip.errors import EclipError
from eclip.files import parquet_schema, read_parquet
from eclip.index import EMBEDDINGS_FILE, META_FILE, VIEWS

PART_GLOB = "part-*.parquet"


def normalize_rows(matrix):
    """Rows scaled to unit L2 norm (all-zero rows stay zero); dense stays dense, sparse stays sparse."""
    import scipy.sparse as sp

    if sp.issparse(matrix):
        norms = np.sqrt(np.asarray(matrix.multiply(matrix).sum(axis=1))).ravel()
        return sp.diags(1.0 / np.maximum(norms, 1e-12)) @ matrix
    matrix = np.asarray(matrix, dtype=np.float32)
    return matrix / np.maximum(np.linalg.norm(matrix, axis=1, keepdims=True), 1e-12)


def vector_column(matrix: np.ndarray) -> pa.FixedSizeListArray:
    """(N, D) -> a fixed-size-list float32 column."""
    matrix = np.ascontiguousarray(matrix, dtype=np.float32)
    return pa.FixedSizeListArray.from_arrays(pa.array(matrix.reshape(-1)), matrix.shape[1])


def embeddings_table(product_ids, vectors: dict[str, np.ndarray], columns: dict | None = None) -> pa.Table:
    """product_id, then `columns` (name -> Arrow array or list), then one vector column per `vectors` entry."""
    arrays = {"product_id": pa.array(product_ids, pa.string()), **(columns or {})}
    arrays.update({name: vector_column(matrix) for name, matrix in vectors.items()})
    return pa.table(arrays)


def write_embeddings(path: Path, product_ids, vectors: dict[str, np.ndarray], columns: dict | None = None) -> Path:
    """Write an embeddings Parquet file (its folder is created)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(embeddings_table(product_ids, vectors, columns), path)
    return path


def column_matrix(table: pa.Table, column: str, path: Path) -> np.ndarray:
    values = table[column].combine_chunks()
    if values.null_count:
        row = pc.index(pc.is_null(values), True).as_py()
        raise EclipError(f"{path}: row {row + 1}: {column} is null ({values.null_count} null(s) in all); rebuild the "
                         "embeddings")
    if len(values) and len(set(pc.list_value_length(values).unique().to_pylist())) != 1:
        raise EclipError(f"{path}: column {column!r} has unequal-length vectors; every row needs one of the same size")
    flat = values.flatten().to_numpy(zero_copy_only=False)
    matrix = np.asarray(flat, np.float32).reshape(len(values), -1)
    if not np.isfinite(matrix).all():
        raise EclipError(f"{path}: non-finite values in {column!r}; rebuild the embeddings")
    return matrix


def embedding_files(path: Path) -> list[Path]:
    """The Parquet files of an embeddings path: the file itself, or a folder's part files in order."""
    path = Path(path)
    if not path.is_dir():
        return [path]
    parts = sorted(path.glob(PART_GLOB))
    if not parts:
        raise EclipError(f"{path}: a folder without {PART_GLOB} files; rebuild the embeddings")
    return parts


def embeddings_columns(path: Path) -> list[str]:
    """The column names of an embeddings path (its first part's, for a folder), without reading rows."""
    return parquet_schema(embedding_files(path)[0]).names


def read_vectors(path: Path, vector_columns: list[str], columns: list[str] = ("product_id",)) \
        -> tuple[pa.Table, dict[str, np.ndarray]]:
    """-> (the `columns`, {name: (N, D) float32} of the `vector_columns}) of an embeddings path, its parts in order;
    a missing column, a non-numeric vector column, nulls, vectors of unequal length or non-finite values are
    refused in one line naming the file."""
    read = [_read_file(file, vector_columns, columns) for file in embedding_files(path)]
    if len(read) == 1:
        return read[0]
    return (pa.concat_tables([table for table, _ in read]),
            {name: np.concatenate([vectors[name] for _, vectors in read]) for name in vector_columns})


def _read_file(path: Path, vector_columns: list[str], columns: list[str]) -> tuple[pa.Table, dict[str, np.ndarray]]:
    path = Path(path)
    schema = parquet_schema(path)
    for column in [*columns, *vector_columns]:
        if column not in schema.names:
            others = ", ".join(name for name in schema.names if name != "product_id")
            raise EclipError(f"{path}: no column {column!r}; it has {others}")
    for column in vector_columns:
        kind = schema.field(column).type
        if not (pa.types.is_list(kind) or pa.types.is_fixed_size_list(kind) or pa.types.is_large_list(kind)) \
                or not (pa.types.is_floating(kind.value_type) or pa.types.is_integer(kind.value_type)):
            raise EclipError(f"{path}: column {column!r} is {kind}, expected a list of floats")
    table = read_parquet(path, columns=list(dict.fromkeys([*columns, *vector_columns])))
    if "product_id" in columns and table["product_id"].null_count:
        row = pc.index(pc.is_null(table["product_id"]), True).as_py()
        raise EclipError(f"{path}: row {row + 1}: product_id is null ({table['product_id'].null_count} null(s) in "
                         "all); rebuild the embeddings")
    vectors = {column: column_matrix(table, column, path) for column in vector_columns}
    return table.select(list(columns)), vectors


def product_vectors(path: Path, column: str) -> tuple[list[str], np.ndarray]:
    """product ids (as strings) and one (N, D) vector column of an embeddings Parquet file."""
    table, vectors = read_vectors(path, [column])
    return table["product_id"].cast(pa.string()).to_pylist(), vectors[column]


def read_embeddings(emb_dir: Path, columns: list[str] | None = None) -> tuple[pa.Table, dict[str, np.ndarray]]:
    """-> (the non-vector columns, {view: (N, D) float32}) of a finished EMB_DIR (`columns`: which to read,
    vector views included; all by default)."""
    emb_dir = Path(emb_dir)
    if not (emb_dir / META_FILE).is_file():
        raise EclipError(f"{emb_dir} is not a finished EMB_DIR (no {META_FILE}): run `eclip embed ... --out {emb_dir}`")
    names = columns if columns is not None else embeddings_columns(emb_dir / EMBEDDINGS_FILE)
    views = [name for name in names if name in VIEWS]
    return read_vectors(emb_dir / EMBEDDINGS_FILE, views, [name for name in names if name not in VIEWS])


class PartRows:
    """Row lookups of one vector column of an embeddings path without reading it whole: `rows[i]` -> (D,) float32,
    read from the part and row group that hold row i (a served product's details need its image and text vectors,
    which the index does not keep)."""

    def __init__(self, path: Path, column: str):
        self.files = embedding_files(path)
        self.column = column
        counts = [pq.read_metadata(file).num_rows for file in self.files]
        self.starts = np.cumsum([0, *counts])
        self._cached: tuple[tuple[int, int], int, np.ndarray] | None = None  # ((part, group), first row, vectors)

    def __len__(self) -> int:
        return int(self.starts[-1])

    def __getitem__(self, row: int) -> np.ndarray:
        row = int(row)
        if not 0 <= row < len(self):
            raise IndexError(row)
        part = int(np.searchsorted(self.starts, row, side="right")) - 1
        local = row - int(self.starts[part])
        metadata = pq.read_metadata(self.files[part])
        group, first = 0, 0
        while first + metadata.row_group(group).num_rows <= local:
            first += metadata.row_group(group).num_rows
            group += 1
        if self._cached is None or self._cached[0] != (part, group):
            table = pq.ParquetFile(self.files[part]).read_row_group(group, columns=[self.column])
            self._cached = ((part, group), first, column_matrix(table, self.column, self.files[part]))
        return self._cached[2][local - self._cached[1]]
