"""The FAISS index of an EMB_DIR: inner-product search over unit rows, built, saved with its parameters in
index.json, and loaded with them restored."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np

from eclip.errors import EclipError
from eclip.index import INDEX_FILE, INDEX_META_FILE, META_FILE

INDEX_TYPES = ("auto", "flat", "ivf", "hnsw")
EXACT_INDEX_LIMIT = 200_000  # above this many vectors "auto" builds an IVF index


def build_index(vectors: np.ndarray, kind: str = "auto", nlist: int = 0, hnsw_m: int = 32, seed: int = 0):
    """Inner-product index over unit rows -> (faiss index, description for index.json).
    flat: exact; ivf: inverted lists (nlist ~ 4 sqrt(N)), searched with nprobe lists; hnsw: a graph, M links."""
    import faiss

    if kind not in INDEX_TYPES:
        raise EclipError(f"unknown index type {kind!r}; choose from {', '.join(INDEX_TYPES)}")
    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    count, dim = vectors.shape
    if kind == "auto":
        kind = "flat" if count <= EXACT_INDEX_LIMIT else "ivf"
    description = {"type": kind, "metric": "inner_product", "count": count, "dim": dim}
    if kind == "flat":
        index = faiss.IndexFlatIP(dim)
    elif kind == "ivf":
        # FAISS wants >= 39 training points per list; a small catalogue gets fewer, larger lists.
        nlist = max(1, min(nlist or int(4 * math.sqrt(count)), count // 39 or 1))
        quantizer = faiss.IndexFlatIP(dim)
        index = faiss.IndexIVFFlat(quantizer, dim, nlist, faiss.METRIC_INNER_PRODUCT)
        sample = vectors[np.random.default_rng(seed).choice(count, min(count, 256 * nlist), replace=False)]
        index.train(sample)
        index.nprobe = min(nlist, 16)
        description.update(nlist=nlist, nprobe=index.nprobe)
    else:
        index = faiss.IndexHNSWFlat(dim, hnsw_m, faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efConstruction = 80
        index.hnsw.efSearch = 64
        description.update(m=hnsw_m, ef_construction=80, ef_search=64)
    index.add(vectors)
    return index, description


def write_index(folder: Path, index, description: dict) -> None:
    import faiss

    faiss.write_index(index, str(Path(folder) / INDEX_FILE))
    (Path(folder) / INDEX_META_FILE).write_text(json.dumps(description, indent=1))


def load_index(emb_dir: Path):
    """-> (faiss index with its search parameters restored, description)."""
    import faiss

    emb_dir = Path(emb_dir)
    for name in (META_FILE, INDEX_FILE, INDEX_META_FILE):
        if not (emb_dir / name).is_file():
            raise EclipError(f"{emb_dir / name} is missing: run `eclip embed --model RUN_DIR --data DATA_DIR --out {emb_dir}`")
    description = json.loads((emb_dir / INDEX_META_FILE).read_text())
    index = faiss.read_index(str(emb_dir / INDEX_FILE))
    if description["type"] == "ivf":
        index.nprobe = description["nprobe"]
    elif description["type"] == "hnsw":
        index.hnsw.efSearch = description["ef_search"]
    return index, description


def search_parameters(index, description: dict, selector):
    """FAISS search parameters that keep the index's own (nprobe, efSearch) and restrict it to `selector`."""
    import faiss

    if description["type"] == "ivf":
        return faiss.SearchParametersIVF(sel=selector, nprobe=index.nprobe)
    if description["type"] == "hnsw":
        return faiss.SearchParametersHNSW(sel=selector, efSearch=index.hnsw.efSearch)
    return faiss.SearchParameters(sel=selector)
