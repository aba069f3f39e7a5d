import numpy as np
import pytest

from eclip.errors import EclipError
from eclip.graph.build import HeteroGraph, build_product_graph
from eclip.graph.walks import generate_walks, metapath_walks, parse_metapath


def _edge_set(graph):
    offsets = graph.offsets
    edges = set()
    for (a, b), relation in graph.relations.items():
        sources = np.repeat(np.arange(len(relation.indptr) - 1), np.diff(relation.indptr))
        edges |= set(zip((sources + offsets[a]).tolist(), (relation.indices + offsets[b]).tolist()))
    return edges


def _check_walks(graph, walks, metapath):
    types = np.array(graph.types)[graph.node_type_ids()]
    edges = _edge_set(graph)
    period = len(metapath) - 1
    for walk in walks:
        length = int((walk >= 0).sum())
        assert np.all(walk[:length] >= 0) and np.all(walk[length:] == -1)  # -1 only after a dead end
        assert length >= 2
        for step, node in enumerate(walk[:length]):
            assert types[node] == metapath[step % period]
        for a, b in zip(walk[:length - 1], walk[1:length]):
            assert (int(a), int(b)) in edges


def test_walks_follow_metapath_and_edges(fashion_products):
    graph = build_product_graph(fashion_products.slice(0, 600))
    for text in ("product-brand-product-color-product", "product-category2-product", "brand-product-usage-product-brand"):
        metapath = parse_metapath(text, graph)
        walks = metapath_walks(graph, metapath, 2, 9, np.random.default_rng(0))
        assert len(walks) == 2 * np.count_nonzero(np.diff(graph.relations[metapath[:2]].indptr))
        _check_walks(graph, walks, metapath)


def test_dead_end_stops_the_walk():
    # p1 has a colour but no brand: product-color-product-brand-product walks reaching p1 must stop there.
    graph = HeteroGraph.from_edges({"product": ["p0", "p1"], "brand": ["b"], "color": ["c"]},
                                   {("product", "brand"): ([0], [0]), ("product", "color"): ([0, 1], [0, 0])})
    walks = metapath_walks(graph, ("product", "color", "product", "brand", "product"), 50, 7, np.random.default_rng(0))
    _check_walks(graph, walks, ("product", "color", "product", "brand", "product"))
    reached_p1 = walks[:, 2] == 1
    assert reached_p1.any() and (~reached_p1).any()
    assert np.all(walks[reached_p1, 3:] == -1) and np.all(walks[~reached_p1, 3:] >= 0)


def test_neighbours_are_drawn_uniformly():
    n = 5
    graph = HeteroGraph.from_edges({"product": [f"p{i}" for i in range(n)], "brand": ["b"]},
                                   {("product", "brand"): (np.arange(n), np.zeros(n, int))})
    walks = metapath_walks(graph, ("product", "brand", "product"), 4000, 3, np.random.default_rng(1))
    share = np.bincount(walks[:, 2], minlength=n) / len(walks)
    assert np.allclose(share, 1 / n, atol=0.01)  # 20,000 draws: a sampling bias of 1 point would show


def test_walks_are_seeded(communities):
    graph = communities
    paths = ("product-brand-product", "product-color-product-brand-product")
    first = generate_walks(graph, paths, 3, 11, seed=7)
    assert np.array_equal(first, generate_walks(graph, paths, 3, 11, seed=7))
    assert not np.array_equal(first, generate_walks(graph, paths, 3, 11, seed=8))
    assert first.dtype == np.int32 and first.shape == (2 * 3 * 24, 11)


def test_walks_never_cross_disconnected_communities(communities):
    graph = communities
    walks = generate_walks(graph, ("product-brand-product-color-product",), 20, 15, seed=0)
    side = {"a": 0, "c": 0, "b": 1, "d": 1}
    names = np.concatenate([graph.names[t] for t in graph.types])
    node_side = np.array([int(name[1:]) >= 12 if name[0] == "p" else side[name[0]] for name in names])
    assert np.all(node_side[walks] == node_side[walks[:, :1]])


@pytest.mark.parametrize("text, message", [
    ("product-brand", "at least three node types"),
    ("product-brand-color", "must end on the type it starts"),
    ("product-maker-product", "no node type 'maker'"),
    ("product-brand-color-product", "no edges between brand and color"),
])
def test_bad_metapaths(text, message, communities):
    with pytest.raises(EclipError, match=message):
        parse_metapath(text, communities)
