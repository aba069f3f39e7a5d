"""The coarse cells of the partitioned near-duplicate search (`near.py`): train, assign, search one cell.

Plain NumPy and FAISS, no Spark: the executor tasks call these functions, and so does `bench/near_search.py`
to measure the search's recall against exact search at sizes where Spark on one machine would only add time.

Each descriptor view lives in one cell, its *home* (the nearest centroid), and is searched from its `probe`
nearest cells (multi-probe). A cell's task compares the views searched from it with the views that live
there, so two views are compared when the home of either is among the other's probes. Views whose cosine
reaches the threshold (0.94 and above by default) are nearly the same vector and are almost always nearest
to the same centroid or to neighbouring ones; the pairs lost are those whose homes sit further apart than
`probe` cells, the recall that docs/data.md reports.
"""

from __future__ import annotations

import faiss
import numpy as np

from eclip.data.dedup import near_duplicate_pairs

ONE_CELL_VIEWS = 200_000  # up to this many views, one cell: the local engine's exact search in one task
VIEWS_PER_CELL = 5_000  # beyond it, the automatic cell count: a cell's exact search stays small
SAMPLE_PER_CELL = 100  # views sampled per cell to train the centroids (k-means wants 39 or more)


def cell_count(views: int, cells: int) -> int:
    """The cells to use for `views` descriptor views: `cells` when given (> 0), else one up to ONE_CELL_VIEWS
    views and one per VIEWS_PER_CELL beyond."""
    if cells > 0:
        return cells
    return 1 if views <= ONE_CELL_VIEWS else -(-views // VIEWS_PER_CELL)


def train_centroids(sample: np.ndarray, cells: int, seed: int = 0) -> np.ndarray:
    """(C, D) unit centroids by spherical k-means on a (S, D) sample of unit views."""
    sample = np.ascontiguousarray(sample, dtype=np.float32)
    kmeans = faiss.Kmeans(sample.shape[1], min(cells, len(sample)), niter=20, seed=seed, spherical=True,
                          max_points_per_centroid=SAMPLE_PER_CELL * 4)
    kmeans.train(sample)
    return kmeans.centroids / np.maximum(np.linalg.norm(kmeans.centroids, axis=1, keepdims=True), 1e-12)


def probe_cells(views: np.ndarray, centroids: np.ndarray, probe: int) -> np.ndarray:
    """(M, P) the P = min(probe, C) cells nearest each of the (M, D) views, nearest first: column 0 is its home."""
    index = faiss.IndexFlatIP(centroids.shape[1])
    index.add(np.ascontiguousarray(centroids, dtype=np.float32))
    _, cells = index.search(np.ascontiguousarray(views, dtype=np.float32), min(probe, len(centroids)))
    return cells


def best_per_pair(left: np.ndarray, right: np.ndarray, similarity: np.ndarray, rows: int):
    """Each (left, right) pair once, at its best similarity, sorted by (left, right); rows bounds the ids."""
    keys = left.astype(np.int64) * rows + right.astype(np.int64)
    order = np.lexsort((-similarity, keys))
    keys, similarity = keys[order], similarity[order]
    first = np.diff(keys, prepend=-1) != 0
    return keys[first] // rows, keys[first] % rows, similarity[first].astype(np.float32)


def search_cell(rows: np.ndarray, vectors: np.ndarray, home: np.ndarray, threshold: float):
    """The pairs of one cell: every view searched from it (rows[k], vectors[k]: (M, D)) against the views that
    live in it (home[k]), cosine >= threshold, two rows' views only -> (left < right, best similarity)."""
    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    index = faiss.IndexFlatIP(vectors.shape[1])
    index.add(vectors[home])
    home_rows = rows[home]
    lims, cosines, found = index.range_search(vectors, threshold)
    query_rows = np.repeat(rows, np.diff(lims).astype(np.int64))
    found_rows = home_rows[found]
    other = query_rows != found_rows
    a, b = query_rows[other], found_rows[other]
    bound = int(rows.max()) + 1 if len(rows) else 1
    return best_per_pair(np.minimum(a, b), np.maximum(a, b), cosines[other], bound)


def exact_pairs(rows: np.ndarray, vectors: np.ndarray, threshold: float):
    """One cell holding every row: the local engine's own search (`dedup.near_duplicate_pairs`) on the (N, V, D)
    descriptors of `rows` (any order) -> (left < right rows, best similarity), as the local engine finds them."""
    order = np.argsort(rows, kind="stable")
    left, right, similarity = near_duplicate_pairs(vectors[order], threshold)
    return rows[order][left], rows[order][right], similarity
