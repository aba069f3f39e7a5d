"""Dedup quality on re-uploads made by a generator written apart from `eclip offers` (eclip/data/seller_edits.py),
so that `prepare` is not scored on the edits it was tuned on.

Source: the raw fashion-dev catalogue, its real title repeats kept (about a third of its rows share their title with
another product, so `prepare` removes some originals as title duplicates: a re-upload of such an original is the
case that connected duplicate groups exist for).
Re-uploads: for a share of the products (default 0.3), one or two listings by another seller, without catalog_id:
the photo resized (0.45x to 1.6x, other resampling filters), blurred, cropped off-centre (up to 15 % a side),
stamped with a caption band or a price sticker, re-encoded (JPEG quality 35-75, or WebP then JPEG), and the title
edited (size and pack words appended, the brand dropped or moved to the end, abbreviations, punctuation, casing).

Scores, against the ground truth:
- re-upload recall: the share of re-uploads that `prepare` rejects into their original's duplicate group;
- pair precision and recall over the duplicate groups `prepare` writes, where the true groups join each original
  with its re-uploads and with the source listings whose normalized titles are identical (identical titles are
  duplicates by `prepare`'s policy, e-CLIP §3.2.2).
Target (issue 27): re-upload recall >= 0.95 at pair precision >= 0.99.

Writes bench/results/reuploads.json and .md, one row per --max-duplicate-group value (keep-first and merged whole
by default). Usage: .venv/bin/python bench/reuploads.py [--limit N] [--share S] [--max-duplicate-group 1 50]
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import random
import shutil
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from PIL import Image, ImageDraw, ImageFilter, ImageFont  # noqa: E402

from eclip.data.config import PrepareConfig  # noqa: E402
from eclip.data.prepare import prepare  # noqa: E402
from eclip.data.text import normalize_title  # noqa: E402
from eclip.files import read_parquet  # noqa: E402

FASHION = REPO.parent / "shared" / "data" / "fashion-dev"
RESULTS = REPO / "bench" / "results"
TARGET = {"reupload_recall": 0.95, "pair_precision": 0.99}
CAPTIONS = ("SALE -30%", "NEW IN", "Free Delivery", "BEST PRICE", "Limited", "HOT", "2 for 1", "Original")
SIZE_WORDS = ("Size M", "Size L", "XL", "Free Size", "Pack of 2", "(S-XXL)", "UK 8", "One Size")
ABBREVIATIONS = {"Men": "Mens", "Women": "Womens", "T-shirt": "Tshirt", "Tshirt": "T-Shirt", "Shoes": "Shoe",
                 "Sunglasses": "Sunglass", "Watch": "Wrist Watch", "Blue": "Blu", "Black": "Blk", "White": "Wht"}


# ---------------------------------------------------------------- the independent generator
def edited_photo(image: Image.Image, rng: random.Random) -> bytes:
    """JPEG bytes of another seller's copy of the RGB `image`."""
    width, height = image.size
    if rng.random() < 0.6:  # crop off-centre
        left, right = rng.uniform(0, 0.15) * width, rng.uniform(0, 0.15) * width
        top, bottom = rng.uniform(0, 0.15) * height, rng.uniform(0, 0.15) * height
        image = image.crop((round(left), round(top), round(width - right), round(height - bottom)))
    scale = rng.uniform(0.45, 1.6)
    image = image.resize((max(8, round(image.width * scale)), max(8, round(image.height * scale))),
                         rng.choice((Image.Resampling.NEAREST, Image.Resampling.BOX, Image.Resampling.HAMMING,
                                     Image.Resampling.LANCZOS)))
    if rng.random() < 0.4:
        image = image.filter(ImageFilter.GaussianBlur(rng.uniform(0.5, 1.8)))
    if rng.random() < 0.4:
        image = _stamped(image, rng)
    if rng.random() < 0.3:  # a WebP detour, as some shop tools store photos
        buffer = io.BytesIO()
        image.save(buffer, format="WEBP", quality=rng.randint(40, 80))
        image = Image.open(io.BytesIO(buffer.getvalue())).convert("RGB")
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=rng.randint(35, 75))
    return buffer.getvalue()


def _stamped(image: Image.Image, rng: random.Random) -> Image.Image:
    image = image.copy()
    draw = ImageDraw.Draw(image)
    font = ImageFont.load_default(size=max(8, image.height // 14))
    text = rng.choice(CAPTIONS)
    if rng.random() < 0.5:  # a caption band across the bottom
        band = max(10, image.height // 9)
        draw.rectangle((0, image.height - band, image.width, image.height), fill=rng.choice(((0, 0, 0), (200, 0, 0))))
        draw.text((4, image.height - band + 1), text, fill=(255, 255, 255), font=font)
    else:  # a round price sticker in a corner
        radius = max(8, min(image.size) // 7)
        x, y = rng.choice(((radius, radius), (image.width - radius, radius)))
        draw.ellipse((x - radius, y - radius, x + radius, y + radius), fill=(255, 210, 0))
        draw.text((x - radius + 2, y - 6), text[:6], fill=(0, 0, 0), font=font)
    return image


def edited_title(title: str, rng: random.Random) -> str:
    words = title.split()
    if len(words) > 3 and rng.random() < 0.3:
        words = words[1:] + ([words[0]] if rng.random() < 0.5 else [])  # the brand dropped or moved to the end
    words = [ABBREVIATIONS.get(word, word) if rng.random() < 0.5 else word for word in words]
    if rng.random() < 0.6:
        words.append(rng.choice(SIZE_WORDS))
    text = " ".join(words)
    if rng.random() < 0.3:
        text = text.replace(" ", rng.choice((" - ", ", ", " | ")), 1)
    if rng.random() < 0.3:
        text = text.upper() if rng.random() < 0.5 else text.lower()
    return text if text != title else text + " " + rng.choice(SIZE_WORDS)


def build_catalogue(folder: Path, limit: int | None, share: float, seed: int) -> tuple[list[dict], dict[str, str]]:
    """folder/catalog.csv: the source rows, then the re-uploads -> (rows, re-upload id -> original id)."""
    with open(FASHION / "catalog.csv", encoding="utf-8") as handle:
        source = list(csv.DictReader(handle))[:limit]
    shutil.rmtree(folder, ignore_errors=True)
    (folder / "images").mkdir(parents=True)
    (folder / "reuploads").mkdir()
    rng = random.Random(seed)
    rows, original_of = [], {}
    for row in source:
        shutil.copy(FASHION / row["image"], folder / row["image"])
        rows.append(dict(row))
    for row in source:
        if rng.random() >= share:
            continue
        image = Image.open(FASHION / row["image"]).convert("RGB")
        for copy in range(1 + (rng.random() < 0.3)):
            product_id = f"r{copy}-{row['product_id']}"
            path = f"reuploads/{product_id}.jpg"
            (folder / path).write_bytes(edited_photo(image, rng))
            rows.append({**row, "product_id": product_id, "title": edited_title(row["title"], rng), "image": path})
            original_of[product_id] = row["product_id"]
    rng.shuffle(rows)  # a re-upload may come before its original, as on a real marketplace
    with open(folder / "catalog.csv", "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(source[0]), lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
    return rows, original_of


# ---------------------------------------------------------------- scoring
def _groups_to_pairs(groups: dict[str, str]) -> set[tuple[str, str]]:
    members: dict[str, list[str]] = {}
    for product, group in groups.items():
        members.setdefault(group, []).append(product)
    return {tuple(sorted((a, b))) for items in members.values() for i, a in enumerate(items) for b in items[i + 1:]}


def truth_groups(rows: list[dict], original_of: dict[str, str]) -> dict[str, str]:
    """product id -> true group: originals joined with their re-uploads and with same-title source listings."""
    parent = {row["product_id"]: row["product_id"] for row in rows}

    def find(x: str) -> str:
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    first_with_title: dict[str, str] = {}
    for row in rows:
        if row["product_id"] in original_of:
            parent[find(row["product_id"])] = find(original_of[row["product_id"]])
            continue
        key = normalize_title(row["title"])
        if key in first_with_title:
            parent[find(row["product_id"])] = find(first_with_title[key])
        else:
            first_with_title[key] = row["product_id"]
    return {product: find(product) for product in parent}


def scores(data_dir: Path, rows: list[dict], original_of: dict[str, str]) -> dict:
    table = read_parquet(data_dir / "duplicate_groups.parquet", columns=["group_id", "product_id"])
    predicted = dict(zip(table.column("product_id").to_pylist(), table.column("group_id").to_pylist()))
    found = sum(predicted.get(r) is not None and predicted.get(r) == predicted.get(o) for r, o in original_of.items())
    truth = truth_groups(rows, original_of)
    true_pairs = _groups_to_pairs(truth)
    predicted_pairs = _groups_to_pairs(predicted)
    hits = len(true_pairs & predicted_pairs)
    sizes: dict[int, int] = {}
    for size in (list(predicted.values()).count(g) for g in set(predicted.values())):
        sizes[size] = sizes.get(size, 0) + 1
    return {"reuploads": len(original_of), "reupload_recall": round(found / max(1, len(original_of)), 4),
            "pair_precision": round(hits / max(1, len(predicted_pairs)), 4),
            "pair_recall": round(hits / max(1, len(true_pairs)), 4), "predicted_pairs": len(predicted_pairs),
            "true_pairs": len(true_pairs), "group_sizes": dict(sorted(sizes.items()))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--limit", type=int, default=None, help="the first N fashion-dev products (default all)")
    parser.add_argument("--share", type=float, default=0.3, help="share of the products re-uploaded (default 0.3)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--max-duplicate-group", type=int, nargs="+", default=[1, 50],
                        help="prepare's --max-duplicate-group values to compare on the same catalogue (default 1 50)")
    args = parser.parse_args()
    if not (FASHION / "catalog.csv").is_file():
        sys.exit(f"needs {FASHION}")
    work = RESULTS / "reuploads-work"
    rows, original_of = build_catalogue(work / "catalogue", args.limit, args.share, args.seed)
    runs = {}
    for max_group in args.max_duplicate_group:
        started = time.perf_counter()
        out = work / f"prepared-{max_group}"
        report = prepare(work / "catalogue" / "catalog.csv", out,
                         config=PrepareConfig(workers=2, max_duplicate_group=max_group), force=True)
        runs[str(max_group)] = {"seconds": round(time.perf_counter() - started, 1), "accepted": report["accepted"],
                                "rejected": report["rejected"], **scores(out, rows, original_of)}
    result = {"rows": len(rows), "reuploads": len(original_of), "runs": runs, "target": TARGET}
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "reuploads.json").write_text(json.dumps(result, indent=2))
    lines = [f"{result['rows']} rows: fashion-dev listings and {result['reuploads']} re-uploads", "",
             "| --max-duplicate-group | re-upload recall | pair precision | pair recall | accepted | prepare, 2 workers |",
             "| --- | --- | --- | --- | --- | --- |"]
    lines += [f"| {name} | {run['reupload_recall']} | {run['pair_precision']} | {run['pair_recall']} | "
              f"{run['accepted']} | {run['seconds']} s |" for name, run in runs.items()]
    lines += ["", f"target: re-upload recall >= {TARGET['reupload_recall']} at pair precision >= "
                  f"{TARGET['pair_precision']}"]
    table = "\n".join(lines)
    (RESULTS / "reuploads.md").write_text(table + "\n")
    print(table)


if __name__ == "__main__":
    main()
