"""Product clustering: average-linkage agglomerative clustering on cosine distance, cut at the true number of
clusters, scored by NMI and ARI against catalog groups (or leaf categories). Deterministic: no seeds."""

from __future__ import annotations

import numpy as np
from sklearn.cluster import AgglomerativeClustering
from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score


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
