"""Cosine similarity between row-normalized vectors, dense (numpy) or sparse (TF-IDF), always returned dense."""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp


def normalize_rows(matrix):
    """Rows scaled to unit L2 norm (all-zero rows stay zero); dense stays dense, sparse stays sparse."""
    if sp.issparse(matrix):
        norms = np.sqrt(np.asarray(matrix.multiply(matrix).sum(axis=1))).ravel()
        return sp.diags(1.0 / np.maximum(norms, 1e-12)) @ matrix
    matrix = np.asarray(matrix, dtype=np.float32)
    return matrix / np.maximum(np.linalg.norm(matrix, axis=1, keepdims=True), 1e-12)


def cosine(queries, gallery) -> np.ndarray:
    """(A, D) and (B, D) unit rows -> (A, B) float32 similarities."""
    product = queries @ gallery.T
    return np.asarray(product.toarray() if sp.issparse(product) else product, dtype=np.float32)
