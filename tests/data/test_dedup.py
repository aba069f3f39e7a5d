"""Near-duplicate search over descriptors with several views per image."""

from __future__ import annotations

import numpy as np
import pytest

from eclip.data.dedup import most_similar_per_row, near_duplicate_pairs


def unit(rows: np.ndarray) -> np.ndarray:
    return (rows / np.linalg.norm(rows, axis=-1, keepdims=True)).astype(np.float32)


def brute_force_pairs(vectors: np.ndarray, threshold: float) -> set[tuple[int, int]]:
    """Pairs i < j whose best view-to-view cosine reaches the threshold, by explicit loops."""
    n = len(vectors)
    return {(i, j) for i in range(n) for j in range(i + 1, n)
            if max(float(a @ b) for a in vectors[i] for b in vectors[j]) >= threshold}


@pytest.mark.parametrize("chunk", [1, 3, 4096])
def test_a_pair_is_found_through_any_view_once(chunk):
    rng = np.random.default_rng(0)
    vectors = unit(rng.normal(size=(12, 2, 16)))  # (N, V, D), unrelated rows
    vectors[:, 1] = unit(vectors[:, 0] + 0.3 * rng.normal(size=(12, 16)))  # each row's two views are close
    vectors[5, 0] = vectors[2, 1]  # view 0 of row 5 = view 1 of row 2: a cross-view match
    vectors[9] = vectors[4]  # both views match: still one pair
    left, right, similarity = near_duplicate_pairs(vectors, 0.99, chunk=chunk)
    found = list(zip(left.tolist(), right.tolist()))
    assert sorted(found) == sorted(brute_force_pairs(vectors, 0.99)) == [(2, 5), (4, 9)]
    best = {pair: max(float(a @ b) for a in vectors[pair[0]] for b in vectors[pair[1]]) for pair in found}
    assert similarity.tolist() == pytest.approx([best[pair] for pair in found], abs=1e-6)


def test_single_view_rows_are_the_same_search():
    rng = np.random.default_rng(1)
    vectors = unit(rng.normal(size=(40, 8)))
    vectors[30] = unit(vectors[3] + 0.05 * rng.normal(size=8))
    flat = near_duplicate_pairs(vectors, 0.9)
    viewed = near_duplicate_pairs(vectors[:, None], 0.9)
    assert [a.tolist() for a in flat[:2]] == [a.tolist() for a in viewed[:2]] == [[3], [30]]
    assert flat[2][0] == pytest.approx(float(vectors[3] @ vectors[30]), abs=1e-6)


def test_only_the_most_similar_candidates_of_each_later_row_are_kept():
    right = np.array([5, 5, 5, 7, 5, 7, 9])
    similarity = np.array([0.95, 0.99, 0.94, 0.96, 0.97, 0.96, 0.95])
    # Row 5: 0.99, 0.97 kept, 0.95 and 0.94 not; row 7: both (a tie, two slots); row 9: its only one.
    assert most_similar_per_row(right, similarity, 2).tolist() == [False, True, False, True, True, True, True]
    assert most_similar_per_row(right, similarity, 1).tolist() == [False, True, False, True, False, False, True]


def test_no_pair_above_the_threshold_is_an_empty_result():
    vectors = unit(np.eye(6, 16))  # six orthogonal rows: no two alike
    left, right, similarity = near_duplicate_pairs(vectors[:, None], 0.5)
    assert left.tolist() == right.tolist() == similarity.tolist() == []
