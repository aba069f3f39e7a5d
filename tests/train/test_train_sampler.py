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
