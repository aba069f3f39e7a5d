import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from eclip.errors import EclipError
from eclip.graph.config import GraphEvalConfig
from eclip.graph.evaluate import (Features, _majority_row, category_labels, classification_scores, clustering_nmi,
                                  concatenated, evaluate, stratified_splits)
from eclip.index.vectors import product_vectors


def test_category_labels_cut_at_level():
    products = pa.table({"product_id": [1, 2, 3, 4], "category": ["A > x > i", "A", None, " "]})
    assert category_labels(products, 1) == {"1": "A", "2": "A"}
    assert category_labels(products, 2) == {"1": "A > x"}
    with pytest.raises(EclipError, match="deeper than the category paths"):
        category_labels(products, 4)


def test_separable_features_score_perfectly_and_noise_does_not():
    rng = np.random.default_rng(0)
    y = np.repeat([0, 1, 2], 40)
    separable = np.eye(3)[y] + 0.05 * rng.standard_normal((120, 3))
    splits = stratified_splits(y, 0.5, repeats=2, seed=0)
    assert all(len(train) == 60 and np.bincount(y[train]).tolist() == [20, 20, 20] for train, _ in splits)
    assert classification_scores(separable, y, splits, c=10.0) == (1.0, 1.0)
    assert clustering_nmi(separable, y, repeats=2, seed=0) == pytest.approx(1.0)
    noise = rng.standard_normal((120, 3))
    assert classification_scores(noise, y, splits, c=10.0)[0] < 0.6
    assert clustering_nmi(noise, y, repeats=2, seed=0) < 0.2


def test_majority_row_by_hand():
    y = np.array([0] * 6 + [1] * 3 + [2] * 1)
    test = np.array([0, 1, 6, 7, 9])  # classes 0, 0, 1, 1, 2
    row = _majority_row(y, {0.5: [(np.array([2, 3, 4, 5, 8]), test)]})
    assert row["micro_f1"]["0.5"] == pytest.approx(2 / 5)
    assert row["macro_f1"]["0.5"] == pytest.approx((2 * (0.4 * 1.0) / 1.4) / 3)  # F1 of class 0 only, over 3 classes


def test_evaluate_scores_every_method_on_the_same_products():
    labels = {f"p{i}": "ab"[i % 2] for i in range(60)}
    good = Features("good", [f"p{i}" for i in range(60)], np.eye(2)[np.arange(60) % 2].astype(np.float32))
    partial = Features("partial", [f"p{i}" for i in range(50)], np.ones((50, 4), np.float32))
    report = evaluate([good, partial], labels, GraphEvalConfig(train_fractions=(0.5,), repeats=1, min_class_size=5))
    assert report["products"] == 50 and report["classes"] == 2
    methods = {row["method"]: row for row in report["methods"]}
    assert methods["good"]["macro_f1"]["0.5"] == 1.0 and methods["good"]["nmi"] == pytest.approx(1.0)
    # Constant features: the regression can only predict the majority class.
    assert methods["partial"]["micro_f1"] == methods["majority class"]["micro_f1"]
    assert set(methods) == {"good", "partial", "majority class"}


def test_concatenation_aligns_by_product_id():
    a = Features("a", ["x", "y", "z"], np.array([[3.0, 4.0], [1.0, 0.0], [0.0, 2.0]]))
    b = Features("b", ["z", "x"], np.array([[5.0], [-2.0]]))
    both = concatenated(a, b)
    assert both.product_ids == ["x", "z"]
    np.testing.assert_allclose(both.matrix, [[0.6, 0.8, -1.0], [0.0, 1.0, 1.0]])
    other = Features("e-CLIP fused", ["p1", "p2"], np.ones((2, 2)))
    with pytest.raises(EclipError, match="a and e-CLIP fused embed no product in common .*'x' and 'p1'"):
        concatenated(a, other)


def test_product_vectors(tmp_path):
    path = tmp_path / "embeddings.parquet"
    vectors = pa.FixedSizeListArray.from_arrays(pa.array([1, 2, 3, 4, 5, 6], pa.float32()), 3)
    pq.write_table(pa.table({"product_id": ["a", "b"], "fused": vectors}), path)
    ids, matrix = product_vectors(path, "fused")
    assert ids == ["a", "b"] and matrix.tolist() == [[1, 2, 3], [4, 5, 6]]
    with pytest.raises(EclipError, match="no column 'image'"):
        product_vectors(path, "image")
    pq.write_table(pa.table({"product_id": ["a", "b"], "fused": [[1.0, 2.0], [3.0]]}), path)
    with pytest.raises(EclipError, match="unequal-length"):
        product_vectors(path, "fused")
    with pytest.raises(EclipError, match="missing.parquet: no such file"):
        product_vectors(tmp_path / "missing.parquet", "fused")
    pq.write_table(pa.table({"product_id": ["a"], "fused": pa.array([["x", "y"]], pa.list_(pa.string(), 2))}), path)
    with pytest.raises(EclipError, match=r"column 'fused' is fixed_size_list<element: string>\[2\], expected a list of floats"):
        product_vectors(path, "fused")
    path.write_bytes(b"PAR1")
    with pytest.raises(EclipError, match="embeddings.parquet: not a readable Parquet file"):
        product_vectors(path, "fused")
