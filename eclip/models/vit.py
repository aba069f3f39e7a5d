"""A Vision Transformer (Dosovitskiy et al. 2021) as CLIP uses it: pre-norm blocks, SDPA attention."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from eclip.config import validate
from eclip.models.config import VisionConfig


class Attention(nn.Module):
    def __init__(self, width: int, heads: int, dropout: float):
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(width, 3 * width)
        self.proj = nn.Linear(width, width)
        self.dropout = dropout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, tokens, width = x.shape
        q, k, v = self.qkv(x).view(batch, tokens, 3, self.heads, width // self.heads).permute(2, 0, 3, 1, 4)
        x = F.scaled_dot_product_attention(q, k, v, dropout_p=self.dropout if self.training else 0.0)  # (B, H, T, d)
        return self.proj(x.transpose(1, 2).reshape(batch, tokens, width))


class Block(nn.Module):
    def __init__(self, width: int, heads: int, mlp_ratio: float, dropout: float):
        super().__init__()
        hidden = int(width * mlp_ratio)
        self.norm1 = nn.LayerNorm(width)
        self.attn = Attention(width, heads, dropout)
        self.norm2 = nn.LayerNorm(width)
        self.mlp = nn.Sequential(nn.Linear(width, hidden), nn.GELU(), nn.Linear(hidden, width))
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.dropout(self.attn(self.norm1(x)))
        return x + self.dropout(self.mlp(self.norm2(x)))


class VisionTransformer(nn.Module):
    """Pixels (B, 3, S, S) normalized per channel -> features (B, width)."""

    def __init__(self, config: VisionConfig):
        super().__init__()
        validate(config)
        self.config = config
        self.mask_ratio = config.mask_ratio  # the training loop sets 0 for FLIP's unmasked tuning at the end
        patches = (config.image_size // config.patch_size) ** 2
        self.patch_embed = (conv_stem(config.width, config.patch_size) if config.stem == "conv"
                            else nn.Conv2d(3, config.width, config.patch_size, stride=config.patch_size))
        self.cls_token = nn.Parameter(torch.zeros(1, 1, config.width))
        self.pos_embed = nn.Parameter(torch.randn(1, patches + 1, config.width) * 0.02)
        self.blocks = nn.ModuleList(Block(config.width, config.heads, config.mlp_ratio, config.dropout)
                                    for _ in range(config.depth))
        self.norm = nn.LayerNorm(config.width)
        self.apply(_init_weights)

    @property
    def width(self) -> int:
        return self.config.width

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        x = self.patch_embed(pixels).flatten(2).transpose(1, 2) + self.pos_embed[:, 1:]  # (B, P, W)
        if self.training and self.mask_ratio > 0:  # FLIP: keep a random subset of patches per image
            batch, patches, width = x.shape
            keep = max(1, round(patches * (1 - self.mask_ratio)))
            kept = torch.rand(batch, patches, device=x.device).argsort(dim=1)[:, :keep]  # (B, K)
            x = x.gather(1, kept[:, :, None].expand(-1, -1, width))  # (B, K, W)
        x = torch.cat([(self.cls_token + self.pos_embed[:, :1]).expand(x.shape[0], -1, -1), x], dim=1)  # (B, 1+K, W)
        for block in self.blocks:
            x = block(x)
        x = self.norm(x)
        return x[:, 0] if self.config.pooling == "cls" else x[:, 1:].mean(dim=1)  # (B, W)


def conv_stem(width: int, patch_size: int) -> nn.Sequential:
    """Stride-2 3x3 convolutions down to the patch grid, then a 1x1 to the width (Xiao et al. 2021, "Early
    convolutions help transformers see better"): same tokens as patchify, much easier to train from scratch.
    GroupNorm, not BatchNorm: per-sample statistics keep micro-batches (gradient caching) exact."""
    layers, channels = [], 3
    for stage in range(patch_size.bit_length() - 1):
        out = min(width, 32 * 2 ** stage)
        layers += [nn.Conv2d(channels, out, 3, stride=2, padding=1, bias=False), nn.GroupNorm(8, out), nn.GELU()]
        channels = out
    return nn.Sequential(*layers, nn.Conv2d(channels, width, 1))


def _init_weights(module: nn.Module) -> None:
    if isinstance(module, nn.Linear):
        nn.init.trunc_normal_(module.weight, std=0.02)
        nn.init.zeros_(module.bias)
    elif isinstance(module, nn.LayerNorm):
        nn.init.ones_(module.weight)
        nn.init.zeros_(module.bias)
