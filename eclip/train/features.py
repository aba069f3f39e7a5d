"""The pooled features of a locked text tower (LiT: `text.frozen_layers = -1`, what `tiny` uses) for every title
of a split, computed once into DATA_DIR/features/<key>.npy and memory-mapped by every process and later run.

The key hashes what the features depend on: the tower's weights (`provenance.tensors_sha256`), its pooling,
tokenizer and maximum length, the autocast precision they were computed in, and the data (the shards' names,
sizes and modification times, the report's version, the split and the text column). A changed model or data
gets a new file; an unchanged one is reused. Rows follow the split in shard order (`Unit.first`).
"""

from __future__ import annotations

import hashlib
import json
from contextlib import nullcontext
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist

from eclip.data.store import FEATURES
from eclip.errors import EclipError
from eclip.progress import progress_bar
from eclip.runs.atomic import atomic_write
from eclip.runs.provenance import file_version, tensors_sha256
from eclip.train.dataset import PairDataset, read_units

CHUNK_ROWS = 4096  # titles sorted by length together, so that little is spent on padding


def features_key(dataset: PairDataset, encoder, precision: str) -> str:
    shards = sorted({unit.path for unit in dataset.units})
    signature = {"weights": tensors_sha256(encoder.state_dict()), "pooling": encoder.pooling,
                 "tokenizer": hashlib.sha256(dataset.processor.tokenizer.to_str().encode()).hexdigest(),
                 "max_length": dataset.processor.max_length, "precision": precision,
                 "data": [file_version(dataset.data_dir)] + [[p.name, *file_version(p)] for p in shards],
                 "split": dataset.split, "column": dataset.text_column}
    return hashlib.sha256(json.dumps(signature, sort_keys=True).encode()).hexdigest()[:24]


def _title_chunks(dataset: PairDataset):
    """(index of the first, titles) for runs of about CHUNK_ROWS consecutive titles of the split."""
    first, titles = 0, []
    for unit in dataset.units:
        titles += [t or "" for t in read_units([unit], dataset.split, [dataset.text_column])
                   .column(dataset.text_column).to_pylist()]
        if len(titles) >= CHUNK_ROWS:
            yield first, titles
            first, titles = first + len(titles), []
    if titles:
        yield first, titles


@torch.no_grad()
def _compute(dataset: PairDataset, encoder, target: Path, autocast, batch_size: int) -> None:
    was_training = encoder.training
    encoder.eval()
    device = next(encoder.parameters()).device
    features = np.lib.format.open_memmap(target, mode="w+", dtype=np.float32, shape=(len(dataset), encoder.width))
    with progress_bar("text features", len(dataset)) as advance:
        for first, titles in _title_chunks(dataset):
            ids = dataset.processor.token_ids(titles)
            order = np.argsort([len(row) for row in ids], kind="stable")
            for start in range(0, len(order), batch_size):
                rows = order[start:start + batch_size]
                input_ids, attention_mask = dataset.processor.pad([ids[i] for i in rows])
                with autocast or nullcontext():
                    pooled = encoder(input_ids.to(device), attention_mask.to(device))  # (b, W)
                features[first + rows] = pooled.float().cpu().numpy()
            advance(len(ids))
    features.flush()
    del features
    encoder.train(was_training)


def cached_text_features(dataset: PairDataset, encoder, precision: str, autocast=None, rank: int = 0,
                         world: int = 1, batch_size: int = 256) -> np.ndarray:
    """The (N, W) float32 features of the split's titles, memory-mapped read-only; process 0 computes a missing
    file (written atomically) while the others wait for it."""
    path = dataset.data_dir / FEATURES / f"{features_key(dataset, encoder, precision)}.npy"
    if rank == 0 and not path.is_file():
        try:
            path.parent.mkdir(exist_ok=True)
            atomic_write(path, lambda target: _compute(dataset, encoder, target, autocast, batch_size))
        except OSError as error:
            raise EclipError(f"{path}: cannot write the locked text tower's features cache ({error}): train on a "
                             f"writable copy of the DATA_DIR") from error
    if world > 1:
        dist.barrier()
    return np.load(path, mmap_mode="r")
