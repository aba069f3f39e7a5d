"""Stage 2 on Spark: the local engine's global decisions as group-bys, connected components and one call per
component.

- duplicate product ids: a window per product_id, the first row wins;
- boilerplate titles: distinct image hashes per title_norm over `--boilerplate-max-images`;
- exact keys (title, image hash): each row linked to the first row of its key, a star per key;
- near-duplicate images: the partitioned search and the ORB verification of `near.py`, in executor tasks;
  the pairs become edges too.

A row's decision depends only on the rows it is linked to, directly or through others, so the links' connected
components are decided independently: `groupBy(component).applyInArrow(decide_component)`, which calls the
local engine's own per-group rule, `dedup.resolve_component`.
"""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
from pyspark.sql import DataFrame, SparkSession, Window
from pyspark.sql import functions as F

from eclip.data.config import PrepareConfig
from eclip.data.dedup import resolve_component
from eclip.data.spark.components import connected_components
from eclip.data.spark.near import near_pairs

DECISION = pa.schema([("row", pa.int64()), ("reason", pa.string()), ("detail", pa.string()),
                      ("weak_catalog", pa.string()), ("group_id", pa.string()), ("product_id", pa.string()),
                      ("method", pa.string()), ("kept", pa.bool_())])
_DECISION_DDL = ("row long, reason string, detail string, weak_catalog string, group_id string, "
                 "product_id string, method string, kept boolean")
_EXACT = {"title": "title_norm", "image_hash": "image_hash"}


def decide_component(rows: pa.Table, methods: tuple[str, ...], weak_catalogs: bool, max_group: int) -> pa.Table:
    """The decisions of one connected component: rows (row, product_id, catalog_id, title_norm, image_hash,
    near: the earlier rows it is a near-duplicate of) -> DECISION, one row each."""
    row_ids = rows.column("row").to_pylist()
    product_ids = rows.column("product_id").to_pylist()
    exact = {m: rows.column(_EXACT[m]).to_pylist() for m in methods if m in _EXACT}
    near = None
    if "image_embedding" in methods:
        pairs = [(int(i), j) for j, earlier in zip(row_ids, rows.column("near").to_pylist()) for i in earlier or ()]
        near = ([i for i, _ in pairs], [j for _, j in pairs])
    outcome = resolve_component(row_ids, rows.column("catalog_id").to_pylist(), product_ids, exact, near,
                                weak_catalogs, max_group)
    product_of = dict(zip(row_ids, product_ids))
    group = [product_of[g] if g is not None else None for g in outcome.group]
    detail = [f"duplicate_of={product_of[d]}" if r is not None else None
              for r, d in zip(outcome.reason, outcome.duplicate_of)]
    return pa.table([row_ids, outcome.reason, detail, outcome.weak_catalog, group, product_ids, outcome.method,
                     [r is None for r in outcome.reason]], schema=DECISION)


def decide(spark: SparkSession, spool: Path, config: PrepareConfig) -> tuple[DataFrame, DataFrame, dict]:
    """(decisions: row, reason, detail, weak_catalog for every row stage 2 rejects or gives a weak catalog;
    groups: DUPLICATE_GROUPS_SCHEMA's columns), both checkpointed, and the report's figures of the groups (their
    size histogram, how many were resolved keep-first for their size)."""
    spooled = spark.read.parquet(str(spool))
    catalog = F.col("catalog_id") if "catalog_id" in spooled.columns else F.lit(None).cast("string")
    candidates = spooled.where(F.col("reject_reason").isNull()).select(
        "row", "product_id", "title_norm", "image_hash", catalog.alias("catalog_id"))
    by_id = Window.partitionBy("product_id").orderBy("row")
    ranked = candidates.withColumn("id_rank", F.row_number().over(by_id)).withColumn("first_row", F.first("row").over(by_id))
    same_id = ranked.where(F.col("id_rank") > 1).select(
        "row", F.lit("duplicate_product_id").alias("reason"),
        F.concat(F.lit("same product_id as row "), F.col("first_row").cast("string")).alias("detail"))
    firsts = ranked.where(F.col("id_rank") == 1).drop("id_rank", "first_row")
    limit = config.boilerplate_max_images
    boilerplate = (firsts.groupBy("title_norm").agg(F.countDistinct("image_hash").alias("images"))
                   .where(F.col("images") > limit))
    boilerplate_rows = firsts.join(boilerplate, "title_norm").select(
        "row", F.lit("title_boilerplate").alias("reason"),
        F.format_string(f"title shared by %d distinct images (limit {limit})", "images").alias("detail"))
    remaining = firsts.join(boilerplate, "title_norm", "left_anti").localCheckpoint(eager=True)

    methods = config.dedup_methods()
    edges = [remaining.join(remaining.groupBy(_EXACT[m]).agg(F.min("row").alias("dst")), _EXACT[m])
             .where(F.col("row") != F.col("dst")).select(F.col("row").alias("src"), "dst")
             for m in methods if m in _EXACT]
    near = near_pairs(spark, remaining, spool, config) if "image_embedding" in methods else None
    if near is not None:
        edges.append(near)
    early = same_id.unionByName(boilerplate_rows).withColumn("weak_catalog", F.lit(None).cast("string"))
    if not edges:
        return early.localCheckpoint(eager=True), spark.createDataFrame([], _DECISION_DDL).select(
            "group_id", "product_id", "row", "method", "kept"), {"duplicate_group_sizes": {},
                                                                   "keep_first_duplicate_groups": 0}
    all_edges = edges[0]
    for more in edges[1:]:
        all_edges = all_edges.unionByName(more)
    components = connected_components(all_edges)
    members = remaining.join(components, remaining["row"] == components["vertex"]).drop("vertex")
    if near is not None:
        earlier = near.groupBy("src").agg(F.collect_list("dst").alias("near"))
        members = members.join(earlier, members["row"] == earlier["src"], "left").drop("src")
    else:
        members = members.withColumn("near", F.lit(None).cast("array<long>"))
    weak_catalogs, max_group = config.weak_catalogs, config.max_duplicate_group
    decided = (members.groupBy("component")
               .applyInArrow(lambda table: decide_component(table, methods, weak_catalogs, max_group), _DECISION_DDL)
               .localCheckpoint(eager=True))
    sizes = sorted((row["size"], row["groups"]) for row in components.groupBy("component")
                   .agg(F.count("*").alias("size")).groupBy("size").agg(F.count("*").alias("groups")).collect())
    figures = {"duplicate_group_sizes": {str(size): groups for size, groups in sizes},
               "keep_first_duplicate_groups": sum(groups for size, groups in sizes if size > max_group)}
    changed = decided.where(F.col("reason").isNotNull() | F.col("weak_catalog").isNotNull())
    decisions = early.unionByName(changed.select("row", "reason", "detail", "weak_catalog"))
    groups = decided.where(F.col("group_id").isNotNull()).select("group_id", "product_id", "row", "method", "kept")
    return decisions.localCheckpoint(eager=True), groups, figures
