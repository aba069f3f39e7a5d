"""Product vectors from a trained dual encoder, stored for every downstream job, and a FAISS index over them.

EMB_DIR (`eclip embed`; the recommender and the graph evaluation read it too):
    embeddings.parquet   product_id (string), split, category, title, and fixed-size-list float32 columns
                         image, text, fused: each L2-normalized; fused = normalize(image + text)
    index.faiss          inner-product index over one of the vector columns (rows = parquet rows)
    index.json           its type (flat, ivf, hnsw), parameters, which vectors it holds, count, dim
    meta.json            model, data, counts per split, the model weights' fingerprint, seconds; written last: an
                         EMB_DIR without it is incomplete
    serving/             products added and removed through `eclip serve` (eclip.serve.store)
"""

from __future__ import annotations

import json
import math
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from eclip.data.store import check_complete, read_products
from eclip.errors import EclipError
from eclip.files import check_out_folder
from eclip.progress import progress_bar
from eclip.tasks.similarity import cosine, normalize_rows

EMBEDDINGS_FILE = "embeddings.parquet"
INDEX_FILE = "index.faiss"
INDEX_META_FILE = "index.json"
META_FILE = "meta.json"
SERVING_DIR = "serving"
VIEWS = ("image", "text", "fused")
INDEX_TYPES = ("auto", "flat", "ivf", "hnsw")
EXACT_INDEX_LIMIT = 200_000  # above this many vectors "auto" builds an IVF index
SPLITS = ("train", "val", "test")


@dataclass
class Representation:
    """One method's product vectors per split and view, and what it can do with free text.

    views[split][view] holds (N, D) unit rows (dense, or sparse for TF-IDF) in the split's product order."""
    name: str
    views: dict[str, dict[str, object]]
    primary: str  # the view that matching, clustering and the probes use
    tasks: frozenset[str]
    encode_text: Callable | None = None  # prompts -> rows comparable with every view (zero-shot, search)
    similarity: Callable = field(default=cosine)  # (A rows, B rows) -> (A, B) dense
    every_view: bool = False  # classify on every view, not only the headline one (the model's own table)

    def view_names(self) -> list[str]:
        return [view for view in VIEWS if view in next(iter(self.views.values()))]


def fuse(image: np.ndarray, text: np.ndarray) -> np.ndarray:
    """The product vector: normalize(image + text), (N, D)."""
    return normalize_rows(image + text)


def embed_products(model, titles: list[str], thumbnails: pa.Array, batch_size: int,
                   description: str = "embed") -> dict[str, np.ndarray]:
    """Titles and JPEG thumbnails of N products -> {image, text, fused}: (N, D) float32 unit rows."""
    from eclip.models import embed_images, embed_texts

    count = len(titles)
    image = np.zeros((count, model.config.embed_dim), np.float32)
    with progress_bar(f"{description}: images", count) as advance:
        for start in range(0, count, batch_size):
            rows = np.arange(start, min(start + batch_size, count))
            image[rows] = embed_images(model, thumbnails.take(pa.array(rows)).to_pylist(), batch_size)
            advance(len(rows))
    with progress_bar(f"{description}: titles", count) as advance:
        text = embed_texts(model, titles, batch_size, on_batch=advance)
    return {"image": image, "text": text, "fused": fuse(image, text)}


def tower_representation(name: str, model, titles: dict[str, list[str]], thumbnails: dict[str, pa.Array],
                         batch_size: int, every_view: bool = False) -> Representation:
    """Embed the titles and JPEG thumbnails of each split with `model`."""
    from eclip.models import embed_texts

    views = {split: embed_products(model, titles[split], thumbnails[split], batch_size, f"embed {split} ({name})")
             for split in titles}
    return Representation(name, views, primary="fused", tasks=frozenset({"retrieval", "category", "attributes",
                                                                         "matching", "clustering", "adult"}),
                          encode_text=_remembered(lambda prompts: embed_texts(model, prompts, batch_size)),
                          every_view=every_view)


def _remembered(encode_text: Callable) -> Callable:
    """`encode_text` that embeds each distinct text once per run: the tasks ask again for the same class
    prompts (choosing the zero-shot view on val, then scoring on test; the same leaf names at every level)."""
    known: dict[str, np.ndarray] = {}

    def encode(texts: list[str]) -> np.ndarray:
        new = [text for text in dict.fromkeys(texts) if text not in known]
        if new:
            known.update(zip(new, encode_text(new)))
        return np.stack([known[text] for text in texts]) if texts else encode_text([])

    return encode


# ---------------------------------------------------------------- FAISS index
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


# ---------------------------------------------------------------- EMB_DIR
def _vector_column(matrix: np.ndarray) -> pa.FixedSizeListArray:
    matrix = np.ascontiguousarray(matrix, dtype=np.float32)
    return pa.FixedSizeListArray.from_arrays(pa.array(matrix.reshape(-1)), matrix.shape[1])


def read_embeddings(emb_dir: Path, columns: list[str] | None = None) -> tuple[pa.Table, dict[str, np.ndarray]]:
    """-> (the non-vector columns, {view: (N, D) float32}) of a finished EMB_DIR."""
    emb_dir = Path(emb_dir)
    if not (emb_dir / META_FILE).is_file():
        raise EclipError(f"{emb_dir} is not a finished EMB_DIR (no {META_FILE}): run `eclip embed ... --out {emb_dir}`")
    table = pq.read_table(emb_dir / EMBEDDINGS_FILE, columns=columns)
    vectors = {view: table.column(view).combine_chunks().flatten().to_numpy().reshape(table.num_rows, -1)
               for view in VIEWS if view in table.column_names}
    return table.drop_columns(list(vectors)), vectors


def embed_command(run_dir: Path, data_dir: Path, emb_dir: Path, index_type: str = "auto", index_view: str = "fused",
                  batch_size: int = 256, force: bool = False, discard_served_updates: bool = False) -> dict:
    """`eclip embed`: vectors of every product + a FAISS index -> meta.json's content (reused when unchanged).
    An EMB_DIR holding products added or removed through `eclip serve` is rebuilt only with
    `discard_served_updates`: the rebuild replaces the whole folder."""
    from eclip.models import load_model, output_signature, weights_fingerprint
    from eclip.serve.store import holds_served_updates

    run_dir, data_dir, emb_dir = Path(run_dir), Path(data_dir), Path(emb_dir)
    if index_view not in VIEWS:
        raise EclipError(f"--index-vectors must be one of {', '.join(VIEWS)}, got {index_view!r}")
    if index_type not in INDEX_TYPES:
        raise EclipError(f"unknown index type {index_type!r}; choose from {', '.join(INDEX_TYPES)}")
    check_out_folder(emb_dir, {EMBEDDINGS_FILE, INDEX_FILE, INDEX_META_FILE, META_FILE, SERVING_DIR}, "embed",
                     replaced_whole=True)
    check_complete(data_dir)
    model, _, _ = load_model(run_dir)
    signature = output_signature(run_dir, data_dir, {"index": index_type, "index_vectors": index_view})
    if (emb_dir / META_FILE).is_file() and not force:
        meta = json.loads((emb_dir / META_FILE).read_text())
        if meta.get("signature") == signature:
            return {**meta, "reused": True}
    if holds_served_updates(emb_dir) and not discard_served_updates:
        raise EclipError(f"{emb_dir / SERVING_DIR} holds products added or removed through `eclip serve`, which "
                         f"re-embedding would delete: pass --discard-served-updates to re-embed anyway, or give "
                         f"another --out")

    started = time.perf_counter()
    table = read_products(data_dir, columns=["product_id", "title", "category", "split", "thumbnail"])
    if table.num_rows == 0:
        raise EclipError(f"{data_dir}: no products to embed")
    vectors = embed_products(model, table.column("title").to_pylist(), table.column("thumbnail").combine_chunks(),
                             batch_size)
    index, description = build_index(vectors[index_view], index_type)
    description["vectors"] = index_view

    building = emb_dir.with_name(f".{emb_dir.name}.building")
    shutil.rmtree(building, ignore_errors=True)
    building.mkdir(parents=True)
    columns = {name: table.column(name) for name in ("product_id", "split", "category", "title")}
    columns.update({view: _vector_column(matrix) for view, matrix in vectors.items()})
    pq.write_table(pa.table(columns), building / EMBEDDINGS_FILE)
    import faiss
    faiss.write_index(index, str(building / INDEX_FILE))
    (building / INDEX_META_FILE).write_text(json.dumps(description, indent=1))
    splits = table.column("split").to_pylist()
    meta = {"model": str(run_dir), "data": str(data_dir), "products": table.num_rows, "dim": model.config.embed_dim,
            "counts": {split: splits.count(split) for split in SPLITS}, "index": description,
            "weights": weights_fingerprint(run_dir), "seconds": round(time.perf_counter() - started, 2),
            "signature": signature}
    (building / META_FILE).write_text(json.dumps(meta, indent=1))
    shutil.rmtree(emb_dir, ignore_errors=True)
    building.rename(emb_dir)
    return {**meta, "reused": False}


def embedding_weights(meta: dict) -> dict | None:
    """The fingerprint of the weights that embedded an EMB_DIR (its meta.json), None when it records none."""
    signature = meta.get("signature") or {}
    if meta.get("weights") is None and signature.get("weights"):  # embedded before meta.json recorded the sha256
        return dict(zip(("size", "mtime_ns"), signature["weights"]))
    return meta.get("weights")


def check_embedded_by(run_dir: Path, emb_dir: Path) -> None:
    """Refuse a model other than the one whose weights embedded EMB_DIR: its queries would land in another space
    (a model of the same dimension gives ranked garbage, not an error)."""
    from eclip.models import same_weights

    meta = json.loads((Path(emb_dir) / META_FILE).read_text())
    if not same_weights(embedding_weights(meta), run_dir):
        model = (meta.get("signature") or {}).get("model", meta.get("model"))
        raise EclipError(f"{emb_dir} was embedded by {model}, whose weights differ from those of "
                         f"{run_dir}: use that model, or embed with this one (`eclip embed --model {run_dir} "
                         f"--data DATA_DIR --out NEW_EMB_DIR`)")


def search(run_dir: Path, emb_dir: Path, query: str, top: int = 10) -> list[dict]:
    """A text query against EMB_DIR's index, with the products added and removed through `eclip serve` applied
    as the service applies them -> the `top` products, best first."""
    from eclip.models import embed_texts, load_model
    from eclip.serve.store import ProductIndex

    if not query.strip():
        raise EclipError("the search query is empty")
    index = ProductIndex(emb_dir, read_only=True)
    model, _, _ = load_model(run_dir)
    check_embedded_by(run_dir, emb_dir)
    (found,) = index.search(embed_texts(model, [query]), top)
    return [{"rank": rank, "score": score, "product_id": index.ids[row], "title": index.titles[row],
             "category": index.category(row)} for rank, (row, score) in enumerate(found, 1)]
