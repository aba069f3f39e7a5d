"""The index of an EMB_DIR built from its embedding parts without holding all vectors at once: trained on a sample
drawn from every part, then filled part by part while the same rows are appended to vectors.npy (the float rows
an IVF-PQ search re-ranks against, memory-mapped when served). Peak memory: the training sample, one chunk of a part and
the index itself.

Peak memory at 1M 256-d vectors: 1.4 GB for a 78 MB IVF-PQ index and a 1 GB vectors.npy (4.0 GB when whole
parts were read; docs/experiments/2026-12-08-index-at-scale.md)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from eclip.errors import EclipError
from eclip.index import VECTORS_FILE
from eclip.index.config import IndexConfig
from eclip.index.faiss_index import needs_training, new_index, write_index
from eclip.index.vectors import column_matrix, embedding_files

CHUNK_ROWS = 65_536  # vectors read and added at a time: 64 MB at 256-d


def build_from_parts(embeddings: Path, folder: Path, config: IndexConfig) -> dict:
    """Index `config.index_vectors` of the embeddings at `embeddings` (a folder of parts or one file) into
    folder/index.faiss, index.json and vectors.npy -> the description written to index.json."""
    parts = embedding_files(embeddings)
    view = config.index_vectors
    counts = [pq.read_metadata(part).num_rows for part in parts]
    count = sum(counts)
    if count == 0:
        raise EclipError(f"{embeddings}: no products to index")
    dim = pq.read_schema(parts[0]).field(view).type.list_size
    description = {**config.resolved(count, dim), "count": count, "vectors": view}
    index = new_index(description)
    if needs_training(description):
        index.train(training_sample(parts, counts, view, description["train_sample"], description["seed"]))
    with open(Path(folder) / VECTORS_FILE, "wb") as out:
        np.lib.format.write_array_header_1_0(out, {"descr": np.lib.format.dtype_to_descr(np.dtype(np.float32)),
                                                   "fortran_order": False, "shape": (count, dim)})
        for part in parts:
            for matrix in part_chunks(part, view):  # (CHUNK_ROWS or fewer, D)
                index.add(matrix)
                out.write(matrix.tobytes())
    write_index(folder, index, description)
    return description


def part_chunks(part: Path, view: str):
    """One part's `view` rows, CHUNK_ROWS at a time -> (rows, D) float32 matrices (a part may be millions)."""
    source = pq.ParquetFile(part)
    for batch in source.iter_batches(batch_size=CHUNK_ROWS, columns=[view]):
        yield np.ascontiguousarray(column_matrix(pa.table({view: batch.column(0)}), view, part), np.float32)


def training_sample(parts: list[Path], counts: list[int], view: str, size: int, seed: int) -> np.ndarray:
    """`size` rows drawn uniformly without replacement over all parts, read one part at a time -> (size, D)."""
    total = sum(counts)
    chosen = np.sort(np.random.default_rng(seed).choice(total, min(size, total), replace=False))
    starts = np.cumsum([0, *counts])
    pieces = []
    for part, start, end in zip(parts, starts[:-1], starts[1:]):
        rows = chosen[(chosen >= start) & (chosen < end)] - start
        offset = 0
        for matrix in part_chunks(part, view):
            inside = rows[(rows >= offset) & (rows < offset + len(matrix))] - offset
            if len(inside):
                pieces.append(matrix[inside])
            offset += len(matrix)
    return np.concatenate(pieces)


def load_vectors(emb_dir: Path) -> np.ndarray:
    """EMB_DIR's vectors.npy, memory-mapped read-only: (N, D) float32, shared by every process that maps it."""
    path = Path(emb_dir) / VECTORS_FILE
    if not path.is_file():
        raise EclipError(f"{path} is missing: rebuild the EMB_DIR with `eclip embed ... --force`")
    return np.load(path, mmap_mode="r")
