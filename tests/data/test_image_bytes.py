"""Images inside the catalogue (`--map image_bytes=COLUMN`, a Parquet binary column): real fashion-dev JPEG bytes
and planted bad images give the same accepted products and the same rejections as the same bytes written as files
and named by path. On Spark, test_spark_cluster.py reads image bytes on a real cluster."""

from __future__ import annotations

import csv
import io
import struct
import zlib
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from eclip.data import store
from eclip.data.catalog import ColumnMapping, read_catalog
from eclip.data.config import PrepareConfig
from eclip.data.prepare import prepare
from eclip.errors import EclipError

BYTES_MAPPING = [("product_id", "id"), ("title", "name"), ("image_bytes", "jpeg")]


def _bomb_png() -> bytes:
    """A valid small PNG whose header claims 20000 x 20000 pixels (CRC fixed), as a decompression bomb's does."""
    buffer = io.BytesIO()
    Image.new("RGB", (200, 200), "white").save(buffer, format="PNG")
    data = bytearray(buffer.getvalue())
    data[16:24] = struct.pack(">II", 20000, 20000)  # IHDR width, height after the signature and chunk header
    data[29:33] = struct.pack(">I", zlib.crc32(bytes(data[12:29])))
    return bytes(data)


def _small_jpeg(data: bytes) -> bytes:
    buffer = io.BytesIO()
    Image.open(io.BytesIO(data)).convert("RGB").resize((60, 60)).save(buffer, format="JPEG")
    return buffer.getvalue()


@pytest.fixture(scope="module")
def catalogues(tmp_path_factory, fashion_dir) -> tuple[Path, Path]:
    """The same 46 listings twice: a Parquet table with the image bytes in a column, and a CSV naming the same bytes
    written as files. 40 real fashion-dev products, then planted: a repeated image under another title, bytes that
    are not an image, a truncated JPEG, a PNG header claiming 400 megapixels, a 60 px image, no image."""
    folder = tmp_path_factory.mktemp("image_bytes")
    rows = list(csv.DictReader(open(fashion_dir / "catalog.csv", encoding="utf-8")))[:40]
    listings = [(r["product_id"], r["title"], (fashion_dir / r["image"]).read_bytes()) for r in rows]
    real = listings[7][2]
    listings += [("again", "Another Seller Same Photo Listing", listings[3][2]),
                 ("html", "Broken Link Page Instead Of Photo", b"<html>404 not found</html>"),
                 ("cut", "Half Uploaded Photo Of Shirt", real[:len(real) // 2]),
                 ("bomb", "Enormous Image Header Claim Here", _bomb_png()),
                 ("tiny", "Very Small Thumbnail Only Here", _small_jpeg(real)),
                 ("none", "Listing Without Any Photo Here", None)]
    pq.write_table(pa.table({"id": [p for p, _, _ in listings], "name": [t for _, t, _ in listings],
                             "jpeg": pa.array([d for _, _, d in listings], pa.binary())}), folder / "catalog.parquet")
    (folder / "files" / "images").mkdir(parents=True)
    with open(folder / "files" / "catalog.csv", "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(["product_id", "title", "image"])
        for product_id, title, data in listings:
            if data is not None:
                (folder / "files" / "images" / f"{product_id}.img").write_bytes(data)
            writer.writerow([product_id, title, f"images/{product_id}.img" if data is not None else ""])
    return folder / "catalog.parquet", folder / "files" / "catalog.csv"


def _tables(data_dir: Path) -> tuple[list[dict], list[dict]]:
    products = store.read_products(data_dir).sort_by("row").to_pylist()
    return products, pq.read_table(data_dir / store.REJECTED).sort_by("row").to_pylist()


@pytest.mark.slow
def test_image_bytes_give_the_path_catalogues_products_and_reasons(catalogues, tmp_path):
    table, paths = catalogues
    mapping = ColumnMapping.from_cli(BYTES_MAPPING)
    config = PrepareConfig(workers=1)
    from_bytes = prepare(table, tmp_path / "bytes", mapping, config)
    from_paths = prepare(paths, tmp_path / "paths", config=config)
    assert from_bytes["rejected"] == from_paths["rejected"] == {
        "duplicate_image_hash": 1, "image_missing": 1, "image_too_large": 1, "image_too_small": 1,
        "image_truncated": 1, "image_unreadable": 1}
    assert from_bytes["accepted"] == from_paths["accepted"] == 40
    products, rejected = _tables(tmp_path / "bytes")
    path_products, path_rejected = _tables(tmp_path / "paths")
    assert [p["image_path"] for p in products] == [None] * 40  # no path to record: the image was in the table
    assert [p["image_path"] for p in path_products[:2]] == ["images/15970.img", "images/59263.img"]
    for by_bytes, by_path in zip(products, path_products):  # the same thumbnail bytes, hash, size, split
        assert {**by_bytes, "image_path": None} == {**by_path, "image_path": None}
    assert rejected == path_rejected
    details = {r["product_id"]: r["detail"] for r in rejected}
    assert details["bomb"] == "20000x20000 exceeds 40000000 pixels"
    assert details["tiny"] == "60x60, shorter side below 100"
    assert details["none"] == "no image given"
    assert details["html"] == "UnidentifiedImageError: not an image format Pillow reads"  # the same in every run
    assert not any("image_bytes" in pq.read_schema(s).names for s in (tmp_path / "bytes" / "shards").iterdir())


def test_a_parquet_column_named_image_bytes_is_read_without_a_mapping(catalogues, tmp_path):
    table, _ = catalogues
    renamed = pq.read_table(table).rename_columns(["product_id", "title", "image_bytes"])
    pq.write_table(renamed.slice(0, 3), tmp_path / "catalog.parquet")
    batch = next(read_catalog(tmp_path / "catalog.parquet"))
    assert batch.schema.names == ["row", "product_id", "title", "image_bytes", "image"]
    assert batch.schema.field("image_bytes").type == pa.binary()
    assert batch.column("image_bytes").to_pylist() == renamed.column("image_bytes").to_pylist()[:3]


def test_image_bytes_need_a_binary_parquet_column(catalogues, tmp_path):
    table, paths = catalogues
    with pytest.raises(EclipError) as caught:
        prepare(paths, tmp_path / "out", ColumnMapping.from_cli([("image_bytes", "image")]))
    assert str(caught.value) == (
        f"{paths}: images as bytes (--map image_bytes=image) are read from a Parquet binary column only; this file "
        "holds text: give image paths (--map image=COLUMN) or write the catalogue as Parquet")
    with pytest.raises(EclipError) as caught:
        prepare(table, tmp_path / "out", ColumnMapping.from_cli([*BYTES_MAPPING[:2], ("image_bytes", "name")]))
    assert str(caught.value) == (f"{table}: column 'name' (--map image_bytes) is string, not binary; map the column "
                                 "that holds the encoded image files (JPEG, PNG, WebP bytes)")
    assert not list(tmp_path.iterdir())
