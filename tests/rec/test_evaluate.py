import math

import numpy as np
import pytest
import torch

from eclip.errors import EclipError
from eclip.rec.data import EvalCases
from eclip.rec.evaluate import (Popularity, evaluate, fix_mmap_threshold, full_ranks, rank_metrics,
                                 sample_negatives, sampled_ranks)


def test_rank_metrics_by_hand():
    m = rank_metrics(np.array([1, 3, 11, 25]))
    assert m["HR@10"] == 0.5 and m["HR@20"] == 0.75
    assert m["NDCG@10"] == pytest.approx((1 + 1 / 2) / 4)  # 1/log2(2) + 1/log2(4)
    assert m["NDCG@20"] == pytest.approx((1 + 1 / 2 + 1 / math.log2(12)) / 4)
    assert m["MRR"] == pytest.approx((1 + 1 / 3 + 1 / 11 + 1 / 25) / 4)


def test_full_ranks_exclude_history_and_count_ties_against_the_target():
    scores = torch.tensor([[0.9, 0.8, 0.7, 0.6, 0.5],    # items 1..5
                           [0.5, 0.5, 0.5, 0.9, 0.1]])
    histories = [np.array([1, 2]), np.array([4, 2])]
    targets = np.array([3, 2])
    # user 0: items 1, 2 excluded -> target 3 is first; user 1: item 4 excluded, the target 2 itself is in the
    # history (a repeat) but still ranked, tied with items 1 and 3 -> rank 3
    assert full_ranks(scores, histories, targets).tolist() == [1, 3]


def test_sampled_ranks():
    scores = torch.tensor([[0.1, 0.4, 0.3, 0.2, 0.9]])
    assert sampled_ranks(scores, np.array([3]), np.array([[1, 4, 5]])).tolist() == [2]
    assert sampled_ranks(scores, np.array([3]), np.array([[1, 4]])).tolist() == [1]


def test_sample_negatives_are_distinct_unseen_popular_and_reproducible():
    popularity = np.array([0, 100, 100, 100, 0, 1, 1, 1, 100, 100], dtype=float)  # index 0 unused, item 4 unseen
    interacted = [np.array([1, 2]), np.array([3])]
    negatives = sample_negatives(interacted, popularity, n=5, seed=0)
    assert negatives.shape == (2, 5)
    for row, seen in zip(negatives, interacted):
        assert len(set(row.tolist())) == 5 and not set(row.tolist()) & set(seen.tolist()) and 4 not in row
    np.testing.assert_array_equal(negatives, sample_negatives(interacted, popularity, n=5, seed=0))
    # 8 items have training interactions; user 0 interacted with 2 of them, so 6 are left to draw from.
    assert len(set(sample_negatives(interacted, popularity, n=6, seed=0)[0].tolist())) == 6
    with pytest.raises(EclipError, match=r"--negatives 7: a user has only 6 items .* pass --negatives 6 or fewer"):
        sample_negatives(interacted, popularity, n=7)


def test_evaluate_with_popularity_matches_hand_ranks():
    counts = np.array([0, 5, 9, 1, 7])  # popularity order: 2, 4, 1, 3
    cases = EvalCases(np.arange(3), [np.array([2]), np.array([1]), np.array([4])], np.array([4, 3, 2]))
    result = evaluate(Popularity(counts), cases, negatives=np.array([[1, 3], [2, 4], [1, 3]]), batch_size=2)
    # full: user 0 target 4 with 2 excluded -> 1; user 1 target 3 -> 3 (2, 4 ahead); user 2 target 2 -> 1
    assert result["full"] == rank_metrics(np.array([1, 3, 1]))
    # sampled: target 4 vs {1, 3} -> 1; target 3 vs {2, 4} -> 3; target 2 vs {1, 3} -> 1
    assert result["sampled"] == rank_metrics(np.array([1, 3, 1]))


def test_evaluate_holds_fewer_users_at_once_for_larger_catalogues(monkeypatch):
    counts = np.arange(41)  # 40 items
    rng = np.random.default_rng(0)
    cases = EvalCases(np.arange(50), [rng.integers(1, 41, 3) for _ in range(50)], rng.integers(1, 41, 50))
    whole = evaluate(Popularity(counts), cases)
    seen = []
    popularity = Popularity(counts)
    monkeypatch.setattr("eclip.rec.evaluate.SCORE_CELLS", 200)  # 5 users of 40 items at once

    def scorer(histories):
        seen.append(len(histories))
        return popularity(histories)

    assert evaluate(scorer, cases) == whole
    assert seen[0] == 16 and max(seen[1:]) == 5 and sum(seen) == 50


def test_the_mmap_threshold_is_fixed_for_large_catalogues_only():
    import ctypes.util
    import platform

    assert fix_mmap_threshold(12_101) is False
    # glibc (Linux) has mallopt; other C libraries do not, and nothing changes there.
    glibc = platform.system() == "Linux" and "musl" not in (ctypes.util.find_library("c") or "")
    assert fix_mmap_threshold(3_000_000) is glibc
