"""A small metapath2vec++ run on the real fashion-dev catalogue (7,905 products)."""

import numpy as np
import pytest

from eclip.graph.build import build_product_graph
from eclip.graph.config import GraphEvalConfig
from eclip.graph.evaluate import Features, category_labels, evaluate
from eclip.graph.skipgram import train_skipgram
from eclip.graph.walks import generate_walks


@pytest.mark.slow
def test_fashion_embeddings_beat_the_majority_class(fashion_products):
    graph = build_product_graph(fashion_products)
    walks = generate_walks(graph, ("product-brand-product-usage-product", "product-brand-product-color-product"),
                           walks_per_node=1, walk_length=11, seed=0)
    model, stats = train_skipgram(walks, graph.node_type_ids(), dim=32, window=2, negatives=5, epochs=1,
                                  batch_size=2048, lr=0.2, seed=0)
    assert stats.last_loss < 0.75 * stats.first_loss
    products = Features("metapath2vec++", graph.names["product"].tolist(), model.center[:len(graph.names["product"])].numpy())
    report = evaluate([products], category_labels(fashion_products, 2),
                      GraphEvalConfig(train_fractions=(0.5,), repeats=1, min_class_size=20))
    scores, majority = report["methods"]
    assert report["products"] > 7500 and report["classes"] > 20
    # Walks saw brands, usages and colours only, never a category; the categories still show through.
    assert scores["macro_f1"]["0.5"] > 5 * majority["macro_f1"]["0.5"]
    assert scores["micro_f1"]["0.5"] > majority["micro_f1"]["0.5"] + 0.1
    assert scores["nmi"] > 0.1
