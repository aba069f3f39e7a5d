"""Connected components of a graph given as a DataFrame of edges, labelled by their smallest vertex.

The alternating large-star / small-star algorithm (Kiveris et al., "Connected Components in MapReduce and
Beyond", SoCC 2014): O(log^2 n) rounds of group-bys and joins on any graph, where min-label propagation needs
as many rounds as the longest path (a chain of n offers would take n). Edges are kept as (hi, lo), hi > lo; each
round rewires them toward smaller vertices without changing connectivity, and it ends when they form a star
forest: every vertex points at one smaller vertex that points nowhere. That vertex is then its component's
smallest, since a star's centre is below all its leaves. Each round's edges are checkpointed (on the executors),
so the plan stays one round long however many rounds there are.
"""

from __future__ import annotations

from pyspark.sql import DataFrame
from pyspark.sql import functions as F

MAX_ROUNDS = 200  # log^2 of any graph that fits a cluster; more means a bug, not a big graph


def _canonical(edges: DataFrame) -> DataFrame:
    return (edges.select(F.greatest("src", "dst").alias("hi"), F.least("src", "dst").alias("lo"))
            .where(F.col("hi") != F.col("lo")).distinct())


def _large_star(edges: DataFrame) -> DataFrame:
    """Every vertex's larger neighbours are connected to the smallest vertex of its neighbourhood (itself included)."""
    both = edges.select(F.col("hi").alias("u"), F.col("lo").alias("v")).unionByName(
        edges.select(F.col("lo").alias("u"), F.col("hi").alias("v")))
    smallest = both.groupBy("u").agg(F.least(F.min("v"), F.col("u")).alias("m"))
    # no distinct here: the small star that follows only takes minima and ends with one
    return both.where(F.col("v") > F.col("u")).join(smallest, "u").select(F.col("v").alias("hi"), F.col("m").alias("lo"))


def _small_star(edges: DataFrame) -> DataFrame:
    """Every vertex and its smaller neighbours are connected to the smallest of them."""
    smallest = edges.groupBy("hi").agg(F.min("lo").alias("m"))
    leaves = (edges.join(smallest, "hi").select(F.col("lo").alias("hi"), F.col("m").alias("lo"))
              .where(F.col("hi") != F.col("lo")))
    return leaves.unionByName(smallest.select("hi", F.col("m").alias("lo"))).distinct()


def _is_star_forest(edges: DataFrame) -> bool:
    several_parents = edges.groupBy("hi").count().where(F.col("count") > 1)
    parent_has_parent = edges.select(F.col("lo").alias("hi")).join(edges.select("hi"), "hi", "left_semi")
    return several_parents.select("hi").unionByName(parent_has_parent).isEmpty()  # one job, not two


def connected_components(edges: DataFrame) -> DataFrame:
    """edges (src, dst: long, undirected; self-loops and repeats allowed) -> (vertex, component) for every vertex
    on an edge, component = the smallest vertex of its connected component."""
    current = _canonical(edges).localCheckpoint(eager=True)
    for _ in range(MAX_ROUNDS):
        if _is_star_forest(current):
            break
        current = _small_star(_large_star(current)).localCheckpoint(eager=True)
    else:
        raise RuntimeError(f"connected components did not converge in {MAX_ROUNDS} rounds")
    leaves = current.select(F.col("hi").alias("vertex"), F.col("lo").alias("component"))
    centres = current.select(F.col("lo").alias("vertex"), F.col("lo").alias("component")).distinct()
    labels = leaves.unionByName(centres)
    alone = (edges.where(F.col("src") == F.col("dst")).select(F.col("src").alias("vertex")).distinct()
             .join(labels, "vertex", "left_anti"))  # a vertex whose only edge is a self-loop is its own component
    return labels.unionByName(alone.select("vertex", F.col("vertex").alias("component")))
