"""`eclip embed` and `eclip search`: a trained model's vectors of every product of a DATA_DIR, stored as an EMB_DIR
(layout in `eclip.index`), and text queries against it."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pyarrow as pa

from eclip.data.store import read_products
from eclip.errors import EclipError
from eclip.files import check_out_folder
from eclip.index import EMBEDDINGS_FILE, INDEX_FILE, INDEX_META_FILE, META_FILE, SERVING_DIR, VIEWS
from eclip.index.faiss_index import INDEX_TYPES, build_index, write_index
from eclip.index.vectors import normalize_rows, write_embeddings
from eclip.progress import progress_bar
from eclip.runs.atomic import building_folder, publish_folder
from eclip.runs.provenance import data_report, output_signature, same_weights, weights_fingerprint

SPLITS = ("train", "val", "test")


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


def embed_command(run_dir: Path, data_dir: Path, emb_dir: Path, index_type: str = "auto", index_view: str = "fused",
                  batch_size: int = 256, force: bool = False, discard_served_updates: bool = False) -> dict:
    """`eclip embed`: vectors of every product + a FAISS index -> meta.json's content (reused when unchanged).
    An EMB_DIR holding products added or removed through `eclip serve` is rebuilt only with
    `discard_served_updates`: the rebuild replaces the whole folder."""
    from eclip.index.journal import holds_served_updates
    from eclip.models import load_model

    run_dir, data_dir, emb_dir = Path(run_dir), Path(data_dir), Path(emb_dir)
    if index_view not in VIEWS:
        raise EclipError(f"--index-vectors must be one of {', '.join(VIEWS)}, got {index_view!r}")
    if index_type not in INDEX_TYPES:
        raise EclipError(f"unknown index type {index_type!r}; choose from {', '.join(INDEX_TYPES)}")
    check_out_folder(emb_dir, {EMBEDDINGS_FILE, INDEX_FILE, INDEX_META_FILE, META_FILE, SERVING_DIR}, "embed",
                     replaced_whole=True)
    data_report(data_dir)
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

    building = building_folder(emb_dir)
    write_embeddings(building / EMBEDDINGS_FILE, table.column("product_id"), vectors,
                     {name: table.column(name) for name in ("split", "category", "title")})
    write_index(building, index, description)
    splits = table.column("split").to_pylist()
    meta = {"model": str(run_dir), "data": str(data_dir), "products": table.num_rows, "dim": model.config.embed_dim,
            "counts": {split: splits.count(split) for split in SPLITS}, "index": description,
            "weights": weights_fingerprint(run_dir), "seconds": round(time.perf_counter() - started, 2),
            "signature": signature}
    (building / META_FILE).write_text(json.dumps(meta, indent=1))
    publish_folder(building, emb_dir)
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
    meta = json.loads((Path(emb_dir) / META_FILE).read_text())
    if not same_weights(embedding_weights(meta), run_dir):
        model = (meta.get("signature") or {}).get("model", meta.get("model"))
        raise EclipError(f"{emb_dir} was embedded by {model}, whose weights differ from those of "
                         f"{run_dir}: use that model, or embed with this one (`eclip embed --model {run_dir} "
                         f"--data DATA_DIR --out NEW_EMB_DIR`)")


def search(run_dir: Path, emb_dir: Path, query: str, top: int = 10) -> list[dict]:
    """A text query against EMB_DIR's index, with the products added and removed through `eclip serve` applied
    as the service applies them -> the `top` products, best first."""
    from eclip.index.journal import ProductIndex
    from eclip.models import embed_texts, load_model

    if not query.strip():
        raise EclipError("the search query is empty")
    index = ProductIndex(emb_dir, read_only=True)
    model, _, _ = load_model(run_dir)
    check_embedded_by(run_dir, emb_dir)
    (found,) = index.search(embed_texts(model, [query]), top)
    return [{"rank": rank, "score": score, "product_id": index.ids[row], "title": index.titles[row],
             "category": index.category(row)} for rank, (row, score) in enumerate(found, 1)]
