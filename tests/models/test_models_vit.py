"""The image tower: token counts, both poolings read from the final norm, per-sample independence (which
gradient caching relies on), and its config errors."""

from __future__ import annotations

import pytest
import torch

from eclip.models.vit import VisionTransformer
from eclip.errors import EclipError
from eclip.models.config import VisionConfig


def vit(**overrides) -> VisionTransformer:
    torch.manual_seed(0)
    config = dict(image_size=32, patch_size=8, width=32, depth=2, heads=2, dropout=0.0)
    return VisionTransformer(VisionConfig(**{**config, **overrides})).eval()


def final_tokens(model: VisionTransformer, pixels: torch.Tensor) -> torch.Tensor:
    """The normalized token sequence (B, 1 + P, W) the pooling reads."""
    seen = []
    handle = model.norm.register_forward_hook(lambda module, inputs, output: seen.append(output))
    model(pixels)
    handle.remove()
    return seen[0]


@pytest.mark.parametrize("stem", ["patch", "conv"])
def test_one_token_per_patch_plus_cls_and_features_of_the_width(stem):
    model = vit(stem=stem)
    pixels = torch.randn(3, 3, 32, 32)
    assert model(pixels).shape == (3, 32)
    assert final_tokens(model, pixels).shape == (3, 1 + (32 // 8) ** 2, 32)
    assert model.pos_embed.shape == (1, 17, 32)


def test_cls_pooling_reads_the_cls_token_and_mean_pooling_averages_the_patches():
    pixels = torch.randn(2, 3, 32, 32)
    cls_model, mean_model = vit(pooling="cls"), vit(pooling="mean")  # same seed, same weights
    tokens = final_tokens(cls_model, pixels)
    assert torch.allclose(cls_model(pixels), tokens[:, 0], atol=1e-6)
    assert torch.allclose(mean_model(pixels), tokens[:, 1:].mean(dim=1), atol=1e-6)
    assert not torch.allclose(cls_model(pixels), mean_model(pixels), atol=1e-3)


@pytest.mark.parametrize("stem", ["patch", "conv"])
def test_each_image_is_encoded_independently_of_its_batch(stem):
    """Gradient caching re-runs micro-batches: an image's features must not depend on its batch-mates
    (hence GroupNorm, not BatchNorm, in the conv stem)."""
    model = vit(stem=stem).train()  # dropout is 0: train mode must not change this either
    pixels = torch.randn(6, 3, 32, 32)
    assert torch.allclose(model(pixels)[:2], model(pixels[:2]), atol=1e-5)


def test_every_parameter_learns():
    model = vit(stem="conv").train()
    model(torch.randn(4, 3, 32, 32)).pow(2).sum().backward()
    silent = [name for name, p in model.named_parameters() if p.grad is None or p.grad.abs().sum() == 0]
    assert silent == []


def test_sdpa_dropout_is_live_in_training_only():
    model = vit(dropout=0.5)
    pixels = torch.randn(2, 3, 32, 32)
    assert torch.equal(model(pixels), model(pixels))
    model.train()
    assert not torch.allclose(model(pixels), model(pixels))


@pytest.mark.parametrize("stem", ["patch", "conv"])
def test_flip_masking_drops_patches_in_training_only(stem):
    masked, full = vit(stem=stem, mask_ratio=0.75), vit(stem=stem)  # same seed, same weights
    pixels = torch.randn(3, 3, 32, 32)
    assert torch.equal(masked(pixels), full(pixels))  # inference sees every patch
    masked.train()
    assert final_tokens(masked, pixels).shape == (3, 1 + 4, 32)  # 16 patches, a quarter kept, plus cls
    torch.manual_seed(0)
    first = masked(pixels)
    torch.manual_seed(0)
    assert torch.equal(masked(pixels), first)  # the masks come from torch's RNG: gradient caching replays them
    assert not torch.allclose(masked(pixels), first)  # and differ from draw to draw
    assert not torch.allclose(first, full(pixels), atol=1e-3)


@pytest.mark.parametrize("overrides, message", [
    (dict(mask_ratio=1.0), "mask_ratio must be"),
    (dict(image_size=30), "not a multiple of patch_size"),
    (dict(stem="resnet"), "stem must be"),
    (dict(stem="conv", patch_size=6, image_size=36), "power-of-two"),
    (dict(pooling="max"), "pooling must be"),
])
def test_bad_configs_are_refused(overrides, message):
    with pytest.raises(EclipError, match=message):
        vit(**overrides)
