"""Options of `eclip prepare`: one dataclass, each field a documented command-line option."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import ClassVar

from eclip.config import option, require, to_dict

DEDUP_METHODS = ("title", "image_hash", "image_embedding")


@dataclass
class PrepareConfig:
    LABEL: ClassVar[str] = "prepare"
    min_side: int = option(100, "reject images whose shorter side is below this many pixels (ALIGN uses 200)", low=1)
    max_aspect: float = option(3.0, "reject images whose long/short side ratio exceeds this (ALIGN: 3)", low=1)
    max_pixels: int = option(40_000_000, "reject images with more pixels than this, read from the header before decoding (decompression bombs)", low=1)
    min_title_tokens: int = option(3, "reject titles with fewer tokens after normalization (e-CLIP: two or fewer is too short)", low=1)
    max_title_tokens: int = option(64, "reject titles with more tokens than this", low=1)
    boilerplate_max_images: int = option(10, "reject titles shared by more than this many distinct images (ALIGN: 10)", low=1)
    dedup: str = option(",".join(DEDUP_METHODS), "comma-separated duplicate detectors: title, image_hash, image_embedding, or none")
    near_duplicate_threshold: float = option(0.985, "cosine similarity of image descriptors at or above which two images are near-duplicates", low=0, high=1)
    near_duplicate_verify_threshold: float = option(0.94, "descriptor pairs from this cosine up to --near-duplicate-threshold are near-duplicates only if their ORB keypoints align and the aligned pixels agree (0: no verification)", low=0, high=1)
    near_duplicate_cells: int = option(0, "with --engine spark, the cells of the partitioned near-duplicate search, each searched by one task (0: one cell up to 200,000 descriptor views, the local engine's exact search in one task; beyond, one cell per 5,000 views)", low=0)
    near_duplicate_probe: int = option(4, "with --engine spark and several cells, the nearest cells each descriptor view is searched in: two views are compared when the cell of either is among the other's probes (more: higher recall, more work)", low=1)
    near_duplicate_model: str | None = option(None, "RUN_DIR of a trained model whose image tower replaces the fixed descriptor for near-duplicates")
    # 50: above fashion-dev's real groups (12 rows at most), below its largest chains of look-alikes (51-516 rows):
    # docs/experiments/2026-12-07-dedup-connected-components.md
    # 1 until the detectors' false links are fixed: merged whole, fashion-dev's groups lose 1,602 of 7,905 products
    # to chains of look-alikes (docs/experiments/2026-12-07-dedup-connected-components.md).
    max_duplicate_group: int = option(1, "duplicate groups (connected components of title, image-hash and near-duplicate links) of up to this many rows are merged whole (a re-upload of a removed duplicate goes with it); larger ones are resolved keep-first, each row against the group's earlier kept rows (1: every group keep-first; 50 merges real offer groups whole)", low=1)
    weak_catalogs: bool = option(False, "keep duplicates that have no catalog_id and give them a shared weak catalog_id instead of rejecting them")
    thumbnail_size: int = option(256, "longest side of the stored JPEG thumbnail", low=1)
    val_fraction: float = option(0.1, "fraction of catalog groups in the val split", low=0, high=1)
    test_fraction: float = option(0.1, "fraction of catalog groups in the test split", low=0, high=1)
    split_salt: str = option("eclip", "salt of the split hash: change it for another split")
    shard_rows: int = option(5000, "accepted products per Parquet shard", low=1)
    batch_rows: int = option(256, "rows per record batch in the per-row stage", low=1)
    workers: int = option(0, "worker processes for the per-row stage (0: one per core)", low=0)

    def check(self) -> None:
        require(self.max_title_tokens >= self.min_title_tokens,
                f"max_title_tokens ({self.max_title_tokens}) is below min_title_tokens ({self.min_title_tokens}): "
                "every title would be rejected")
        unknown = sorted(set(self.dedup_methods()) - set(DEDUP_METHODS))
        require(not unknown, f"unknown dedup method(s) {', '.join(unknown)}; choose from {', '.join(DEDUP_METHODS)} "
                             "or none")
        require(0 <= self.val_fraction + self.test_fraction < 1, "val_fraction + test_fraction must be in [0, 1)")

    def dedup_methods(self) -> tuple[str, ...]:
        if self.dedup.strip().lower() in ("", "none"):
            return ()
        return tuple(m.strip() for m in self.dedup.split(",") if m.strip())

    def worker_count(self) -> int:
        return self.workers or max(1, os.cpu_count() or 1)

    def to_dict(self) -> dict:
        return to_dict(self)
