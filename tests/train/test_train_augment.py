"""Training augmentations (no torchvision): reproducible from the generator, crops of the asked size and area,
flips only when enabled, colour jitter that keeps grey grey and pixels in range."""

from __future__ import annotations

import io

import numpy as np
import torch
from PIL import Image

from eclip.models.image_processing import ImagePreprocessing
from eclip.train.augment import augment_batch, augmented_view, colour_jitter, random_resized_crop


def half_red_half_blue(size=(64, 64)) -> Image.Image:
    array = np.zeros((size[1], size[0], 3), np.uint8)
    array[:, :size[0] // 2] = (255, 0, 0)
    array[:, size[0] // 2:] = (0, 0, 255)
    return Image.fromarray(array)


def jpeg(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=95)
    return buffer.getvalue()


def test_same_generator_same_batch_another_generator_another_batch():
    jpegs = [jpeg(half_red_half_blue()), jpeg(Image.new("RGB", (80, 50), (30, 160, 60)))]
    preprocessing = ImagePreprocessing(32)
    first = augment_batch(jpegs, preprocessing, 0.5, True, 0.2, np.random.default_rng(3))
    assert first.shape == (2, 3, 32, 32)
    assert torch.equal(first, augment_batch(jpegs, preprocessing, 0.5, True, 0.2, np.random.default_rng(3)))
    assert not torch.equal(first, augment_batch(jpegs, preprocessing, 0.5, True, 0.2, np.random.default_rng(4)))


def test_random_resized_crop_keeps_at_least_the_asked_share_of_the_area():
    """On a horizontal grey ramp (column x has value 4x) the crop's value range gives its width: an area of at
    least half at an aspect ratio of at least 3/4 means at least sqrt(0.5 * 0.75) = 61% of the columns."""
    ramp = Image.fromarray(np.tile(np.arange(64, dtype=np.uint8) * 4, (64, 1))).convert("RGB")
    rng = np.random.default_rng(0)
    shares = []
    for _ in range(100):
        crop = np.asarray(random_resized_crop(ramp, 16, 0.5, rng))[..., 0].astype(int)
        assert crop.shape == (16, 16)
        shares.append((crop.max() - crop.min()) / 4 * 16 / 15 / 64)  # resampling spans 15/16 of the box
    assert min(shares) >= 0.58 and max(shares) > 0.9


def test_flips_happen_about_half_the_time_and_never_when_disabled():
    source = jpeg(half_red_half_blue())
    rng = np.random.default_rng(0)
    left_red = [augmented_view(source, 16, 1.0, True, rng)[8, 0, 0] > 128 for _ in range(200)]
    assert 70 < sum(left_red) < 130
    assert all(augmented_view(source, 16, 1.0, False, rng)[8, 0, 0] > 128 for _ in range(50))


def test_colour_jitter_is_off_at_zero_keeps_grey_grey_and_stays_in_range():
    rng = np.random.default_rng(0)
    pixels = torch.rand(4, 3, 8, 8)
    assert torch.equal(colour_jitter(pixels, 0.0, rng), pixels)
    jittered = colour_jitter(pixels, 0.4, rng)
    assert jittered.min() >= 0 and jittered.max() <= 1 and not torch.allclose(jittered, pixels)
    grey = torch.rand(4, 1, 8, 8).expand(4, 3, 8, 8)
    out = colour_jitter(grey, 0.4, rng)
    assert torch.allclose(out[:, 0], out[:, 1], atol=1e-6) and torch.allclose(out[:, 1], out[:, 2], atol=1e-6)


def test_augmented_pixels_are_normalized_with_the_models_statistics():
    """A pretrained tower's own mean and std (SigLIP's 0.5 / 0.5 here) apply in training as at inference: a white
    photo, without jitter, is 1.0 on every channel."""
    white = jpeg(Image.new("RGB", (40, 40), (255, 255, 255)))
    siglip = ImagePreprocessing(16, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))
    pixels = augment_batch([white], siglip, 0.5, True, 0.0, np.random.default_rng(0))  # (1, 3, 16, 16)
    assert pixels.shape == (1, 3, 16, 16)
    assert torch.allclose(pixels, torch.ones_like(pixels), atol=1e-6)
