"""The order in which the rows of one shuffle window (`eclip/train/stream.py`) form batches: a deterministic
function of a key (seed, epoch, rank, window), so that a resumed run draws the same batches.

The rows are permuted. With category batches, a share `category_fraction` of them is laid out category by
category (categories in random order, items shuffled within) and spread evenly among the remaining, randomly
ordered items: any run of B consecutive items then holds about fraction x B items from a few categories (hard
negatives) and the rest from anywhere. With group batches, the offers of one catalog group are then pulled
together at the place of the group's first offer, so that a batch holds whole groups (except where a group
straddles two batches) and the catalogue soft labels of the `eclip` objective act on every offer that has a
sibling; uniform batches of B out of N pairs meet a sibling only about B / N of the time; `group_fraction` pulls
together only that share of the groups (drawn anew each epoch), so a batch keeps more distinct products. Both
rules act within the window: a group whose offers lie in two windows is not pulled together.
"""

from __future__ import annotations

import numpy as np


def mixed_order(size: int, key: list[int], categories: np.ndarray | None = None, category_fraction: float = 0.0,
                groups: np.ndarray | None = None, group_fraction: float = 1.0) -> np.ndarray:
    """A permutation of range(size). categories: (size,) dense integer category codes, or None for plain
    shuffling; groups: (size,) dense integer catalog group codes to keep together, or None; group_fraction: the
    share of the groups kept together."""
    if size <= 0:
        raise ValueError("cannot order an empty set")
    order = _shuffled(size, key, categories, category_fraction if categories is not None else 0.0)
    if groups is None:
        return order
    position = np.empty(size, dtype=np.int64)
    position[order] = np.arange(size)
    n_groups = int(groups.max()) + 1
    first = np.full(n_groups, size, dtype=np.int64)
    np.minimum.at(first, groups, position)  # each group's earliest place in the shuffled order
    gathered = np.random.default_rng([*key, 1]).random(n_groups) < group_fraction
    place = np.where(gathered[groups], first[groups], position)  # the others keep their own place
    return order[np.argsort(place[order], kind="stable")]


def _shuffled(size: int, key: list[int], categories: np.ndarray | None, category_fraction: float) -> np.ndarray:
    rng = np.random.default_rng(key)
    order = rng.permutation(size)
    if category_fraction == 0.0:
        return order
    grouped_mask = rng.random(size) < category_fraction
    grouped, free = order[grouped_mask], order[~grouped_mask]
    category_rank = rng.permutation(int(categories.max()) + 1)
    grouped = grouped[np.argsort(category_rank[categories[grouped]], kind="stable")]
    # Interleave the two lists evenly by their relative positions.
    positions = np.concatenate([(np.arange(len(grouped)) + 0.5) / max(1, len(grouped)),
                                (np.arange(len(free)) + 0.5) / max(1, len(free))])
    return np.concatenate([grouped, free])[np.argsort(positions, kind="stable")]
