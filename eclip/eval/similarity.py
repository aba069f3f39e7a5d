"""Cosine similarity between row-normalized vectors, dense (numpy) or sparse (TF-IDF), always returned dense."""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp


def cosine(queries, gallery) -> np.ndarray:
    """(A, D) and (B, D) unit rows -> (A, B) float32 similarities."""
    product = queries @ gallery.T
    return np.asarray(product.toarray() if sp.issparse(product) else product, dtype=np.float32)
