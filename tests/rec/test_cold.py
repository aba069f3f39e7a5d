"""Content item features and the cold-start path, on synthetic shoppers of the real fashion-dev catalogue."""

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from eclip.errors import EclipError
from eclip.rec.evaluate import evaluate, full_ranks
from eclip.index.vectors import write_embeddings
from eclip.rec.features import align_features, load_item_features
from eclip.rec.report import evaluate_runs
from eclip.rec.synthetic import label_text_features, read_catalog, synthetic_sequences, write_sequences
from eclip.rec.config import RecConfig
from eclip.rec.run import load_run
from eclip.rec.train import train

from tests.conftest import FASHION, require


@pytest.fixture(scope="module")
def catalog():
    return read_catalog(require(FASHION / "catalog.csv"), limit=1500)


def test_synthetic_shoppers_are_reproducible_and_have_tastes(catalog):
    seqs = synthetic_sequences(catalog, 300, seed=0)
    assert seqs.items == synthetic_sequences(catalog, 300, seed=0).items
    assert seqs.items != synthetic_sequences(catalog, 300, seed=1).items
    row = {r["product_id"]: r for r in catalog}
    lengths = [len(s) for s in seqs.items]
    assert min(lengths) >= 5 and all(len(set(s)) == len(s) for s in seqs.items)  # no repeat purchases
    # Each shopper keeps to one gender (plus unisex), and consecutive items often share a sub-category.
    for items in seqs.items:
        assert len({row[i]["attr_gender"] for i in items} - {"Unisex"}) <= 1
    same_sub = np.mean([row[a]["category"].rsplit(" > ", 1)[0] == row[b]["category"].rsplit(" > ", 1)[0]
                        for items in seqs.items for a, b in zip(items, items[1:])])
    assert same_sub > 0.3
    # Popularity skew: the top 5% of items take a far larger share of purchases than 5%.
    counts = np.sort(np.unique(np.concatenate(seqs.items), return_counts=True)[1])[::-1]
    assert counts[:len(catalog) // 20].sum() / counts.sum() > 0.15


def test_label_text_features_are_normalized_and_similar_within_a_type(catalog):
    ids, features = label_text_features(catalog, dim=32)
    assert features.shape == (len(catalog), 32) and ids[0] == catalog[0]["product_id"]
    np.testing.assert_allclose(np.linalg.norm(features, axis=1), 1.0, atol=1e-5)
    types = np.array([r["category"] for r in catalog])
    similarity = features @ features.T
    same = types[:, None] == types[None, :]
    assert similarity[same].mean() > similarity[~same].mean() + 0.2


def test_features_round_trip_and_alignment(tmp_path):
    matrix = np.arange(12, dtype=np.float32).reshape(3, 4)
    write_embeddings(tmp_path / "embeddings.parquet", ["10", "11", "12"], {"fused": matrix, "text": matrix[:, :2]})
    ids, loaded = load_item_features(tmp_path, "text")
    assert ids == ["10", "11", "12"] and np.array_equal(loaded, matrix[:, :2])
    content, share = align_features(["12", "99", "10"], ids, loaded, "emb", np.array([1, 2]))
    assert content.tolist() == [[0, 0], [8, 9], [0, 0], [0, 1]]  # row 0 padding, item "99" has no content
    assert share == 0.5  # of the sequence items 1 ("12") and 2 ("99"), only "12" has content
    with pytest.raises(EclipError, match="no column 'image'.*fused, text"):
        load_item_features(tmp_path, "image")
    # Products join the vocabulary as content-only items, but what counts is that sequence items match.
    with pytest.raises(EclipError, match="no sequence item id matches a product_id .*'a', product_ids such as '10'"):
        align_features(["a", "10", "11"], ids, loaded, "emb", np.array([1]))
    pq.write_table(pa.table({"product_id": ["1", "2"], "fused": [[0.5, 1.0], [1.0]]}), tmp_path / "embeddings.parquet")
    with pytest.raises(EclipError, match="unequal-length"):
        load_item_features(tmp_path, "fused")
    with pytest.raises(EclipError, match="no such file"):
        load_item_features(tmp_path / "absent")


@pytest.mark.parametrize("table, message", [
    (pa.table({"product_id": ["1", None, "3"], "fused": pa.array([[0.1, 0.2]] * 3, pa.list_(pa.float32(), 2))}),
     r"embeddings.parquet: row 2: product_id is null \(1 null\(s\) in all\)"),
    (pa.table({"product_id": ["1"], "fused": pa.array([["a", "b"]], pa.list_(pa.string(), 2))}),
     r"column .fused. is fixed_size_list<element: string>\[2\], expected a list of floats"),
    (None, "embeddings.parquet: not a readable Parquet file"),
])
def test_bad_feature_files_are_refused_in_one_line(tmp_path, table, message):
    path = tmp_path / "embeddings.parquet"
    if table is None:
        path.write_bytes(b"PAR1")
    else:
        pq.write_table(table, path)
    with pytest.raises(EclipError, match=message):
        load_item_features(tmp_path, "fused")


@pytest.mark.slow
def test_content_features_recommend_items_never_seen_in_training(tmp_path, catalog):
    sequences = write_sequences(tmp_path / "seq.txt", synthetic_sequences(catalog, 800, seed=0))
    ids, features = label_text_features(catalog, dim=32)
    write_embeddings(tmp_path / "emb" / "embeddings.parquet", ids, {"fused": features})
    common = ["model.dim=32", "train.batch_size=64", "train.lr=0.005", "train.val_cases=0", "train.cold_fraction=0.1"]
    train(tmp_path / "content", sequences, RecConfig().override(common + ["train.epochs=4", "model.id_dropout=0.3"]),
          tmp_path / "emb")
    train(tmp_path / "id", sequences, RecConfig().override(common + ["train.epochs=1"]))
    content, id_only = load_run(tmp_path / "content"), load_run(tmp_path / "id")
    cold_items = content.data.split.cold_items
    assert 100 < len(cold_items) < 200
    assert not any(np.isin(s, cold_items).any() for s in content.data.split.train)  # hidden from training

    def cold_cases(run):
        test = run.data.split.test
        return test.subset(np.isin(test.targets, run.data.split.cold_items))

    assert len(cold_cases(content).targets) > 50
    # ID-only: every cold item scores -inf, so each cold target ranks last (ties count against it).
    cases = cold_cases(id_only)
    ranks = full_ranks(id_only.model.score(cases.histories), cases.histories, cases.targets)
    assert (ranks == id_only.data.vocab.n_items).all()
    with_content = evaluate(content.model.score, cold_cases(content))["full"]
    without = evaluate(id_only.model.score, cases)["full"]
    assert without["HR@20"] == 0.0 and with_content["MRR"] > 3 * without["MRR"]
    # The eval table's new-arrivals protocol: cold targets among the C cold items only; a random order has an
    # expected MRR of H_C / C (harmonic number).
    report = evaluate_runs([tmp_path / "content", tmp_path / "id"], negatives=0)
    among_cold = {r["model"]: r for r in report["rows"] if r["protocol"] == "cold-only"}
    random_mrr = (1.0 / np.arange(1, len(cold_items) + 1)).sum() / len(cold_items)
    assert among_cold["BERT4Rec [id]"]["HR@20"] == 0.0
    assert among_cold["BERT4Rec + content (fused) [content]"]["MRR"] > 1.25 * random_mrr


def test_training_refuses_features_that_match_no_sequence_item_and_notes_a_low_share(tmp_path):
    """The audit's case: 200 shoppers of items 1..60 and features for products x1..x80 only."""
    rng = np.random.default_rng(0)
    sequences = tmp_path / "few.txt"
    sequences.write_text("".join(f"{u} " + " ".join(str(i) for i in rng.integers(1, 61, 6)) + "\n" for u in range(200)))
    features = rng.normal(size=(80, 8))
    write_embeddings(tmp_path / "nomatch" / "embeddings.parquet", [f"x{i}" for i in range(1, 81)], {"fused": features})
    config = RecConfig().override(["train.epochs=1", "model.dim=16"])
    with pytest.raises(EclipError, match="no sequence item id matches a product_id"):
        train(tmp_path / "run", sequences, config, tmp_path / "nomatch")
    assert not (tmp_path / "run").exists()
    # Ten of the 60 items with content: trained, with a note.
    write_embeddings(tmp_path / "few" / "embeddings.parquet", [str(i) for i in range(1, 11)] + [f"x{i}" for i in range(70)],
                        {"fused": features})
    summary = train(tmp_path / "run", sequences, config, tmp_path / "few")
    assert summary["notes"] == [f"only 17% of the sequence items have a product_id in {tmp_path / 'few'}; "
                                "the others are learned from their ids alone"]
    write_embeddings(tmp_path / "all" / "embeddings.parquet", [str(i) for i in range(1, 61)], {"fused": features[:60]})
    assert train(tmp_path / "run2", sequences, config, tmp_path / "all")["notes"] == []
