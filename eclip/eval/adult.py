"""Adult / restricted product recognition: a binary probe's probability, scored by ROC AUC and by the
precision it keeps when it must find at least 90% of the restricted products. `run_adult` fits the probe on
train, its C and view chosen on val by ROC AUC like the classification heads' (`classification.py`)."""

from __future__ import annotations

import numpy as np
from sklearn.metrics import roc_auc_score

from eclip.eval.classification import probe_view, probe_views
from eclip.eval.config import EvalConfig
from eclip.eval.data import EvalData, SkipTask, TaskOutput
from eclip.eval.matching import average_precision, precision_recall
from eclip.eval.probe import select_probe
from eclip.eval.representation import Representation
from eclip.index.embed import SPLITS


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


def run_adult(rep: Representation, data: EvalData, config: EvalConfig) -> TaskOutput:
    labels = {split: data.column(split, "adult") for split in SPLITS}
    known = {split: np.flatnonzero([v is not None for v in labels[split]]) for split in SPLITS}
    train_y = labels["train"][known["train"]].astype(bool)
    test_y = labels["test"][known["test"]].astype(bool)
    if len(set(train_y)) < 2 or len(set(test_y)) < 2:
        raise SkipTask("the adult column is empty or one-valued in train or test")
    val_y = labels["val"][known["val"]].astype(bool)
    two_valued = len(set(val_y)) == 2 and "val" in rep.views  # AUC, which chooses C and the view, needs both values

    def val_auc(truth, probe, features):
        return roc_auc_score(truth, probe.predict_proba(features)[:, 1])

    fitted = {view: select_probe(rep.views["train"][view][known["train"]], train_y,
                                 rep.views["val"][view][known["val"]] if two_valued else None,
                                 val_y if two_valued else None, config.probe_cs, config.probe_max_iter, val_auc)
              for view in probe_views(rep, config)}
    view = probe_view(rep, config, {v: on_val for v, (_, on_val) in fitted.items()})
    probe = fitted[view][0]
    scores, curve = adult_scores(probe.predict_proba(rep.views["test"][view][known["test"]])[:, 1], test_y)
    scores.update(probe_c=float(probe.C), probe_view=view)
    threshold = 0.5
    if val_y.any() and "val" in rep.views:  # the decision threshold `eclip predict` applies: 90% recall on val
        val_scores = probe.predict_proba(rep.views["val"][view][known["val"]])[:, 1]
        threshold = precision_at_recall(val_scores, val_y, 0.9)[1]
    return TaskOutput(scores, {"pr": curve}, {"adult": (probe, view), "adult_threshold": threshold})
