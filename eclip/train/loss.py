"""Contrastive objectives over L2-normalized embeddings of a (global) batch.

clip:   symmetric InfoNCE with hard diagonal labels (CLIP, ALIGN).
eclip:  catalogue soft labels (e-CLIP §3.3): pairs sharing a group_id are positives; the targets are the
        row-normalized same-group matrix; cross-entropy both ways.
siglip: the sigmoid pairwise loss (Zhai et al. 2023), diagonal positives.
plus an optional SimCLR NT-Xent term between two augmented views of each image.

Under torch.distributed every objective sees the global batch: embeddings are all-gathered with gradient.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
import torch.nn.functional as F


class _AllGather(torch.autograd.Function):
    """Concatenate every rank's (b, D) rows; the backward sums each rank's gradient for our rows.
    (All ranks compute the same global loss, so that sum is world_size x our gradient; DDP's mean
    over ranks divides it back out.) Written with all_reduce because gloo has no reduce_scatter."""

    @staticmethod
    def forward(ctx, local: torch.Tensor) -> torch.Tensor:
        ctx.rank, ctx.rows = dist.get_rank(), len(local)
        parts = [torch.empty_like(local) for _ in range(dist.get_world_size())]
        dist.all_gather(parts, local.contiguous())
        return torch.cat(parts)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        grad = grad.contiguous()
        dist.all_reduce(grad)
        return grad[ctx.rank * ctx.rows:(ctx.rank + 1) * ctx.rows]


def gather(local: torch.Tensor) -> torch.Tensor:
    """(b, ...) per rank -> (world_size * b, ...), differentiable; identity outside torch.distributed."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return local
    if not local.requires_grad:
        parts = [torch.empty_like(local) for _ in range(dist.get_world_size())]
        dist.all_gather(parts, local.contiguous())
        return torch.cat(parts)
    return _AllGather.apply(local)


def clip_loss(image: torch.Tensor, text: torch.Tensor, logit_scale: torch.Tensor) -> torch.Tensor:
    logits = logit_scale.exp() * image @ text.T  # (B, B)
    labels = torch.arange(len(logits), device=logits.device)
    return (F.cross_entropy(logits, labels) + F.cross_entropy(logits.T, labels)) / 2


def same_group_targets(groups: torch.Tensor) -> torch.Tensor:
    """(B,) group codes -> (B, B) rows summing to 1 over the pairs that share a row's group."""
    same = (groups[:, None] == groups[None, :]).float()
    return same / same.sum(dim=1, keepdim=True)


def eclip_loss(image: torch.Tensor, text: torch.Tensor, logit_scale: torch.Tensor,
               groups: torch.Tensor) -> torch.Tensor:
    logits = logit_scale.exp() * image @ text.T  # (B, B)
    targets = same_group_targets(groups)  # symmetric support, so the text->image targets are the same rows
    image_to_text = -(targets * F.log_softmax(logits, dim=1)).sum(dim=1).mean()
    text_to_image = -(targets * F.log_softmax(logits.T, dim=1)).sum(dim=1).mean()
    return (image_to_text + text_to_image) / 2


def siglip_loss(image: torch.Tensor, text: torch.Tensor, logit_scale: torch.Tensor,
                logit_bias: torch.Tensor) -> torch.Tensor:
    logits = logit_scale.exp() * image @ text.T + logit_bias  # (B, B)
    signs = 2 * torch.eye(len(logits), device=logits.device) - 1  # +1 on the diagonal, -1 elsewhere
    return -F.logsigmoid(signs * logits).sum() / len(logits)


def nt_xent(view1: torch.Tensor, view2: torch.Tensor, temperature: float) -> torch.Tensor:
    """SimCLR: each of the 2B views must pick its partner among the 2B - 1 others."""
    views = torch.cat([view1, view2])  # (2B, D)
    logits = views @ views.T / temperature
    logits = logits.masked_fill(torch.eye(len(views), dtype=torch.bool, device=views.device), float("-inf"))
    batch = len(view1)
    partners = torch.cat([torch.arange(batch, 2 * batch), torch.arange(batch)]).to(views.device)
    return F.cross_entropy(logits, partners)


class Objective:
    """Callable on a step's local embeddings: gathers the global batch and returns the scalar loss.

    `scalars` are the model's learnable logit scale (and, for SigLIP, bias): passed in rather than read from
    the model so that gradient caching can differentiate with respect to detached copies of them.
    """

    def __init__(self, name: str, image_ssl_weight: float = 0.0, ssl_temperature: float = 0.1):
        self.name = name
        self.image_ssl_weight = image_ssl_weight
        self.ssl_temperature = ssl_temperature

    @property
    def scalar_names(self) -> tuple[str, ...]:
        return ("logit_scale", "logit_bias") if self.name == "siglip" else ("logit_scale",)

    @property
    def needs_second_view(self) -> bool:
        return self.image_ssl_weight > 0

    def __call__(self, embeddings, scalars, groups: torch.Tensor) -> torch.Tensor:
        image, text, *second_view = (gather(e.float()) for e in embeddings)
        if self.name == "clip":
            loss = clip_loss(image, text, scalars[0])
        elif self.name == "eclip":
            loss = eclip_loss(image, text, scalars[0], gather(groups))
        elif self.name == "siglip":
            loss = siglip_loss(image, text, scalars[0], scalars[1])
        else:
            raise ValueError(f"unknown objective {self.name!r}")
        if second_view:
            loss = loss + self.image_ssl_weight * nt_xent(image, second_view[0], self.ssl_temperature)
        return loss
