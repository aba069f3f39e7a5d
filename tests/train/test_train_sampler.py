from __future__ import annotations

import numpy as np

from eclip.train.sampler import mixed_order


def test_an_order_is_a_permutation_drawn_from_its_key():
    categories = np.repeat(np.arange(5), 40)
    order = mixed_order(200, [3, 0], categories, 0.5)
    assert sorted(order) == list(range(200))
    assert np.array_equal(order, mixed_order(200, [3, 0], categories, 0.5))  # a function of the key
    assert not np.array_equal(mixed_order(200, [4, 0]), mixed_order(200, [3, 0]))
    assert not np.array_equal(mixed_order(200, [3, 1]), mixed_order(200, [3, 0]))


def test_category_batches_hold_few_categories_plus_a_random_share():
    categories = np.repeat(np.arange(40), 50)  # 40 categories of 50
    rng = np.random.default_rng(0)
    categories = categories[rng.permutation(len(categories))]
    plain = mixed_order(2000, [0, 0])
    grouped = mixed_order(2000, [0, 0], categories, 0.5)
    plain_counts = [len(set(categories[plain[i:i + 64]])) for i in range(0, 1280, 64)]
    grouped_batches = [grouped[i:i + 64] for i in range(0, 1280, 64)]
    # Half of each batch comes from ~1-2 categories, so the batch spans far fewer categories.
    assert np.mean([len(set(categories[b])) for b in grouped_batches]) < np.mean(plain_counts) - 5
    top_share = [np.bincount(categories[b]).max() / 64 for b in grouped_batches]
    assert 0.2 < np.mean(top_share) < 0.6
    assert sorted(grouped) == list(range(2000))  # every item still appears exactly once


def _siblings_in_batch(order: np.ndarray, groups: np.ndarray, batch: int, batches: int) -> float:
    """Share of the offers that have a sibling in the catalogue and find one in their own batch."""
    found, having = 0, 0
    sizes = np.bincount(groups)
    for start in range(0, batch * batches, batch):
        members = groups[order[start:start + batch]]
        counts = np.bincount(members, minlength=len(sizes))
        having += int((sizes[members] > 1).sum())
        found += int((counts[members] > 1).sum())
    return found / having


def test_group_batches_keep_catalog_groups_together():
    rng = np.random.default_rng(0)
    groups = rng.permutation(np.repeat(np.arange(700), rng.integers(1, 4, size=700)))  # groups of 1-3 offers
    categories = groups % 7
    for kind in ({}, {"categories": categories, "category_fraction": 0.5}):
        order = mixed_order(len(groups), [0, 0], groups=groups, **kind)
        assert sorted(order) == list(range(len(groups)))  # still a permutation
        runs = groups[order][1:] != groups[order][:-1]
        assert runs.sum() + 1 == len(set(groups))  # each group is one contiguous run
    plain = _siblings_in_batch(mixed_order(len(groups), [0, 0]), groups, 64, 30)
    together = _siblings_in_batch(mixed_order(len(groups), [0, 0], groups=groups), groups, 64, 30)
    assert plain < 0.1 and together > 0.9  # only groups cut by a batch boundary lose their sibling
    half = mixed_order(len(groups), [0, 0], groups=groups, group_fraction=0.5)
    assert sorted(half) == list(range(len(groups)))
    assert 0.35 < _siblings_in_batch(half, groups, 64, 30) < 0.65
