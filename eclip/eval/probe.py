"""Linear probes: multinomial logistic regression on frozen vectors, fit on the train split only, its
regularization strength chosen on val (CLIP's linear-probe protocol)."""

from __future__ import annotations

import os
import warnings
from concurrent.futures import ThreadPoolExecutor
from typing import Callable, TypeVar

import numpy as np
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import accuracy_score, f1_score
from threadpoolctl import threadpool_limits


T = TypeVar("T")


def side_by_side(jobs: list[Callable[[], T]]) -> list[T]:
    """Run small scikit-learn fits at once, one per core, each with one BLAS thread: on such small matrices a
    multi-threaded BLAS spends more time coordinating than computing (4 Cs of the colour probe on 2 cores: 12.1 s
    one after the other with the default threads, 3.0 s with one thread, 1.6 s two at a time)."""
    with warnings.catch_warnings(), threadpool_limits(limits=1, user_api="blas"), \
            ThreadPoolExecutor(max(1, min(len(jobs), os.cpu_count() or 1))) as pool:
        # A capped iteration count is a deliberate time budget; the scores say how good the fit is.
        warnings.simplefilter("ignore", ConvergenceWarning)
        return list(pool.map(lambda job: job(), jobs))


def fit_probe(features, labels: np.ndarray, c: float, max_iter: int) -> LogisticRegression:
    """Features (N, D) dense or sparse, labels (N,) strings or booleans."""
    return LogisticRegression(C=c, max_iter=max_iter).fit(features, labels)


def select_probe(train_features, train_labels: np.ndarray, val_features, val_labels: np.ndarray | None,
                 cs: list[float], max_iter: int, val_score: Callable) -> tuple[LogisticRegression, float | None]:
    """One probe per C of `cs` fit on train; kept: the one with the highest `val_score(val_labels, probe,
    val_features)` (ties: the smaller C), returned with that score. The chosen strength is `probe.C`. Without val
    labels (None or empty) the middle C of the sorted list is fit alone, and the score is None. Each C is fit
    from scratch: a warm start from the previous C stops at once, since scikit-learn's tolerance is met by the
    nearby optimum."""
    cs = sorted(cs)
    scored = val_labels is not None and len(val_labels) > 0
    if not scored:
        cs = [cs[len(cs) // 2]]
    probes = side_by_side([lambda c=c: fit_probe(train_features, train_labels, c, max_iter) for c in cs])
    if not scored:
        return probes[0], None
    scores = [float(val_score(val_labels, probe, val_features)) for probe in probes]
    best = int(np.argmax(scores))  # the first of equal scores: the smaller C
    return probes[best], scores[best]


def classification_scores(truth: np.ndarray, predicted: np.ndarray) -> dict:
    """top1 (accuracy), weighted F1 (class F1 weighted by test support) and macro F1 over the true classes."""
    classes = np.unique(truth)
    return {"top1": float(accuracy_score(truth, predicted)),
            "weighted_f1": float(f1_score(truth, predicted, average="weighted", zero_division=0)),
            "macro_f1": float(f1_score(truth, predicted, labels=classes, average="macro", zero_division=0)),
            "test_products": int(len(truth)), "classes": int(len(classes))}
