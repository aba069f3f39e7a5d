from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from eclip.graph.build import HeteroGraph, load_products

FASHION = Path(__file__).resolve().parents[2] / ".." / "shared" / "data" / "fashion-dev" / "catalog.csv"


@pytest.fixture(scope="session")
def fashion_products() -> pa.Table:
    if not FASHION.exists():
        pytest.skip(f"{FASHION} not found (shared data absent)")
    return load_products(FASHION)


@pytest.fixture
def communities() -> HeteroGraph:
    return two_communities()


def two_communities(products_per_side: int = 12, seed: int = 0) -> HeteroGraph:
    """Products 0..n-1 use brands a0, a1 and colours c0..c2; products n..2n-1 use b0, b1 and d0..d2: no edge
    crosses between the halves."""
    rng = np.random.default_rng(seed)
    n = products_per_side
    names = {"product": [f"p{i}" for i in range(2 * n)], "brand": ["a0", "a1", "b0", "b1"],
             "color": ["c0", "c1", "c2", "d0", "d1", "d2"]}
    side = np.arange(2 * n) >= n
    brand = rng.integers(0, 2, 2 * n) + 2 * side
    color = rng.integers(0, 3, 2 * n) + 3 * side
    products = np.arange(2 * n)
    return HeteroGraph.from_edges(names, {("product", "brand"): (products, brand), ("product", "color"): (products, color)})
