"""Content item embeddings from `EMB_DIR/embeddings.parquet` (string `product_id`, fixed-size-list float32
columns such as `image`, `text`, `fused`), matched to sequence item ids as strings."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from eclip.errors import EclipError
from eclip.files import parquet_schema, read_parquet


def load_item_features(emb_dir: Path, column: str = "fused") -> tuple[list[str], np.ndarray]:
    """Product ids and their (P, C) float32 embeddings."""
    path = Path(emb_dir) / "embeddings.parquet"
    if not path.is_file():
        raise EclipError(f"{path}: not found; --item-features takes a folder holding embeddings.parquet")
    schema = parquet_schema(path)
    if "product_id" not in schema.names:
        raise EclipError(f"{path}: no product_id column")
    if column not in schema.names:
        choices = [n for n in schema.names if n != "product_id"]
        raise EclipError(f"{path}: no column {column!r}; choose --item-feature-column from {', '.join(choices)}")
    kind = schema.field(column).type
    if not pa.types.is_fixed_size_list(kind) or not (pa.types.is_floating(kind.value_type)
                                                     or pa.types.is_integer(kind.value_type)):
        raise EclipError(f"{path}: column {column!r} is {kind}, expected a fixed-size list of floats")
    table = read_parquet(path, columns=["product_id", column])
    if table.num_rows == 0:
        raise EclipError(f"{path}: no rows; rebuild the embeddings")
    for name in ("product_id", column):
        values = table[name]
        if values.null_count:
            row = pc.index(pc.is_null(values), True).as_py()
            raise EclipError(f"{path}: row {row + 1}: {name} is null ({values.null_count} null(s) in all); "
                             "rebuild the embeddings")
    values = table[column].combine_chunks()
    matrix = values.flatten().to_numpy(zero_copy_only=False).astype(np.float32).reshape(len(values), -1)
    if not np.isfinite(matrix).all():
        raise EclipError(f"{path}: non-finite values in {column!r}; rebuild the embeddings")
    return [str(p) for p in table["product_id"].to_pylist()], matrix


def align_features(item_ids: list[str], product_ids: list[str], matrix: np.ndarray, source: str,
                   in_sequences: np.ndarray) -> tuple[np.ndarray, float]:
    """(n_items + 1, C) content per item index (row 0 and items without content are zero), and the share of the
    items that occur in the sequences (`in_sequences`, item indices) that have content.

    Products that never occur in a sequence join the vocabulary with their content, so only the sequence items
    tell whether the two files share their ids: none in common is refused.
    """
    row_of = {p: r for r, p in enumerate(product_ids)}
    content = np.zeros((len(item_ids) + 1, matrix.shape[1]), dtype=np.float32)
    matched = [(k, row_of[item]) for k, item in enumerate(item_ids, 1) if item in row_of]
    has_content = np.zeros(len(item_ids) + 1, dtype=bool)
    if matched:
        index, rows = map(np.array, zip(*matched))
        content[index] = matrix[rows]
        has_content[index] = True
    share = float(has_content[in_sequences].mean())
    if share == 0:
        raise EclipError(f"{source}: no sequence item id matches a product_id (items such as "
                         f"{item_ids[in_sequences[0] - 1]!r}, product_ids such as {product_ids[0]!r}); the sequences "
                         "must use the catalogue's product ids")
    return content, share


def write_item_features(emb_dir: Path, product_ids: list[str], columns: dict[str, np.ndarray]) -> Path:
    """Write embeddings.parquet in the layout above (used by the synthetic cold-start data and the tests)."""
    emb_dir = Path(emb_dir)
    emb_dir.mkdir(parents=True, exist_ok=True)
    arrays = {"product_id": pa.array(product_ids, pa.string())}
    for name, matrix in columns.items():
        matrix = np.ascontiguousarray(matrix, dtype=np.float32)
        arrays[name] = pa.FixedSizeListArray.from_arrays(pa.array(matrix.reshape(-1)), matrix.shape[1])
    path = emb_dir / "embeddings.parquet"
    pq.write_table(pa.table(arrays), path)
    return path
