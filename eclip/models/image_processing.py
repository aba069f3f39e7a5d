"""Eval-time image preprocessing: JPEG bytes or PIL images -> normalized pixels (B, 3, S, S), no augmentation.

Product photos are padded to a white square rather than cropped, so the whole product stays in view. Size,
channel statistics and resize filter are the model's (`ImagePreprocessing`, from `[model.vision]`): a pretrained
tower's come from its checkpoint, and training augmentation normalizes with the same ones.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps

from eclip.models.config import CLIP_MEAN, CLIP_STD, VisionConfig

MEAN = torch.tensor(CLIP_MEAN).view(1, 3, 1, 1)
STD = torch.tensor(CLIP_STD).view(1, 3, 1, 1)
PAD_COLOUR = (255, 255, 255)
FILTERS = {"bicubic": Image.BICUBIC, "bilinear": Image.BILINEAR}


@dataclass(frozen=True)
class ImagePreprocessing:
    """What a photo goes through before the image tower: the contract an exported model states in JSON."""
    size: int
    mean: tuple[float, float, float] = tuple(CLIP_MEAN)
    std: tuple[float, float, float] = tuple(CLIP_STD)
    resample: str = "bicubic"

    @classmethod
    def of(cls, vision: VisionConfig) -> ImagePreprocessing:
        return cls(vision.image_size, tuple(vision.image_mean), tuple(vision.image_std), vision.resample)

    def normalize(self, pixels_uint8: torch.Tensor) -> torch.Tensor:
        """(B, 3, S, S) values in [0, 255] -> normalized floats."""
        mean, std = torch.tensor(self.mean).view(1, 3, 1, 1), torch.tensor(self.std).view(1, 3, 1, 1)
        return (pixels_uint8.float() / 255.0 - mean) / std


def open_image(image: Image.Image | bytes | str | Path, size_hint: int) -> Image.Image:
    """Decode to upright RGB (a phone photo's EXIF orientation applied), JPEGs at reduced scale (DCT draft) when far
    larger than `size_hint`. A side longer than 4 x `size_hint` is shrunk first: padding a thin image to a square
    costs the square of its longest side (25,000 x 1 pixels would pad to 1.9 GB)."""
    if not isinstance(image, Image.Image):
        image = Image.open(io.BytesIO(image) if isinstance(image, bytes) else image)
        image.draft("RGB", (size_hint, size_hint))
        image.load()
        ImageOps.exif_transpose(image, in_place=True)  # the default copies every image, turned or not
    image = image.convert("RGB")
    if max(image.size) > 4 * size_hint:
        image.thumbnail((4 * size_hint, 4 * size_hint), Image.BICUBIC)
    return image


def pad_square(image: Image.Image) -> Image.Image:
    side = max(image.size)
    if image.width == image.height:
        return image
    canvas = Image.new("RGB", (side, side), PAD_COLOUR)
    canvas.paste(image, ((side - image.width) // 2, (side - image.height) // 2))
    return canvas


def eval_pixels(images, preprocessing: ImagePreprocessing) -> torch.Tensor:
    """PIL images, JPEG bytes or paths -> (B, 3, S, S): padded to a square and resized, no augmentation."""
    size = preprocessing.size
    squares = [pad_square(open_image(image, 2 * size)).resize((size, size), FILTERS[preprocessing.resample])
               for image in images]
    array = np.stack([np.asarray(image, dtype=np.uint8) for image in squares])  # (B, S, S, 3)
    return preprocessing.normalize(torch.from_numpy(array).permute(0, 3, 1, 2))
