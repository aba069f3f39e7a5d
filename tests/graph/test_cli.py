import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from eclip.cli import main
from eclip.index.vectors import embeddings_table

SMALL = ["--walks-per-node", "3", "--walk-length", "9", "--window", "2", "--dim", "16", "--batch-size", "256", "--epochs", "5"]


@pytest.fixture
def catalog(tmp_path):
    """60 products in two categories; brands, colours and usage lean towards one category each."""
    rng = np.random.default_rng(0)
    rows = ["product_id,title,category,attr_color,attr_usage"]
    for i in range(60):
        shoes = i % 2 == 0
        brand = rng.choice(["Puma", "Bata"] if shoes else ["Titan", "Fossil"])
        color = rng.choice(["Black", "White"] if shoes else ["Silver", "Gold", "Black"])
        usage = "Sports" if shoes else "Formal"
        category = "Footwear > Shoes" if shoes else "Accessories > Watches"
        rows.append(f"{1000 + i},{brand} Men {color} Item {i},{category},{color},{usage}")
    path = tmp_path / "catalog.csv"
    path.write_text("\n".join(rows) + "\n")
    return path


def test_train_then_eval(tmp_path, catalog, capsys):
    run = tmp_path / "run"
    assert main(["graph", "train", "--data", str(catalog), "--out", str(run), *SMALL,
                 "--metapaths", "product-brand-product,product-color-product-usage-product"]) == 0
    summary = json.loads((run / "train.json").read_text())
    assert summary["products_embedded"] == 60 and summary["walks"] == 2 * 3 * 60
    embeddings = pq.read_table(run / "embeddings.parquet")
    assert embeddings.schema.field("graph").type == pa.list_(pa.float32(), 16)
    assert sorted(embeddings["product_id"].to_pylist()) == [str(1000 + i) for i in range(60)]
    nodes = pq.read_table(run / "nodes.parquet")
    assert nodes.num_rows == summary["nodes"] == 60 + 4 + 2 + 2 + 4 + 2  # products, brands, 2 category levels, colours, usages

    # A second identical call reuses the run; other options without --force are refused.
    assert main(["graph", "train", "--data", str(catalog), "--out", str(run), *SMALL,
                 "--metapaths", "product-brand-product,product-color-product-usage-product"]) == 0
    assert "already holds this run" in capsys.readouterr().out
    assert main(["graph", "train", "--data", str(catalog), "--out", str(run), *SMALL, "--dim", "8"]) == 2
    assert "pass --force" in capsys.readouterr().err

    emb_dir = tmp_path / "eclip"
    emb_dir.mkdir()
    ids = [str(1000 + i) for i in range(0, 60)]
    fused = np.random.default_rng(1).standard_normal((60, 8)).astype(np.float32)
    fused[:, 0] += 4 * (np.arange(60) % 2)  # the e-CLIP stand-in knows the category
    pq.write_table(embeddings_table(ids, {"fused": fused}), emb_dir / "embeddings.parquet")
    out = tmp_path / "eval"
    assert main(["graph", "eval", str(run), "--data", str(catalog), "--embeddings", str(emb_dir), "--out", str(out),
                 "--label-level", "2", "--train-fractions", "0.5", "--repeats", "2", "--min-class-size", "5"]) == 0
    printed = capsys.readouterr().out
    report = json.loads((out / "eval.json").read_text())
    methods = {row["method"]: row for row in report["methods"]}
    assert set(methods) == {"metapath2vec++ (run)", "e-CLIP fused", "metapath2vec++ (run) + e-CLIP fused",
                            "TF-IDF titles (LSA 16-d)", "one-hot brand, color, usage", "majority class"}
    assert report["products"] == 60 and report["classes"] == 2
    assert methods["e-CLIP fused"]["micro_f1"]["0.5"] > 0.9
    assert methods["metapath2vec++ (run)"]["macro_f1"]["0.5"] > 0.9  # brands and usage give the category away
    assert "| metapath2vec++ (run) + e-CLIP fused | 24 |" in printed


def test_eval_refuses_runs_that_walked_category_nodes(tmp_path, catalog, capsys):
    run = tmp_path / "leaky"
    assert main(["graph", "train", "--data", str(catalog), "--out", str(run), *SMALL,
                 "--metapaths", "product-category2-product"]) == 0
    assert main(["graph", "eval", str(run), "--data", str(catalog), "--min-class-size", "5"]) == 2
    error = capsys.readouterr().err
    assert "category2 nodes, which give the category away" in error and error.count("\n") == 1


@pytest.mark.parametrize("arguments, message", [
    (["--metapaths", "product-maker-product"], "no node type 'maker'"),
    (["--variant", "deepwalk"], "variant (--variant) must be one of metapath2vec, metapath2vec++, got 'deepwalk'"),
    (["--walk-length", "1"], "walk_length (--walk-length) must be at least 2, got 1"),
])
def test_train_bad_input(tmp_path, catalog, capsys, arguments, message):
    assert main(["graph", "train", "--data", str(catalog), "--out", str(tmp_path / "run"), *arguments]) == 2
    error = capsys.readouterr().err
    assert error.startswith("eclip graph: error:") and message in error


@pytest.mark.parametrize("content, message", [
    (b"product_id,title\n1,Puma Men Shoe\n2,Titan, Women Watch\n", "data.csv:3: 3 fields where the header has 2; "
                                                                   "quote values that hold commas"),
    (b"", "data.csv: empty; expected a header row with product_id and a row per product"),
    ("product_id,title\n1,Puma Men Shoe\n2,Caf\u00e9 Women Top\n".encode("latin-1"),
     "data.csv: products row 2: title is not UTF-8; save the file as UTF-8"),
])
def test_unreadable_csv_names_the_line_or_row(tmp_path, capsys, content, message):
    data = tmp_path / "data.csv"
    data.write_bytes(content)
    assert main(["graph", "train", "--data", str(data), "--out", str(tmp_path / "run")]) == 2
    error = capsys.readouterr().err
    assert error.endswith(f"{message}\n") and error.count("\n") == 1


def test_missing_data_and_bad_config(tmp_path, capsys):
    assert main(["graph", "train", "--data", str(tmp_path / "nope.csv"), "--out", str(tmp_path / "run")]) == 2
    assert "not found" in capsys.readouterr().err
    config = tmp_path / "graph.toml"
    config.write_text("[train]\nwalks = 3\n")
    assert main(["graph", "train", "--data", "x.csv", "--out", str(tmp_path / "run"), "--config", str(config)]) == 2
    assert "unknown key(s) walks" in capsys.readouterr().err


def test_products_without_titles_train_and_evaluate_without_brand_and_tfidf(tmp_path, catalog, capsys):
    """Like the audit's fashion-dev cut without title and brand columns: meta-paths that skip brand still work."""
    import pyarrow.csv as pcsv

    table = pcsv.read_csv(catalog).drop_columns(["title"])
    notitle = tmp_path / "notitle.csv"
    pcsv.write_csv(table, notitle)
    run = tmp_path / "run"
    assert main(["graph", "train", "--data", str(notitle), "--out", str(run), *SMALL,
                 "--metapaths", "product-color-product-usage-product"]) == 0
    capsys.readouterr()
    assert main(["graph", "train", "--data", str(notitle), "--out", str(tmp_path / "brand"), *SMALL,
                 "--metapaths", "product-brand-product"]) == 2
    assert "the graph has no node type 'brand'" in capsys.readouterr().err
    assert main(["graph", "eval", str(run), "--data", str(notitle), "--out", str(tmp_path / "eval"),
                 "--train-fractions", "0.5", "--repeats", "1", "--min-class-size", "5"]) == 0
    printed = capsys.readouterr().out
    assert printed.rstrip().endswith("note: TF-IDF titles skipped: the products have no title column")
    report = json.loads((tmp_path / "eval" / "eval.json").read_text())
    assert [row["method"] for row in report["methods"]] == ["metapath2vec++ (run)", "one-hot color, usage",
                                                            "majority class"]


def test_a_run_is_retrained_when_its_data_file_changes(tmp_path, catalog, capsys):
    options = ["--walks-per-node", "1", "--dim", "8", "--metapaths", "product-color-product"]
    run = tmp_path / "run"
    assert main(["graph", "train", "--data", str(catalog), "--out", str(run), *options]) == 0
    assert main(["graph", "train", "--data", str(catalog), "--out", str(run), *options]) == 0
    assert "already holds this run" in capsys.readouterr().out
    # Same rows, one colour changed: the old run would hold a node that no longer exists.
    catalog.write_text(catalog.read_text().replace(",Silver,", ",Dark Purple,", 1))
    assert main(["graph", "train", "--data", str(catalog), "--out", str(run), *options]) == 0
    assert f"held this run on an older version of {catalog}: retrained" in capsys.readouterr().out
    names = pq.read_table(run / "nodes.parquet")["name"].to_pylist()
    assert "Dark Purple" in names


def test_out_that_is_a_file_is_refused_in_one_line(tmp_path, catalog, capsys):
    taken = tmp_path / "afile"
    taken.write_text("not a folder")
    assert main(["graph", "train", "--data", str(catalog), "--out", str(taken), "--walks-per-node", "1",
                 "--metapaths", "product-color-product"]) == 2
    assert capsys.readouterr().err == f"eclip graph: error: {taken}: exists and is not a folder; choose another --out\n"
    assert main(["graph", "eval", str(tmp_path / "run"), "--data", str(catalog), "--out", str(taken)]) == 2
    assert capsys.readouterr().err == f"eclip graph: error: {taken}: exists and is not a folder; choose another --out\n"


def test_shipped_config_is_the_defaults():
    from eclip.graph.config import GraphConfig, load_config

    assert load_config("default") == load_config() == GraphConfig()
