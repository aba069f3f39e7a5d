"""Options of `eclip prepare`: one dataclass, each field a documented command-line option."""

from __future__ import annotations

import argparse
import os
from dataclasses import asdict, dataclass, field, fields

DEDUP_METHODS = ("title", "image_hash", "image_embedding")


def _option(default, help: str, low=None, high=None):
    """A documented option; `low`/`high` (inclusive, None: unbounded) are checked when the config is made."""
    return field(default=default, metadata={"help": help, "range": (low, high)})


def _range_text(low, high) -> str:
    if low is None and high is None:
        return ""
    return f"at least {low}" if high is None else f"at most {high}" if low is None else f"between {low} and {high}"


@dataclass
class PrepareConfig:
    min_side: int = _option(100, "reject images whose shorter side is below this many pixels (ALIGN uses 200)", low=1)
    max_aspect: float = _option(3.0, "reject images whose long/short side ratio exceeds this (ALIGN: 3)", low=1)
    max_pixels: int = _option(40_000_000, "reject images with more pixels than this, read from the header before decoding (decompression bombs)", low=1)
    min_title_tokens: int = _option(3, "reject titles with fewer tokens after normalization (e-CLIP: two or fewer is too short)", low=1)
    max_title_tokens: int = _option(64, "reject titles with more tokens than this", low=1)
    boilerplate_max_images: int = _option(10, "reject titles shared by more than this many distinct images (ALIGN: 10)", low=1)
    dedup: str = _option(",".join(DEDUP_METHODS), "comma-separated duplicate detectors: title, image_hash, image_embedding, or none")
    near_duplicate_threshold: float = _option(0.985, "cosine similarity of image descriptors at or above which two images are near-duplicates", low=0, high=1)
    near_duplicate_verify_threshold: float = _option(0.94, "descriptor pairs from this cosine up to --near-duplicate-threshold are near-duplicates only if their ORB keypoints align and the aligned pixels agree (0: no verification)", low=0, high=1)
    near_duplicate_model: str | None = _option(None, "RUN_DIR of a trained model whose image tower replaces the fixed descriptor for near-duplicates")
    weak_catalogs: bool = _option(False, "keep duplicates that have no catalog_id and give them a shared weak catalog_id instead of rejecting them")
    thumbnail_size: int = _option(256, "longest side of the stored JPEG thumbnail", low=1)
    val_fraction: float = _option(0.1, "fraction of catalog groups in the val split", low=0, high=1)
    test_fraction: float = _option(0.1, "fraction of catalog groups in the test split", low=0, high=1)
    split_salt: str = _option("eclip", "salt of the split hash: change it for another split")
    shard_rows: int = _option(5000, "accepted products per Parquet shard", low=1)
    batch_rows: int = _option(256, "rows per record batch in the per-row stage", low=1)
    workers: int = _option(0, "worker processes for the per-row stage (0: one per core)", low=0)

    def __post_init__(self):
        for f in fields(self):
            low, high = f.metadata.get("range", (None, None))
            value = getattr(self, f.name)
            # `not value >= low` rather than `value < low`: NaN compares false both ways and must fail too
            if (low is not None and not value >= low) or (high is not None and not value <= high):
                raise ValueError(f"--{f.name.replace('_', '-')} must be {_range_text(low, high)}, got {value}")
        if self.max_title_tokens < self.min_title_tokens:
            raise ValueError(f"--max-title-tokens ({self.max_title_tokens}) is below --min-title-tokens "
                             f"({self.min_title_tokens}): every title would be rejected")
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
                bounds = _range_text(*f.metadata["range"])
                group.add_argument(flag, type=kind, default=None, metavar=f.name.upper(),
                                   help=f"{f.metadata['help']} (default: {f.default}{', ' + bounds if bounds else ''})")

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> "PrepareConfig":
        given = {f.name: getattr(args, f.name) for f in fields(cls) if getattr(args, f.name, None) is not None}
        from eclip.errors import EclipError
        try:
            return cls(**given)
        except ValueError as error:
            raise EclipError(str(error)) from None
