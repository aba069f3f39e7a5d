"""Image-title pairs from a prepared DATA_DIR (`eclip prepare` output, docs/data.md): titles are tokenized
once up front; thumbnails stay JPEG bytes and are decoded and augmented batch by batch."""

from __future__ import annotations

from contextlib import nullcontext
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import torch

from eclip.data.store import read_products
from eclip.errors import EclipError
from eclip.models.image_processing import ImagePreprocessing
from eclip.models.text import TextProcessor
from eclip.train.augment import augment_batch
from eclip.train.config import AugmentConfig


def read_pairs_table(data_dir: Path, split: str, columns: list[str]) -> pa.Table:
    """The accepted products of `split` with `columns`, or EclipError for an empty or incompatible DATA_DIR."""
    table = read_products(data_dir, split=split, columns=columns)
    if table.num_rows == 0:
        raise EclipError(f"{data_dir}: no products in split {split!r}: prepare a larger catalogue")
    return table


def _codes(column: pa.ChunkedArray) -> np.ndarray:
    """Strings (nulls included) -> dense integer codes."""
    return pc.dictionary_encode(pc.fill_null(column, "")).combine_chunks().indices.to_numpy().astype(np.int64)


class PairDataset:
    def __init__(self, data_dir: Path, preprocessing: ImagePreprocessing, augment: AugmentConfig,
                 text_column: str = "title", split: str = "train", second_view: bool = False):
        table = read_pairs_table(data_dir, split, [text_column, "thumbnail", "group_id", "category", "product_id"])
        self.titles = [title or "" for title in table.column(text_column).to_pylist()]
        self.thumbnails = table.column("thumbnail").combine_chunks()
        self.product_ids = table.column("product_id")
        self.groups = _codes(table.column("group_id"))
        self.categories = _codes(table.column("category"))
        self.preprocessing = preprocessing
        self.augment = augment
        self.second_view = second_view
        self.processor = None
        self.token_ids = None
        self.text_features = None

    def tokenize(self, processor: TextProcessor) -> None:
        """Tokenize every title once (the tokenizer may itself be trained on `self.titles` first)."""
        self.processor = processor
        self.token_ids = processor.token_ids(self.titles)

    @torch.no_grad()
    def cache_text_features(self, encoder, batch_size: int = 256, autocast=None) -> None:
        """Pooled features (N, W) of a locked text tower, computed once; batches then carry them beside the
        token ids. Titles are run in length order so that little is spent on padding."""
        was_training = encoder.training
        encoder.eval()
        device = next(encoder.parameters()).device
        order = np.argsort([len(ids) for ids in self.token_ids], kind="stable")
        features = torch.empty(len(self), encoder.width)
        for start in range(0, len(order), batch_size):
            rows = order[start:start + batch_size]
            input_ids, attention_mask = self.processor.pad([self.token_ids[i] for i in rows])
            with autocast or nullcontext():
                features[torch.from_numpy(rows)] = encoder(input_ids.to(device), attention_mask.to(device)).float().cpu()
        encoder.train(was_training)
        self.text_features = features

    def __len__(self) -> int:
        return len(self.titles)

    def _pixels(self, jpegs: list[bytes], indices: np.ndarray, rng: np.random.Generator) -> torch.Tensor:
        try:
            return augment_batch(jpegs, self.preprocessing, self.augment.crop_scale_min, self.augment.flip,
                                 self.augment.jitter, rng)
        except OSError as error:  # find the culprit only on failure, to keep the common path batched
            for jpeg, index in zip(jpegs, indices):
                try:
                    augment_batch([jpeg], self.preprocessing, 1.0, False, 0.0, rng)
                except OSError:
                    raise EclipError(f"product {self.product_ids[int(index)]}: thumbnail cannot be decoded "
                                     f"({error}); re-run `eclip prepare`") from error
            raise

    def batch(self, indices: np.ndarray, rng: np.random.Generator) -> dict[str, torch.Tensor]:
        """-> pixels (B, 3, S, S), groups (B,), input_ids (B, L) and attention_mask (B, L), text_features (B, W)
        once cached, and second_view (B, 3, S, S) when asked for."""
        jpegs = self.thumbnails.take(pa.array(indices)).to_pylist()
        batch = {"pixels": self._pixels(jpegs, indices, rng), "groups": torch.from_numpy(self.groups[indices])}
        batch["input_ids"], batch["attention_mask"] = self.processor.pad([self.token_ids[i] for i in indices])
        if self.text_features is not None:
            batch["text_features"] = self.text_features[torch.from_numpy(indices)]
        if self.second_view:
            batch["second_view"] = self._pixels(jpegs, indices, rng)
        return batch
