"""Linear probes: multinomial logistic regression on frozen vectors, fit on the train split only, its
regularization strength chosen on val (CLIP's linear-probe protocol)."""

from __future__ import annotations

import warnings
from typing import Callable

import numpy as np
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import accuracy_score, f1_score


def fit_probe(features, labels: np.ndarray, c: float, max_iter: int) -> LogisticRegression:
    """Features (N, D) dense or sparse, labels (N,) strings or booleans."""
    probe = LogisticRegression(C=c, max_iter=max_iter)
    with warnings.catch_warnings():
        # A capped iteration count is a deliberate time budget; the scores say how good the fit is.
        warnings.simplefilter("ignore", ConvergenceWarning)
        return probe.fit(features, labels)


def select_probe(train_features, train_labels: np.ndarray, val_features, val_labels: np.ndarray | None,
                 cs: list[float], max_iter: int, val_score: Callable) -> LogisticRegression:
    """One probe per C of `cs` fit on train; kept: the one with the highest `val_score(val_labels, probe,
    val_features)` (ties: the smaller C). The chosen strength is `probe.C`. Without val labels (None or empty)
    the middle C of the sorted list is fit alone. Each C is fit from scratch: a warm start from the previous C
    stops at once, since scikit-learn's tolerance is met by the nearby optimum."""
    cs = sorted(cs)
    if val_labels is None or len(val_labels) == 0:
        return fit_probe(train_features, train_labels, cs[len(cs) // 2], max_iter)
    best, best_score = None, -np.inf
    for c in cs:
        probe = fit_probe(train_features, train_labels, c, max_iter)
        score = val_score(val_labels, probe, val_features)
        if score > best_score:
            best, best_score = probe, score
    return best


def classification_scores(truth: np.ndarray, predicted: np.ndarray) -> dict:
    """top1 (accuracy), weighted F1 (class F1 weighted by test support) and macro F1 over the true classes."""
    classes = np.unique(truth)
    return {"top1": float(accuracy_score(truth, predicted)),
            "weighted_f1": float(f1_score(truth, predicted, average="weighted", zero_division=0)),
            "macro_f1": float(f1_score(truth, predicted, labels=classes, average="macro", zero_division=0)),
            "test_products": int(len(truth)), "classes": int(len(classes))}
