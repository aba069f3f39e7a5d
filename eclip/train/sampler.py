"""Which training pairs form each batch: a deterministic, resumable stream over epochs.

Each epoch is a permutation drawn from (seed, epoch). With category batches, a share `category_fraction` of
the epoch is laid out category by category (categories in random order, items shuffled within) and spread
evenly among the remaining, randomly ordered items: any window of B consecutive items then holds about
fraction x B items from a few categories (hard negatives) and the rest from anywhere. With group batches, the
offers of one catalog group are then pulled together at the place of the group's first offer, so that a batch
holds whole groups (except where a group straddles two batches) and the catalogue soft labels of the `eclip`
objective act on every offer that has a sibling; uniform batches of B out of N pairs meet a sibling only about
B / N of the time; `group_fraction` pulls together only that share of the groups (drawn anew each epoch), so a
batch keeps more distinct products. Batches are windows of the stream, so the batch size may change from step to
step.
"""

from __future__ import annotations

import numpy as np


class BatchStream:
    def __init__(self, size: int, seed: int, categories: np.ndarray | None = None, category_fraction: float = 0.0,
                 groups: np.ndarray | None = None, group_fraction: float = 1.0):
        """size: number of pairs; categories: (size,) integer category codes, or None for plain shuffling;
        groups: (size,) integer catalog group codes to keep together, or None; group_fraction: the share of the
        groups kept together."""
        if size <= 0:
            raise ValueError("cannot sample batches from an empty set")
        self.size = size
        self.seed = seed
        self.categories = categories
        self.groups = groups
        self.group_fraction = group_fraction
        self.category_fraction = category_fraction if categories is not None else 0.0
        self.epoch = 0
        self.cursor = 0
        self._order = self._epoch_order(0)

    def _epoch_order(self, epoch: int) -> np.ndarray:
        order = self._shuffled(epoch)
        if self.groups is None:
            return order
        position = np.empty(self.size, dtype=np.int64)
        position[order] = np.arange(self.size)
        n_groups = int(self.groups.max()) + 1
        first = np.full(n_groups, self.size, dtype=np.int64)
        np.minimum.at(first, self.groups, position)  # each group's earliest place in the shuffled order
        gathered = np.random.default_rng([self.seed, epoch, 1]).random(n_groups) < self.group_fraction
        place = np.where(gathered[self.groups], first[self.groups], position)  # the others keep their own place
        return order[np.argsort(place[order], kind="stable")]

    def _shuffled(self, epoch: int) -> np.ndarray:
        rng = np.random.default_rng([self.seed, epoch])
        order = rng.permutation(self.size)
        if self.category_fraction == 0.0:
            return order
        grouped_mask = rng.random(self.size) < self.category_fraction
        grouped, free = order[grouped_mask], order[~grouped_mask]
        category_rank = rng.permutation(int(self.categories.max()) + 1)
        grouped = grouped[np.argsort(category_rank[self.categories[grouped]], kind="stable")]
        # Interleave the two lists evenly by their relative positions.
        positions = np.concatenate([(np.arange(len(grouped)) + 0.5) / max(1, len(grouped)),
                                    (np.arange(len(free)) + 0.5) / max(1, len(free))])
        return np.concatenate([grouped, free])[np.argsort(positions, kind="stable")]

    def next(self, batch_size: int) -> np.ndarray:
        """The next `batch_size` indices, running on into the next epoch when this one is used up."""
        parts, needed = [], batch_size
        while needed:
            take = self._order[self.cursor:self.cursor + needed]
            parts.append(take)
            needed -= len(take)
            self.cursor += len(take)
            if self.cursor == self.size:
                self.epoch, self.cursor = self.epoch + 1, 0
                self._order = self._epoch_order(self.epoch)
        return np.concatenate(parts)

    def state_dict(self) -> dict:
        return {"epoch": self.epoch, "cursor": self.cursor}

    def load_state_dict(self, state: dict) -> None:
        self.epoch, self.cursor = int(state["epoch"]), int(state["cursor"])
        self._order = self._epoch_order(self.epoch)
