"""Skip-gram with negative sampling over walks (metapath2vec and metapath2vec++, Dong et al. 2017).

Every node predicts the nodes up to `window` steps away in its walk (both sides), against `negatives` nodes
drawn from the unigram^(3/4) distribution of node counts in the walks. metapath2vec draws negatives from all
nodes; metapath2vec++ draws them from the context node's own type (the heterogeneous negative sampling of §3.3).
Both are one sampler: nodes are split into groups (one group, or one per type), each group owns the interval
[g, g + 1) of a global CDF, and a negative for a context in group g is `searchsorted(cdf, g + uniform)`.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from eclip.progress import progress_bar


class SkipGram(nn.Module):
    """Centre and context embeddings of every node, trained on analytic gradients with row-wise Adagrad
    (as PyTorch-BigGraph): each step touches only the rows in the batch, and the optimizer state is one scalar
    per row. Adagrad's per-row step size matters here: hub nodes (a colour shared by thousands of products)
    get hundreds of gradients per batch, a product one or two."""

    def __init__(self, num_nodes: int, dim: int, generator: torch.Generator | None = None):
        super().__init__()
        # word2vec's initialization: small random centres, zero contexts.
        self.center = nn.Parameter((torch.rand(num_nodes, dim, generator=generator) - 0.5) / dim, requires_grad=False)
        self.context = nn.Parameter(torch.zeros(num_nodes, dim), requires_grad=False)
        self.register_buffer("center_sq", torch.zeros(num_nodes))   # Adagrad: summed mean-square gradient per row
        self.register_buffer("context_sq", torch.zeros(num_nodes))

    def forward(self, centers: torch.Tensor, contexts: torch.Tensor, negatives: torch.Tensor) -> torch.Tensor:
        """Mean over pairs of -log s(u_c . v) - sum_k log s(-u_k . v); centers, contexts (B,), negatives (B, K)."""
        v = self.center[centers]                                             # (B, D)
        u = self.context[torch.cat([contexts[:, None], negatives], dim=1)]   # (B, 1 + K, D)
        return skipgram_loss(v, u)

    @torch.no_grad()
    def step(self, centers: torch.Tensor, contexts: torch.Tensor, negatives: torch.Tensor, lr: float) -> float:
        """One step on a batch; returns the batch's mean loss before the step."""
        targets = torch.cat([contexts[:, None], negatives], dim=1)          # (B, 1 + K)
        v, u = self.center[centers], self.context[targets]                  # (B, D), (B, 1 + K, D)
        loss = skipgram_loss(v, u).item()
        grad_v, grad_u = pair_gradients(v, u)
        _adagrad(self.center, self.center_sq, centers, grad_v, lr)
        _adagrad(self.context, self.context_sq, targets.reshape(-1), grad_u.reshape(-1, u.shape[-1]), lr)
        return loss


def skipgram_loss(v: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """v (B, D) centres, u (B, 1 + K, D) the true context then K negatives."""
    scores = torch.einsum("bd,bkd->bk", v, u)                                # (B, 1 + K)
    return -(F.logsigmoid(scores[:, 0]) + F.logsigmoid(-scores[:, 1:]).sum(dim=1)).mean()


def pair_gradients(v: torch.Tensor, u: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Gradients of each pair's loss (the batch *sum* of skipgram_loss) w.r.t. v (B, D) and u (B, 1 + K, D)."""
    scores = torch.einsum("bd,bkd->bk", v, u)
    error = torch.sigmoid(scores)                                            # (B, 1 + K): s(score) - label
    error[:, 0] -= 1
    return torch.einsum("bk,bkd->bd", error, u), error[:, :, None] * v[:, None, :]


def _adagrad(table: torch.Tensor, squares: torch.Tensor, rows: torch.Tensor, grads: torch.Tensor, lr: float) -> None:
    """Row-wise Adagrad: a row's gradients in the batch are summed, and the row steps by lr / sqrt(its running
    sum of mean-square gradients)."""
    unique, inverse = torch.unique(rows, return_inverse=True)
    summed = torch.zeros(len(unique), grads.shape[1], dtype=grads.dtype).index_add_(0, inverse, grads)  # (U, D)
    squares.index_add_(0, unique, summed.square().mean(dim=1))
    table.index_add_(0, unique, summed / (squares[unique, None].sqrt() + 1e-10), alpha=-lr)


class NegativeSampler:
    """Unigram^power negatives restricted to the context's group; `groups` (N,) must be non-decreasing."""

    def __init__(self, counts: np.ndarray, groups: np.ndarray, power: float = 0.75):
        if np.any(np.diff(groups) < 0):
            raise ValueError("groups must be non-decreasing over node ids (type-blocked global ids)")
        weights = counts.astype(np.float64) ** power
        totals = np.bincount(groups, weights=weights)
        cumulative = np.cumsum(weights / np.where(totals > 0, totals, 1.0)[groups])
        group_start = np.searchsorted(groups, groups, side="left")
        within = cumulative - np.concatenate([[0.0], cumulative])[group_start]   # (N,) CDF inside the group
        group_end = np.searchsorted(groups, groups, side="right") - 1
        within[group_end[totals[groups] > 0]] = 1.0   # exact top, so group g's CDF ends at g + 1 = where g + 1's starts
        self.cdf = torch.from_numpy(groups + within)
        self.groups = torch.from_numpy(groups.astype(np.int64))

    def sample(self, contexts: torch.Tensor, k: int, generator: torch.Generator) -> torch.Tensor:
        """(B, k) node ids, each from the group of its row's context: the first node whose CDF exceeds g + u."""
        draw = self.groups[contexts][:, None] + torch.rand(len(contexts), k, generator=generator, dtype=torch.float64)
        return torch.searchsorted(self.cdf, draw, right=True)


def context_pairs(walks: torch.Tensor, window: int) -> tuple[torch.Tensor, torch.Tensor]:
    """All (center, context) pairs at most `window` steps apart in each walk (W, L), both directions; -1 skipped."""
    centers, contexts = [], []
    for offset in range(1, min(window, walks.shape[1] - 1) + 1):
        left, right = walks[:, :-offset].reshape(-1), walks[:, offset:].reshape(-1)
        keep = (left >= 0) & (right >= 0)
        left, right = left[keep], right[keep]
        centers += [left, right]
        contexts += [right, left]
    return torch.cat(centers).long(), torch.cat(contexts).long()


def count_pairs(walks: np.ndarray, window: int) -> int:
    lengths = (walks >= 0).sum(axis=1)
    return int(sum(2 * np.clip(lengths - offset, 0, None).sum() for offset in range(1, window + 1)))


@dataclass
class TrainStats:
    pairs: int
    seconds: float
    first_loss: float
    last_loss: float


def train_skipgram(walks: np.ndarray, groups: np.ndarray, dim: int, window: int, negatives: int, epochs: int,
                   batch_size: int, lr: float, seed: int) -> tuple[SkipGram, TrainStats]:
    """Embeddings of all `len(groups)` nodes; `groups` (N,) picks the negatives' pool (zeros: metapath2vec,
    node types: metapath2vec++)."""
    generator = torch.Generator().manual_seed(seed)
    model = SkipGram(len(groups), dim, generator)
    counts = np.bincount(walks[walks >= 0], minlength=len(groups))
    sampler = NegativeSampler(counts, groups)
    walks = torch.from_numpy(walks)
    # Pairs are made from chunks of shuffled walks and shuffled within the chunk: memory stays bounded and
    # consecutive batches mix many walks.
    walks_per_chunk = max(1, 32 * batch_size // max(1, 2 * window * walks.shape[1]))
    total = epochs * count_pairs(walks.numpy(), window)
    losses, seen, started = [], 0, time.perf_counter()
    threads = torch.get_num_threads()
    # One thread: a step is a few small gathers and scatters, where thread hand-offs cost more than they save
    # (measured 10x slower with 2 threads on a shared 2-core machine).
    torch.set_num_threads(1)
    with progress_bar("skip-gram", total, "loss", "pairs/s") as advance:
        for _ in range(epochs):
            order = torch.randperm(len(walks), generator=generator)
            for chunk in order.split(walks_per_chunk):
                centers, contexts = context_pairs(walks[chunk], window)
                shuffle = torch.randperm(len(centers), generator=generator)
                for batch in shuffle.split(batch_size):
                    losses.append(model.step(centers[batch], contexts[batch],
                                             sampler.sample(contexts[batch], negatives, generator), lr))
                    seen += len(batch)
                    advance(len(batch), loss=f"{losses[-1]:.3f}",
                            **{"pairs/s": f"{seen / (time.perf_counter() - started):,.0f}"})
    torch.set_num_threads(threads)
    first, last = np.mean(losses[:10]), np.mean(losses[-10:])
    return model, TrainStats(seen, time.perf_counter() - started, float(first), float(last))
