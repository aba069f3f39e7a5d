"""Cross-modal retrieval (e-CLIP §3.4): a title's positives are all images of its catalog group, and the other
way round. Recall@K is the share of queries with at least one positive among their K nearest items, over the
test split's titles and images (`run_retrieval`)."""

from __future__ import annotations

import numpy as np

from eclip.eval.config import EvalConfig
from eclip.eval.data import EvalData, TaskOutput
from eclip.eval.representation import Representation
from eclip.eval.similarity import cosine


def recall_curve(similarity: np.ndarray, query_groups: np.ndarray, gallery_groups: np.ndarray,
                 max_k: int) -> np.ndarray:
    """(Q, G) similarities -> recall@k for k = 1..max_k, shape (max_k,). Queries without any positive in the
    gallery are left out (they cannot be scored)."""
    max_k = min(max_k, similarity.shape[1])
    has_positive = np.isin(query_groups, gallery_groups)
    similarity, query_groups = similarity[has_positive], query_groups[has_positive]
    if len(query_groups) == 0:
        return np.zeros(max_k)
    top = np.argpartition(-similarity, max_k - 1, axis=1)[:, :max_k]  # (Q, K) unordered
    order = np.argsort(-np.take_along_axis(similarity, top, axis=1), axis=1, kind="stable")
    top = np.take_along_axis(top, order, axis=1)
    hits = gallery_groups[top] == query_groups[:, None]  # (Q, K)
    first_hit = np.where(hits.any(axis=1), hits.argmax(axis=1), max_k)
    return np.array([(first_hit < k).mean() for k in range(1, max_k + 1)])


def retrieval_scores(image: np.ndarray, text: np.ndarray, groups: np.ndarray, ks: list[int],
                     max_k: int) -> tuple[dict, dict[str, np.ndarray]]:
    """Image (N, D) and text (N, D) rows of the same N products -> ({t2i: {r1..}, i2t: {...}}, curves)."""
    text_to_image = cosine(text, image)  # (N, N)
    curves = {"t2i": recall_curve(text_to_image, groups, groups, max_k),
              "i2t": recall_curve(text_to_image.T, groups, groups, max_k)}
    scores = {direction: {f"r{k}": float(curve[min(k, len(curve)) - 1]) for k in ks}
              for direction, curve in curves.items()}
    return scores, curves


def run_retrieval(rep: Representation, data: EvalData, config: EvalConfig) -> TaskOutput:
    views = rep.views["test"]
    scores, curves = retrieval_scores(views["image"], views["text"], data.column("test", "group_id"),
                                      config.recall_ks, config.curve_max_k)
    return TaskOutput(scores, curves)
