"""Leave-one-out ranking metrics, both protocols: full ranking over all items, and 100 sampled negatives.

Full ranking: the target is ranked against every item except the others the user already interacted with
(as in S3-Rec/ICLRec). Sampled: against 100 negatives drawn by popularity among the items the user never
interacted with (the BERT4Rec paper's protocol). Ties count against the target (pessimistic rank).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
from typing import Callable

import numpy as np
import torch

from eclip.errors import EclipError
from eclip.rec.data import EvalCases

# Scores held at once (128 MB of float32): the users per batch shrink as the catalogue grows.
SCORE_CELLS = 2**25

M_MMAP_THRESHOLD = -3  # glibc's mallopt parameter
LARGE_CATALOGUE = 100_000  # items


def fix_mmap_threshold(n_items: int) -> bool:
    """For catalogues of LARGE_CATALOGUE items or more, have glibc map every allocation of 1 MB or more on its own
    and unmap it when freed; True if that is now so.

    Ranking over a large catalogue allocates and frees (items,)-sized buffers of a few MB for every batch (as does
    drawing the sampled softmax's negatives at every step). glibc's adaptive threshold soon puts such buffers on
    its heap, which then fragments and never shrinks: at 3M items `eclip rec eval` grew by 31 MB a batch, 9.4 GB
    after 2,000 users, against a flat 3.1 GB with the threshold fixed. Small catalogues keep the adaptive one,
    which ranked Amazon Beauty's 12,101 items 15 % faster. Other C libraries lack `mallopt`."""
    return n_items >= LARGE_CATALOGUE and _fix_mmap_threshold()


@functools.cache
def _fix_mmap_threshold() -> bool:
    try:
        return bool(ctypes.CDLL(ctypes.util.find_library("c")).mallopt(M_MMAP_THRESHOLD, 1 << 20))
    except (OSError, AttributeError, TypeError):
        return False


Scorer = Callable[[list[np.ndarray]], torch.Tensor]  # histories -> (B, n_items) scores, column j = item j + 1


def rank_metrics(ranks: np.ndarray, ks: tuple[int, ...] = (10, 20)) -> dict[str, float]:
    """HR@k, NDCG@k (one relevant item: 1 / log2(rank + 1) if rank <= k) and MRR (untruncated) from 1-based ranks."""
    ranks = np.asarray(ranks, dtype=np.float64)
    out = {}
    for k in ks:
        hit = ranks <= k
        out[f"HR@{k}"] = float(hit.mean())
        out[f"NDCG@{k}"] = float(np.where(hit, 1.0 / np.log2(ranks + 1.0), 0.0).mean())
    out["MRR"] = float((1.0 / ranks).mean())
    return out


def full_ranks(scores: torch.Tensor, histories: list[np.ndarray], targets: np.ndarray) -> np.ndarray:
    """(B,) rank of each target among all items, the user's other interacted items excluded."""
    batch, target_cols = torch.arange(len(targets)), torch.from_numpy(targets - 1)
    target_scores = scores[batch, target_cols].clone()
    rows = np.concatenate([np.full(len(h), i) for i, h in enumerate(histories)] + [np.zeros(0, np.int64)])
    cols = np.concatenate(list(histories) + [np.zeros(0, np.int64)]) - 1
    scores = scores.clone()
    scores[torch.from_numpy(rows).long(), torch.from_numpy(cols).long()] = float("-inf")
    scores[batch, target_cols] = target_scores  # a repeat purchase: the target may be in the history too
    return (scores >= target_scores[:, None]).sum(1).numpy()


def sampled_ranks(scores: torch.Tensor, targets: np.ndarray, negatives: np.ndarray) -> np.ndarray:
    """(B,) rank of each target among itself and its (B, K) negatives."""
    target_scores = scores[torch.arange(len(targets)), torch.from_numpy(targets - 1)]
    negative_scores = scores.gather(1, torch.from_numpy(negatives - 1))
    return 1 + (negative_scores >= target_scores[:, None]).sum(1).numpy()


def sample_negatives(interacted: list[np.ndarray], popularity: np.ndarray, n: int = 100, seed: int = 0) -> np.ndarray:
    """(U, n) distinct items per user, drawn with probability proportional to `popularity` ((n_items + 1,), index 0
    unused) among the items that user never interacted with."""
    drawable = popularity > 0
    left = [np.count_nonzero(drawable) - np.count_nonzero(drawable[np.unique(items)]) for items in interacted]
    if min(left, default=n) < n:
        raise EclipError(f"--negatives {n}: a user has only {min(left)} items to draw negatives from (the "
                         f"{np.count_nonzero(drawable)} items with training interactions less their own); pass "
                         f"--negatives {min(left)} or fewer, or 0 to skip the sampled protocol")
    rng = np.random.default_rng(seed)
    cumulative = np.cumsum(popularity[1:].astype(np.float64))
    out = np.empty((len(interacted), n), dtype=np.int64)
    for u, items in enumerate(interacted):
        excluded, chosen = set(items.tolist()), []
        while len(chosen) < n:
            draws = 1 + np.searchsorted(cumulative, rng.random(4 * n) * cumulative[-1], side="right")
            for item in draws.tolist():
                if item not in excluded:
                    excluded.add(item)
                    chosen.append(item)
                    if len(chosen) == n:
                        break
        out[u] = chosen
    return out


def evaluate(scorer: Scorer, cases: EvalCases, negatives: np.ndarray | None = None,
             batch_size: int = 1024) -> dict[str, dict[str, float]]:
    """{"full": metrics, "sampled": metrics} ("sampled" only when `negatives` is given)."""
    full, sampled = [], []
    # Batches of similar history length pad little; the metrics are means, so the order does not matter.
    order = np.argsort([len(h) for h in cases.histories], kind="stable")
    start, size = 0, min(batch_size, 16)  # the first batch tells the number of items
    while start < len(order):
        rows = order[start:start + size]
        start += size
        histories, targets = [cases.histories[r] for r in rows], cases.targets[rows]
        scores = scorer(histories).float().cpu()  # (B, n_items)
        full.append(full_ranks(scores, histories, targets))
        if negatives is not None:
            sampled.append(sampled_ranks(scores, targets, negatives[rows]))
        size = max(1, min(batch_size, SCORE_CELLS // scores.shape[1]))
        fix_mmap_threshold(scores.shape[1])
    out = {"full": rank_metrics(np.concatenate(full))}
    if negatives is not None:
        out["sampled"] = rank_metrics(np.concatenate(sampled))
    return out


class Popularity:
    """Most-popular baseline: every user gets the items ranked by their training interaction count."""

    def __init__(self, counts: np.ndarray):
        self.scores = torch.from_numpy(counts[1:].astype(np.float32))

    def __call__(self, histories: list[np.ndarray]) -> torch.Tensor:
        return self.scores.expand(len(histories), -1)
