"""Multi-seller offers: K listings of every real product, as different sellers would upload them.

Offer 0 is the original listing (same title, image copied byte for byte). Offers 1..K-1 are the same
product re-listed: the image re-encoded and maybe resized, cropped, padded, framed or watermarked; the
title maybe tagged ("[Free shipping]"), reordered, shortened, misspelt or re-cased. All offers of a
product share `catalog_id`, so dedup, matching and clustering can be scored against `offers_truth.parquet`.

Every offer draws its variations from its own generator seeded by (seed, product_id, offer index), so the
output is byte-identical whatever the worker count, chunking or `limit`.
"""

from __future__ import annotations

import csv
import hashlib
import json
import multiprocessing
import os
import random
import re
import shutil
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from eclip.data.catalog import bad_utf8_line, check_distinct_columns
from eclip.data.images import ImageLimits, ImageRejected, decode_image, locate_image
from eclip.data.seller_edits import vary_image, vary_title
from eclip.errors import EclipError
from eclip.files import check_out_folder
from eclip.progress import progress_bar
from eclip.runs.atomic import building_folder, publish_folder

REQUIRED_COLUMNS = ("product_id", "title", "image")
# Bump when a seller edit (seller_edits.py) changes, so that a finished OUT made by older code is regenerated.
GENERATOR_VERSION = 1
CHUNK_PRODUCTS = 32
# File systems allow 255 bytes a name; a longer id is shortened and hashed, leaving room for the extension.
_MAX_STEM_CHARS = 200
_MAX_FIELD_CHARS = 1 << 30  # a field this long would be an unclosed quote swallowing the file, not a description
# What OUT holds; the record is written last, so its presence marks a complete OUT.
CATALOG_FILE, IMAGES_DIR, TRUTH_FILE, RECORD_FILE = "catalog.csv", "images", "offers_truth.parquet", "offers.json"
OUT_ENTRIES = (CATALOG_FILE, IMAGES_DIR, TRUTH_FILE, RECORD_FILE)

# Size and aspect are `prepare`'s decision, so only the decompression-bomb cap applies, and sides of 2 px: a crop
# cuts at least one column, which would leave nothing of an image one pixel wide, so such a placeholder is copied
# through as offer 0 only.
_DECODE_LIMITS = ImageLimits(min_side=2, max_aspect=float("inf"))


@dataclass(frozen=True)
class ProductTask:
    """One source product as the workers see it: `source` is None when its image cannot be opened."""
    product_id: str
    title: str
    image: str  # as given in the catalogue
    source: Path | None


@dataclass(frozen=True)
class Offer:
    product_id: str
    image: str  # relative to OUT; as given in the catalogue when it could not be opened
    title: str
    image_ops: tuple[str, ...]
    title_ops: tuple[str, ...]


# ---------------------------------------------------------------- offers of one product
def _offer_id(product_id: str, index: int) -> str:
    return f"{product_id}-o{index}"


def _file_stem(offer_id: str) -> str:
    """`offer_id` when it is a safe file name, else a sanitized name made unique by a short hash."""
    safe = re.sub(r"[^A-Za-z0-9._-]", "_", offer_id).lstrip(".")
    if safe == offer_id and len(safe) <= _MAX_STEM_CHARS:
        return safe
    return f"{safe[:80]}-{hashlib.sha1(offer_id.encode()).hexdigest()[:10]}"


def _offer_rng(seed: int, product_id: str, index: int, part: str) -> random.Random:
    # String seeds go through SHA-512: stable across processes and Python runs, unlike hash().
    return random.Random(f"{seed}/{product_id}/{index}/{part}")


def make_product_offers(task: ProductTask, per_product: int, seed: int, images_dir: Path) -> list[Offer]:
    """Write the images of one product's offers into `images_dir`; returns the offers, offer 0 first."""
    original_id = _offer_id(task.product_id, 0)
    as_given = [Offer(original_id, task.image, task.title, (), ())]
    if task.source is None:
        return as_given
    try:
        data = task.source.read_bytes()
    except OSError:  # no permission, an I/O error: `prepare` rejects it as image_unreadable
        return as_given
    original_name = _file_stem(original_id) + (task.source.suffix.lower() or ".jpg")
    (images_dir / original_name).write_bytes(data)
    offers = [Offer(original_id, f"images/{original_name}", task.title, (), ())]
    try:
        image, _, _ = decode_image(data, _DECODE_LIMITS)
    except ImageRejected:
        return offers  # copied through once; `prepare` will reject it with the reason
    for index in range(1, per_product):
        offer_id = _offer_id(task.product_id, index)
        jpeg, image_ops = vary_image(image, _offer_rng(seed, task.product_id, index, "image"))
        title, title_ops = vary_title(task.title, _offer_rng(seed, task.product_id, index, "title"))
        name = _file_stem(offer_id) + ".jpg"
        (images_dir / name).write_bytes(jpeg)
        offers.append(Offer(offer_id, f"images/{name}", title, tuple(image_ops), tuple(title_ops)))
    return offers


def _make_chunk(tasks: list[ProductTask], per_product: int, seed: int, images_dir: Path) -> list[list[Offer]]:
    return [make_product_offers(task, per_product, seed, images_dir) for task in tasks]


# ---------------------------------------------------------------- catalogue in, folder out
def _read_catalog(catalog: Path, limit: int | None) -> tuple[list[str], list[dict[str, str]]]:
    if not catalog.is_file():
        raise EclipError(f"{catalog}: no such file; pass a catalogue CSV (product_id,title,image,...)")
    if catalog.suffix.lower() != ".csv":
        raise EclipError(f"{catalog}: offers reads a CSV catalogue in the default layout (product_id,title,image,...)")
    # Descriptions run past the csv module's default 128 KB a field; prepare's reader has no such limit.
    csv.field_size_limit(max(csv.field_size_limit(), _MAX_FIELD_CHARS))
    with catalog.open(newline="", encoding="utf-8-sig") as handle:
        reader = csv.reader(handle)
        try:
            return _read_rows(catalog, reader, limit)
        except UnicodeDecodeError:
            raise EclipError(f"{catalog}: line {bad_utf8_line(catalog)} is not valid UTF-8; re-encode the file as "
                             "UTF-8") from None
        except csv.Error as error:
            raise EclipError(f"{catalog}: line {reader.line_num} cannot be parsed as CSV ({error})") from None


def _read_rows(catalog: Path, reader, limit: int | None) -> tuple[list[str], list[dict[str, str]]]:
    header = next(reader, None)
    if not header:
        raise EclipError(f"{catalog}: empty file; expected a header row product_id,title,image,...")
    check_distinct_columns(catalog, header)
    missing = [c for c in REQUIRED_COLUMNS if c not in header]
    if missing:
        raise EclipError(f"{catalog}: missing column(s) {', '.join(missing)}; found {', '.join(header)}")
    rows: list[dict[str, str]] = []
    first_row: dict[str, int] = {}
    for row_number, values in enumerate(reader, start=1):
        if limit is not None and len(rows) == limit:
            break
        if not values:
            continue
        if len(values) != len(header):
            raise EclipError(f"{catalog}: row {row_number} has {len(values)} fields, the header has {len(header)}")
        row = dict(zip(header, values))
        product_id = row["product_id"].strip()  # as prepare reads ids: ' p1' repeats 'p1'
        if not product_id:
            raise EclipError(f"{catalog}: row {row_number} has an empty product_id; every product needs one")
        if product_id in first_row:
            raise EclipError(f"{catalog}: row {row_number} repeats product_id {row['product_id']!r} of row "
                             f"{first_row[product_id]}; offer ids must be unique")
        first_row[product_id] = row_number
        rows.append(row)
    return header, rows


def _task(row: dict[str, str], root: Path) -> ProductTask:
    try:
        source = locate_image(root, row["image"])
    except ImageRejected:  # copied through as given: `prepare` rejects it for the same reason
        source = None
    return ProductTask(row["product_id"], row["title"], row["image"], source)


def _arguments(catalog: Path, per_product: int, seed: int, limit: int | None) -> dict:
    stat = catalog.stat()
    return {"catalog": str(catalog.resolve()), "catalog_bytes": stat.st_size, "catalog_mtime_ns": stat.st_mtime_ns,
            "per_product": per_product, "seed": seed, "limit": limit, "version": GENERATOR_VERSION}


def _finished_record(out: Path) -> dict | None:
    """{"arguments", "summary"} of a complete OUT, else None."""
    try:
        record = json.loads((out / RECORD_FILE).read_text())
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) and {"arguments", "summary"} <= set(record) else None


def _write_catalog(path: Path, header: list[str], rows: list[dict[str, str]], offers: list[list[Offer]]) -> None:
    columns = list(header)
    if "catalog_id" not in columns:
        columns.insert(columns.index("product_id") + 1, "catalog_id")
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns, lineterminator="\n")
        writer.writeheader()
        for row, product_offers in zip(rows, offers):
            for offer in product_offers:
                writer.writerow({**row, "product_id": offer.product_id, "catalog_id": f"c{row['product_id']}",
                                 "title": offer.title, "image": offer.image})


def _write_truth(path: Path, rows: list[dict[str, str]], offers: list[list[Offer]]) -> None:
    flat = [(row["product_id"], index, offer) for row, product_offers in zip(rows, offers)
            for index, offer in enumerate(product_offers)]
    table = pa.table({
        "product_id": pa.array([offer.product_id for _, _, offer in flat], pa.string()),
        "catalog_id": pa.array([f"c{source}" for source, _, _ in flat], pa.string()),
        "source_product_id": pa.array([source for source, _, _ in flat], pa.string()),
        "offer_index": pa.array([index for _, index, _ in flat], pa.int32()),
        "image_ops": pa.array([list(offer.image_ops) for _, _, offer in flat], pa.list_(pa.string())),
        "title_ops": pa.array([list(offer.title_ops) for _, _, offer in flat], pa.list_(pa.string())),
    })
    pq.write_table(table, path)


def _generate(tasks: list[ProductTask], per_product: int, seed: int, images_dir: Path, workers: int) -> list[list[Offer]]:
    chunks = [tasks[i:i + CHUNK_PRODUCTS] for i in range(0, len(tasks), CHUNK_PRODUCTS)]
    workers = min(workers or os.cpu_count() or 1, len(chunks))
    offers: list[list[Offer]] = []
    with progress_bar("offers", len(tasks)) as advance:
        if workers <= 1:
            for chunk in chunks:
                result = _make_chunk(chunk, per_product, seed, images_dir)
                offers += result
                advance(len(result))
            return offers
        # forkserver: the parent may hold threads (torch, rich) that a plain fork would copy half-locked.
        context = multiprocessing.get_context("forkserver")
        make_chunk = partial(_make_chunk, per_product=per_product, seed=seed, images_dir=images_dir)
        with ProcessPoolExecutor(max_workers=workers, mp_context=context) as pool:
            for result in pool.map(make_chunk, chunks):
                offers += result
                advance(len(result))
    return offers


def make_offers(catalog: Path, out: Path, per_product: int = 3, seed: int = 0, limit: int | None = None,
                force: bool = False, workers: int = 0) -> dict:
    """Write `per_product` seller offers of each product of `catalog` into the folder `out`.

    `out` gets catalog.csv (the source columns plus catalog_id), images/, offers_truth.parquet and, last,
    offers.json. The folder is built beside `out` and renamed into place, so an `out` that exists is complete.
    Rows whose image path escapes the catalogue's folder or names no file are copied through as offer 0
    only, path unchanged, and rows whose image does not decode as offer 0 only (a byte copy), so that
    `prepare` rejects them with its usual reasons. `workers=0` uses one process per core.
    Returns {"products", "offers", "passed_through"}.
    """
    catalog, out = Path(catalog), Path(out).resolve()
    if per_product < 1:
        raise EclipError(f"--per-product must be at least 1 (the original listing), got {per_product}")
    if limit is not None and limit < 1:
        raise EclipError(f"--limit must be at least 1, got {limit}")
    header, rows = _read_catalog(catalog, limit)
    arguments = _arguments(catalog, per_product, seed, limit)
    previous = _finished_record(out)
    if not force and previous is not None and previous["arguments"] == arguments:
        return previous["summary"]
    check_out_folder(out, OUT_ENTRIES, "offers", lambda folder: _finished_record(folder) is not None)

    staging = building_folder(out)
    (staging / IMAGES_DIR).mkdir()
    try:
        root = catalog.parent
        tasks = [_task(row, root) for row in rows]
        offers = _generate(tasks, per_product, seed, staging / IMAGES_DIR, workers)
        _write_catalog(staging / CATALOG_FILE, header, rows, offers)
        _write_truth(staging / TRUTH_FILE, rows, offers)
        summary = {"products": len(rows), "offers": sum(map(len, offers)),
                   "passed_through": sum(task.source is None or len(o) < per_product for task, o in zip(tasks, offers))}
        # Written last: its presence is what makes a folder complete.
        (staging / RECORD_FILE).write_text(json.dumps({"arguments": arguments, "summary": summary}, indent=2) + "\n")
        publish_folder(staging, out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return summary
