"""Image descriptors for near-duplicate search: a fixed one before any model exists, a trained tower after.

Both map a list of RGB images to (N, views, dim) unit-length float32 rows, so cosine similarity is an inner
product and the FAISS search in `dedup.py` does not care which one produced them; two images are near-duplicates
when any view of one is close to any view of the other.
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

import numpy as np
from PIL import Image

from eclip.data.images import DESCRIPTOR_DIM, DESCRIPTOR_VIEWS, near_duplicate_descriptor


class ImageDescriptor(Protocol):
    views: int
    dim: int

    def __call__(self, images: list[Image.Image]) -> np.ndarray:  # (N, views, dim) float32, unit rows
        ...


class FixedDescriptor:
    """Content-cropped 8x8 colour layout + low DCT frequencies, one view per content box: no training, about
    3 ms a 224 px image on one core for both views (finding the boxes is most of it; docs/data.md)."""

    views = DESCRIPTOR_VIEWS
    dim = DESCRIPTOR_DIM

    def __call__(self, images: list[Image.Image]) -> np.ndarray:
        return np.stack([near_duplicate_descriptor(image) for image in images])


class ModelDescriptor:
    """The image tower of a trained eclip model (RUN_DIR), for near-duplicates the fixed layout misses."""

    def __init__(self, run_dir: str | Path):
        from eclip.models import load_model

        self.model, self.text_processor, self.config = load_model(run_dir)
        self.model.eval()
        self.views = 1
        self.dim = int(self.config.embed_dim)

    def __call__(self, images: list[Image.Image]) -> np.ndarray:
        from eclip.models import embed_images

        return embed_images(self.model, images, batch_size=64)[:, None]  # (N, 1, D)


def make_descriptor(model_dir: str | None) -> ImageDescriptor:
    return ModelDescriptor(model_dir) if model_dir else FixedDescriptor()
