"""Training augmentations with Pillow and torch (no torchvision): random resized crop and horizontal flip per
image, then colour jitter (brightness, contrast, saturation) on the whole batch at once.

Every random draw comes from the generator passed in, so a step's augmentations are reproducible."""

from __future__ import annotations

import math

import numpy as np
import torch
from PIL import Image

from eclip.models.image_processing import ImagePreprocessing, open_image, pad_square

LUMA = torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)


def random_resized_crop(image: Image.Image, size: int, scale_min: float, rng: np.random.Generator,
                        ratio: tuple[float, float] = (3 / 4, 4 / 3)) -> Image.Image:
    """Crop a random box covering [scale_min, 1] of the area with an aspect ratio in `ratio`; resize to size."""
    width, height = image.size
    area = rng.uniform(scale_min, 1.0) * width * height
    aspect = math.exp(rng.uniform(math.log(ratio[0]), math.log(ratio[1])))
    crop_w = min(width, round(math.sqrt(area * aspect)))
    crop_h = min(height, round(math.sqrt(area / aspect)))
    left = rng.integers(0, width - crop_w + 1)
    top = rng.integers(0, height - crop_h + 1)
    return image.resize((size, size), Image.BILINEAR, box=(left, top, left + crop_w, top + crop_h))


def augmented_view(jpeg: bytes, size: int, scale_min: float, flip: bool, rng: np.random.Generator) -> np.ndarray:
    """JPEG bytes -> one augmented (S, S, 3) uint8 view of the white-padded square image."""
    image = random_resized_crop(pad_square(open_image(jpeg, 2 * size)), size, scale_min, rng)
    if flip and rng.random() < 0.5:
        image = image.transpose(Image.FLIP_LEFT_RIGHT)
    return np.asarray(image, dtype=np.uint8)


def colour_jitter(pixels: torch.Tensor, strength: float, rng: np.random.Generator) -> torch.Tensor:
    """(B, 3, S, S) floats in [0, 1] -> jittered, clamped to [0, 1]; one factor triple per image."""
    if strength == 0:
        return pixels
    factors = torch.from_numpy(rng.uniform(1 - strength, 1 + strength, size=(3, len(pixels), 1, 1, 1))).float()
    brightness, contrast, saturation = factors
    pixels = pixels * brightness
    grey = (pixels * LUMA).sum(dim=1, keepdim=True)  # (B, 1, S, S)
    pixels = grey.mean(dim=(2, 3), keepdim=True) + contrast * (pixels - grey.mean(dim=(2, 3), keepdim=True))
    grey = (pixels * LUMA).sum(dim=1, keepdim=True)
    return (grey + saturation * (pixels - grey)).clamp(0, 1)


def augment_batch(jpegs: list[bytes], preprocessing: ImagePreprocessing, scale_min: float, flip: bool,
                  jitter: float, rng: np.random.Generator) -> torch.Tensor:
    """JPEG bytes -> augmented pixels (B, 3, S, S) at the model's size, normalized with its channel statistics
    (a pretrained tower's own, as at inference)."""
    views = np.stack([augmented_view(jpeg, preprocessing.size, scale_min, flip, rng) for jpeg in jpegs])  # (B, S, S, 3)
    pixels = colour_jitter(torch.from_numpy(views).permute(0, 3, 1, 2).float() / 255.0, jitter, rng)
    return preprocessing.normalize(pixels * 255.0)
