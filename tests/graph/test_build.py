import numpy as np
import pyarrow as pa
import pytest

from eclip.errors import EclipError
from eclip.graph.build import HeteroGraph, brands_from_titles, build_product_graph


def _neighbours(graph, node_type, product):
    relation = graph.relations[("product", node_type)]
    local = relation.indices[relation.indptr[product]:relation.indptr[product + 1]]
    return sorted(graph.names[node_type][local].tolist())


def test_product_graph_nodes_and_edges():
    products = pa.table({
        "row": [1, 2, 3],
        "product_id": ["a", "b", "c"],
        "title": ["Puma Men Black Shoes", "Puma Women Red Top", "Titan Women Silver Watch"],
        "brand": [None, "PUMA ", "Titan"],
        "category": ["Footwear > Shoes > Casual", "Apparel > Topwear", None],
        "attr_color": ["Black", "Red", "  "],
        "catalog_id": ["k1", None, "k1"],
    })
    graph = build_product_graph(products, brand_min_count=1)
    assert graph.types == ["product", "brand", "category1", "category2", "category3", "color", "catalog"]
    assert graph.names["product"].tolist() == ["a", "b", "c"]
    assert sorted(graph.names["brand"].tolist()) == ["puma", "titan"]  # column wins, title fills the null, lower-cased
    assert sorted(graph.names["category2"].tolist()) == ["Apparel > Topwear", "Footwear > Shoes"]
    assert graph.names["category3"].tolist() == ["Footwear > Shoes > Casual"]
    assert _neighbours(graph, "brand", 0) == _neighbours(graph, "brand", 1) == ["puma"]
    assert _neighbours(graph, "category3", 1) == []            # a two-level path has no level-3 node
    assert _neighbours(graph, "category1", 2) == []            # null category
    assert _neighbours(graph, "color", 2) == []                # blank attribute
    assert _neighbours(graph, "catalog", 0) == _neighbours(graph, "catalog", 2) == ["k1"]
    # Both directions are stored and agree.
    back = graph.relations[("catalog", "product")]
    assert sorted(back.indices[back.indptr[0]:back.indptr[1]].tolist()) == [0, 2]
    offsets = graph.offsets
    assert offsets["product"] == 0 and offsets["brand"] == 3 and graph.num_nodes == 3 + 2 + 2 + 2 + 1 + 2 + 1
    assert graph.node_type_ids().tolist() == [0, 0, 0, 1, 1, 2, 2, 3, 3, 4, 5, 5, 6]


def test_without_titles_only_products_with_a_brand_value_have_a_brand_node():
    products = pa.table({"product_id": ["a", "b", "c"], "brand": ["Puma", None, "Titan"],
                         "attr_color": ["Black", "Red", "Black"]})
    graph = build_product_graph(products)
    assert _neighbours(graph, "brand", 0) == ["puma"] and _neighbours(graph, "brand", 1) == []
    assert _neighbours(graph, "color", 1) == ["Red"]
    no_brand = build_product_graph(products.drop_columns(["brand"]))
    assert no_brand.types == ["product", "color"]


def test_brands_from_titles():
    titles = ["Turtle Check Men Navy Blue Shirt", "Turtle Men Solid Ties", "Turtle Men Grey Sweater",
              "United Colors of Benetton Women Tops", "United Colors Of Benetton Men Shirt",
              "Lakme Absolute Lip Colour", "Men Black Socks", "", None, "Nike Men's Running Shoe"]
    assert brands_from_titles(titles) == ["turtle", "turtle", "turtle", "united colors of benetton",
                                          "united colors of benetton", "lakme", None, None, None, "nike"]
    # Below min_count a line is not a known brand: "turtle check" then stays whole.
    assert brands_from_titles(titles[:2], min_count=3) == ["turtle check", "turtle"]


def test_seller_tags_before_the_brand_are_dropped():
    titles = []
    for brand in ("Puma", "Nike", "Titan"):
        titles += [f"{brand} Men A", f"{brand} Women B", f"[Free shipping] {brand} Men C",
                   f"[Free shipping] {brand} Women D", f"NEW {brand} Men E", f"NEW {brand} Women F"]
    titles += ["New Balance Men Shoes", "New Balance Women Shoes", "[Free shipping] Men Socks", "Official Store Puma Men Cap"]
    brands = brands_from_titles(titles)
    assert brands[:18] == ["puma"] * 6 + ["nike"] * 6 + ["titan"] * 6
    # "new" is a tag, but not in front of "balance", which is no known brand; a tag before "Men" leaves no brand;
    # a prefix seen once is no tag.
    assert brands[18:] == ["new balance", "new balance", None, "official store puma"]
    # Two different brands after a prefix are not enough to make it a tag.
    assert brands_from_titles(titles[:12])[2] == "[free shipping] puma"


def test_from_edges_merges_duplicates():
    graph = HeteroGraph.from_edges({"product": ["p", "q"], "brand": ["x"]},
                                   {("product", "brand"): (np.array([0, 0, 1]), np.array([0, 0, 0]))})
    assert graph.relations[("product", "brand")].indptr.tolist() == [0, 1, 2]
    assert graph.relations[("brand", "product")].indices.tolist() == [0, 1]


@pytest.mark.parametrize("table, message", [
    (pa.table({"title": ["x"]}), "no product_id column"),
    (pa.table({"product_id": pa.array([], pa.string())}), "empty"),
    (pa.table({"row": [4, 9], "product_id": ["a", "a"], "title": ["A Men x", "A Men y"]}), "rows 4 and 9: duplicate product_id 'a'"),
    (pa.table({"product_id": ["a", None], "title": ["A Men x", "A Men y"]}), "row 2: empty product_id"),
    (pa.table({"product_id": ["a"], "title": ["A Men x"], "attr_catalog": ["z"]}), "attr_catalog"),
])
def test_bad_products_table(table, message):
    with pytest.raises(EclipError, match=message):
        build_product_graph(table)


def test_bad_edges():
    with pytest.raises(EclipError, match="contain no '-'"):
        HeteroGraph.from_edges({"product": ["p"], "sub-type": ["x"]}, {})
    with pytest.raises(EclipError, match="local ids"):
        HeteroGraph.from_edges({"product": ["p"], "brand": ["x"]}, {("product", "brand"): ([0], [1])})


def test_fashion_graph(fashion_products):
    graph = build_product_graph(fashion_products)
    n = fashion_products.num_rows
    assert len(graph.names["product"]) == n == 7905
    assert len(graph.names["category1"]) == 6 and len(graph.names["color"]) == 46
    for node_type in ("brand", "category1", "category2", "category3", "gender", "color", "season", "usage"):
        assert np.all(np.diff(graph.relations[("product", node_type)].indptr) <= 1)
    assert np.all(np.diff(graph.relations[("product", "category3")].indptr) == 1)
    brands = dict(zip(graph.names["product"], graph.names["brand"][graph.relations[("product", "brand")].indices]))
    assert brands["15970"] == "turtle" and brands["59263"] == "titan"  # "Turtle Check Men ...", "Titan Women ..."
    assert 250 < len(graph.names["brand"]) < 400
