"""Linear probes: multinomial logistic regression on frozen vectors, fit on the train split only."""

from __future__ import annotations

import warnings

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


def classification_scores(truth: np.ndarray, predicted: np.ndarray) -> dict:
    """top1 (accuracy), weighted F1 (class F1 weighted by test support) and macro F1 over the true classes."""
    classes = np.unique(truth)
    return {"top1": float(accuracy_score(truth, predicted)),
            "weighted_f1": float(f1_score(truth, predicted, average="weighted", zero_division=0)),
            "macro_f1": float(f1_score(truth, predicted, labels=classes, average="macro", zero_division=0)),
            "test_products": int(len(truth)), "classes": int(len(classes))}
