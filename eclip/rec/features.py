"""Content item embeddings from `EMB_DIR/embeddings.parquet` (read by `eclip.index.vectors`: string
`product_id`, vector columns such as `image`, `text`, `fused`), matched to sequence item ids as strings."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from eclip.errors import EclipError
from eclip.index import EMBEDDINGS_FILE
from eclip.index.vectors import product_vectors


def load_item_features(emb_dir: Path, column: str = "fused") -> tuple[list[str], np.ndarray]:
    """Product ids and their (P, C) float32 embeddings from EMB_DIR/embeddings.parquet."""
    path = Path(emb_dir) / EMBEDDINGS_FILE
    product_ids, matrix = product_vectors(path, column)
    if not product_ids:
        raise EclipError(f"{path}: no rows; rebuild the embeddings")
    return product_ids, matrix


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
