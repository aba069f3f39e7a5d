"""The served index: exact search against brute force, category filters, adds and removals made durable by the
journal, compaction, replays, and two processes' views of one EMB_DIR."""

from __future__ import annotations

import numpy as np
import pytest

from eclip.errors import EclipError
from eclip.index.journal import JOURNAL_FILE, SERVING_DIR, Operation, ProductIndex
from eclip.index.vectors import read_embeddings


def unit(rng, dim: int) -> np.ndarray:
    vector = rng.standard_normal(dim).astype(np.float32)
    return vector / np.linalg.norm(vector)


def new_product(rng, product_id: str, dim: int, category: str = "Test > Added") -> Operation:
    vectors = {view: unit(rng, dim) for view in ("image", "text", "fused")}
    return Operation("add", product_id, f"title of {product_id}", category, vectors, b"\xff\xd8jpeg bytes")


def test_search_equals_brute_force_and_filters_by_category_prefix(served):
    index = ProductIndex(served[1])
    table, vectors = read_embeddings(served[1])
    fused = vectors["fused"]  # (N, D)
    queries = fused[:3] * 0.5 + fused[3:6] * 0.5
    for query, found in zip(queries, index.search(queries, 7)):
        scores = fused @ query  # (N,)
        assert np.allclose([s for _, s in found], np.sort(scores)[::-1][:7], atol=1e-5)
        assert np.allclose([scores[row] for row, _ in found], [s for _, s in found], atol=1e-5)

    categories = table.column("category").to_pylist()
    top_level = categories[0].split(" > ")[0]
    under = [i for i, c in enumerate(categories) if c and (c == top_level or c.startswith(top_level + " > "))]
    found = index.search(fused[:1], 5, category=top_level)[0]
    assert len(found) == min(5, len(under)) and all(row in under for row, _ in found)
    best_under = max(under, key=lambda i: float(fused[i] @ fused[0]))
    assert found[0][0] == best_under
    assert index.search(fused[:1], 5, category=top_level[:-1])[0] == []  # a prefix of a word is no category
    assert index.search(fused[:1], 5, category="No > Such")[0] == []
    assert top_level in index.categories() and categories[0] in index.categories()


def test_add_remove_survive_a_restart_and_compaction(emb_copy):
    rng = np.random.default_rng(0)
    index = ProductIndex(emb_copy)
    count, dim = len(index), index.dim
    removed = index.ids[5]
    added = new_product(rng, "new-1", dim)
    index.append([added, Operation("remove", removed)])
    assert len(index) == count  # one in, one out
    found = index.search(added.vectors["fused"][None], 3)[0]
    assert index.ids[found[0][0]] == "new-1" and found[0][1] == pytest.approx(1.0, abs=1e-5)
    _, vectors = read_embeddings(emb_copy)
    assert all(index.ids[row] != removed for row, _ in index.search(vectors["fused"][5:6], 10)[0])

    # A new process: the journal alone restores both operations, vectors bit for bit.
    reloaded = ProductIndex(emb_copy)
    row = reloaded.row_of["new-1"]
    assert np.array_equal(reloaded.vectors["image"][row], added.vectors["image"])
    assert removed not in reloaded.row_of and len(reloaded) == count
    assert reloaded.product("new-1") == {"product_id": "new-1", "title": "title of new-1", "category": "Test > Added", "row": row}
    assert reloaded.added_thumbnails["new-1"] == added.thumbnail

    # Compaction folds the journal into the snapshot; a replay of the old journal on top changes nothing
    # (a crash between the snapshot's replace and the journal's truncation).
    journal = emb_copy / SERVING_DIR / JOURNAL_FILE
    old_journal = journal.read_bytes()
    assert reloaded.compact() == 2 and journal.read_bytes() == b""
    journal.write_bytes(old_journal)
    for state in (ProductIndex(emb_copy), ProductIndex(emb_copy)):
        assert removed not in state.row_of and len(state) == count
        assert np.array_equal(state.vectors["fused"][state.row_of["new-1"]], added.vectors["fused"])
        assert state.search(added.vectors["fused"][None], 1)[0][0][0] == state.row_of["new-1"]

    # Re-adding a product replaces it: one live row, the new vector.
    again = new_product(rng, "new-1", dim)
    state.append([again])
    assert len(state) == count
    assert np.array_equal(state.vectors["fused"][state.row_of["new-1"]], again.vectors["fused"])


def test_a_torn_last_line_is_ignored_and_a_corrupt_one_named(emb_copy):
    rng = np.random.default_rng(1)
    index = ProductIndex(emb_copy)
    index.append([new_product(rng, "kept", index.dim)])
    journal = emb_copy / SERVING_DIR / JOURNAL_FILE
    with open(journal, "ab") as handle:  # a crash while writing a line: never acknowledged
        handle.write(new_product(rng, "torn", index.dim).to_json()[:100].encode())
    state = ProductIndex(emb_copy)
    assert "kept" in state.row_of and "torn" not in state.row_of
    journal.write_bytes(journal.read_bytes() + b"\n")
    with pytest.raises(EclipError, match="journal.jsonl: unreadable entry"):
        ProductIndex(emb_copy)


def test_two_processes_share_updates_through_the_journal(emb_copy):
    rng = np.random.default_rng(2)
    first, second = ProductIndex(emb_copy), ProductIndex(emb_copy)
    first.append([new_product(rng, "from-first", first.dim)])
    second.append([new_product(rng, "from-second", second.dim), Operation("remove", "from-first")])
    first.sync()
    for index in (first, second):
        assert "from-second" in index.row_of and "from-first" not in index.row_of
    assert first.ids[first.row_of["from-second"]] == second.ids[second.row_of["from-second"]]


def test_bad_operations_are_refused_before_anything_is_written(emb_copy):
    index = ProductIndex(emb_copy)
    wrong = Operation("add", "x", "t", None, {view: np.ones(3, np.float32) for view in ("image", "text", "fused")})
    with pytest.raises(EclipError, match="not 16 finite numbers"):
        index.append([wrong])
    with pytest.raises(EclipError, match="needs the vectors"):
        index.append([Operation("add", "x", "t")])
    assert (emb_copy / SERVING_DIR / JOURNAL_FILE).read_bytes() == b""
