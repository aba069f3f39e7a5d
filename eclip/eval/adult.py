"""Adult / restricted product recognition: a binary probe's probability, scored by ROC AUC and by the
precision it keeps when it must find at least 90% of the restricted products."""

from __future__ import annotations

import numpy as np
from sklearn.metrics import roc_auc_score

from eclip.eval.matching import average_precision, precision_recall


def precision_at_recall(scores: np.ndarray, labels: np.ndarray, recall: float) -> tuple[float, float]:
    """-> (the best precision among thresholds reaching `recall`, the highest such threshold)."""
    precision, achieved, thresholds = precision_recall(scores, labels)
    reaching = achieved >= recall
    if not reaching.any():
        return 0.0, float("nan")
    best = int(np.argmax(np.where(reaching, precision, -1.0)))
    return float(precision[best]), float(thresholds[best])


def adult_scores(scores: np.ndarray, labels: np.ndarray) -> tuple[dict, dict]:
    labels = np.asarray(labels, dtype=bool)
    precision, recall, _ = precision_recall(scores, labels)
    return ({"auc": float(roc_auc_score(labels, scores)),
             "precision_at_recall_90": precision_at_recall(scores, labels, 0.9)[0],
             "ap": average_precision(scores, labels),
             "positives": int(labels.sum()), "test_products": int(len(labels))},
            {"precision": precision, "recall": recall})
