"""Product matching (same catalog group or not) from a similarity matrix.

Two views, as in product-matching competitions:
- pairs: every unordered pair of products is a positive when both share a group; average precision over all
  pairs, and F1 at a threshold chosen on `val` and applied to `test`;
- kNN with threshold: each product predicts itself plus its nearest `k` products at or above a threshold; F1
  between that set and its true group, averaged over products (Shopee's metric), threshold chosen on `val`.
Both score a similarity that may first be expanded over each product's nearest neighbours, as chosen on `val`.
`run_matching` scores the fused vector, or with two views the image and text cosines weighted on `val`.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from eclip.eval.config import EvalConfig
from eclip.eval.data import EvalData, SkipTask, TaskOutput, has_pairs, pair_similarity
from eclip.eval.representation import Representation


IMAGE_WEIGHTS = tuple(round(0.1 * step, 1) for step in range(11))  # w in w * image + (1 - w) * text cosine


def pair_scores(similarity: np.ndarray, groups: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(N, N) similarity -> scores and same-group labels of the N (N - 1) / 2 unordered pairs."""
    upper = np.triu_indices(len(groups), k=1)
    return similarity[upper], groups[upper[0]] == groups[upper[1]]


def precision_recall(scores: np.ndarray, labels: np.ndarray,
                     positives: int | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Precision, recall and threshold at every distinct score, highest threshold first (tied scores move
    together, as in scikit-learn). `positives`: the recall denominator when `scores` are only the top ones."""
    labels = np.asarray(labels, dtype=bool)
    order = np.argsort(-scores, kind="stable")
    scores, labels = scores[order], labels[order]
    last_of_tie = np.r_[np.flatnonzero(np.diff(scores)), len(scores) - 1]
    true_positives = np.cumsum(labels)[last_of_tie]
    predicted = last_of_tie + 1
    precision = true_positives / predicted
    recall = true_positives / max(labels.sum() if positives is None else positives, 1)
    return precision, recall, scores[last_of_tie]


def average_precision(scores: np.ndarray, labels: np.ndarray) -> float:
    """Sum over thresholds of (recall gain) x precision: scikit-learn's average_precision_score."""
    precision, recall, _ = precision_recall(scores, labels)
    return float(np.sum(np.diff(np.r_[0.0, recall]) * precision))


def best_f1(scores: np.ndarray, labels: np.ndarray, top_per_positive: int = 50) -> tuple[float, float]:
    """-> (the highest F1 over thresholds, that threshold); predicting positive means score >= threshold.

    Only the highest-scoring pairs are sorted (whole tie groups, fewer than `top_per_positive` per positive
    pair): any lower threshold predicts m > (their count) pairs, so its F1 = 2 TP / (m + P) <= 2 P / (m + P);
    when the best F1 among them is above that bound it is the best of all, otherwise every pair is sorted.
    Matching sorts millions of pairs for each setup it tries on val, and this sorts a few percent of them."""
    labels = np.asarray(labels, dtype=bool)
    positives = int(labels.sum())
    cut = top_per_positive * max(positives, 1)
    if cut < len(scores):
        top = scores > np.partition(scores, len(scores) - cut)[len(scores) - cut]
        if top.any():
            f1, threshold = _best_f1(*precision_recall(scores[top], labels[top], positives))
            if f1 > 2 * positives / (top.sum() + 1 + positives):
                return f1, threshold
    return _best_f1(*precision_recall(scores, labels))


def _best_f1(precision: np.ndarray, recall: np.ndarray, thresholds: np.ndarray) -> tuple[float, float]:
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


def expand_similarity(similarity: np.ndarray, k: int, alpha: float) -> np.ndarray:
    """(N, N) similarity after every product is replaced by itself plus its k most similar others, weighted by
    similarity ** alpha, then renormalized (database-side augmentation / alpha query expansion, Radenovic et
    al. 2018, as in the Shopee matching competition's top solutions). Offers of one product share most of their
    neighbours and move together; a look-alike of another product shares fewer. With unit rows E and the
    weights W the expanded rows are W E, so only the similarity S = E E^T is needed: the result is W S W^T with
    its diagonal scaled to 1, for any representation. k = 0 returns the similarity unchanged."""
    if k == 0:
        return similarity
    top, values = neighbours(similarity, k)  # (N, k) each
    count, k = top.shape
    weights = sp.csr_matrix((np.c_[np.ones(count), np.clip(values, 0, None) ** alpha].ravel(),
                             (np.repeat(np.arange(count), k + 1), np.c_[np.arange(count), top].ravel())),
                            shape=(count, count))
    mixed = np.asarray(weights @ (weights @ similarity).T)  # W (W S)^T = W S W^T for a symmetric S, (N, N)
    norms = np.sqrt(np.clip(np.diag(mixed), 1e-12, None))
    return (mixed / norms[:, None] / norms[None, :]).astype(np.float32)


def setup_on_val(similarity_of, weights: list, expansions: list[tuple[int, float]],
                 groups: np.ndarray) -> tuple[tuple, tuple]:
    """-> ((weight, (k, alpha)) with the best val pair F1 among `expansions`, the best without expansion:
    (weight, (0, 1.0))). `similarity_of(weight)` gives val's (N, N) similarity for an image weight. How much
    each view counts and how far to expand are properties of the catalogue (offers of one product share a photo
    and word its title differently, distinct products of one line share a title pattern), chosen on val like
    the threshold. Ties go to the first in grid order (weights, then expansions)."""
    unexpanded = (0, 1.0)
    f1 = {}
    for weight in weights:
        similarity = similarity_of(weight)
        for expansion in dict.fromkeys([*expansions, unexpanded]):
            f1[weight, expansion] = best_f1(*pair_scores(expand_similarity(similarity, *expansion), groups))[0]
    best = max((setup for setup in f1 if setup[1] in expansions), key=f1.__getitem__)
    return best, max((setup for setup in f1 if setup[1] == unexpanded), key=f1.__getitem__)


def run_matching(rep: Representation, data: EvalData, config: EvalConfig) -> TaskOutput:
    groups = {split: data.column(split, "group_id")[data.pair_rows[split]] for split in ("val", "test")}
    for split in ("val", "test"):
        if not has_pairs(groups[split]):
            raise SkipTask(f"no catalog group has two products in {split}: matching needs multi-seller offers "
                           f"(a catalog_id column, or `eclip offers`)")
    primary = {split: pair_similarity(rep, data, split) for split in ("val", "test")}
    two_views = {"image", "text"} <= set(rep.view_names())
    if two_views:  # the two towers' cosines, weighted on val
        image = {split: pair_similarity(rep, data, split, "image") for split in ("val", "test")}
        text = {split: pair_similarity(rep, data, split, "text") for split in ("val", "test")}
        weights = list(IMAGE_WEIGHTS)

        def similarity_of(split, weight):
            return weight * image[split] + (1 - weight) * text[split]
    else:
        weights = [None]

        def similarity_of(split, weight):
            return primary[split]

    def scored(weight, expansion):
        similarity = {split: expand_similarity(similarity_of(split, weight), *expansion) for split in ("val", "test")}
        return matching_scores(similarity["val"], groups["val"], similarity["test"], groups["test"],
                               config.matching_neighbours)

    (weight, expansion), unexpanded = setup_on_val(lambda w: similarity_of("val", w), weights,
                                                   config.matching_expansions(), groups["val"])
    scores, curve = scored(weight, expansion)
    plain = scores if unexpanded == (weight, expansion) else scored(*unexpanded)[0]
    scores.update(expansion_neighbours=expansion[0], expansion_alpha=expansion[1],
                  unexpanded={key: plain[key] for key in ("ap", "f1", "knn_f1")})
    if two_views:
        fused_vector = matching_scores(primary["val"], groups["val"], primary["test"], groups["test"],
                                       config.matching_neighbours)[0]
        scores.update(image_weight=weight, unexpanded_image_weight=unexpanded[0],
                      fused_vector_f1=fused_vector["f1"], fused_vector_ap=fused_vector["ap"])
    scores["products"] = len(groups["test"])
    return TaskOutput(scores, {"pr": curve})
