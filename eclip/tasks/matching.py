"""Product matching (same catalog group or not) from a similarity matrix.

Two views, as in product-matching competitions:
- pairs: every unordered pair of products is a positive when both share a group; average precision over all
  pairs, and F1 at a threshold chosen on `val` and applied to `test`;
- kNN with threshold: each product predicts itself plus its nearest `k` products at or above a threshold; F1
  between that set and its true group, averaged over products (Shopee's metric), threshold chosen on `val`.
"""

from __future__ import annotations

import numpy as np


def pair_scores(similarity: np.ndarray, groups: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(N, N) similarity -> scores and same-group labels of the N (N - 1) / 2 unordered pairs."""
    upper = np.triu_indices(len(groups), k=1)
    return similarity[upper], groups[upper[0]] == groups[upper[1]]


def precision_recall(scores: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Precision, recall and threshold at every distinct score, highest threshold first (tied scores move
    together, as in scikit-learn)."""
    labels = np.asarray(labels, dtype=bool)
    order = np.argsort(-scores, kind="stable")
    scores, labels = scores[order], labels[order]
    last_of_tie = np.r_[np.flatnonzero(np.diff(scores)), len(scores) - 1]
    true_positives = np.cumsum(labels)[last_of_tie]
    predicted = last_of_tie + 1
    precision = true_positives / predicted
    recall = true_positives / max(labels.sum(), 1)
    return precision, recall, scores[last_of_tie]


def average_precision(scores: np.ndarray, labels: np.ndarray) -> float:
    """Sum over thresholds of (recall gain) x precision: scikit-learn's average_precision_score."""
    precision, recall, _ = precision_recall(scores, labels)
    return float(np.sum(np.diff(np.r_[0.0, recall]) * precision))


def best_f1(scores: np.ndarray, labels: np.ndarray) -> tuple[float, float]:
    """-> (the highest F1 over thresholds, that threshold); predicting positive means score >= threshold."""
    precision, recall, thresholds = precision_recall(scores, labels)
    f1 = 2 * precision * recall / np.maximum(precision + recall, 1e-12)
    best = int(np.argmax(f1))
    return float(f1[best]), float(thresholds[best])


def f1_at(scores: np.ndarray, labels: np.ndarray, threshold: float) -> float:
    predicted = scores >= threshold
    true_positives = np.sum(predicted & labels)
    return float(2 * true_positives / max(predicted.sum() + labels.sum(), 1))


def neighbours(similarity: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The k most similar other products of each row: indices (N, k) and similarities (N, k), best first."""
    similarity = similarity.copy()
    np.fill_diagonal(similarity, -np.inf)
    k = min(k, len(similarity) - 1)
    top = np.argpartition(-similarity, k - 1, axis=1)[:, :k] if k else np.zeros((len(similarity), 0), int)
    values = np.take_along_axis(similarity, top, axis=1)
    order = np.argsort(-values, axis=1, kind="stable")
    return np.take_along_axis(top, order, axis=1), np.take_along_axis(values, order, axis=1)


def knn_f1(similarity: np.ndarray, groups: np.ndarray, thresholds, k: int) -> np.ndarray:
    """Mean per-product F1 of {itself} + {neighbours among the k nearest with similarity >= t}, for each t."""
    top, values = neighbours(similarity, k)
    same = groups[top] == groups[:, None]  # (N, k)
    _, inverse, counts = np.unique(groups, return_inverse=True, return_counts=True)
    group_size = counts[inverse]  # (N,) the true set, itself included
    thresholds = np.atleast_1d(np.asarray(thresholds, dtype=np.float64))
    kept = values[None, :, :] >= thresholds[:, None, None]  # (T, N, k)
    predicted = 1 + kept.sum(axis=2)
    correct = 1 + (kept & same[None]).sum(axis=2)
    return (2 * correct / (predicted + group_size[None, :])).mean(axis=1)


def best_knn_threshold(similarity: np.ndarray, groups: np.ndarray, k: int, steps: int = 201) -> tuple[float, float]:
    """-> (best mean kNN F1, its threshold) over a grid spanning the neighbours' similarities."""
    _, values = neighbours(similarity, k)
    finite = values[np.isfinite(values)]
    if finite.size == 0:
        return 1.0, 1.0
    grid = np.linspace(finite.min(), finite.max() + 1e-6, steps)
    f1 = knn_f1(similarity, groups, grid, k)
    best = int(np.argmax(f1))
    return float(f1[best]), float(grid[best])


def matching_scores(val_similarity: np.ndarray, val_groups: np.ndarray, test_similarity: np.ndarray,
                    test_groups: np.ndarray, k: int) -> tuple[dict, dict]:
    """Thresholds from `val`, scores on `test` -> ({ap, f1, threshold, knn_f1, knn_threshold, ...}, PR curve)."""
    val_scores, val_labels = pair_scores(val_similarity, val_groups)
    test_scores, test_labels = pair_scores(test_similarity, test_groups)
    _, threshold = best_f1(val_scores, val_labels)
    _, knn_threshold = best_knn_threshold(val_similarity, val_groups, k)
    precision, recall, _ = precision_recall(test_scores, test_labels)
    scores = {
        "ap": average_precision(test_scores, test_labels),
        "f1": f1_at(test_scores, test_labels, threshold),
        "threshold": threshold,
        "best_test_f1": best_f1(test_scores, test_labels)[0],  # the oracle ceiling, for reading only
        "knn_f1": float(knn_f1(test_similarity, test_groups, knn_threshold, k)[0]),
        "knn_threshold": knn_threshold,
        "positive_pairs": int(test_labels.sum()),
        "pairs": int(len(test_labels)),
    }
    return scores, {"precision": precision, "recall": recall}


def image_weight_on_val(image_similarity: np.ndarray, text_similarity: np.ndarray, groups: np.ndarray,
                        steps: int = 11) -> float:
    """The weight w in w * image + (1 - w) * text cosine that gives the best pair F1 on val (groups (N,),
    similarities (N, N)). Offers of one product share a photo and word its title differently, while distinct
    products of one line share a title pattern: how much each view counts is a property of the catalogue,
    chosen on val like the threshold. Summing the two cosines also leaves out the cross-modal terms that the
    cosine of normalize(image + text) brings in."""
    weights = np.linspace(0, 1, steps)
    f1 = [best_f1(*pair_scores(w * image_similarity + (1 - w) * text_similarity, groups))[0] for w in weights]
    return round(float(weights[int(np.argmax(f1))]), 4)
