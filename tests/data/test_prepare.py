"""`eclip prepare`: every row accepted or rejected with the right reason, atomic output, clear errors."""

from __future__ import annotations

import csv
import io
import json
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image, ImageOps

from eclip.cli import main
from eclip.data.catalog import ColumnMapping, read_catalog
from eclip.data.config import PrepareConfig
from eclip.data.prepare import prepare
from eclip.data.store import connect, read_products
from eclip.errors import EclipError

FIELDS = ["product_id", "title", "image", "category", "catalog_id", "flagged", "attr_color"]


def write_csv(path: Path, rows: list[dict], fields=FIELDS) -> Path:
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=fields, lineterminator="\n")
        writer.writeheader()
        writer.writerows([{k: r.get(k, "") for k in fields} for r in rows])
    return path


def save(image: Image.Image, path: Path, **options) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path, **options)
    return str(path.relative_to(path.parents[1]))


@pytest.fixture(scope="module")
def planted(tmp_path_factory, fashion_dir):
    """A catalogue of real products plus one planted case for every rejection reason; expected reason per id."""
    root = tmp_path_factory.mktemp("planted")
    images = root / "images"
    images.mkdir()
    real = list(csv.DictReader(open(fashion_dir / "catalog.csv", encoding="utf-8")))
    rows, expected = [], {}

    def add(product_id, title, image, reason=None, **extra):
        rows.append({"product_id": product_id, "title": title, "image": image, "category": "Apparel > Topwear > Shirts", **extra})
        expected[product_id] = reason

    picked = []
    seen_titles = set()
    for r in real:  # distinct titles so only planted duplicates collide
        if r["title"].lower() not in seen_titles:
            seen_titles.add(r["title"].lower())
            picked.append(r)
        if len(picked) == 24:
            break
    for r in picked[:20]:
        shutil.copy(fashion_dir / r["image"], images / Path(r["image"]).name)
        add(r["product_id"], r["title"], f"images/{Path(r['image']).name}")
    base = Image.open(fashion_dir / picked[0]["image"]).convert("RGB")
    photo = Image.open(fashion_dir / picked[20]["image"]).convert("RGB")

    # formats that must be accepted
    rgba = photo.convert("RGBA")
    rgba.putalpha(Image.new("L", photo.size, 0).point(lambda _: 0))  # fully transparent: must come out white
    add("png-alpha", "Transparent Product Shot Sample", save(rgba, images / "alpha.png"))
    add("cmyk", "Cmyk Encoded Catalogue Photo", save(Image.open(fashion_dir / picked[21]["image"]).convert("CMYK"), images / "cmyk.jpg", quality=92))
    sixteen = (np.asarray(Image.open(fashion_dir / picked[22]["image"]).convert("L"), dtype=np.uint16) * 257)
    add("png-16bit", "Sixteen Bit Grey Scan", save(Image.fromarray(sixteen).convert("I;16"), images / "grey16.png"))
    # invalid images
    (images / "corrupt.jpg").write_bytes(b"\xff\xd8\xff\xe0" + bytes(range(256)) * 20)
    add("corrupt", "Corrupt Jpeg Bytes Here", "images/corrupt.jpg", "image_unreadable")
    data = (fashion_dir / picked[23]["image"]).read_bytes()
    (images / "truncated.jpg").write_bytes(data[: len(data) // 2])
    add("truncated", "Half Written Jpeg File", "images/truncated.jpg", "image_truncated")
    (images / "empty.jpg").write_bytes(b"")
    add("empty", "Zero Byte Image File", "images/empty.jpg", "image_unreadable")
    add("missing", "Image File Not There", "images/nope.jpg", "image_missing")
    add("no-image", "No Image Column Value", "", "image_missing")
    (root.parent / "secret.jpg").write_bytes((fashion_dir / picked[0]["image"]).read_bytes())
    add("escape", "Path Escapes The Folder", "../secret.jpg", "image_path_outside_catalog")
    add("absolute", "Absolute Path Is Refused", str(fashion_dir / picked[0]["image"]), "image_path_outside_catalog")
    add("tiny", "Very Small Thumbnail Image", save(base.resize((60, 60)), images / "tiny.jpg"), "image_too_small")
    add("wide", "Extreme Banner Aspect Image", save(base.resize((900, 200)), images / "wide.jpg"), "image_aspect")
    add("bomb", "Huge Pixel Count Header", save(Image.new("RGB", (5000, 4000), "white"), images / "bomb.png"), "image_too_large")
    # text and flags
    add("short", "Nike Shoe", f"images/{Path(picked[1]['image']).name}", "title_too_short")
    add("symbols", "*** Nike ###", f"images/{Path(picked[1]['image']).name}", "title_too_short")
    add("flagged", "Flagged Listing Of Something", f"images/{Path(picked[2]['image']).name}", "flagged", flagged="1")
    add(picked[3]["product_id"], "Same Id Listed Twice", f"images/{Path(picked[4]['image']).name}", "duplicate_product_id")
    # duplicates of another catalog
    add("same-title", picked[5]["title"].upper() + "!", save(photo.rotate(90), images / "rotated.jpg"), "duplicate_title")
    add("reencoded", "Another Seller Different Words", save(base, images / "reencoded.jpg", quality=80), "duplicate_image_hash")
    framed = ImageOps.expand(ImageOps.expand(base, border=12, fill="white"), border=3, fill=(20, 40, 160))
    add("framed", "Framed Copy With Other Title", save(framed, images / "framed.jpg", quality=85), "duplicate_image_embedding")
    # same catalog: offers of one product are kept, not rejected
    add("offer-a", "Grand Offer Alpha Version Shirt", save(photo.resize((300, 300)), images / "oa.jpg"), catalog_id="C1")
    add("offer-b", "Grand Offer Alpha Version Shirt", save(photo.resize((300, 300)), images / "ob.jpg", quality=70), catalog_id="C1")
    catalog = write_csv(root / "catalog.csv", rows)
    report = prepare(catalog, root / "out", config=PrepareConfig(workers=2, max_pixels=10_000_000))
    return root, report, expected


IMPOSSIBLE_PATHS = {  # product id -> an image path no file can have
    "nul-byte": "images/15970\x00.jpg", "name-too-long": "images/" + "a" * 300 + ".jpg",
    "path-too-long": "images/" + "a/" * 3000 + "x.jpg", "symlink-loop": "images/loop-a",
}


def _impossible_paths_catalogue(folder: Path, fashion_dir: Path) -> Path:
    """A real product whose image is there, then one row per path the OS refuses."""
    catalog = _real_catalogue(folder, fashion_dir, 1)
    (folder / "images" / "loop-a").symlink_to("loop-b")
    (folder / "images" / "loop-b").symlink_to("loop-a")
    rows = list(csv.DictReader(open(catalog, encoding="utf-8")))
    rows += [{**rows[0], "product_id": pid, "image": path} for pid, path in IMPOSSIBLE_PATHS.items()]
    return write_csv(catalog, rows, fields=list(rows[0]))


def test_paths_no_file_can_have_are_rejected_as_missing(tmp_path, fashion_dir):
    catalog = _impossible_paths_catalogue(tmp_path / "cat", fashion_dir)
    report = prepare(catalog, tmp_path / "out", config=PrepareConfig(workers=1, dedup="none"))
    assert report["accepted"] == 1 and report["rejected"] == {"image_missing": len(IMPOSSIBLE_PATHS)}
    rejected = {r["product_id"]: r["detail"] for r in pq.read_table(tmp_path / "out" / "rejected.parquet").to_pylist()}
    assert rejected["nul-byte"] == "'images/15970\\x00.jpg': no file can have this path (embedded null byte)"
    assert rejected["name-too-long"].endswith("no file can have this path (File name too long)")
    assert "Symlink loop" in rejected["symlink-loop"]


def test_every_row_is_accounted_for_with_its_reason(planted):
    root, report, expected = planted
    assert report["input_rows"] == len(expected) + 1  # + the repeated product id
    assert report["input_rows"] == report["accepted"] + sum(report["rejected"].values())
    rejected = pq.read_table(root / "out" / "rejected.parquet").to_pylist()
    reasons = {}
    for r in rejected:
        key = r["product_id"] if r["reason"] != "duplicate_product_id" else r["product_id"] + "#dup"
        reasons[key] = r["reason"]
    for product_id, reason in expected.items():
        if reason == "duplicate_product_id":
            assert reasons.get(product_id + "#dup") == "duplicate_product_id"
        elif reason is None:
            assert product_id not in reasons, f"{product_id} wrongly rejected: {reasons.get(product_id)}"
        else:
            assert reasons.get(product_id) == reason, product_id
    assert report["rejected"] == {k: v for k, v in sorted(_count(r["reason"] for r in rejected).items())}


def _count(values):
    out = {}
    for v in values:
        out[v] = out.get(v, 0) + 1
    return out


def test_duplicates_point_at_the_kept_row(planted):
    root, report, _ = planted
    rows = {r["product_id"]: r for r in pq.read_table(root / "out" / "rejected.parquet").to_pylist()}
    assert rows["reencoded"]["detail"] == f"duplicate_of={next(iter(_first_id(root)))}"
    kept = set(read_products(root / "out", columns=["product_id"]).column("product_id").to_pylist())
    assert {"offer-a", "offer-b"} <= kept
    groups = pq.read_table(root / "out" / "duplicate_groups.parquet").to_pylist()
    offer_groups = {g["group_id"] for g in groups if g["product_id"] in ("offer-a", "offer-b")}
    assert len(offer_groups) == 1 and all(g["kept"] for g in groups if g["product_id"] == "offer-b")
    sizes = {str(n): c for n, c in sorted(_count(_count(g["group_id"] for g in groups).values()).items())}
    assert report["duplicate_group_sizes"] == sizes
    assert report["keep_first_duplicate_groups"] == sum(sizes.values())  # the default: every group keep-first


def _first_id(root):
    return [next(csv.DictReader(open(root / "catalog.csv")))["product_id"]]


def test_accepted_images_are_clean_rgb_thumbnails(planted):
    root, _, _ = planted
    table = read_products(root / "out").to_pylist()
    by_id = {r["product_id"]: r for r in table}
    alpha = Image.open(io.BytesIO(by_id["png-alpha"]["thumbnail"]))
    assert alpha.mode == "RGB" and np.asarray(alpha).min() >= 250  # fully transparent composited on white
    grey = np.asarray(Image.open(io.BytesIO(by_id["png-16bit"]["thumbnail"])))
    assert 30 < grey.mean() < 250  # scaled from 16 bits, not clipped to white
    assert Image.open(io.BytesIO(by_id["cmyk"]["thumbnail"])).mode == "RGB"
    for r in table:
        assert len(r["image_hash"]) == 29 and r["image_hash"].isdigit()
        assert r["split"] in ("train", "val", "test") and r["group_id"]


def test_duckdb_catalogue_answers_sql(planted):
    root, report, _ = planted
    con = connect(root / "out")
    assert con.sql("select count(*) from products").fetchall()[0][0] == report["accepted"]
    assert dict(con.sql("select reason, count(*) from rejected group by 1").fetchall()) == report["rejected"]


def test_split_is_a_function_of_the_group(prepared_fashion):
    table = read_products(prepared_fashion, columns=["group_id", "split"]).to_pylist()
    split_of = {}
    for r in table:
        assert split_of.setdefault(r["group_id"], r["split"]) == r["split"]
    assert set(split_of.values()) == {"train", "val", "test"}
    assert len(read_products(prepared_fashion, split="test")) == sum(r["split"] == "test" for r in table)


def test_other_layouts_and_formats_give_the_same_products(tmp_path, fashion_dir):
    styles = list(csv.DictReader(open(fashion_dir / "styles.csv", encoding="utf-8")))[:40]
    folder = tmp_path / "kaggle"
    (folder / "images").mkdir(parents=True)
    for r in styles:
        shutil.copy(fashion_dir / "images" / f"{r['id']}.jpg", folder / "images")
    write_csv(folder / "styles.csv", styles, fields=list(styles[0]))
    mapping = ColumnMapping.from_cli([("product_id", "id"), ("title", "productDisplayName"), ("attr_color", "baseColour")],
                                     "images/{id}.jpg", "masterCategory,subCategory,articleType", "gender")
    config = PrepareConfig(workers=1, dedup="none")
    csv_report = prepare(folder / "styles.csv", tmp_path / "from-csv", mapping, config)
    from_csv = read_products(tmp_path / "from-csv", columns=["product_id", "category", "attr_color", "attr_gender"])
    first = from_csv.to_pylist()[0]
    source = next(r for r in styles if r["id"] == first["product_id"])
    assert first["category"] == f"{source['masterCategory']} > {source['subCategory']} > {source['articleType']}"
    assert first["attr_color"] == source["baseColour"] and first["attr_gender"] == source["gender"]
    with open(folder / "styles.jsonl", "w", encoding="utf-8") as handle:
        for r in styles:
            handle.write(json.dumps(r) + "\n")
    pq.write_table(pa.Table.from_pylist(styles), folder / "styles.parquet")
    for name in ("styles.jsonl", "styles.parquet"):
        report = prepare(folder / name, tmp_path / name, mapping, config)
        assert report["accepted"] == csv_report["accepted"]
        assert read_products(tmp_path / name, columns=["product_id"]).equals(from_csv.select(["product_id"]))


def _real_catalogue(folder: Path, fashion_dir: Path, count: int) -> Path:
    """The first `count` real fashion-dev rows with their images, in `folder`."""
    rows = list(csv.DictReader(open(fashion_dir / "catalog.csv", encoding="utf-8")))[:count]
    (folder / "images").mkdir(parents=True)
    for r in rows:
        shutil.copy(fashion_dir / r["image"], folder / r["image"])
    return write_csv(folder / "catalog.csv", rows, fields=list(rows[0]))


def test_default_dedup_finishes_when_no_two_images_look_alike(tmp_path, fashion_dir):
    catalog = _real_catalogue(tmp_path / "cat", fashion_dir, 10)  # ten distinct products: no near-duplicate pair
    report = prepare(catalog, tmp_path / "out", config=PrepareConfig(workers=1))
    assert report["accepted"] == 10 and report["rejected"] == {} and report["duplicate_groups"] == 0
    assert report["duplicate_group_sizes"] == {} and report["keep_first_duplicate_groups"] == 0


def test_parquet_columns_of_any_type_are_read_only_when_used(tmp_path, fashion_dir):
    rows = list(csv.DictReader(open(_real_catalogue(tmp_path, fashion_dir, 3), encoding="utf-8")))
    table = pa.Table.from_pylist(rows).append_column("tags", pa.array([["summer", "sale"], [], None]))
    table = table.append_column("picture", pa.array([{"bytes": b"\xff\xd8", "path": "a.jpg"}] * 3))  # datasets' images
    table = table.append_column("raw", pa.array([b"\xff\xfe", b"ok", None], pa.binary()))  # not UTF-8
    pq.write_table(table, tmp_path / "catalog.parquet")
    config = PrepareConfig(workers=1, dedup="none")
    assert prepare(tmp_path / "catalog.parquet", tmp_path / "unused", config=config)["accepted"] == 3
    prepare(tmp_path / "catalog.parquet", tmp_path / "tags", ColumnMapping(attribute_columns=("tags",)), config)
    tags = read_products(tmp_path / "tags", columns=["attr_tags"]).column("attr_tags").to_pylist()
    assert tags == ['["summer", "sale"]', "[]", None]  # as a JSONL catalogue's list would read
    with pytest.raises(EclipError, match="column 'raw', row 1 is not UTF-8 text"):
        prepare(tmp_path / "catalog.parquet", tmp_path / "raw", ColumnMapping(attribute_columns=("raw",)), config)


@pytest.mark.parametrize("content, message", [
    (b"product_id,title,image\n1,Good Title Here,a.jpg\n2,Caf\xe9 Bad Bytes,b.jpg\n", "line 3 is not valid UTF-8"),
    (b"id,name,picture\n1,Good Title Here,a.jpg\n", "columns found: id, name, picture"),
    (b"", "empty"),
    (b"product_id,title,image\n", "no products"),
    (b"product_id,title,image,title\n1,Good Title Here,a.jpg,x\n", "column 'title' appears twice in the header .columns 2 and 4."),
])
def test_bad_catalogues_fail_with_one_clear_line(tmp_path, content, message, capsys):
    path = tmp_path / "catalog.csv"
    path.write_bytes(content)
    with pytest.raises(EclipError, match=message):
        prepare(path, tmp_path / "out", config=PrepareConfig(workers=1))
    assert not (tmp_path / "out").exists()
    assert main(["prepare", str(path), "--out", str(tmp_path / "out"), "--workers", "1"]) == 2
    error = capsys.readouterr().err.strip()
    assert "\n" not in error and re.search(message, error) and "Traceback" not in error


@pytest.mark.parametrize("name", ["catalog.csv", "catalog.tsv", "catalog.jsonl"])
def test_a_utf8_byte_order_mark_is_read_past(tmp_path, fashion_dir, name):
    rows = list(csv.DictReader(open(_real_catalogue(tmp_path, fashion_dir, 3), encoding="utf-8")))
    path = tmp_path / name
    with path.open("w", encoding="utf-8-sig", newline="") as handle:  # what spreadsheet programs write
        if name.endswith(".jsonl"):
            handle.writelines(json.dumps(r) + "\n" for r in rows)
        else:
            writer = csv.DictWriter(handle, fieldnames=list(rows[0]), delimiter="\t" if name.endswith(".tsv") else ",")
            writer.writeheader()
            writer.writerows(rows)
    prepare(path, tmp_path / "out", config=PrepareConfig(workers=1, dedup="none"))
    products = read_products(tmp_path / "out", columns=["product_id", "title"]).to_pylist()
    assert products == [{"product_id": r["product_id"], "title": r["title"]} for r in rows]


@pytest.mark.parametrize("template, message", [
    ("images/{id.jpg", " is not a valid template (ValueError: expected '}' before end of string)"),
    ("images/{id}.jpg}", " is not a valid template (ValueError: Single '}' encountered in format string)"),
    ("images/{id:d}.jpg", " is not a valid template (ValueError: Unknown format code 'd' for object of type 'str')"),
    ("images/{}.jpg", " names no column, so every product would get the same image"),
    ("images/{id.stem}.jpg", ": {id.stem} is not a column; '.' and '[' are format syntax"),
])
def test_malformed_image_template_fails_with_one_clear_line(tmp_path, fashion_dir, template, message, capsys):
    out = tmp_path / "out"
    assert main(["prepare", str(fashion_dir / "styles.csv"), "--out", str(out), "--map", "product_id=id",
                 "--map", "title=productDisplayName", "--image-template", template]) == 2
    error = capsys.readouterr().err.strip()
    assert error.startswith(f"eclip prepare: error: --image-template {template!r}{message}") and "\n" not in error
    assert not out.exists()


@pytest.mark.parametrize("option, message", [
    (["--shard-rows", "0"], "shard_rows (--shard-rows) must be at least 1, got 0"),  # used to write empty shards forever
    (["--batch-rows", "0"], "batch_rows (--batch-rows) must be at least 1, got 0"),
    (["--workers", "-1"], "workers (--workers) must be 0 or more, got -1"),
    (["--thumbnail-size", "0"], "thumbnail_size (--thumbnail-size) must be at least 1, got 0"),
    (["--max-aspect", "nan"], "max_aspect (--max-aspect) must be at least 1, got nan"),
    (["--val-fraction", "-0.1", "--test-fraction", "0.2"], "val_fraction (--val-fraction) must be between 0 and 1, got -0.1"),
    (["--near-duplicate-threshold", "1.5"], "near_duplicate_threshold (--near-duplicate-threshold) must be between 0 and 1, got 1.5"),
    (["--min-title-tokens", "5", "--max-title-tokens", "4"], "max_title_tokens (4) is below min_title_tokens (5): every title would be rejected"),
])
def test_out_of_range_options_fail_with_one_clear_line(tmp_path, fashion_dir, option, message, capsys):
    out = tmp_path / "out"
    assert main(["prepare", str(fashion_dir / "catalog.csv"), "--out", str(out), *option]) == 2
    assert capsys.readouterr().err.strip() == f"eclip prepare: error: bad prepare config: {message}"
    assert not out.exists()


def test_jsonl_columns_are_the_keys_of_every_line(tmp_path, fashion_dir):
    rows = list(csv.DictReader(open(_real_catalogue(tmp_path, fashion_dir, 3), encoding="utf-8")))
    del rows[0]["image"]  # the first line alone would make the whole file 'missing field image'
    rows[2]["attr_material"] = "cotton"  # a key only a later line has
    path = tmp_path / "catalog.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    report = prepare(path, tmp_path / "out", config=PrepareConfig(workers=1, dedup="none"))
    assert report["accepted"] == 2 and report["rejected"] == {"image_missing": 1}
    products = read_products(tmp_path / "out", columns=["product_id", "attr_material"]).to_pylist()
    assert products == [{"product_id": rows[1]["product_id"], "attr_material": None},
                        {"product_id": rows[2]["product_id"], "attr_material": "cotton"}]


PRICES = {  # as sellers write them -> the price read, or None: rejected as price_invalid
    "12,900": 12900.0, "$12.99": 12.99, "12.99 EUR": 12.99, "12,50 €": 12.5, "19,99": 19.99, "1.299,00": 1299.0,
    "1,299.00": 1299.0, "1.299.000": 1299000.0, "US$ 5": 5.0, "0": 0.0, "1.299": 1.299,
    "1e3": None, "1.5k": None, "-5": None, "nan": None, "inf": None, "12.99.99": None, "10-20": None, "free": None,
    "12,9000": None, "Rs. 100": None,
}


def test_prices_are_read_one_way_or_rejected(tmp_path, fashion_dir):
    rows = list(csv.DictReader(open(_real_catalogue(tmp_path, fashion_dir, len(PRICES)), encoding="utf-8")))
    for row, price in zip(rows, PRICES):
        row["price"] = price
    catalog = write_csv(tmp_path / "catalog.csv", rows, fields=[*rows[0]])
    report = prepare(catalog, tmp_path / "out", config=PrepareConfig(workers=1, dedup="none"))
    read = dict(zip(*read_products(tmp_path / "out", columns=["product_id", "price"]).to_pydict().values()))
    rejected = {r["product_id"]: r for r in pq.read_table(tmp_path / "out" / "rejected.parquet").to_pylist()}
    assert report["rejected"] == {"price_invalid": sum(v is None for v in PRICES.values())}
    for row, (text, expected) in zip(rows, PRICES.items()):
        if expected is None:
            assert rejected[row["product_id"]]["detail"].startswith(f"price {text!r} is not one amount"), text
        else:
            assert read[row["product_id"]] == pytest.approx(expected), text


def test_ids_are_compared_without_surrounding_spaces(tmp_path, fashion_dir):
    rows = list(csv.DictReader(open(_real_catalogue(tmp_path, fashion_dir, 4), encoding="utf-8")))
    first = rows[0]["product_id"]
    rows[1]["product_id"], rows[2]["product_id"] = f" {first}", f"{first}\t"
    rows[3]["product_id"] = f" {rows[3]['product_id']} "
    report = prepare(write_csv(tmp_path / "catalog.csv", rows, fields=[*rows[0]]), tmp_path / "out",
                     config=PrepareConfig(workers=1, dedup="none"))
    assert report["rejected"] == {"duplicate_product_id": 2}
    kept = read_products(tmp_path / "out", columns=["product_id"]).column("product_id").to_pylist()
    assert kept == [first, rows[3]["product_id"].strip()]


FLAGS = {"1": "flagged", "yes": "flagged", "TRUE": "flagged", " y ": "flagged", "0": None, "no": None, "F": None,
         "": None, "maybe": "flagged_invalid", "2": "flagged_invalid", "-": "flagged_invalid"}


def test_flagged_values_are_true_false_or_rejected_as_unreadable(tmp_path, fashion_dir):
    rows = list(csv.DictReader(open(_real_catalogue(tmp_path, fashion_dir, len(FLAGS)), encoding="utf-8")))
    for row, flag in zip(rows, FLAGS):
        row["flagged"] = flag
    prepare(write_csv(tmp_path / "catalog.csv", rows, fields=[*rows[0]]), tmp_path / "out",
            config=PrepareConfig(workers=1, dedup="none"))
    rejected = {r["product_id"]: r for r in pq.read_table(tmp_path / "out" / "rejected.parquet").to_pylist()}
    for row, (flag, reason) in zip(rows, FLAGS.items()):
        assert (rejected[row["product_id"]]["reason"] if row["product_id"] in rejected else None) == reason, flag
    assert rejected[rows[-1]["product_id"]]["detail"] == \
        "flagged value '-' is neither true (1/true/t/yes/y) nor false (0/false/f/no/n or empty)"


def test_bad_jsonl_line_is_named(tmp_path):
    path = tmp_path / "c.jsonl"
    path.write_text('{"product_id": "1", "title": "A Good Title", "image": "a.jpg"}\n{"product_id": 2,\n')
    with pytest.raises(EclipError, match="line 2 is not valid JSON"):
        prepare(path, tmp_path / "out", config=PrepareConfig(workers=1))


def test_rerun_reuses_a_finished_dataset(planted):
    root, report, _ = planted
    shard = next((root / "out" / "shards").glob("*.parquet"))
    before = shard.stat().st_mtime_ns
    again = prepare(root / "catalog.csv", root / "out", config=PrepareConfig(workers=2, max_pixels=10_000_000))
    assert again == report and shard.stat().st_mtime_ns == before


def test_only_a_finished_data_dir_of_prepare_is_replaced(tmp_path, fashion_dir, capsys):
    catalog = _real_catalogue(tmp_path / "cat", fashion_dir, 3)
    run = lambda out, *options: main(["prepare", str(catalog), "--out", str(out), "--workers", "1", *options])
    report_dir = tmp_path / "eval-report"  # `eclip eval --out` writes a report.json too
    report_dir.mkdir()
    (report_dir / "report.json").write_text("{}")
    (report_dir / "report.md").write_text("| scores |")
    assert run(report_dir) == 2
    assert "holds other files than `eclip prepare` writes (report.md)" in capsys.readouterr().err
    (report_dir / "report.md").unlink()
    assert run(report_dir) == 2
    assert "not a finished `eclip prepare` output" in capsys.readouterr().err
    assert (report_dir / "report.json").read_text() == "{}"

    data_dir = tmp_path / "data"
    assert run(data_dir, "--dedup", "title") == 0
    assert run(data_dir, "--dedup", "none") == 0  # its own output, other options: rebuilt
    assert json.loads((data_dir / "report.json").read_text())["options"]["dedup"] == "none"
    (data_dir / "notes.txt").write_text("mine")
    assert run(data_dir, "--dedup", "title") == 2
    assert "writes (notes.txt)" in capsys.readouterr().err
    assert (data_dir / "notes.txt").read_text() == "mine"
    assert json.loads((data_dir / "report.json").read_text())["options"]["dedup"] == "none"


def test_out_that_is_a_file_fails_with_one_clear_line(tmp_path, fashion_dir, capsys):
    catalog = _real_catalogue(tmp_path / "cat", fashion_dir, 2)
    (tmp_path / "taken").write_text("mine")
    for out, message in [(tmp_path / "taken", "is a file, not a folder"),
                         (tmp_path / "taken" / "sub" / "data", f"lies under {tmp_path / 'taken'}, which is a file")]:
        assert main(["prepare", str(catalog), "--out", str(out), "--workers", "1"]) == 2
        error = capsys.readouterr().err.strip()
        assert error == f"eclip prepare: error: --out {out} {message}: choose a new or empty folder"
    assert (tmp_path / "taken").read_text() == "mine"


@pytest.mark.slow
def test_killed_run_leaves_nothing_complete_and_rerun_matches(tmp_path, fashion_dir):
    rows = list(csv.DictReader(open(fashion_dir / "catalog.csv", encoding="utf-8")))[:600]
    folder = tmp_path / "cat"
    (folder / "images").mkdir(parents=True)
    for r in rows:
        shutil.copy(fashion_dir / r["image"], folder / r["image"])
    catalog = write_csv(folder / "catalog.csv", rows, fields=list(rows[0]))
    out = tmp_path / "out"
    command = [sys.executable, "-m", "eclip.cli", "prepare", str(catalog), "--out", str(out), "--workers", "1", "--batch-rows", "16"]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 60
    while time.time() < deadline and not list(tmp_path.glob(".out.building/_spool/batch-0000003.parquet")):
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert not (out / "report.json").exists()  # nothing looks complete
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
    assert not list(tmp_path.glob(".out.building*"))  # the stale build was cleared
    reference = tmp_path / "reference"
    prepare(catalog, reference, config=PrepareConfig(workers=2))
    for name in ("rejected.parquet", "duplicate_groups.parquet"):
        assert pq.read_table(out / name).equals(pq.read_table(reference / name))
    assert read_products(out).equals(read_products(reference))
