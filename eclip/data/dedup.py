"""Duplicate detection (e-CLIP §3.2.2): identical titles, identical 29-digit image hashes, near-duplicate images.

Each detector yields links between rows; `resolve_duplicates` then walks the rows in input order and keeps a
row unless it links to an earlier kept row of *another* catalog (two listings of one catalog are the positives
e-CLIP's soft labels want; the same picture or title under two catalogs is a false negative for contrastive
learning). Rows without a catalog_id belong to no catalog, so any link rejects them, unless weak catalogs are
asked for: then they join the earlier row's group and inherit a weak catalog_id.

Deciding against earlier *kept* rows only (no transitive closure) keeps a chain of slightly similar images from
merging a whole category into one group.
"""

from __future__ import annotations

from dataclasses import dataclass

import faiss
import numpy as np

METHOD_ORDER = ("title", "image_hash", "image_embedding")
VERIFY_PER_ROW = 3  # uncertain candidates verified per row, its most similar earlier rows


def near_duplicate_pairs(vectors: np.ndarray, threshold: float, chunk: int = 1024,
                         progress=None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """All pairs (i, j), i < j, where some view of row i and some view of row j have cosine >= threshold,
    with that best cosine: (left, right, similarity).

    vectors: (N, D) unit rows, or (N, V, D) with V views per row (a descriptor of several content boxes)."""
    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    n = len(vectors)
    views = vectors.shape[1] if vectors.ndim == 3 else 1
    flat = vectors.reshape(n * views, -1)  # (N*V, D); row r belongs to r // V
    dim = flat.shape[1]
    if n < 2:
        return np.empty(0, np.int64), np.empty(0, np.int64), np.empty(0, np.float32)
    if len(flat) <= 200_000:
        index = faiss.IndexFlatIP(dim)
    else:  # approximate beyond this size: exact search is quadratic
        nlist = int(4 * np.sqrt(len(flat)))
        index = faiss.IndexIVFFlat(faiss.IndexFlatIP(dim), dim, nlist, faiss.METRIC_INNER_PRODUCT)
        index.train(flat[np.random.default_rng(0).choice(len(flat), min(len(flat), 64 * nlist), replace=False)])
        index.nprobe = 16
    pair_keys, similarities = [], []
    for start in range(0, n, chunk):
        stop = min(n, start + chunk)
        # Each chunk is searched among the rows up to its own end only: every pair is found once, from its
        # later row, in about half the work of searching the whole index (exact search finds the same pairs;
        # the approximate IVF search probes a pair from its later row's lists only).
        index.add(flat[start * views:stop * views])
        lims, cosines, neighbours = index.range_search(flat[start * views:stop * views], threshold)
        queries = np.repeat(np.arange(start * views, stop * views), np.diff(lims).astype(np.int64)) // views
        neighbours = neighbours // views
        earlier = neighbours < queries  # never a row with itself, each pair within a chunk once
        pair_keys.append(neighbours[earlier] * n + queries[earlier])
        similarities.append(cosines[earlier])
        if progress:
            progress(stop - start)
    keys, similarity = np.concatenate(pair_keys).astype(np.int64), np.concatenate(similarities)
    order = np.lexsort((-similarity, keys))  # by pair, best view match first
    keys, similarity = keys[order], similarity[order]
    # A pair found through several views counts once, at its best (keys are >= 0, so -1 starts a run; no pairs: empty)
    first = np.diff(keys, prepend=-1) != 0
    return keys[first] // n, keys[first] % n, similarity[first].astype(np.float32)


def most_similar_per_row(right: np.ndarray, similarity: np.ndarray, k: int) -> np.ndarray:
    """Mask of the pairs that are among the k most similar of their later row `right` (ties: input order).
    A row is rejected or grouped by one link to an earlier row, so checking its few closest candidates decides
    it; a cluster of look-alikes would otherwise send n^2 pairs to verification."""
    order = np.lexsort((-similarity, right))  # by later row, most similar first
    later = right[order]
    starts = np.r_[0, np.flatnonzero(later[1:] != later[:-1]) + 1]
    rank = np.arange(len(later)) - np.repeat(starts, np.diff(np.r_[starts, len(later)]))
    keep = np.zeros(len(right), dtype=bool)
    keep[order[rank < k]] = True
    return keep


def verified_near_duplicates(vectors: np.ndarray, threshold: float, verify_threshold: float, read_images,
                             workers: int) -> tuple[np.ndarray, np.ndarray, int]:
    """Near-duplicate pairs (left, right) as `prepare` decides them, and how many pairs were verified: cosine >=
    threshold, or cosine >= verify_threshold (0: never) for one of a row's VERIFY_PER_ROW most similar earlier
    rows and confirmed by `verify.same_picture` on the images `read_images(rows)` returns."""
    from eclip.data.verify import verify_pairs
    from eclip.progress import progress_bar

    with progress_bar("near-duplicate search", len(vectors)) as advance:
        left, right, similarity = near_duplicate_pairs(vectors, min(threshold, verify_threshold or 1.0),
                                                       progress=advance)
    keep = similarity >= threshold
    uncertain = np.flatnonzero(~keep)
    uncertain = uncertain[most_similar_per_row(right[uncertain], similarity[uncertain], VERIFY_PER_ROW)]
    if len(uncertain):
        with progress_bar("verifying uncertain near-duplicates", len(uncertain)) as advance:
            keep[uncertain[verify_pairs(left[uncertain], right[uncertain], read_images, workers, advance)]] = True
    return left[keep], right[keep], len(uncertain)


@dataclass
class DuplicateDecision:
    reason: list[str | None]  # per candidate: duplicate_<method> or None (kept)
    duplicate_of: list[int | None]  # index of the earlier kept row it duplicates
    group: np.ndarray  # (N,) index of the group's first row, -1 for rows in no group
    method: list[str | None]  # the link that put the row in its group
    weak_catalog: list[str | None]  # weak catalog id assigned (weak_catalogs only)


def resolve_duplicates(catalog_ids: list[str | None], product_ids: list[str], exact_keys: dict[str, np.ndarray],
                       near_pairs: tuple[np.ndarray, np.ndarray] | None, weak_catalogs: bool) -> DuplicateDecision:
    """Greedy keep-first resolution over candidates in input order.

    exact_keys: method -> (N,) int key per row (equal keys = duplicates), -1 for no key.
    near_pairs: (i, j) arrays with i < j from `near_duplicate_pairs`, or None.
    """
    n = len(product_ids)
    earlier_neighbours: list[list[int]] = [[] for _ in range(n)]
    if near_pairs is not None:
        for i, j in zip(near_pairs[0].tolist(), near_pairs[1].tolist()):
            earlier_neighbours[j].append(i)
    catalog_key = [c if c is not None else (("weak",) if weak_catalogs else ("single", k)) for k, c in enumerate(catalog_ids)]
    kept_in_cluster: dict[str, dict[int, dict]] = {m: {} for m in exact_keys}  # method -> key -> catalog -> first kept
    reason: list[str | None] = [None] * n
    duplicate_of: list[int | None] = [None] * n
    method: list[str | None] = [None] * n
    weak_catalog: list[str | None] = [None] * n
    group = np.full(n, -1, dtype=np.int64)
    for j in range(n):
        mine = catalog_key[j]
        conflict, link = None, None
        for name in METHOD_ORDER:
            if name in exact_keys:
                key = int(exact_keys[name][j])
                if key < 0:
                    continue
                kept = kept_in_cluster[name].get(key, {})
                other = next((i for cat, i in kept.items() if cat != mine), None)
                if other is not None and conflict is None:
                    conflict = (name, other)
                if mine in kept and link is None:
                    link = (name, kept[mine])
            elif name == "image_embedding" and near_pairs is not None:
                for i in earlier_neighbours[j]:
                    if reason[i] is not None:
                        continue
                    if catalog_key[i] != mine and conflict is None:
                        conflict = (name, i)
                    elif catalog_key[i] == mine and link is None:
                        link = (name, i)
        if conflict is not None:
            name, i = conflict
            reason[j], duplicate_of[j], method[j] = f"duplicate_{name}", i, name
            group[j] = group[i] if group[i] >= 0 else i
            group[i] = group[j]
            continue
        if link is not None:
            name, i = link
            method[j] = name
            group[j] = group[i] if group[i] >= 0 else i
            group[i] = group[j]
            if catalog_ids[j] is None:
                weak_catalog[j] = weak_catalog[i] or f"dup-{product_ids[i]}"
                weak_catalog[i] = weak_catalog[j]
        for name in exact_keys:
            key = int(exact_keys[name][j])
            if key >= 0:
                kept_in_cluster[name].setdefault(key, {}).setdefault(mine, j)
    return DuplicateDecision(reason, duplicate_of, group, method, weak_catalog)
