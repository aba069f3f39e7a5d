"""Embedding a DATA_DIR shard by shard: one part file per shard (EMB_DIR/embeddings.parquet/part-NNNNN.parquet,
named after its shard), written whole or not at all and reused by a later run while its provenance matches, so a
killed `eclip embed` resumes where it stopped. Memory stays bounded by one batch of rows: a shard is read batch by
batch and each batch is written as one row group of its part.

The same function embeds a shard wherever it runs: in `eclip embed`'s process, on one of several torchrun ranks
(rank r takes shards r, r + W, ...) or in a Spark task (`eclip.index.spark`)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from eclip.errors import EclipError
from eclip.index.vectors import embeddings_table, normalize_rows
from eclip.runs.atomic import atomic_write
from eclip.runs.provenance import WEIGHTS_FILE, file_version

PROVENANCE_KEY = b"eclip.part"
SHARD_COLUMNS = ["product_id", "title", "category", "split", "thumbnail"]


def part_provenance(shard: Path, run_dir: Path) -> dict:
    """What a part was made from: its shard (name, size, modification time) and the model's weights (the same)."""
    return {"shard": Path(shard).name, "shard_stat": file_version(shard),
            "weights": file_version(Path(run_dir) / WEIGHTS_FILE)}


def recorded_provenance(part: Path) -> dict | None:
    """The provenance a finished part records, None for a missing or unreadable one."""
    try:
        metadata = pq.read_schema(part).metadata or {}
        return json.loads(metadata[PROVENANCE_KEY]) if PROVENANCE_KEY in metadata else None
    except (OSError, pa.ArrowException, ValueError):
        return None


def rank_shards(shards: list[Path], rank: int, world: int) -> list[Path]:
    """Rank r of W takes shards r, r + W, r + 2W, ...: disjoint shares that cover every shard."""
    return shards[rank::world]


def embed_shard(model, shard: Path, part: Path, provenance: dict, batch_size: int, advance=None,
                force: bool = False) -> bool:
    """Embed one shard into `part` unless `part` already records `provenance` (or `force`) -> whether it was."""
    from eclip.models import embed_images, embed_texts

    if not force and recorded_provenance(part) == provenance:
        return False
    metadata = {PROVENANCE_KEY: json.dumps(provenance).encode()}

    def write(temporary: Path) -> None:
        writer = None
        try:
            for batch in _shard_batches(shard, batch_size):
                image = embed_images(model, batch.column("thumbnail").to_pylist(), batch_size)  # (B, D)
                text = embed_texts(model, batch.column("title").to_pylist(), batch_size)  # (B, D)
                table = embeddings_table(batch.column("product_id"),
                                         {"image": image, "text": text, "fused": normalize_rows(image + text)},
                                         {name: batch.column(name) for name in ("split", "category", "title")})
                if writer is None:
                    writer = pq.ParquetWriter(temporary, table.schema.with_metadata(metadata))
                writer.write_table(table.replace_schema_metadata(metadata))
                if advance:
                    advance(table.num_rows)
        finally:
            if writer is not None:
                writer.close()
        if writer is None:  # an empty shard still gets its (empty) part, so that it counts as done
            empty = embeddings_table([], {view: np.zeros((0, model.config.embed_dim), np.float32)
                                          for view in ("image", "text", "fused")},
                                     {name: pa.array([], pa.string()) for name in ("split", "category", "title")})
            pq.write_table(empty.replace_schema_metadata(metadata), temporary)

    part.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(part, write)
    return True


def _shard_batches(shard: Path, batch_size: int):
    try:
        source = pq.ParquetFile(shard)
        missing = [name for name in SHARD_COLUMNS if name not in source.schema_arrow.names]
        if missing:
            raise EclipError(f"{shard}: no column(s) {', '.join(missing)}; run `eclip prepare` again")
        for batch in source.iter_batches(batch_size=batch_size, columns=SHARD_COLUMNS):
            yield pa.Table.from_batches([batch])
    except (OSError, pa.ArrowException) as error:
        raise EclipError(f"{shard}: not a readable Parquet shard ({error}); run `eclip prepare` again") from None


def torchrun_rank() -> tuple[int, int]:
    """(rank, world size) under torchrun, (0, 1) otherwise."""
    return int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))
