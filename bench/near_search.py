"""Recall of the Spark engine's partitioned near-duplicate search against exact search, on real descriptors
and at 1M descriptor views.

The partitioned search (`eclip/data/spark/cells.py`, what the executor tasks run) is called here directly, cell
by cell in this process: its answer does not depend on which machine runs which cell, and Spark on one
machine would only add time.

1. Real: the descriptors of fashion-dev with K offers per product (`make_offers`: crops, pads, borders,
   watermarks, re-encodes), (N, 2, 335). Exact pairs: `dedup.near_duplicate_pairs` (flat exact search); the
   partitioned pairs for a sweep of cells and probes; recall (and extra pairs, which must be none) at the
   search threshold (`--near-duplicate-verify-threshold`, the lowest cosine prepare looks at) and at
   `--near-duplicate-threshold`.
2. 1M views (500,000 rows of 2 views), built from the real ones: each synthetic original is a mixture
   normalize((1 - t) a + t b) of two random real products' descriptors (t ~ U(0.2, 0.5), view by view), so it lies
   where real descriptors lie but is none of them; a quarter of the rows are edited copies of another
   synthetic row: that row plus a real edit displacement (the descriptor of a real offer minus its source
   product's, view by view) scaled by U(0.5, 1.5), so near-duplicate pairs have the cosines real edits give.
   Exact pairs of a uniform sample of rows (every pair with a sampled row: a flat range search of their views
   against all 1M), the partitioned search in full with the default cells and probe, and the recall of a probe
   sweep from the cell assignment (a pair is found iff the home cell of one of its views is among the other's
   probes, since a cell's search is exact: the full run checks this).

Writes bench/results/near_search.json and .md. The machine may be shared: timings are indicative only.
Usage: .venv/bin/python bench/near_search.py [--rows 500000] [--sample-rows 3000]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path

import faiss
import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from eclip.data.catalog import read_catalog  # noqa: E402
from eclip.data.config import PrepareConfig  # noqa: E402
from eclip.data.dedup import near_duplicate_pairs  # noqa: E402
from eclip.data.images import ImageLimits, decode_image, near_duplicate_descriptor  # noqa: E402
from eclip.data.offers import make_offers  # noqa: E402
from eclip.data.spark.cells import (SAMPLE_PER_CELL, best_per_pair, cell_count, probe_cells,  # noqa: E402
                                    search_cell, train_centroids)

FASHION = REPO.parent / "shared" / "data" / "fashion-dev"
RESULTS = REPO / "bench" / "results"
PROBE_SWEEP = 8
REAL_SWEEP = [(32, 2), (32, 3), (128, 2), (128, 3), (128, 4), (512, 4)]  # (cells, probe)


def _describe(paths: list[str]) -> np.ndarray:
    return np.stack([near_duplicate_descriptor(decode_image(Path(p).read_bytes(), ImageLimits())[0]) for p in paths])


def real_descriptors(work: Path, per_product: int) -> tuple[np.ndarray, np.ndarray]:
    """(N, V, D) descriptors of fashion-dev's offers and (N,) each offer's source product, cached in `work`."""
    cache = work / f"descriptors-k{per_product}.npz"
    if not cache.is_file():
        offers = work / f"offers-all-k{per_product}"
        make_offers(FASHION / "catalog.csv", offers, per_product=per_product, seed=0, workers=2)
        rows = [r for batch in read_catalog(offers / "catalog.csv") for r in batch.to_pylist()]
        paths = [str(offers / r["image"]) for r in rows]
        with ProcessPoolExecutor(2, mp_context=get_context("forkserver")) as pool:
            parts = list(pool.map(_describe, [paths[i:i + 500] for i in range(0, len(paths), 500)]))
        np.savez(cache, vectors=np.concatenate(parts), source=np.array([r["catalog_id"] for r in rows]))
    saved = np.load(cache)
    return saved["vectors"], saved["source"]


def sample_views(vectors: np.ndarray, cells: int, seed: int = 0) -> np.ndarray:
    """The centroids' training sample, SAMPLE_PER_CELL views per cell, as the driver draws it."""
    flat = vectors.reshape(-1, vectors.shape[-1])
    return flat[np.random.default_rng(seed).choice(len(flat), min(len(flat), SAMPLE_PER_CELL * cells), replace=False)]


def partitioned_pairs(vectors: np.ndarray, threshold: float, cells: int, probe: int, seed: int = 0):
    """The Spark engine's search, cell by cell in this process: (left, right, similarity), rows as ids."""
    n, views, dim = vectors.shape
    flat = vectors.reshape(-1, dim)
    centroids = train_centroids(sample_views(vectors, cells, seed), cells)
    near = probe_cells(flat, centroids, probe)  # (n * V, P)
    rows = np.repeat(np.arange(n), views)
    found = [[], [], []]
    cell_of = near.reshape(-1)
    order = np.argsort(cell_of, kind="stable")
    bounds = np.searchsorted(cell_of[order], np.arange(len(centroids) + 1))
    width = near.shape[1]
    for cell in range(len(centroids)):
        records = order[bounds[cell]:bounds[cell + 1]]  # positions in (n * V * P)
        view, rank = records // width, records % width
        home = rank == 0
        if not home.any():
            continue
        left, right, similarity = search_cell(rows[view], flat[view], home, threshold)
        for part, values in zip(found, (left, right, similarity)):
            part.append(values)
    left, right, similarity = (np.concatenate(part) for part in found)
    return best_per_pair(left, right, similarity, n), centroids


def recall(found: set, exact: set) -> dict:
    return {"exact_pairs": len(exact), "found": len(found & exact), "extra": len(found - exact),
            "recall": round(len(found & exact) / max(1, len(exact)), 5)}


def real_sweep(vectors: np.ndarray, low: float, high: float, sweep: list[tuple[int, int]]) -> dict:
    start = time.perf_counter()
    left, right, similarity = near_duplicate_pairs(vectors, low)
    exact_seconds = time.perf_counter() - start
    exact = {t: set(zip(left[similarity >= t].tolist(), right[similarity >= t].tolist())) for t in (low, high)}
    out = {"rows": len(vectors), "views": int(vectors.shape[0] * vectors.shape[1]),
           "exact_seconds": round(exact_seconds, 2), "runs": []}
    for cells, probe in sweep:
        start = time.perf_counter()
        (pl, pr, ps), _ = partitioned_pairs(vectors, low, cells, probe)
        seconds = time.perf_counter() - start
        run = {"cells": cells, "probe": probe, "seconds": round(seconds, 2)}
        for t in (low, high):
            keep = ps >= t
            run[str(t)] = recall(set(zip(pl[keep].tolist(), pr[keep].tolist())), exact[t])
        out["runs"].append(run)
        print(run, flush=True)
    return out


def synthetic(vectors: np.ndarray, source: np.ndarray, rows: int, seed: int = 0) -> np.ndarray:
    """(rows, V, D) unit descriptors made from the real ones (the module docstring says how)."""
    rng = np.random.default_rng(seed)
    originals = np.flatnonzero(np.r_[True, source[1:] != source[:-1]])  # offer 0 of each product
    first_of = originals[np.searchsorted(originals, np.arange(len(source)), side="right") - 1]
    edited = np.flatnonzero(np.arange(len(source)) != first_of)
    edits = vectors[edited] - vectors[first_of[edited]]  # (E, V, D) real edit displacements
    out = np.empty((rows, *vectors.shape[1:]), np.float32)
    copies = rows // 4
    mixed = rows - copies
    for start in range(0, mixed, 50_000):
        stop = min(mixed, start + 50_000)
        a = vectors[rng.choice(originals, stop - start)]
        b = vectors[rng.choice(originals, stop - start)]
        t = rng.uniform(0.2, 0.5, (stop - start, 1, 1)).astype(np.float32)
        out[start:stop] = (1 - t) * a + t * b
    copied = rng.integers(0, mixed, copies)
    scale = rng.uniform(0.5, 1.5, (copies, 1, 1)).astype(np.float32)
    out[mixed:] = out[copied] + scale * edits[rng.integers(0, len(edits), copies)]
    out /= np.maximum(np.linalg.norm(out, axis=2, keepdims=True), 1e-12)
    return out[rng.permutation(rows)]  # copies anywhere in row order, as re-uploads are


def sampled_exact(vectors: np.ndarray, sampled: np.ndarray, threshold: float) -> dict[float, set]:
    """Every pair (left < right, best cosine) with a sampled row, by flat search of the sampled views."""
    n, views, dim = vectors.shape
    index = faiss.IndexFlatIP(dim)
    index.add(vectors.reshape(-1, dim))
    queries = vectors[sampled].reshape(-1, dim)
    lims, cosines, found = index.range_search(queries, threshold)
    a = np.repeat(np.repeat(sampled, views), np.diff(lims).astype(np.int64))
    b = found // views
    other = a != b
    return best_per_pair(np.minimum(a, b)[other], np.maximum(a, b)[other], cosines[other], n)


def colocated(near: np.ndarray, views: int, left: np.ndarray, right: np.ndarray, vectors: np.ndarray,
              threshold: float, probe: int) -> np.ndarray:
    """Whether each pair has a view pair at cosine >= threshold whose cells meet: the home of one among the
    first `probe` cells of the other (what the cell search finds)."""
    hit = np.zeros(len(left), bool)
    for va in range(views):
        for vb in range(views):
            close = np.einsum("nd,nd->n", vectors[left, va], vectors[right, vb]) >= threshold
            a, b = near[left * views + va], near[right * views + vb]
            meet = (a[:, :probe] == b[:, :1]).any(1) | (b[:, :probe] == a[:, :1]).any(1)
            hit |= close & meet
    return hit


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--per-product", type=int, default=3)
    parser.add_argument("--rows", type=int, default=500_000, help="synthetic rows (2 views each)")
    parser.add_argument("--sample-rows", type=int, default=3000, help="rows whose pairs are searched exactly at 1M")
    parser.add_argument("--colocation-only", action="store_true",
                        help="at 1M, only the recall from the cell assignment, not the full partitioned search "
                             "(minutes instead of an hour on 2 busy cores); writes near_search-colocation.*")
    parser.add_argument("--skip-real", action="store_true", help="skip the real-descriptor sweep")
    args = parser.parse_args()
    config = PrepareConfig()
    low, high = config.near_duplicate_verify_threshold, config.near_duplicate_threshold
    work = RESULTS / "near-work"
    work.mkdir(parents=True, exist_ok=True)
    vectors, source = real_descriptors(work, args.per_product)
    print(f"real descriptors {vectors.shape}", flush=True)
    real = None if args.skip_real else real_sweep(vectors, low, high, REAL_SWEEP)

    big = synthetic(vectors, source, args.rows)
    n, views, _ = big.shape
    cells, probe = cell_count(n * views, config.near_duplicate_cells), config.near_duplicate_probe
    sampled = np.sort(np.random.default_rng(1).choice(n, args.sample_rows, replace=False))
    start = time.perf_counter()
    el, er, es = sampled_exact(big, sampled, low)
    exact_seconds = time.perf_counter() - start
    print(f"1M: {len(el)} exact pairs of {len(sampled)} sampled rows in {exact_seconds:.0f} s", flush=True)
    at_1m = {"rows": n, "views": n * views, "cells": cells, "probe": probe, "sampled_rows": len(sampled),
             "exact_seconds_sampled": round(exact_seconds, 1)}
    if args.colocation_only:
        centroids = train_centroids(sample_views(big, cells), cells)
    else:
        start = time.perf_counter()
        (pl, pr, ps), centroids = partitioned_pairs(big, low, cells, probe)
        at_1m.update(partitioned_seconds=round(time.perf_counter() - start, 1), partitioned_pairs=len(pl))
        mine = np.isin(pl, sampled) | np.isin(pr, sampled)
        for t in (low, high):
            exact = set(zip(el[es >= t].tolist(), er[es >= t].tolist()))
            keep = mine & (ps >= t)
            at_1m[str(t)] = recall(set(zip(pl[keep].tolist(), pr[keep].tolist())), exact)
    near = probe_cells(big.reshape(-1, big.shape[2]), centroids, PROBE_SWEEP)  # (n * V, 8): the sweep's cells
    homes = np.bincount(near[:, 0], minlength=len(centroids))
    at_1m["views_per_cell"] = {"median": int(np.median(homes)), "max": int(homes.max())}
    probes = {}
    for p in range(1, PROBE_SWEEP + 1):
        hit = colocated(near, views, el, er, big, low, p)
        probes[p] = {str(t): round(float(hit[es >= t].mean()), 5) for t in (low, high)}
        print("co-location, probe", p, probes[p], flush=True)
    at_1m["colocation_recall_by_probe"] = probes
    if not args.colocation_only:
        at_1m["colocation_equals_search"] = bool(colocated(near, views, el, er, big, low, probe).sum()
                                                 == at_1m[str(low)]["found"])
    result = {"machine": f"{os.cpu_count()} cores, shared with other work: timings indicative",
              "thresholds": {"search": low, "near_duplicate": high}, "real_offers": real, "synthetic_1m": at_1m,
              "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)}
    name = "near_search-colocation" if args.colocation_only else "near_search"
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"{name}.json").write_text(json.dumps(result, indent=2))
    lines = []
    if real:
        lines += [f"Real fashion-dev offers: {real['rows']} rows, {real['views']} views; exact search "
                  f"{real['exact_seconds']} s", "",
                  f"| cells | probe | recall >= {low} | recall >= {high} | extra pairs | seconds |",
                  "| --- | --- | --- | --- | --- | --- |"]
        lines += [f"| {r['cells']} | {r['probe']} | {r[str(low)]['recall']} ({r[str(low)]['found']}/"
                  f"{r[str(low)]['exact_pairs']}) | {r[str(high)]['recall']} | {r[str(low)]['extra']} | {r['seconds']} |"
                  for r in real["runs"]]
        lines.append("")
    cell_sizes = at_1m["views_per_cell"]
    lines += [f"Synthetic: {n} rows, {n * views} views, {cells} cells (views living in a cell: median "
              f"{cell_sizes['median']}, max {cell_sizes['max']}), probe {probe}; {len(el)} exact pairs of "
              f"{len(sampled)} sampled rows", "", f"| measure | recall >= {low} | recall >= {high} |", "| --- | --- | --- |"]
    if not args.colocation_only:
        lines.append(f"| partitioned search, {at_1m['partitioned_seconds']} s | {at_1m[str(low)]['recall']} "
                     f"({at_1m[str(low)]['found']}/{at_1m[str(low)]['exact_pairs']}) | {at_1m[str(high)]['recall']} |")
    lines += [f"| co-location, probe {p} | {v[str(low)]} | {v[str(high)]} |" for p, v in probes.items()]
    table = "\n".join(lines)
    (RESULTS / f"{name}.md").write_text(table + "\n")
    print(table)


if __name__ == "__main__":
    main()
