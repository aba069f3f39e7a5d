"""Meta-path guided random walks (metapath2vec §3.2), vectorized over all walks at once.

A meta-path such as product-brand-product is a cycle of node types; a walk repeats it
(product, brand, product, brand, ...) and at each step moves to a uniformly random neighbour of the next
type. All walks advance together: one numpy gather per step position, never a Python loop per walk or per
neighbour. A walk whose node has no neighbour of the next type stops there; the rest of its row is -1.
"""

from __future__ import annotations

import numpy as np

from eclip.errors import EclipError
from eclip.graph.build import HeteroGraph


def parse_metapath(text: str, graph: HeteroGraph) -> tuple[str, ...]:
    """"product-brand-product" -> ("product", "brand", "product"), checked against the graph."""
    types = tuple(part.strip() for part in text.split("-"))
    if len(types) < 3 or types[0] != types[-1]:
        raise EclipError(f"meta-path {text!r}: needs at least three node types and must end on the type it starts "
                         f"with, e.g. product-brand-product")
    unknown = [t for t in types if t not in graph.names]
    if unknown:
        raise EclipError(f"meta-path {text!r}: the graph has no node type {unknown[0]!r}; types: {', '.join(graph.types)}")
    for a, b in zip(types, types[1:]):
        if (a, b) not in graph.relations:
            raise EclipError(f"meta-path {text!r}: no edges between {a} and {b}; "
                             f"linked types: {', '.join(sorted(f'{x}-{y}' for x, y in graph.relations))}")
    return types


def metapath_walks(graph: HeteroGraph, metapath: tuple[str, ...], walks_per_node: int, walk_length: int,
                   rng: np.random.Generator) -> np.ndarray:
    """(W, walk_length) int32 global node ids, -1 after a dead end; `walks_per_node` walks from every node of
    the start type that has a neighbour of the second type (the others could not take a single step)."""
    offsets = graph.offsets
    period = len(metapath) - 1
    first = graph.relations[(metapath[0], metapath[1])]
    starts = np.flatnonzero(np.diff(first.indptr) > 0)
    current = np.repeat(starts, walks_per_node)                      # (W,) local ids of the current nodes
    walks = np.full((len(current), walk_length), -1, dtype=np.int32)
    walks[:, 0] = offsets[metapath[0]] + current
    alive = np.arange(len(current))                                  # rows of the walks still going
    for step in range(1, walk_length):
        source, target = metapath[(step - 1) % period], metapath[step % period]
        relation = graph.relations[(source, target)]
        degree = relation.degree(current)
        going = degree > 0
        alive, current, degree = alive[going], current[going], degree[going]
        offset_in_row = np.minimum((rng.random(len(current)) * degree).astype(np.int64), degree - 1)
        pick = relation.indptr[current] + offset_in_row
        current = relation.indices[pick]
        walks[alive, step] = offsets[target] + current
    return walks


def generate_walks(graph: HeteroGraph, metapaths: tuple[str, ...], walks_per_node: int, walk_length: int,
                   seed: int) -> np.ndarray:
    """The walks of every meta-path, stacked; meta-path i draws from its own stream seeded by (seed, i)."""
    if graph.num_nodes >= np.iinfo(np.int32).max:
        raise EclipError(f"graph has {graph.num_nodes} nodes; walks store int32 ids")
    parsed = [parse_metapath(text, graph) for text in metapaths]
    return np.concatenate([metapath_walks(graph, path, walks_per_node, walk_length, np.random.default_rng([seed, i]))
                           for i, path in enumerate(parsed)])
