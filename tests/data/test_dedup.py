"""Near-duplicate search over descriptors with several views per image; duplicate groups as connected
components of all links, decided per group by one pure function, with the keep-first rule above the cap."""

from __future__ import annotations

import csv
import random
import shutil
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from PIL import Image

from eclip.data.config import PrepareConfig
from eclip.data.dedup import (connected_components, most_similar_per_row, near_duplicate_pairs, resolve_component,
                              resolve_duplicates)
from eclip.data.prepare import prepare
from eclip.data.store import read_products


def unit(rows: np.ndarray) -> np.ndarray:
    return (rows / np.linalg.norm(rows, axis=-1, keepdims=True)).astype(np.float32)


def brute_force_pairs(vectors: np.ndarray, threshold: float) -> set[tuple[int, int]]:
    """Pairs i < j whose best view-to-view cosine reaches the threshold, by explicit loops."""
    n = len(vectors)
    return {(i, j) for i in range(n) for j in range(i + 1, n)
            if max(float(a @ b) for a in vectors[i] for b in vectors[j]) >= threshold}


@pytest.mark.parametrize("chunk", [1, 3, 4096])
def test_a_pair_is_found_through_any_view_once(chunk):
    rng = np.random.default_rng(0)
    vectors = unit(rng.normal(size=(12, 2, 16)))  # (N, V, D), unrelated rows
    vectors[:, 1] = unit(vectors[:, 0] + 0.3 * rng.normal(size=(12, 16)))  # each row's two views are close
    vectors[5, 0] = vectors[2, 1]  # view 0 of row 5 = view 1 of row 2: a cross-view match
    vectors[9] = vectors[4]  # both views match: still one pair
    left, right, similarity = near_duplicate_pairs(vectors, 0.99, chunk=chunk)
    found = list(zip(left.tolist(), right.tolist()))
    assert sorted(found) == sorted(brute_force_pairs(vectors, 0.99)) == [(2, 5), (4, 9)]
    best = {pair: max(float(a @ b) for a in vectors[pair[0]] for b in vectors[pair[1]]) for pair in found}
    assert similarity.tolist() == pytest.approx([best[pair] for pair in found], abs=1e-6)


def test_single_view_rows_are_the_same_search():
    rng = np.random.default_rng(1)
    vectors = unit(rng.normal(size=(40, 8)))
    vectors[30] = unit(vectors[3] + 0.05 * rng.normal(size=8))
    flat = near_duplicate_pairs(vectors, 0.9)
    viewed = near_duplicate_pairs(vectors[:, None], 0.9)
    assert [a.tolist() for a in flat[:2]] == [a.tolist() for a in viewed[:2]] == [[3], [30]]
    assert flat[2][0] == pytest.approx(float(vectors[3] @ vectors[30]), abs=1e-6)


def test_only_the_most_similar_candidates_of_each_later_row_are_kept():
    right = np.array([5, 5, 5, 7, 5, 7, 9])
    similarity = np.array([0.95, 0.99, 0.94, 0.96, 0.97, 0.96, 0.95])
    # Row 5: 0.99, 0.97 kept, 0.95 and 0.94 not; row 7: both (a tie, two slots); row 9: its only one.
    assert most_similar_per_row(right, similarity, 2).tolist() == [False, True, False, True, True, True, True]
    assert most_similar_per_row(right, similarity, 1).tolist() == [False, True, False, True, False, False, True]


def test_no_pair_above_the_threshold_is_an_empty_result():
    vectors = unit(np.eye(6, 16))  # six orthogonal rows: no two alike
    left, right, similarity = near_duplicate_pairs(vectors[:, None], 0.5)
    assert left.tolist() == right.tolist() == similarity.tolist() == []


# ---------------------------------------------------------------- components
def brute_force_components(n: int, links: list[tuple[int, int]]) -> list[int]:
    """The smallest member of each element's component, by a breadth-first search from every element."""
    neighbours = {k: set() for k in range(n)}
    for a, b in links:
        neighbours[a].add(b)
        neighbours[b].add(a)
    smallest = [-1] * n
    for start in range(n):
        if smallest[start] < 0:
            seen, frontier = {start}, [start]
            while frontier:
                frontier = [v for u in frontier for v in neighbours[u] if v not in seen and not seen.add(v)]
            for v in seen:
                smallest[v] = min(seen)
    return smallest


def components_of(n: int, links: list[tuple[int, int]]) -> list[int]:
    left, right = (np.array(side, dtype=np.int64) for side in zip(*links)) if links else (np.empty(0, np.int64),) * 2
    return connected_components(n, left, right).tolist()


def test_components_by_hand():
    assert components_of(6, [(1, 3), (5, 3), (0, 2)]) == [0, 1, 0, 1, 4, 1]
    assert components_of(4, []) == [0, 1, 2, 3]
    assert components_of(5, [(4, 3), (3, 2), (2, 1), (1, 0)]) == [0] * 5  # a chain joined from its far end
    assert components_of(3, [(2, 2), (1, 2), (2, 1)]) == [0, 1, 1]  # self-links and repeated links


@pytest.mark.parametrize("seed", range(20))
def test_components_match_a_breadth_first_search(seed):
    rng = random.Random(seed)
    n = rng.randint(1, 60)
    links = [(rng.randrange(n), rng.randrange(n)) for _ in range(rng.randint(0, 2 * n))]
    assert components_of(n, links) == brute_force_components(n, links)


# ---------------------------------------------------------------- the decision of a group
def decide(catalogs, titles=None, hashes=None, near=(), weak=False, max_group=1000):
    """resolve_duplicates over rows 1..N (the row number is the position + 1), keys None for no key."""
    n = len(catalogs)
    keys = {name: np.array([-1 if k is None else k for k in values])
            for name, values in (("title", titles), ("image_hash", hashes)) if values is not None}
    pairs = (np.array([a for a, _ in near], np.int64), np.array([b for _, b in near], np.int64)) if near else None
    return resolve_duplicates(np.arange(1, n + 1), catalogs, [f"p{k}" for k in range(n)], keys, pairs, weak, max_group)


def test_a_reupload_of_a_removed_duplicate_joins_the_group_it_was_removed_from():
    # A; B has A's title (another catalog); C is B's photo with a new title.
    chain = decide(["cA", "cB", "cC"], titles=[0, 0, 1], hashes=[0, 1, 2], near=[(1, 2)])
    assert chain.reason == [None, "duplicate_title", "duplicate_image_embedding"]
    assert chain.duplicate_of == [None, 1, 1] and chain.group == [1, 1, 1]
    assert chain.method == [None, "title", "image_embedding"]
    assert chain.group_sizes == {3: 1} and chain.keep_first_groups == 0
    keep_first = decide(["cA", "cB", "cC"], titles=[0, 0, 1], hashes=[0, 1, 2], near=[(1, 2)], max_group=2)
    assert keep_first.reason == [None, "duplicate_title", None] and keep_first.keep_first_groups == 1


def test_rows_of_the_representatives_catalog_are_kept_however_they_are_linked():
    # Offers a0, a1 of catalog A are joined only through x (catalog X); y links to x by title and to a1.
    group = decide(["A", "X", "A", "Y"], titles=[0, 1, 2, 1], hashes=[0, 1, 2, 3], near=[(0, 1), (1, 2), (2, 3)])
    assert group.reason == [None, "duplicate_image_embedding", None, "duplicate_title"]
    # y is two links from the representative through x, three through a1: its kept row is the representative.
    assert group.duplicate_of == [None, 1, None, 1]
    assert group.method == [None, "image_embedding", "image_embedding", "title"]


def test_the_shortest_path_names_the_method_and_the_kept_row():
    # a, b, c share a hash; d links to b (embedding) and to c (title), both two links from a.
    group = decide(["A", "B", "A", "D"], titles=[0, 1, 5, 5], hashes=[0, 0, 0, 1], near=[(1, 3)])
    assert group.method == [None, "image_hash", "image_hash", "title"]  # the title link wins over the earlier row
    assert group.reason == [None, "duplicate_image_hash", None, "duplicate_title"]
    assert group.duplicate_of == [None, 1, None, 3]  # c, the kept row d was reached from
    tie = decide(["A", "B", "A", "D"], titles=[0, 1, 2, 3], hashes=[0, 0, 0, 1], near=[(2, 3), (1, 3)])
    assert tie.method[3] == "image_embedding" and tie.duplicate_of[3] == 1  # from b, the earlier: b's kept row a


def test_without_catalog_ids_only_the_representative_stays_unless_weak_catalogs():
    links = dict(titles=[0, 0, 1, 2], hashes=[0, 1, 2, 2], near=[(1, 2)])
    strict = decide([None] * 4, **links)
    assert strict.reason == [None, "duplicate_title", "duplicate_image_embedding", "duplicate_image_hash"]
    assert strict.weak_catalog == [None] * 4
    weak = decide([None] * 4, weak=True, **links)
    assert weak.reason == [None] * 4 and weak.weak_catalog == ["dup-p0"] * 4 and weak.group == [1] * 4
    # A given catalog as representative: the rows without one are another catalog, so rejected even when weak.
    mixed = decide(["C1", None, None, "C1"], weak=True, **links)
    assert mixed.reason == [None, "duplicate_title", "duplicate_image_embedding", None]
    assert mixed.weak_catalog == [None] * 4
    # A weak representative keeps the weak rows, rejects the given catalog; one weak row alone gets no weak id.
    assert decide([None, None, "C1"], titles=[0, 0, 0], weak=True).weak_catalog == ["dup-p0", "dup-p0", None]
    assert decide([None, "C1"], titles=[0, 0], weak=True).weak_catalog == [None, None]


def test_a_chain_above_the_cap_falls_back_to_keep_first_and_is_counted():
    chain = [(k, k + 1) for k in range(5)]  # six listings of six sellers, each like the next
    merged = decide([None] * 6, hashes=list(range(6)), near=chain, max_group=6)
    assert merged.reason == [None] + ["duplicate_image_embedding"] * 5 and merged.duplicate_of == [None] + [1] * 5
    assert merged.keep_first_groups == 0 and merged.group == [1] * 6
    capped = decide([None] * 6, hashes=list(range(6)), near=chain, max_group=5)
    # Keep-first: each row against the earlier *kept* rows only, so every other link of the chain is missed.
    assert capped.reason == [None, "duplicate_image_embedding"] * 3
    assert capped.duplicate_of == [None, 1, None, 3, None, 5] and capped.group == [1, 1, 3, 3, 5, 5]
    assert capped.keep_first_groups == 1 and capped.group_sizes == {6: 1}


def random_links(rng: random.Random, n: int):
    catalogs = [rng.choice(["A", "B", "C", None, None]) for _ in range(n)]
    titles = [rng.choice([None, *range(n // 3 + 1)]) for _ in range(n)]
    hashes = [rng.choice([None, *range(n // 2 + 1)]) for _ in range(n)]
    near = sorted({tuple(sorted(rng.sample(range(n), 2))) for _ in range(n)})
    return catalogs, titles, hashes, near


def by_row(decision, rows):
    fields = ("reason", "duplicate_of", "group", "method", "weak_catalog")
    return {row: tuple(getattr(decision, f)[k] for f in fields) for k, row in enumerate(rows)}


@pytest.mark.parametrize("seed", range(10))
@pytest.mark.parametrize("weak", [False, True])
def test_link_and_row_order_do_not_change_the_decisions(seed, weak):
    rng = random.Random(seed)
    n = 30
    catalogs, titles, hashes, near = random_links(rng, n)
    expected = by_row(decide(catalogs, titles, hashes, near, weak), range(1, n + 1))
    shuffled = [(b, a) if rng.random() < 0.5 else (a, b) for a, b in rng.sample(near, len(near))]
    assert by_row(decide(catalogs, titles, hashes, shuffled, weak), range(1, n + 1)) == expected
    for max_group in (1000, 3):  # merged whole and keep-first
        reference = by_row(decide(catalogs, titles, hashes, near, weak, max_group), range(1, n + 1))
        # Per component, rows and links in any order, as a cluster engine hands them over: the same answers.
        components = brute_force_components(n, near + [(a, b) for keys in (titles, hashes) for a in range(n)
                                                        for b in range(a) if keys[a] is not None and keys[a] == keys[b]])
        for root in set(components):
            members = [k for k in range(n) if components[k] == root]
            if len(members) < 2:
                continue
            rng.shuffle(members)
            rows = [k + 1 for k in members]
            pairs = [(a + 1, b + 1) for a, b in shuffled if components[a] == root]
            part = resolve_component(rows, [catalogs[k] for k in members], [f"p{k}" for k in members],
                                     {"title": [titles[k] for k in members], "image_hash": [hashes[k] for k in members]},
                                     ([a for a, _ in pairs], [b for _, b in pairs]), weak, max_group)
            assert by_row(part, rows) == {row: reference[row] for row in rows}


def test_rows_the_links_do_not_connect_are_refused():
    with pytest.raises(ValueError, match="1 of the group's 3 rows are not linked"):
        resolve_component([1, 2, 3], ["A", "B", "C"], ["a", "b", "c"], {"title": [0, 0, 1]}, None, False, 10)


# ---------------------------------------------------------------- on real listings, through `prepare`
@pytest.fixture(scope="module")
def reupload_catalogue(tmp_path_factory, fashion_dir) -> Path:
    """Ten real fashion-dev listings without catalog ids, where the second seller copied the first's title and
    then re-uploaded their own photo (resized, re-encoded) under their product's real title."""
    real = list(csv.DictReader(open(fashion_dir / "catalog.csv", encoding="utf-8")))[:10]
    folder = tmp_path_factory.mktemp("reupload")
    (folder / "images").mkdir()
    for row in real:
        shutil.copy(fashion_dir / row["image"], folder / row["image"])
    photo = Image.open(fashion_dir / real[1]["image"]).convert("RGB")
    photo.resize((photo.width * 4 // 5, photo.height * 4 // 5), Image.LANCZOS).save(folder / "images/reupload.jpg",
                                                                                     quality=75)
    copied, reupload = dict(real[1], title=real[0]["title"]), dict(real[1], product_id="reupload",
                                                                     image="images/reupload.jpg")
    rows = [real[0], copied, *real[2:], reupload]
    with open(folder / "catalog.csv", "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(real[0]), lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
    return folder / "catalog.csv"


def test_a_real_reupload_of_a_title_duplicate_is_rejected_into_the_first_listings_group(reupload_catalogue, tmp_path):
    first, copied = [r["product_id"] for r in csv.DictReader(open(reupload_catalogue, encoding="utf-8"))][:2]
    report = prepare(reupload_catalogue, tmp_path / "out", config=PrepareConfig(workers=1, max_duplicate_group=50))
    rejected = {r["product_id"]: r for r in pq.read_table(tmp_path / "out" / "rejected.parquet").to_pylist()}
    assert {k: (r["reason"], r["detail"]) for k, r in rejected.items()} == {
        copied: ("duplicate_title", f"duplicate_of={first}"),
        "reupload": ("duplicate_image_embedding", f"duplicate_of={first}")}
    groups = pq.read_table(tmp_path / "out" / "duplicate_groups.parquet").to_pylist()
    assert [(g["group_id"], g["product_id"], g["method"], g["kept"]) for g in groups] == [
        (first, first, None, True), (first, copied, "title", False), (first, "reupload", "image_embedding", False)]
    assert report["accepted"] == 9 and report["duplicate_groups"] == 1
    assert report["duplicate_group_sizes"] == {"3": 1} and report["keep_first_duplicate_groups"] == 0

    capped = prepare(reupload_catalogue, tmp_path / "capped", config=PrepareConfig(workers=1))  # the default, 1
    assert capped["rejected"] == {"duplicate_title": 1} and capped["keep_first_duplicate_groups"] == 1  # as before


def test_real_weak_catalogs_keep_the_whole_group_under_one_weak_id(reupload_catalogue, tmp_path):
    first, copied = [r["product_id"] for r in csv.DictReader(open(reupload_catalogue, encoding="utf-8"))][:2]
    report = prepare(reupload_catalogue, tmp_path / "out", config=PrepareConfig(workers=1, weak_catalogs=True))
    assert report["accepted"] == 11 and report["rejected"] == {}
    products = read_products(tmp_path / "out", columns=["product_id", "catalog_id", "group_id"]).to_pylist()
    grouped = {p["product_id"]: (p["catalog_id"], p["group_id"]) for p in products if p["catalog_id"]}
    assert grouped == {k: (f"dup-{first}", f"dup-{first}") for k in (first, copied, "reupload")}
