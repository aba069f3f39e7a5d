"""The FAISS index of an EMB_DIR: inner-product search over unit rows, made from its index.json description,
saved with it, memory-mapped back, and searched with the exact re-rank an IVF-PQ index needs.

Loading maps the file instead of reading it (FAISS's IO_FLAG_MMAP_IFC: the flat codes, the inverted lists and
the HNSW storage stay in the page cache, which every process serving the EMB_DIR shares). A mapped index is
read-only: products added while serving live in a small index of their own (`journal`)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from eclip.errors import EclipError
from eclip.index import INDEX_FILE, INDEX_META_FILE, META_FILE


def new_index(description: dict):
    """An empty (untrained where the kind trains) index of `description` (`IndexConfig.resolved`)."""
    import faiss

    kind, dim = description["type"], description["dim"]
    if kind == "flat":
        return faiss.IndexFlatIP(dim)
    if kind == "ivf":
        return faiss.IndexIVFFlat(faiss.IndexFlatIP(dim), dim, description["nlist"], faiss.METRIC_INNER_PRODUCT)
    if kind == "ivfpq":
        # An HNSW graph over the list centroids assigns a vector in O(log nlist) instead of nlist dot products,
        # which is most of the time adding ten million vectors takes. On unit rows L2 ranks as the inner product
        # does (|a - b|^2 = 2 - 2 a.b), and L2 k-means and residual codes fit a narrow cone of embeddings far
        # better than inner-product ones, whose centroids of unequal norms pull every query to a few lists.
        index = faiss.index_factory(dim, f"IVF{description['nlist']}_HNSW32,PQ{description['pq_m']}x"
                                         f"{description['pq_nbits']}", faiss.METRIC_L2)
        faiss.extract_index_ivf(index).cp.seed = description.get("seed", 0)
        return index
    if kind == "hnsw":
        index = faiss.IndexHNSWFlat(dim, description["m"], faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efConstruction = description["ef_construction"]
        return index
    raise EclipError(f"unknown index type {kind!r} in index.json; rebuild it with `eclip embed ... --force`")


def needs_training(description: dict) -> bool:
    return description["type"] in ("ivf", "ivfpq")


def build_index(vectors: np.ndarray, description: dict):
    """An index over the (N, D) unit rows `vectors` in memory (small catalogues, tests); `eclip embed` builds from
    the parts (`build.build_from_parts`) -> (index, description with count)."""
    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    index = new_index(description)
    if needs_training(description):
        rows = np.random.default_rng(description.get("seed", 0)).choice(
            len(vectors), min(len(vectors), description["train_sample"]), replace=False)
        index.train(vectors[np.sort(rows)])
    index.add(vectors)
    set_search_parameters(index, description)
    return index, {**description, "count": len(vectors)}


def set_search_parameters(index, description: dict) -> None:
    """The index's own nprobe / efSearch from its description (FAISS does not save them)."""
    import faiss

    if description["type"] in ("ivf", "ivfpq"):
        ivf = faiss.extract_index_ivf(index)
        ivf.nprobe = description["nprobe"]
        if description["type"] == "ivfpq":  # the centroid graph must return nprobe good lists
            faiss.downcast_index(ivf.quantizer).hnsw.efSearch = max(64, 2 * description["nprobe"])
    elif description["type"] == "hnsw":
        index.hnsw.efSearch = description["ef_search"]


def write_index(folder: Path, index, description: dict) -> None:
    import faiss

    faiss.write_index(index, str(Path(folder) / INDEX_FILE))
    (Path(folder) / INDEX_META_FILE).write_text(json.dumps(description, indent=1))


def load_index(emb_dir: Path):
    """-> (the memory-mapped, read-only faiss index with its search parameters restored, description)."""
    import faiss

    emb_dir = Path(emb_dir)
    for name in (META_FILE, INDEX_FILE, INDEX_META_FILE):
        if not (emb_dir / name).is_file():
            raise EclipError(f"{emb_dir / name} is missing: run `eclip embed --model RUN_DIR --data DATA_DIR --out {emb_dir}`")
    description = json.loads((emb_dir / INDEX_META_FILE).read_text())
    try:
        index = faiss.read_index(str(emb_dir / INDEX_FILE), faiss.IO_FLAG_MMAP_IFC)
    except RuntimeError as error:
        raise EclipError(f"{emb_dir / INDEX_FILE}: not a readable FAISS index ({str(error).splitlines()[0]}); "
                         "rebuild it with `eclip embed ... --force`") from None
    set_search_parameters(index, description)
    return index, description


def search_parameters(index, description: dict, selector):
    """FAISS search parameters that keep the index's own (nprobe, efSearch) and restrict it to `selector`."""
    import faiss

    if description["type"] in ("ivf", "ivfpq"):
        return faiss.SearchParametersIVF(sel=selector, nprobe=faiss.extract_index_ivf(index).nprobe)
    if description["type"] == "hnsw":
        return faiss.SearchParametersHNSW(sel=selector, efSearch=index.hnsw.efSearch)
    return faiss.SearchParameters(sel=selector)


def search(index, description: dict, queries: np.ndarray, k: int, selector=None, exact=None):
    """(Q, D) unit queries -> (scores, rows), each (Q, k), best first, -1 rows past the end. An index that
    re-ranks (`rerank` > 0 in its description) and is given `exact`, the (N, D) float rows it indexes
    (a memory map), fetches `rerank` candidates and orders them by their exact inner product."""
    queries = np.ascontiguousarray(queries, np.float32)
    rerank = description.get("rerank", 0) if exact is not None else 0
    candidates = max(k, rerank)
    params = search_parameters(index, description, selector) if selector is not None else None
    scores, rows = index.search(queries, candidates, params=params)  # (Q, C)
    if description["type"] == "ivfpq":
        scores = 1 - scores / 2  # squared L2 between unit rows -> inner product
    if not rerank:
        return scores, rows
    found = rows >= 0
    vectors = np.asarray(exact[np.where(found, rows, 0).ravel()], np.float32).reshape(*rows.shape, -1)  # (Q, C, D)
    exact_scores = np.where(found, np.einsum("qcd,qd->qc", vectors, queries), -np.inf)  # (Q, C)
    order = np.argsort(-exact_scores, axis=1, kind="stable")[:, :k]
    return (np.take_along_axis(exact_scores, order, 1).astype(np.float32),
            np.where(np.take_along_axis(found, order, 1), np.take_along_axis(rows, order, 1), -1))
