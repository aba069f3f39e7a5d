"""Contrastive objectives over L2-normalized embeddings of a (global) batch.

clip:   symmetric InfoNCE with hard diagonal labels (CLIP, ALIGN).
eclip:  catalogue soft labels (e-CLIP §3.3): pairs sharing a group_id are positives; the targets are the
        row-normalized same-group matrix; cross-entropy both ways.
siglip: the sigmoid pairwise loss (Zhai et al. 2023), diagonal positives.
plus an optional SimCLR NT-Xent term between two augmented views of each image.

The three pairwise losses run over row blocks with hand-written backward passes, so memory grows with B x block,
not B x B: gradient caching's full-batch loss stays small at effective batches of tens of thousands.

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


# Logits per block of rows in the blockwise losses: 4 MB in fp32 whatever the batch (a block's temporaries
# peak near 80 MB). A dense B x B loss holds four to six B x B matrices: 0.3 GB at B = 4096, 20 GB at 32768.
BLOCK_ELEMENTS = 2 ** 20


def _row_blocks(rows: int, columns: int) -> list[slice]:
    step = max(1, BLOCK_ELEMENTS // max(1, columns))
    return [slice(start, min(start + step, rows)) for start in range(0, rows, step)]


class _SoftLabelInfoNCE(torch.autograd.Function):
    """Symmetric cross-entropy of logits L = exp(logit_scale) image @ text.T against targets Q = the same-group
    matrix M row-normalized (Q_ij = M_ij / n_i, n_i the size of row i's group), both ways, over row blocks.

    Since every target row sums to 1: loss = (sum_i lse_row_i + sum_j lse_col_j - sum_ij M_ij L_ij (1/n_i + 1/n_j)) / 2B
    and dloss/dL_ij = (softmax_row_i(j) + softmax_col_j(i) - M_ij (1/n_i + 1/n_j)) / 2B; the backward recomputes
    each block of L from the embeddings instead of keeping it."""

    @staticmethod
    def forward(ctx, image, text, logit_scale, groups):
        scale = logit_scale.exp()
        _, inverse, counts = torch.unique(groups, return_inverse=True, return_counts=True)
        inverse_sizes = 1.0 / counts[inverse].to(image.dtype)  # (B,) 1 / n_i
        row_lse = torch.empty(len(image), dtype=image.dtype, device=image.device)
        col_lse = torch.full((len(text),), float("-inf"), dtype=image.dtype, device=image.device)
        target_sum = image.new_zeros(())
        for rows in _row_blocks(len(image), len(text)):
            logits = scale * image[rows] @ text.T  # (b, B)
            row_lse[rows] = logits.logsumexp(dim=1)
            col_lse = torch.logaddexp(col_lse, logits.logsumexp(dim=0))
            same = groups[rows, None] == groups[None, :]  # (b, B)
            target_sum += (logits * same * (inverse_sizes[rows, None] + inverse_sizes[None, :])).sum()
        ctx.save_for_backward(image, text, logit_scale, groups, inverse_sizes, row_lse, col_lse)
        return (row_lse.sum() + col_lse.sum() - target_sum) / (2 * len(image))

    @staticmethod
    def backward(ctx, grad_loss):
        image, text, logit_scale, groups, inverse_sizes, row_lse, col_lse = ctx.saved_tensors
        scale = logit_scale.exp()
        grad_image, grad_text, grad_scale = torch.empty_like(image), torch.zeros_like(text), image.new_zeros(())
        for rows in _row_blocks(len(image), len(text)):
            logits = scale * image[rows] @ text.T  # (b, B)
            same = groups[rows, None] == groups[None, :]
            grad_logits = ((logits - row_lse[rows, None]).exp() + (logits - col_lse[None, :]).exp()
                           - same * (inverse_sizes[rows, None] + inverse_sizes[None, :])) * (grad_loss / (2 * len(image)))
            grad_image[rows] = scale * grad_logits @ text
            grad_text += scale * grad_logits.T @ image[rows]
            grad_scale += (grad_logits * logits).sum()  # dL/dlogit_scale = L
        return grad_image, grad_text, grad_scale, None


class _SigmoidPairwise(torch.autograd.Function):
    """SigLIP: -sum_ij log sigmoid(s_ij z_ij) / B with z = exp(logit_scale) image @ text.T + bias and s = +1 on
    the diagonal, -1 elsewhere, over row blocks; dloss/dz_ij = -s_ij sigmoid(-s_ij z_ij) / B."""

    @staticmethod
    def _signs(rows: slice, columns: int, like: torch.Tensor) -> torch.Tensor:
        diagonal = torch.arange(rows.start, rows.stop, device=like.device)[:, None] == torch.arange(columns, device=like.device)
        return diagonal.to(like.dtype) * 2 - 1  # (b, B)

    @staticmethod
    def forward(ctx, image, text, logit_scale, logit_bias):
        scale, total = logit_scale.exp(), image.new_zeros(())
        for rows in _row_blocks(len(image), len(text)):
            logits = scale * image[rows] @ text.T + logit_bias
            total -= F.logsigmoid(_SigmoidPairwise._signs(rows, len(text), logits) * logits).sum()
        ctx.save_for_backward(image, text, logit_scale, logit_bias)
        return total / len(image)

    @staticmethod
    def backward(ctx, grad_loss):
        image, text, logit_scale, logit_bias = ctx.saved_tensors
        scale = logit_scale.exp()
        grad_image, grad_text = torch.empty_like(image), torch.zeros_like(text)
        grad_scale, grad_bias = image.new_zeros(()), image.new_zeros(())
        for rows in _row_blocks(len(image), len(text)):
            similarity = scale * image[rows] @ text.T  # (b, B)
            signs = _SigmoidPairwise._signs(rows, len(text), similarity)
            grad_logits = -signs * torch.sigmoid(-signs * (similarity + logit_bias)) * (grad_loss / len(image))
            grad_image[rows] = scale * grad_logits @ text
            grad_text += scale * grad_logits.T @ image[rows]
            grad_scale += (grad_logits * similarity).sum()
            grad_bias += grad_logits.sum()
        return grad_image, grad_text, grad_scale, grad_bias


def clip_loss(image: torch.Tensor, text: torch.Tensor, logit_scale: torch.Tensor) -> torch.Tensor:
    """Hard diagonal labels: the soft-label loss with every pair its own group."""
    return _SoftLabelInfoNCE.apply(image, text, logit_scale, torch.arange(len(image), device=image.device))


def eclip_loss(image: torch.Tensor, text: torch.Tensor, logit_scale: torch.Tensor,
               groups: torch.Tensor) -> torch.Tensor:
    return _SoftLabelInfoNCE.apply(image, text, logit_scale, groups)


def siglip_loss(image: torch.Tensor, text: torch.Tensor, logit_scale: torch.Tensor,
                logit_bias: torch.Tensor) -> torch.Tensor:
    return _SigmoidPairwise.apply(image, text, logit_scale, logit_bias)


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
