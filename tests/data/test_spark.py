"""`eclip prepare --engine spark`: the same DATA_DIR as the local engine, row by row; the same one-line errors;
part files; connected components against union-find. One Spark session (local[2], tests/data/conftest.py) serves
every test."""

from __future__ import annotations

import csv
import json
import random
import re
import shutil
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from eclip.cli import main
from eclip.data import store
from eclip.data.catalog import ColumnMapping
from eclip.data.config import PrepareConfig
from eclip.data.prepare import prepare
from eclip.errors import EclipError

pyspark = pytest.importorskip("pyspark")


def outputs(data_dir: Path) -> dict[str, list[dict]]:
    """Every output table of a DATA_DIR, sorted by row, and the report's counts."""
    shards = sorted((data_dir / store.SHARDS).glob("part-*.parquet"))
    products = pa.concat_tables([pq.read_table(s) for s in shards]) if shards else None
    tables = {"products": products, "rejected": pq.read_table(data_dir / store.REJECTED),
              "groups": pq.read_table(data_dir / store.DUPLICATE_GROUPS)}
    out = {name: table.sort_by("row").to_pylist() if table is not None else [] for name, table in tables.items()}
    report = json.loads((data_dir / store.REPORT).read_text())
    out["report"] = {k: report[k] for k in ("input_rows", "accepted", "rejected", "duplicate_groups", "splits")}
    assert report["input_rows"] == report["accepted"] + sum(report["rejected"].values())
    return out


def assert_same(local: Path, spark_dir: Path) -> None:
    a, b = outputs(local), outputs(spark_dir)
    assert a["report"] == b["report"]
    for name in ("products", "rejected", "groups"):
        assert len(a[name]) == len(b[name]), name
        for left, right in zip(a[name], b[name]):
            assert left == right, (name, left["row"])


@pytest.fixture(scope="module")
def planted_offers(tmp_path_factory, prepared_fashion) -> Path:
    """conftest's 480 real offers plus the cases stage 2 decides: a repeated product id, a boilerplate title (3
    distinct images, limit 2), a row without an image, rows without catalog_id that duplicate others."""
    folder = tmp_path_factory.mktemp("spark_offers") / "offers"
    shutil.copytree(prepared_fashion.parent / "offers", folder)
    rows = list(csv.DictReader(open(folder / "catalog.csv", encoding="utf-8")))
    fields = list(rows[0])
    extra = [{**rows[5], "title": "Repeated Id Other Listing"},
             {**rows[1], "product_id": "no-image", "image": "images/none.jpg"},
             {**rows[30], "product_id": "no-catalog", "catalog_id": ""},
             {**rows[33], "product_id": "no-catalog-2", "catalog_id": "", "title": rows[30]["title"]}]
    extra += [{**rows[k], "product_id": f"plain-{k}", "title": "Plain White Cotton Tee Shirt"} for k in (60, 90, 120)]
    with open(folder / "catalog.csv", "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=fields, lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows[:200] + extra[:2] + rows[200:] + extra[2:])
    return folder / "catalog.csv"


@pytest.mark.slow
# keep-first everywhere (the default), with the one-cell near-duplicate search the local engine runs; groups merged
# whole, with the search partitioned into 4 cells (which finds every pair here: test_spark_near.py)
@pytest.mark.parametrize("max_group, cells", [(1, 0), (50, 4)])
def test_spark_gives_the_local_data_dir_row_by_row(spark, planted_offers, tmp_path, max_group, cells):
    config = PrepareConfig(workers=1, boilerplate_max_images=2, max_duplicate_group=max_group,
                           near_duplicate_cells=cells)
    local = prepare(planted_offers, tmp_path / "local", config=config)
    assert {"duplicate_product_id", "title_boilerplate", "image_missing", "duplicate_title"} <= set(local["rejected"])
    report = prepare(planted_offers, tmp_path / "spark", config=config, engine="spark")
    assert report["engine"] == "spark"
    assert_same(tmp_path / "local", tmp_path / "spark")
    assert not list(tmp_path.glob(".*"))  # no building folder left beside the outputs
    # the same input and options: reused whichever engine asks (the answer is the same)
    assert prepare(planted_offers, tmp_path / "spark", config=config) == report
    assert prepare(planted_offers, tmp_path / "spark", config=config, engine="spark") == report


@pytest.mark.slow
def test_a_folder_of_part_files_reads_as_one_catalogue(spark, tmp_path, fashion_dir):
    """CSV, JSONL and Parquet parts in a folder (beside images and a _SUCCESS marker), in the Kaggle layout read
    through the column mapping: the same products, in file order, as the local engine on one CSV of all rows."""
    styles = list(csv.DictReader(open(fashion_dir / "styles.csv", encoding="utf-8")))[:36]
    styles[20]["id"] = styles[3]["id"]  # a repeated id across two part files: the earlier file's row wins
    mapping = ColumnMapping.from_cli([("product_id", "id"), ("title", "productDisplayName")], "images/{id}.jpg",
                                     "masterCategory,subCategory,articleType", "gender,baseColour")
    table, single = tmp_path / "table", tmp_path / "single"
    for folder in (table, single):
        (folder / "images").mkdir(parents=True)
        for r in styles:
            shutil.copy(fashion_dir / "images" / f"{r['id']}.jpg", folder / "images")
    with open(single / "styles.csv", "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(styles[0]), lineterminator="\n")
        writer.writeheader()
        writer.writerows(styles)
    with open(table / "part-00000.csv", "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(styles[0]), lineterminator="\n")
        writer.writeheader()
        writer.writerows(styles[:12])
    with open(table / "part-00001.jsonl", "w", encoding="utf-8") as handle:
        handle.writelines(json.dumps(r) + "\n" for r in styles[12:24])
    pq.write_table(pa.Table.from_pylist(styles[24:]), table / "part-00002.parquet")
    (table / "_SUCCESS").write_bytes(b"")
    config = PrepareConfig(workers=1, dedup="title,image_hash")
    prepare(single / "styles.csv", tmp_path / "local", mapping, config)
    report = prepare(table, tmp_path / "spark", mapping, config, engine="spark")
    assert report["rejected"].get("duplicate_product_id") == 1
    assert_same(tmp_path / "local", tmp_path / "spark")


def _bad_catalogues(folder: Path) -> dict[str, tuple[Path, str]]:
    folder.mkdir()
    cases = {"missing column": (b"id,name,picture\n1,Good Title Here,a.jpg\n", "catalog.csv",
                                "missing field product_id, field title, field image; columns found: id, name, picture"),
             "not utf-8": (b"product_id,title,image\n1,Good Title Here,a.jpg\n2,Caf\xe9 Bad Bytes,b.jpg\n",
                           "catalog.csv", "line 3 is not valid UTF-8"),
             "unreadable parquet": (b"PAR1 this is not a parquet file", "catalog.parquet", "not a readable Parquet file"),
             "no products": (b"product_id,title,image\n", "catalog.csv", "no products")}
    out = {}
    for name, (content, file, message) in cases.items():
        (folder / name.replace(" ", "-")).mkdir()
        path = folder / name.replace(" ", "-") / file
        path.write_bytes(content)
        out[name] = (path, message)
    return out


@pytest.mark.slow
def test_bad_input_fails_on_spark_with_the_local_line(spark, tmp_path, capsys):
    for name, (path, message) in _bad_catalogues(tmp_path / "bad").items():
        with pytest.raises(EclipError) as local:
            prepare(path, tmp_path / "out-local", config=PrepareConfig(workers=1))
        with pytest.raises(EclipError) as on_spark:
            prepare(path, tmp_path / "out-spark", config=PrepareConfig(workers=1), engine="spark")
        assert str(on_spark.value) == str(local.value), name
        assert re.search(message, str(on_spark.value)) and str(path) in str(on_spark.value), name
        assert main(["prepare", str(path), "--out", str(tmp_path / "out-spark"), "--engine", "spark"]) == 2
        error = capsys.readouterr().err.strip().splitlines()[-1]
        assert error == f"eclip prepare: error: {local.value}", name
        assert not list(tmp_path.glob("*out*")) and not list(tmp_path.glob(".*")), name  # nothing left behind


def test_other_spark_failures_are_one_line_saying_what_was_being_done(spark, tmp_path):
    from eclip.data.spark.session import spark_errors

    with pytest.raises(EclipError) as caught, spark_errors(f"reading {tmp_path / 'nothing'}"):
        spark.read.parquet(str(tmp_path / "nothing")).count()
    message = str(caught.value)
    assert "\n" not in message and "at org." not in message
    assert message.startswith(f"Spark failed while reading {tmp_path / 'nothing'}: [PATH_NOT_FOUND]")
    assert message.endswith("check --spark-master, --spark-conf and the executors' logs")


def test_a_part_folder_needs_the_spark_engine_and_spark_options_need_it_too(tmp_path, capsys):
    (tmp_path / "parts").mkdir()
    with pytest.raises(EclipError, match="folder or glob of part files is read by --engine spark only"):
        prepare(tmp_path / "parts", tmp_path / "out")
    assert main(["prepare", str(tmp_path / "parts"), "--out", str(tmp_path / "out"), "--spark-master", "local[2]"]) == 2
    assert "need --engine spark" in capsys.readouterr().err
    assert main(["prepare", str(tmp_path / "parts"), "--out", str(tmp_path / "out"), "--engine", "spark",
                 "--spark-conf", "spark.executor.memory"]) == 2
    assert "expected KEY=VALUE" in capsys.readouterr().err


def test_part_files_are_listed_in_path_order_without_markers(tmp_path):
    from eclip.data.spark import catalog_files

    for name in ("b/part-1.jsonl", "a/part-0.csv", "b/part-2.parquet", "_temporary/part-9.csv", ".part-0.csv.crc",
                 "_SUCCESS", "images/x.jpg"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(b"")
    files, root = catalog_files(tmp_path)
    assert [f.relative_to(tmp_path).as_posix() for f in files] == ["a/part-0.csv", "b/part-1.jsonl", "b/part-2.parquet"]
    assert root == tmp_path.resolve()
    files, root = catalog_files(tmp_path / "b" / "part-*")
    assert len(files) == 2 and root == (tmp_path / "b").resolve()
    with pytest.raises(EclipError, match="no file matches"):
        catalog_files(tmp_path / "c" / "*.csv")
    with pytest.raises(EclipError, match="holds no catalogue files"):
        catalog_files(tmp_path / "images")


def test_without_pyspark_the_spark_engine_says_how_to_install_it(tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "pyspark", None)  # import pyspark raises ImportError
    (tmp_path / "catalog.csv").write_text("product_id,title,image\n")
    assert main(["prepare", str(tmp_path / "catalog.csv"), "--out", str(tmp_path / "out"), "--engine", "spark"]) == 2
    assert "pip install 'eclip[spark]'" in capsys.readouterr().err


def union_find(edges: list[tuple[int, int]]) -> dict[int, int]:
    parent: dict[int, int] = {}

    def find(x: int) -> int:
        while parent.setdefault(x, x) != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for a, b in edges:
        ra, rb = find(a), find(b)
        parent[max(ra, rb)] = min(ra, rb)  # the smaller root stays root, so each root is its component's minimum
    return {v: find(v) for v in parent}


@pytest.mark.slow
def test_connected_components_match_union_find(spark):
    from eclip.data.spark.components import connected_components

    rng = random.Random(0)
    edges, base = [], 0
    for _ in range(6):  # random graphs of every density, with self-loops and repeated edges
        n = rng.randint(2, 300)
        edges += [(base + rng.randrange(n), base + rng.randrange(n)) for _ in range(rng.randint(1, 2 * n))]
        base += 1000
    chain = list(range(base, base + 1500))  # a long chain with shuffled ids: the case min-label propagation is slow on
    rng.shuffle(chain)
    edges += list(zip(chain, chain[1:]))
    edges += [(base + 5000, base + 5000 + k) for k in range(1, 50)]  # a star
    frame = spark.createDataFrame(pa.table({"src": pa.array([a for a, _ in edges], pa.int64()),
                                            "dst": pa.array([b for _, b in edges], pa.int64())}))
    got = {r["vertex"]: r["component"] for r in connected_components(frame).collect()}
    assert got == union_find(edges)
    assert connected_components(frame.limit(0)).count() == 0
