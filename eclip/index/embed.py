"""`eclip embed` and `eclip search`: a trained model's vectors of every product of a DATA_DIR, stored as an EMB_DIR
(layout in `eclip.index`), and text queries against it."""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from eclip.config import validate
from eclip.data.store import SHARDS
from eclip.errors import EclipError
from eclip.files import check_out_folder
from eclip.index import EMBEDDINGS_FILE, INDEX_FILE, INDEX_META_FILE, META_FILE, SERVING_DIR, VECTORS_FILE
from eclip.index.build import build_from_parts
from eclip.index.config import IndexConfig
from eclip.index.parts import embed_shard, part_provenance, rank_shards, recorded_provenance, torchrun_rank
from eclip.index.vectors import embedding_files, normalize_rows
from eclip.progress import progress_bar
from eclip.runs.atomic import building_folder, publish_folder
from eclip.runs.provenance import data_report, output_signature, same_weights, weights_fingerprint

SPLITS = ("train", "val", "test")
ENGINES = ("local", "spark")


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


def embed_command(run_dir: Path, data_dir: Path, emb_dir: Path, config: IndexConfig | None = None,
                  batch_size: int = 256, force: bool = False, discard_served_updates: bool = False,
                  engine: str = "local", spark_master: str | None = None) -> dict:
    """`eclip embed`: vectors of every product, one part per DATA_DIR shard, + a FAISS index -> meta.json's content
    (reused when unchanged). Parts whose provenance matches (a killed run's, or the current EMB_DIR's) are kept,
    so a re-run embeds only the shards it lacks. `engine` spark embeds the shards in Spark tasks; under torchrun
    rank r embeds shards r, r + W, ... and rank 0 builds the index once every rank is done. An EMB_DIR holding
    products added or removed through `eclip serve` is rebuilt only with `discard_served_updates`: the rebuild
    replaces the whole folder."""
    from eclip.index.journal import holds_served_updates

    run_dir, data_dir, emb_dir = Path(run_dir), Path(data_dir), Path(emb_dir)
    config = config or IndexConfig()
    validate(config)
    if engine not in ENGINES:
        raise EclipError(f"--engine must be one of {', '.join(ENGINES)}, got {engine!r}")
    check_out_folder(emb_dir, {EMBEDDINGS_FILE, INDEX_FILE, INDEX_META_FILE, META_FILE, SERVING_DIR, VECTORS_FILE},
                     "embed", replaced_whole=True)
    data_report(data_dir)
    shards = sorted((data_dir / SHARDS).glob("part-*.parquet"))
    signature = output_signature(run_dir, data_dir, {"index": config.to_dict(), "layout": "parts", "shards": [
        [shard.name, shard.stat().st_size, shard.stat().st_mtime_ns] for shard in shards]})
    if (emb_dir / META_FILE).is_file() and not force:
        meta = json.loads((emb_dir / META_FILE).read_text())
        if meta.get("signature") == signature:
            return {**meta, "reused": True}
    if holds_served_updates(emb_dir) and not discard_served_updates:
        raise EclipError(f"{emb_dir / SERVING_DIR} holds products added or removed through `eclip serve`, which "
                         f"re-embedding would delete: pass --discard-served-updates to re-embed anyway, or give "
                         f"another --out")

    started = time.perf_counter()
    rank, world = torchrun_rank()
    building = building_folder(emb_dir, resume=True)
    parts = building / EMBEDDINGS_FILE
    mine = rank_shards(shards, rank, world)
    parts.mkdir(parents=True, exist_ok=True)
    if not force:
        _link_finished_parts(emb_dir / EMBEDDINGS_FILE, parts, mine, run_dir)
    if engine == "spark":
        from eclip.index.spark import embed_on_spark

        embedded = embed_on_spark(run_dir, mine, parts, batch_size, force, spark_master)
    else:
        embedded = _embed_locally(run_dir, mine, parts, batch_size, force)
    if world > 1:
        own, embedded = embedded, _wait_for_every_rank(rank, world, embedded)
        if rank != 0:
            return {"rank": rank, "embedded_parts": own, "reused": False}
    for stale in set(parts.iterdir()) - {parts / shard.name for shard in shards}:
        stale.unlink()  # a shard no longer in DATA_DIR, or the temporary file of a killed run's unfinished part
    description = build_from_parts(parts, building, config)
    splits = {}
    for part in embedding_files(parts):
        values = pq.read_table(part, columns=["split"]).column("split").to_pylist()
        for split in SPLITS:
            splits[split] = splits.get(split, 0) + values.count(split)
    meta = {"model": str(run_dir), "data": str(data_dir), "products": description["count"],
            "dim": description["dim"], "counts": splits, "parts": len(shards), "index": description,
            "weights": weights_fingerprint(run_dir), "seconds": round(time.perf_counter() - started, 2),
            "signature": signature}
    (building / META_FILE).write_text(json.dumps(meta, indent=1))
    publish_folder(building, emb_dir)
    return {**meta, "reused": False, "embedded_parts": embedded}


def _embed_locally(run_dir: Path, shards: list[Path], parts: Path, batch_size: int, force: bool) -> int:
    """Embed the shards lacking a finished part (every shard with `force`), in this process -> how many."""
    from eclip.models import load_model

    model, _, _ = load_model(run_dir)
    total = sum(pq.read_metadata(shard).num_rows for shard in shards)
    embedded = 0
    with progress_bar("embed", total) as advance:
        for shard in shards:
            provenance = part_provenance(shard, run_dir)
            if embed_shard(model, shard, parts / shard.name, provenance, batch_size, advance, force):
                embedded += 1
            else:
                advance(pq.read_metadata(shard).num_rows)
    return embedded


def _link_finished_parts(published: Path, parts: Path, shards: list[Path], run_dir: Path) -> None:
    """Hard-link into the building folder the published parts that still match their shard and the weights."""
    for shard in shards:
        old, new = published / shard.name, parts / shard.name
        if not old.is_file() or recorded_provenance(new) == part_provenance(shard, run_dir):
            continue
        if recorded_provenance(old) == part_provenance(shard, run_dir):
            new.unlink(missing_ok=True)
            try:
                os.link(old, new)
            except OSError:
                shutil.copyfile(old, new)


def _wait_for_every_rank(rank: int, world: int, embedded: int) -> int:
    """Under torchrun: block until every rank has written its parts (a gloo all-reduce, CPU only) -> the parts
    every rank embedded."""
    import torch
    import torch.distributed as dist

    if not dist.is_initialized():
        dist.init_process_group("gloo", rank=rank, world_size=world)
    total = torch.tensor([embedded])
    dist.all_reduce(total)
    return int(total.item())


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
