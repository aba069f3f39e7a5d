"""`eclip embed` and `eclip search`: the EMB_DIR layout other subsystems read, vectors equal to the inference API's,
FAISS indexes that find what brute force finds, reuse and bad input."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from eclip.cli import main
from eclip.data.store import read_products
from eclip.models import embed_images, embed_texts, load_model
from eclip.index.journal import JOURNAL_FILE, Operation, ProductIndex
from eclip.index.embed import search
from eclip.index.config import IndexConfig
from eclip.index.faiss_index import build_index
from eclip.index.vectors import read_embeddings
from tests.conftest import trained_further


@pytest.fixture(scope="module")
def emb_dir(run_dir, prepared_fashion, tmp_path_factory):
    out = tmp_path_factory.mktemp("embed") / "emb"
    assert main(["embed", "--model", str(run_dir), "--data", str(prepared_fashion), "--out", str(out),
                 "--batch-size", "64"]) == 0
    return out


def test_emb_dir_layout(emb_dir, prepared_fashion):
    assert sorted(path.name for path in emb_dir.iterdir()) == ["embeddings.parquet", "index.faiss", "index.json",
                                                               "meta.json", "vectors.npy"]
    shards = sorted(path.name for path in (prepared_fashion / "shards").iterdir())
    assert sorted(path.name for path in (emb_dir / "embeddings.parquet").iterdir()) == shards  # one part a shard
    schema = pq.read_schema(emb_dir / "embeddings.parquet" / shards[0])
    assert schema.names == ["product_id", "split", "category", "title", "image", "text", "fused"]
    assert schema.field("product_id").type == pa.string()
    for view in ("image", "text", "fused"):
        assert schema.field(view).type == pa.list_(pa.float32(), 16)
    products = read_products(prepared_fashion, columns=["product_id", "split"])
    meta = json.loads((emb_dir / "meta.json").read_text())
    splits = products.column("split").to_pylist()
    assert meta["products"] == products.num_rows and meta["dim"] == 16 and meta["parts"] == len(shards)
    assert meta["counts"] == {split: splits.count(split) for split in ("train", "val", "test")}
    assert json.loads((emb_dir / "index.json").read_text()) == {
        "type": "flat", "metric": "inner_product", "count": products.num_rows, "dim": 16, "vectors": "fused"}
    _, vectors = read_embeddings(emb_dir)
    assert np.array_equal(np.load(emb_dir / "vectors.npy"), vectors["fused"])


def test_vectors_are_the_inference_apis(emb_dir, run_dir, prepared_fashion):
    table, vectors = read_embeddings(emb_dir)
    products = read_products(prepared_fashion, columns=["product_id", "title", "thumbnail"])
    assert table.column("product_id").to_pylist() == products.column("product_id").to_pylist()
    model, _, _ = load_model(run_dir)
    rows = [0, 7, 100, products.num_rows - 1]
    image = embed_images(model, [products.column("thumbnail")[i].as_py() for i in rows])
    text = embed_texts(model, [products.column("title")[i].as_py() for i in rows])
    assert np.allclose(vectors["image"][rows], image, atol=1e-5)
    assert np.allclose(vectors["text"][rows], text, atol=1e-5)  # batched by length there, one by one here
    fused = (image + text) / np.linalg.norm(image + text, axis=1, keepdims=True)
    assert np.allclose(vectors["fused"][rows], fused, atol=1e-5)
    for matrix in vectors.values():
        assert np.allclose(np.linalg.norm(matrix, axis=1), 1, atol=1e-5)


@pytest.mark.parametrize("kind", ["flat", "ivf", "hnsw"])
def test_indexes_find_the_brute_force_neighbours(emb_dir, kind):
    _, vectors = read_embeddings(emb_dir)
    fused = vectors["fused"]
    index, description = build_index(fused, IndexConfig(index=kind).resolved(len(fused), fused.shape[1]))
    assert description["type"] == kind and index.ntotal == len(fused)
    scores, _ = index.search(fused[:50], 5)
    exact = -np.sort(-(fused[:50] @ fused.T), axis=1)[:, :5]
    # IVF probes every list of a catalogue this small; HNSW with efSearch 64 over ~460 points is exact in practice.
    assert np.allclose(scores, exact, atol=1e-5)


def test_search_prints_the_nearest_products(emb_dir, run_dir, capsys):
    capsys.readouterr()
    assert main(["search", "--model", str(run_dir), "--index", str(emb_dir), "black casual shoes", "--top", "3"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 3 and [line.split()[0] for line in lines] == ["1", "2", "3"]
    model, _, _ = load_model(run_dir)
    table, vectors = read_embeddings(emb_dir)
    similarity = vectors["fused"] @ embed_texts(model, ["black casual shoes"])[0]
    best = int(np.argmax(similarity))
    hits = search(run_dir, emb_dir, "black casual shoes", top=3)
    assert hits[0]["product_id"] == table.column("product_id")[best].as_py()
    assert hits[0]["score"] == pytest.approx(float(similarity[best]), abs=1e-5)
    assert lines[0].split()[2] == hits[0]["product_id"]
    assert not (emb_dir / "serving").exists()  # searching writes nothing into EMB_DIR


def test_unchanged_emb_dir_is_reused(emb_dir, run_dir, prepared_fashion, capsys):
    before = (emb_dir / "meta.json").stat().st_mtime_ns
    capsys.readouterr()
    assert main(["embed", "--model", str(run_dir), "--data", str(prepared_fashion), "--out", str(emb_dir),
                 "--batch-size", "64"]) == 0
    assert "reused" in capsys.readouterr().out
    assert (emb_dir / "meta.json").stat().st_mtime_ns == before


def test_search_applies_the_updates_made_through_the_service(emb_dir, run_dir, prepared_fashion, tmp_path, capsys):
    served = Path(shutil.copytree(emb_dir, tmp_path / "emb"))
    query = "black casual shoes"
    best = search(run_dir, served, query, top=1)[0]["product_id"]
    model, _, _ = load_model(run_dir)
    vector = embed_texts(model, [query])[0]
    ProductIndex(served).append([Operation("remove", best), Operation(
        "add", "shop-1", "Shop black casual shoes", "Footwear > Shoes", {"image": vector, "text": vector, "fused": vector})])
    hits = search(run_dir, served, query, top=5)
    assert hits[0]["product_id"] == "shop-1" and hits[0]["score"] == pytest.approx(1, abs=1e-5)
    assert best not in [hit["product_id"] for hit in hits]
    # Re-embedding would replace the folder and lose the updates: refused unless asked for by name.
    journal = (served / "serving" / JOURNAL_FILE).read_bytes()
    capsys.readouterr()
    embed = ["embed", "--model", str(run_dir), "--data", str(prepared_fashion), "--out", str(served), "--force",
             "--batch-size", "64"]
    assert main(embed) == 2
    error = capsys.readouterr().err
    assert "holds products added or removed through `eclip serve`" in error and "--discard-served-updates" in error
    assert error.count("\n") == 1 and (served / "serving" / JOURNAL_FILE).read_bytes() == journal
    assert main(embed + ["--discard-served-updates"]) == 0
    assert not (served / "serving").exists() and search(run_dir, served, query, top=1)[0]["product_id"] == best


def test_search_refuses_a_model_with_other_weights(emb_dir, run_dir, prepared_fashion, tmp_path, capsys):
    copied = Path(shutil.copytree(run_dir, tmp_path / "copied", copy_function=shutil.copyfile))  # new file times
    assert search(copied, emb_dir, "black casual shoes", top=1) == search(run_dir, emb_dir, "black casual shoes", top=1)
    further = trained_further(run_dir, prepared_fashion, tmp_path / "further")  # same dimension, other weights
    capsys.readouterr()
    assert main(["search", "--model", str(further), "--index", str(emb_dir), "black casual shoes"]) == 2
    error = capsys.readouterr().err
    assert f"was embedded by {run_dir.resolve()}, whose weights differ from those of {further}" in error
    assert error.count("\n") == 1


def test_bad_input_is_one_line(emb_dir, run_dir, prepared_fashion, tmp_path, capsys, monkeypatch):
    occupied = tmp_path / "occupied"
    occupied.mkdir()
    (occupied / "notes.txt").write_text("mine")
    annotated = Path(shutil.copytree(emb_dir, tmp_path / "annotated"))
    (annotated / "notes.txt").write_text("mine")
    afile = tmp_path / "afile.txt"
    afile.write_text("hi")
    monkeypatch.chdir(tmp_path)
    embed = ["embed", "--model", str(run_dir), "--data", str(prepared_fashion), "--force", "--out"]
    cases = [
        (["embed", "--model", str(run_dir), "--data", str(prepared_fashion), "--out", str(occupied)], "holds other files"),
        (embed + [str(annotated)], "holds other files than `eclip embed` writes (notes.txt)"),
        (embed + [str(afile)], "is a file, not a folder"),
        (embed + [str(afile / "sub")], "lies under"),
        (embed + ["."], "is the current folder or one above it"),
        (["embed", "--model", str(tmp_path), "--data", str(prepared_fashion), "--out", str(tmp_path / "e")], "is missing"),
        (["embed", "--model", str(run_dir), "--data", str(tmp_path / "none"), "--out", str(tmp_path / "e")], "does not exist"),
        (["search", "--model", str(run_dir), "--index", str(emb_dir), "  "], "query is empty"),
        (["search", "--model", str(run_dir), "--index", str(tmp_path), "shoes"], "eclip embed"),
    ]
    for argv, message in cases:
        capsys.readouterr()
        assert main(argv) == 2, argv
        error = capsys.readouterr().err
        assert message in error and error.count("\n") == 1, (argv, error)
    assert (occupied / "notes.txt").read_text() == "mine" and (annotated / "notes.txt").read_text() == "mine"
    assert afile.read_text() == "hi"


def test_each_prompt_is_embedded_once_per_run():
    from eclip.eval.representation import _remembered

    asked = []

    def encode(texts):
        asked.append(list(texts))
        return np.array([[len(text), ord(text[0])] for text in texts], dtype=np.float32).reshape(len(texts), 2)

    remembered = _remembered(encode)
    assert remembered(["a photo of a shirt", "shirt", "a photo of a shirt"]).tolist() == [[18, 97], [5, 115], [18, 97]]
    assert remembered(["shirt", "watch"]).tolist() == [[5, 115], [5, 119]]
    assert remembered([]).shape == (0, 2)
    assert asked == [["a photo of a shirt", "shirt"], ["watch"], []]
