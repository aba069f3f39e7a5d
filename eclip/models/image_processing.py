"""Eval-time image preprocessing: JPEG bytes or PIL images -> normalized pixels (B, 3, S, S), no augmentation.

Product photos are padded to a white square rather than cropped, so the whole product stays in view.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps

# CLIP's channel statistics; any fixed pair works as long as training and inference agree.
MEAN = torch.tensor([0.48145466, 0.4578275, 0.40821073]).view(1, 3, 1, 1)
STD = torch.tensor([0.26862954, 0.26130258, 0.27577711]).view(1, 3, 1, 1)
PAD_COLOUR = (255, 255, 255)


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


def to_pixels(images: list[Image.Image]) -> torch.Tensor:
    """Same-size RGB images -> normalized float pixels (B, 3, S, S)."""
    array = np.stack([np.asarray(image, dtype=np.uint8) for image in images])  # (B, S, S, 3)
    return normalize(torch.from_numpy(array).permute(0, 3, 1, 2))


def normalize(pixels_uint8: torch.Tensor) -> torch.Tensor:
    return (pixels_uint8.float() / 255.0 - MEAN) / STD


def eval_pixels(images, image_size: int) -> torch.Tensor:
    """PIL images, JPEG bytes or paths -> (B, 3, S, S): padded to a square and resized, no augmentation."""
    squares = [pad_square(open_image(image, 2 * image_size)).resize((image_size, image_size), Image.BICUBIC)
               for image in images]
    return to_pixels(squares)
