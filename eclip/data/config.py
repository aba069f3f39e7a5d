"""Options of `eclip prepare`: one dataclass, each field a documented command-line option."""

from __future__ import annotations

import argparse
import os
from dataclasses import asdict, dataclass, field, fields

DEDUP_METHODS = ("title", "image_hash", "image_embedding")


def _option(default, help: str, **kwargs):
    return field(default=default, metadata={"help": help, **kwargs})


@dataclass
class PrepareConfig:
    min_side: int = _option(100, "reject images whose shorter side is below this many pixels (ALIGN uses 200)")
    max_aspect: float = _option(3.0, "reject images whose long/short side ratio exceeds this (ALIGN: 3)")
    max_pixels: int = _option(40_000_000, "reject images with more pixels than this, read from the header before decoding (decompression bombs)")
    min_title_tokens: int = _option(3, "reject titles with fewer tokens after normalization (e-CLIP: two or fewer is too short)")
    max_title_tokens: int = _option(64, "reject titles with more tokens than this")
    boilerplate_max_images: int = _option(10, "reject titles shared by more than this many distinct images (ALIGN: 10)")
    dedup: str = _option(",".join(DEDUP_METHODS), "comma-separated duplicate detectors: title, image_hash, image_embedding, or none")
    near_duplicate_threshold: float = _option(0.985, "cosine similarity of image descriptors at or above which two images are near-duplicates")
    near_duplicate_verify_threshold: float = _option(0.94, "descriptor pairs from this cosine up to --near-duplicate-threshold are near-duplicates only if their ORB keypoints align and the aligned pixels agree (0: no verification)")
    near_duplicate_model: str | None = _option(None, "RUN_DIR of a trained model whose image tower replaces the fixed descriptor for near-duplicates")
    weak_catalogs: bool = _option(False, "keep duplicates that have no catalog_id and give them a shared weak catalog_id instead of rejecting them")
    thumbnail_size: int = _option(256, "longest side of the stored JPEG thumbnail")
    val_fraction: float = _option(0.1, "fraction of catalog groups in the val split")
    test_fraction: float = _option(0.1, "fraction of catalog groups in the test split")
    split_salt: str = _option("eclip", "salt of the split hash: change it for another split")
    shard_rows: int = _option(5000, "accepted products per Parquet shard")
    batch_rows: int = _option(256, "rows per record batch in the per-row stage")
    workers: int = _option(0, "worker processes for the per-row stage (0: one per core)")

    def __post_init__(self):
        methods = self.dedup_methods()
        unknown = sorted(set(methods) - set(DEDUP_METHODS))
        if unknown:
            raise ValueError(f"unknown --dedup method(s) {', '.join(unknown)}; choose from {', '.join(DEDUP_METHODS)} or none")
        if not 0 <= self.val_fraction + self.test_fraction < 1:
            raise ValueError("--val-fraction + --test-fraction must be in [0, 1)")

    def dedup_methods(self) -> tuple[str, ...]:
        if self.dedup.strip().lower() in ("", "none"):
            return ()
        return tuple(m.strip() for m in self.dedup.split(",") if m.strip())

    def worker_count(self) -> int:
        return self.workers or max(1, os.cpu_count() or 1)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def add_arguments(cls, parser: argparse.ArgumentParser) -> None:
        group = parser.add_argument_group("filters and deduplication")
        for f in fields(cls):
            flag = "--" + f.name.replace("_", "-")
            if f.type in (bool, "bool"):
                group.add_argument(flag, action="store_true", default=None, help=f.metadata["help"])
            else:
                kind = {"int": int, "float": float}.get(str(f.type), str)
                group.add_argument(flag, type=kind, default=None, metavar=f.name.upper(),
                                   help=f"{f.metadata['help']} (default: {f.default})")

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> "PrepareConfig":
        given = {f.name: getattr(args, f.name) for f in fields(cls) if getattr(args, f.name, None) is not None}
        from eclip.errors import EclipError
        try:
            return cls(**given)
        except ValueError as error:
            raise EclipError(str(error)) from None
