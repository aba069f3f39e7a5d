"""Duplicate detection (e-CLIP §3.2.2): identical titles, identical 29-digit image hashes, near-duplicate images.

The detectors link candidate rows: every two rows with the same title key or image-hash key (for the enabled
methods) and every verified near-duplicate pair. A duplicate group is a connected component of these links
(`connected_components`, a union-find), so a re-upload of a listing that was itself removed as another's
duplicate lands in that other's group. `resolve_component` decides one group from nothing but its own rows and
links, so a cluster engine (group by component, then the same function per group) gives `prepare`'s answers:

- The representative is the group's earliest row (input order) and its catalog the group's catalog. Rows of
  that catalog are kept: two listings of one catalog are the positives e-CLIP's soft labels want. Every other
  row is rejected: the same picture or title under two catalogs is a false negative for contrastive learning.
- A row without a catalog_id is a catalog of its own; with weak catalogs, all such rows share one catalog, so
  those of a group whose representative has none are kept under the weak catalog_id `dup-<representative>`.
- A row's method is that of the link by which a breadth-first search from the representative reaches it
  (a shortest path; ties: title, then image hash, then embedding, then the earlier row); a rejected row's
  `duplicate_of` is the first kept row on that path back to the representative.

A chain of slightly similar images can join distinct products into one large component. A group of more than
`max_group` rows is therefore not merged whole but resolved keep-first (`_keep_first`): its rows in input order,
each compared only with the earlier *kept* rows of the group. `prepare`'s default `--max-duplicate-group` is 1,
keep-first everywhere, until the detectors' false links are fixed: merged whole, fashion-dev's groups lose a
fifth of its products to chains (docs/experiments/2026-12-07-dedup-connected-components.md).
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
    """Per row, in the order the rows were given; other rows are named by their input row number."""
    reason: list[str | None]  # duplicate_<method>, or None: kept
    duplicate_of: list[int | None]  # the kept row it duplicates
    group: list[int | None]  # its group's representative; None: in no group
    method: list[str | None]  # the link that put the row in its group
    weak_catalog: list[str | None]  # weak catalog id assigned (weak_catalogs only)
    group_sizes: dict[int, int]  # rows in a connected component -> how many components (of 2 rows or more)
    keep_first_groups: int  # components of more than max_group rows, resolved keep-first


WEAK_CATALOG = ("weak",)  # the one catalog of all rows without a catalog_id, with weak catalogs


def connected_components(n: int, left: np.ndarray, right: np.ndarray) -> np.ndarray:
    """(n,) the smallest element of each element's component under the links (left[k], right[k]).

    A union-find with path halving whose unions keep the smaller root, so a component's root is its earliest row."""
    parent = list(range(n))

    def root(x: int) -> int:
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for a, b in zip(left.tolist(), right.tolist()):
        a, b = root(a), root(b)
        if a != b:
            parent[max(a, b)] = min(a, b)
    return np.array([root(x) for x in range(n)], dtype=np.int64)


def _same_key_links(keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Links from the first row with each key (>= 0) to every row with it: the components of all equal-key pairs
    in N links instead of N^2."""
    rows = np.flatnonzero(keys >= 0)
    rows = rows[np.argsort(keys[rows], kind="stable")]  # by key, then input order
    starts = np.diff(keys[rows], prepend=-1) != 0
    return rows[starts][np.cumsum(starts) - 1], rows


def resolve_duplicates(rows: np.ndarray, catalog_ids: list[str | None], product_ids: list[str],
                       exact_keys: dict[str, np.ndarray], near_pairs: tuple[np.ndarray, np.ndarray] | None,
                       weak_catalogs: bool, max_group: int) -> DuplicateDecision:
    """Every candidate's decision: the connected components of all links, each decided by `resolve_component`.

    rows: (N,) input row numbers; exact_keys: method -> (N,) int key per row (equal keys = duplicates), -1 for no
    key; near_pairs: (i, j) positions in `rows` of near-duplicate pairs, or None.
    """
    n = len(rows)
    links = [_same_key_links(keys) for keys in exact_keys.values()] + ([near_pairs] if near_pairs is not None else [])
    component = connected_components(n, np.concatenate([np.empty(0, np.int64), *[a for a, _ in links]]),
                                     np.concatenate([np.empty(0, np.int64), *[b for _, b in links]]))
    decision = DuplicateDecision(*([None] * n for _ in range(5)), {}, 0)
    members = np.argsort(component, kind="stable")
    roots, starts, sizes = np.unique(component[members], return_index=True, return_counts=True)
    if near_pairs is not None:
        pair_order = np.argsort(component[near_pairs[0]], kind="stable")
        pair_components = component[near_pairs[0]][pair_order]
    for root, start, size in zip(roots.tolist(), starts.tolist(), sizes.tolist()):
        if size < 2:
            continue
        positions = members[start:start + size]
        pairs = None
        if near_pairs is not None:
            mine = pair_order[np.searchsorted(pair_components, root):np.searchsorted(pair_components, root, "right")]
            pairs = (rows[near_pairs[0][mine]].tolist(), rows[near_pairs[1][mine]].tolist())
        part = resolve_component(
            rows[positions].tolist(), [catalog_ids[p] for p in positions], [product_ids[p] for p in positions],
            {name: [k if k >= 0 else None for k in keys[positions].tolist()] for name, keys in exact_keys.items()},
            pairs, weak_catalogs, max_group)
        for name in ("reason", "duplicate_of", "group", "method", "weak_catalog"):
            column = getattr(decision, name)
            for position, value in zip(positions.tolist(), getattr(part, name)):
                column[position] = value
        decision.group_sizes[size] = decision.group_sizes.get(size, 0) + 1
        decision.keep_first_groups += part.keep_first_groups
    return decision


def resolve_component(rows: list[int], catalog_ids: list[str | None], product_ids: list[str],
                      exact_keys: dict[str, list], near_pairs: tuple[list[int], list[int]] | None,
                      weak_catalogs: bool, max_group: int) -> DuplicateDecision:
    """The decisions of one duplicate group from its own rows and links only (the rules: the module docstring).

    rows: the group's input row numbers, in any order, with their catalog_ids and product_ids; exact_keys: method
    -> each row's key (equal keys are a link; None: no key); near_pairs: (left rows, right rows) of its
    near-duplicate links, in any order, or None. The links must connect the rows.
    """
    order = sorted(range(len(rows)), key=rows.__getitem__)  # input order: the representative comes first
    position = {rows[k]: p for p, k in enumerate(order)}
    neighbours: list[list[int]] = [[] for _ in order]
    for a, b in zip(*(near_pairs or ((), ()))):
        neighbours[position[a]].append(position[b])
        neighbours[position[b]].append(position[a])
    for near in neighbours:
        near.sort()  # the link order must not matter
    catalogs = [catalog_ids[k] for k in order]
    catalog_key = [c if c is not None else WEAK_CATALOG if weak_catalogs else ("single", p)
                   for p, c in enumerate(catalogs)]
    keep_first = len(rows) > max_group
    resolve = _keep_first if keep_first else _merge_whole
    reason, duplicate_of, group, method, weak = resolve(
        catalog_key, [product_ids[k] for k in order], {name: [keys[k] for k in order] for name, keys in exact_keys.items()},
        neighbours)
    row_of = [rows[k] for k in order]
    decision = DuplicateDecision(*([None] * len(rows) for _ in range(5)), {len(rows): 1}, int(keep_first))
    for p, k in enumerate(order):
        decision.reason[k], decision.method[k], decision.weak_catalog[k] = reason[p], method[p], weak[p]
        decision.duplicate_of[k] = None if duplicate_of[p] is None else row_of[duplicate_of[p]]
        decision.group[k] = None if group[p] is None else row_of[group[p]]
    return decision


def _merge_whole(catalog_key: list, product_ids: list[str], exact_keys: dict[str, list], neighbours: list[list[int]]):
    """One group: the representative's catalog kept, every other row rejected; methods and duplicate_of from a
    breadth-first search from the representative (positions in input order)."""
    n = len(catalog_key)
    rows_with_key: dict[str, dict] = {name: {} for name in exact_keys}
    for name, keys in exact_keys.items():
        for p, key in enumerate(keys):
            if key is not None:
                rows_with_key[name].setdefault(key, []).append(p)
    parent, method, seen = [-1] * n, [None] * n, [False] * n
    seen[0] = True
    reached, frontier = [0], [0]
    while frontier:
        best: dict[int, tuple[int, int]] = {}  # row of the next level -> (method rank, parent)
        for u in frontier:
            for rank, name in enumerate(METHOD_ORDER):
                if name in exact_keys:
                    # Every row with u's key is one link away; the frontier's first row with the key is the best
                    # parent of all of them, so the key is spent (and a big key costs its size, not its square).
                    candidates = rows_with_key[name].pop(exact_keys[name][u], ())
                elif name == "image_embedding":
                    candidates = neighbours[u]
                else:
                    continue
                for v in candidates:
                    if not seen[v] and (rank, u) < best.get(v, (len(METHOD_ORDER), n)):
                        best[v] = (rank, u)
        frontier = sorted(best)
        for v in frontier:
            seen[v], parent[v], method[v] = True, best[v][1], METHOD_ORDER[best[v][0]]
        reached += frontier
    if len(reached) < n:
        raise ValueError(f"{n - len(reached)} of the group's {n} rows are not linked to its other rows")
    kept = [key == catalog_key[0] for key in catalog_key]
    reason, duplicate_of = [None] * n, [None] * n
    for v in reached[1:]:  # a parent before its children
        if not kept[v]:
            reason[v] = f"duplicate_{method[v]}"
            duplicate_of[v] = parent[v] if kept[parent[v]] else duplicate_of[parent[v]]
    weak = [None] * n
    if catalog_key[0] == WEAK_CATALOG and sum(kept) > 1:
        weak = [f"dup-{product_ids[0]}" if k else None for k in kept]
    return reason, duplicate_of, [0] * n, method, weak


def _keep_first(catalog_key: list, product_ids: list[str], exact_keys: dict[str, list], neighbours: list[list[int]]):
    """Rows in input order, each compared with the earlier *kept* rows only: a link to another catalog rejects
    it, a link to its own catalog groups it (positions in input order)."""
    n = len(catalog_key)
    kept_with_key: dict[str, dict] = {name: {} for name in exact_keys}  # method -> key -> catalog -> first kept
    reason: list[str | None] = [None] * n
    duplicate_of: list[int | None] = [None] * n
    method: list[str | None] = [None] * n
    weak_catalog: list[str | None] = [None] * n
    group: list[int | None] = [None] * n
    for j in range(n):
        mine = catalog_key[j]
        conflict, link = None, None
        for name in METHOD_ORDER:
            if name in exact_keys:
                key = exact_keys[name][j]
                if key is None:
                    continue
                kept = kept_with_key[name].get(key, {})
                other = next((i for cat, i in kept.items() if cat != mine), None)
                if other is not None and conflict is None:
                    conflict = (name, other)
                if mine in kept and link is None:
                    link = (name, kept[mine])
            elif name == "image_embedding":
                for i in neighbours[j]:
                    if i >= j:
                        break
                    if reason[i] is not None:
                        continue
                    if catalog_key[i] != mine and conflict is None:
                        conflict = (name, i)
                    elif catalog_key[i] == mine and link is None:
                        link = (name, i)
        if conflict is not None:
            name, i = conflict
            reason[j], duplicate_of[j], method[j] = f"duplicate_{name}", i, name
            group[j] = group[i] if group[i] is not None else i
            group[i] = group[j]
            continue
        if link is not None:
            name, i = link
            method[j] = name
            group[j] = group[i] if group[i] is not None else i
            group[i] = group[j]
            if catalog_key[j] == WEAK_CATALOG:
                weak_catalog[j] = weak_catalog[i] or f"dup-{product_ids[i]}"
                weak_catalog[i] = weak_catalog[j]
        for name, keys in exact_keys.items():
            if keys[j] is not None:
                kept_with_key[name].setdefault(keys[j], {}).setdefault(mine, j)
    return reason, duplicate_of, group, method, weak_catalog
