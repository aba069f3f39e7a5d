"""Product clustering: average-linkage agglomerative clustering on cosine distance, cut at the true number of
clusters, scored by NMI and ARI against the test split's catalog groups and its leaf categories
(`run_clustering`). Deterministic: no seeds."""

from __future__ import annotations

import numpy as np
from sklearn.cluster import AgglomerativeClustering
from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score

from eclip.eval.config import EvalConfig
from eclip.eval.data import EvalData, SkipTask, TaskOutput, has_pairs, is_labelled, pair_similarity
from eclip.eval.representation import Representation


def cluster(similarity: np.ndarray, n_clusters: int) -> np.ndarray:
    """(N, N) similarity -> (N,) cluster ids."""
    if n_clusters >= len(similarity):
        return np.arange(len(similarity))
    distance = np.clip(1.0 - similarity, 0.0, None).astype(np.float64)
    np.fill_diagonal(distance, 0.0)
    distance = (distance + distance.T) / 2  # exact symmetry, whatever the float rounding of A @ B.T
    model = AgglomerativeClustering(n_clusters=n_clusters, metric="precomputed", linkage="average")
    return model.fit_predict(distance)


def clustering_scores(similarity: np.ndarray, labels: np.ndarray) -> dict:
    predicted = cluster(similarity, len(np.unique(labels)))
    return {"nmi": float(normalized_mutual_info_score(labels, predicted)),
            "ari": float(adjusted_rand_score(labels, predicted))}


def run_clustering(rep: Representation, data: EvalData, config: EvalConfig) -> TaskOutput:
    rows = data.pair_rows["test"]
    similarity = pair_similarity(rep, data, "test")
    groups = data.column("test", "group_id")[rows]
    categories = data.column("test", "category")[rows]
    scores = {}
    if has_pairs(groups):
        scores.update(clustering_scores(similarity, groups), clusters=len(set(groups)), products=len(groups))
    labelled = np.flatnonzero(is_labelled(categories))
    if len(set(categories[labelled])) >= 2:
        scores["category"] = {**clustering_scores(similarity[np.ix_(labelled, labelled)], categories[labelled].astype(str)),
                              "clusters": len(set(categories[labelled])), "products": len(labelled)}
    if not scores:
        raise SkipTask("the test products have neither shared catalog groups nor two categories")
    return TaskOutput(scores)
