"""`eclip distill`: the query encoder learns the text tower's vectors, saves and loads exactly, and the query
strings it trains on are fragments of real titles."""

from __future__ import annotations

import random
import shutil

import numpy as np
import pyarrow as pa
import pytest

from eclip.cli import main
from eclip.data.store import read_products
from eclip.errors import EclipError
from eclip.models import embed_texts, load_model
from eclip.models.query_encoder import (META_FILE, QueryEncoder, QueryEncoderShape, embed_queries,
                                        load_query_encoder, save_query_encoder)
from eclip.train.config import DistillConfig
from eclip.train.distill import distill, query_strings
from tests.train.train_helpers import rewritten_copy

FAST = DistillConfig(epochs=30, batch_size=64, hidden=128, threads=1)


@pytest.fixture(scope="module")
def distilled(run_dir, prepared_fashion, tmp_path_factory):
    """-> (RUN_DIR copy with a query encoder, its report)."""
    run = shutil.copytree(run_dir, tmp_path_factory.mktemp("distilled") / "run")
    return run, distill(run, prepared_fashion, FAST)


def test_the_student_reproduces_the_text_tower_on_unseen_products(distilled, prepared_fashion):
    run, report = distilled
    model, processor, _ = load_model(run)
    encoder = load_query_encoder(run, processor)
    test = read_products(prepared_fashion, split="test", columns=["title"]).column("title").to_pylist()
    teacher = embed_texts(model, test)
    student = embed_queries(encoder, test)
    assert np.allclose(np.linalg.norm(student, axis=1), 1, atol=1e-5)
    cosine = (student * teacher).sum(axis=1)
    assert report["test"]["products"] == len(test)
    assert report["test"]["cosine_titles"] == pytest.approx(cosine.mean(), abs=1e-4)
    # Untrained, the same student (teacher's piece embeddings, random MLP) points elsewhere.
    untrained = QueryEncoder(encoder.shape, processor)
    untrained.pieces.weight.data.copy_(model.text.bert.embeddings.word_embeddings.weight)
    before = (embed_queries(untrained, test) * teacher).sum(axis=1).mean()
    assert cosine.mean() > 0.9 > before + 0.3
    assert set(report["test"]["t2i"]) == {"teacher", "student"} and 0 <= report["test"]["t2i"]["student"]["r10"] <= 1


def test_a_second_run_reuses_the_encoder_unless_forced(distilled, prepared_fashion, capsys):
    run, report = distilled
    written = (run / META_FILE).stat().st_mtime_ns
    assert main(["distill", "--model", str(run), "--data", str(prepared_fashion), "--epochs", "30", "--batch-size",
                 "64", "--hidden", "128", "--threads", "1"]) == 0
    printed = capsys.readouterr().out
    assert "(up to date, reused)" in printed and f"R@10 {report['test']['t2i']['student']['r10']:.3f}" in printed
    assert (run / META_FILE).stat().st_mtime_ns == written
    assert distill(run, prepared_fashion, DistillConfig(epochs=1, batch_size=64, hidden=128))["reused"] is False


def test_save_and_load_round_trip_and_a_retrained_model_refuses_it(run_dir, tmp_path):
    from safetensors.torch import load_file, save_file

    run = shutil.copytree(run_dir, tmp_path / "run")
    _, processor, _ = load_model(run)
    encoder = QueryEncoder(QueryEncoderShape(vocab_size=processor.tokenizer.get_vocab_size(), width=8, hidden=16,
                                             embed_dim=4), processor)
    assert load_query_encoder(run, processor) is None
    save_query_encoder(encoder, run, {"note": "random weights"})
    loaded = load_query_encoder(run, processor)
    queries = ["red running shoes", "Nike Men Blue T-shirt", "🙂", "x" * 500]
    assert np.array_equal(embed_queries(loaded, queries), embed_queries(encoder, queries))
    assert embed_queries(encoder, []).shape == (0, 4)
    # The model trained further: the same file name, other weights.
    weights = load_file(str(run / "model.safetensors"))
    weights["logit_scale"] = weights["logit_scale"] + 1
    save_file(weights, str(run / "model.safetensors"))
    with pytest.raises(EclipError, match="distilled from other weights.*eclip distill"):
        load_query_encoder(run, processor)
    save_query_encoder(encoder, run, {})
    (run / "query_encoder.safetensors").write_bytes(b"not safetensors")
    with pytest.raises(EclipError, match="does not load.*eclip distill"):
        load_query_encoder(run, processor)


def test_query_strings_are_fragments_of_the_title_and_labels():
    product = {"title": "Turtle Check Men Navy Blue Shirt", "category": "Apparel > Topwear > Shirts",
               "attr_color": "Navy Blue", "attr_gender": "Men"}
    words = product["title"].split()
    for seed in range(20):
        run, subset, labels = query_strings(product, ["attr_color", "attr_gender"], 3, random.Random(seed))
        assert run and run in product["title"]
        kept = subset.split()
        assert 2 <= len(kept) <= 4 and kept == [w for w in words if w in kept]
        assert labels.endswith("shirts") and labels == labels.lower()
    one_word = {"title": "Sandals", "category": None}
    assert query_strings(one_word, [], 3, random.Random(0)) == ["Sandals", "Sandals", "Sandals"]


def test_data_without_a_train_split_is_one_line(run_dir, prepared_fashion, tmp_path, capsys):
    data = rewritten_copy(prepared_fashion, tmp_path / "data",
                          lambda table: table.set_column(table.column_names.index("split"), "split",
                                                         pa.array(["test"] * table.num_rows)))
    run = shutil.copytree(run_dir, tmp_path / "run")
    assert main(["distill", "--model", str(run), "--data", str(data)]) == 2
    error = capsys.readouterr().err
    assert "no products in the train split" in error and "Traceback" not in error
    assert main(["distill", "--model", str(tmp_path / "none"), "--data", str(data)]) == 2
    assert "not a finished `eclip train` run" in capsys.readouterr().err
    assert main(["distill", "--model", str(run), "--data", str(prepared_fashion), "--epochs", "0"]) == 2
    assert "bad distill config: epochs (--epochs) must be positive, got 0" in capsys.readouterr().err
