from __future__ import annotations

import numpy as np

from eclip.train.sampler import BatchStream


def test_each_epoch_is_a_permutation_and_batches_cross_epochs():
    stream = BatchStream(10, seed=0)
    first = np.concatenate([stream.next(4), stream.next(4)])
    wrap = stream.next(4)  # 2 from epoch 0, 2 from epoch 1
    assert sorted(np.concatenate([first, wrap[:2]])) == list(range(10))
    assert stream.epoch == 1 and stream.cursor == 2


def test_deterministic_and_resumable_mid_epoch():
    categories = np.repeat(np.arange(5), 40)
    reference = BatchStream(200, seed=3, categories=categories, category_fraction=0.5)
    expected = [reference.next(size) for size in (16, 32, 48, 64, 80, 96)]
    stream = BatchStream(200, seed=3, categories=categories, category_fraction=0.5)
    got = [stream.next(size) for size in (16, 32, 48)]
    resumed = BatchStream(200, seed=3, categories=categories, category_fraction=0.5)
    resumed.load_state_dict(stream.state_dict())
    got += [resumed.next(size) for size in (64, 80, 96)]
    assert all(np.array_equal(a, b) for a, b in zip(got, expected))
    assert not np.array_equal(BatchStream(200, seed=4).next(16), BatchStream(200, seed=3).next(16))


def test_category_batches_hold_few_categories_plus_a_random_share():
    categories = np.repeat(np.arange(40), 50)  # 40 categories of 50
    rng = np.random.default_rng(0)
    categories = categories[rng.permutation(len(categories))]
    plain = BatchStream(2000, seed=0)
    grouped = BatchStream(2000, seed=0, categories=categories, category_fraction=0.5)
    plain_counts = [len(set(categories[plain.next(64)])) for _ in range(20)]
    grouped_batches = [grouped.next(64) for _ in range(20)]
    # Half of each batch comes from ~1-2 categories, so the batch spans far fewer categories.
    assert np.mean([len(set(categories[b])) for b in grouped_batches]) < np.mean(plain_counts) - 5
    top_share = [np.bincount(categories[b]).max() / 64 for b in grouped_batches]
    assert 0.2 < np.mean(top_share) < 0.6
    # Every item still appears exactly once per epoch.
    epoch = BatchStream(2000, seed=0, categories=categories, category_fraction=0.5)
    assert sorted(np.concatenate([epoch.next(500) for _ in range(4)])) == list(range(2000))


def _siblings_in_batch(stream: BatchStream, groups: np.ndarray, batch: int, batches: int) -> float:
    """Share of the offers that have a sibling in the catalogue and find one in their own batch."""
    found, having = 0, 0
    sizes = np.bincount(groups)
    for _ in range(batches):
        members = groups[stream.next(batch)]
        counts = np.bincount(members, minlength=len(sizes))
        having += int((sizes[members] > 1).sum())
        found += int((counts[members] > 1).sum())
    return found / having


def test_group_batches_keep_catalog_groups_together():
    rng = np.random.default_rng(0)
    groups = rng.permutation(np.repeat(np.arange(700), rng.integers(1, 4, size=700)))  # groups of 1-3 offers
    categories = groups % 7
    for kind in ({}, {"categories": categories, "category_fraction": 0.5}):
        stream = BatchStream(len(groups), seed=0, groups=groups, **kind)
        order = stream._order
        assert sorted(order) == list(range(len(groups)))  # still a permutation
        runs = groups[order][1:] != groups[order][:-1]
        assert runs.sum() + 1 == len(set(groups))  # each group is one contiguous run
    plain = _siblings_in_batch(BatchStream(len(groups), seed=0), groups, 64, 30)
    together = _siblings_in_batch(BatchStream(len(groups), seed=0, groups=groups), groups, 64, 30)
    assert plain < 0.1 and together > 0.9  # only groups cut by a batch boundary lose their sibling
    half = BatchStream(len(groups), seed=0, groups=groups, group_fraction=0.5)
    assert sorted(half._order) == list(range(len(groups)))
    assert 0.35 < _siblings_in_batch(half, groups, 64, 30) < 0.65


def test_group_batches_are_deterministic_and_resumable():
    groups = np.repeat(np.arange(100), 2)
    reference = BatchStream(200, seed=5, groups=groups)
    expected = [reference.next(48) for _ in range(6)]
    stream = BatchStream(200, seed=5, groups=groups)
    got = [stream.next(48) for _ in range(2)]
    resumed = BatchStream(200, seed=5, groups=groups)
    resumed.load_state_dict(stream.state_dict())
    got += [resumed.next(48) for _ in range(4)]
    assert all(np.array_equal(a, b) for a, b in zip(got, expected))
