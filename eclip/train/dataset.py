"""Image-title pairs from a prepared DATA_DIR (`eclip prepare` output, docs/data.md), read window by window
(`eclip/train/stream.py`): a window's titles are tokenized when it is read; thumbnails stay JPEG bytes and are
decoded and augmented batch by batch. Nothing of the whole split is held in memory but its row-group list (and
the memory-mapped text features of a locked text tower)."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import torch

from eclip.errors import EclipError
from eclip.models.image_processing import ImagePreprocessing
from eclip.models.text import TextProcessor
from eclip.train.augment import augment_batch
from eclip.train.config import AugmentConfig
from eclip.train.sampler import mixed_order
from eclip.train.stream import Piece, Unit, find_units


def _codes(column: pa.ChunkedArray | pa.Array) -> np.ndarray:
    """Strings (nulls included) -> dense integer codes."""
    encoded = pc.dictionary_encode(pc.fill_null(column, ""))
    indices = encoded.combine_chunks().indices if isinstance(encoded, pa.ChunkedArray) else encoded.indices
    return indices.to_numpy().astype(np.int64)


def group_keys(group_ids: list[str]) -> np.ndarray:
    """group_id -> int64, the same in every window and process, so that the loss's soft labels (equal keys are
    positives) hold across the processes' shares of a batch."""
    digests = b"".join(hashlib.blake2b(group.encode(), digest_size=8).digest() for group in group_ids)
    return np.frombuffer(digests, dtype="<i8").copy()


def read_units(units: list[Unit], split: str, columns: list[str]) -> pa.Table:
    """The `split` rows of `units`, in their order."""
    tables = []
    for unit in units:
        table = pq.ParquetFile(unit.path).read_row_group(unit.row_group, columns=columns + ["split"])
        table = table.filter(pc.equal(table.column("split"), split)).slice(unit.start, unit.rows)
        tables.append(table.drop_columns(["split"]))
    return pa.concat_tables(tables)


@dataclass
class Window:
    """One shuffle window's rows, in `order` (the batches' order); text_rows index the split-wide features."""
    order: np.ndarray
    thumbnails: pa.ChunkedArray
    product_ids: list[str]
    token_ids: list[list[int]]
    groups: np.ndarray
    text_rows: np.ndarray


class PairDataset:
    def __init__(self, data_dir: Path, preprocessing: ImagePreprocessing, augment: AugmentConfig,
                 text_column: str = "title", split: str = "train", second_view: bool = False, world: int = 1):
        self.data_dir, self.split, self.text_column = Path(data_dir), split, text_column
        self.columns = [text_column, "thumbnail", "group_id", "category", "product_id"]
        self.units = find_units(self.data_dir, split, self.columns, world)
        self.preprocessing = preprocessing
        self.augment = augment
        self.second_view = second_view
        self.processor = None
        self.text_features = None
        self.category_fraction = 0.0
        self.group_fraction = None
        self._last = None  # (units, their rows, category and group codes) of the window read last

    def __len__(self) -> int:
        return sum(unit.rows for unit in self.units)

    def titles(self) -> Iterator[str]:
        """Every title of the split, read a row group at a time (a from-scratch tokenizer learns from them)."""
        for unit in self.units:
            yield from (title or "" for title in read_units([unit], self.split, [self.text_column])
                        .column(self.text_column).to_pylist())

    def set_batch_rules(self, processor: TextProcessor, category_fraction: float,
                        group_fraction: float | None) -> None:
        """What a window needs to be read: the tokenizer, and the share of rows in category runs and of groups
        kept together (None: groups not gathered)."""
        self.processor, self.category_fraction, self.group_fraction = processor, category_fraction, group_fraction

    def open_window(self, key: tuple[int, int], units: list[Unit], seed: int, rank: int) -> Window:
        """Read `units`, tokenize their titles and order them under (seed, epoch, rank, window); the rows of the
        previous window are reused when it had the same units (one window per epoch: the whole share)."""
        if self._last is None or self._last[0] != units:
            self._last = None  # let the previous rows go before reading the next
            table = read_units(units, self.split, self.columns)
            categories = _codes(table.column("category")) if self.category_fraction else None
            groups = _codes(table.column("group_id")) if self.group_fraction is not None else None
            titles = [t or "" for t in table.column(self.text_column).to_pylist()]
            # The thumbnails stay in their row groups' chunks: one array of a million would pass binary's 2 GB
            # offset limit, and combining them would hold them twice.
            rows = Window(order=np.empty(0, dtype=np.int64), thumbnails=table.column("thumbnail"),
                          product_ids=table.column("product_id").to_pylist(), token_ids=self.processor.token_ids(titles),
                          groups=group_keys(table.column("group_id").to_pylist()),
                          text_rows=np.concatenate([np.arange(u.first, u.first + u.rows) for u in units]))
            self._last = (units, rows, categories, groups)
        _, rows, categories, groups = self._last
        order = mixed_order(len(rows.product_ids), [seed, key[0], rank, key[1]], categories, self.category_fraction,
                            groups, self.group_fraction or 1.0)
        return replace(rows, order=order)

    def _pixels(self, jpegs: list[bytes], product_ids: list[str], rng: np.random.Generator) -> torch.Tensor:
        try:
            return augment_batch(jpegs, self.preprocessing, self.augment.crop_scale_min, self.augment.flip,
                                 self.augment.jitter, rng)
        except OSError as error:  # find the culprit only on failure, to keep the common path batched
            for jpeg, product_id in zip(jpegs, product_ids):
                try:
                    augment_batch([jpeg], self.preprocessing, 1.0, False, 0.0, rng)
                except OSError:
                    raise EclipError(f"product {product_id}: thumbnail cannot be decoded ({error}); re-run "
                                     f"`eclip prepare`") from error
            raise

    def batch(self, pieces: list[Piece], rng: np.random.Generator) -> dict[str, torch.Tensor]:
        """-> pixels (B, 3, S, S), groups (B,), input_ids (B, L) and attention_mask (B, L), text_features (B, W)
        with a locked text tower, and second_view (B, 3, S, S) when asked for."""
        jpegs, product_ids, token_ids, groups, text_rows = [], [], [], [], []
        for pending, start, stop in pieces:
            window = pending.result()
            rows = window.order[start:stop]
            jpegs += [window.thumbnails[int(i)].as_py() for i in rows]  # a chunked take would combine the chunks
            product_ids += [window.product_ids[i] for i in rows]
            token_ids += [window.token_ids[i] for i in rows]
            groups.append(window.groups[rows])
            text_rows.append(window.text_rows[rows])
        batch = {"pixels": self._pixels(jpegs, product_ids, rng), "groups": torch.from_numpy(np.concatenate(groups))}
        batch["input_ids"], batch["attention_mask"] = self.processor.pad(token_ids)
        if self.text_features is not None:
            batch["text_features"] = torch.from_numpy(np.ascontiguousarray(
                self.text_features[np.concatenate(text_rows)], dtype=np.float32))  # (B, W)
        if self.second_view:
            batch["second_view"] = self._pixels(jpegs, product_ids, rng)
        return batch
