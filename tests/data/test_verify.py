"""ORB verification of near-duplicate candidates on real fashion-dev photos."""

from __future__ import annotations

import csv
import io
import itertools

import numpy as np
from PIL import Image, ImageDraw

from eclip.data.verify import keypoints, same_picture, verify_pairs


def seller_copy(image: Image.Image) -> Image.Image:
    """What the offers the descriptor misses look like: a crop into the product, a resize, a watermark beside
    the product, a lower JPEG quality."""
    width, height = image.size
    copy = image.crop((int(0.08 * width), int(0.06 * height), width, int(0.95 * height)))
    copy = copy.resize((int(copy.width * 0.8), int(copy.height * 0.8)))
    ImageDraw.Draw(copy).text((copy.width // 2, copy.height - 14), "BEST SHOP", fill=(150, 150, 150))
    buffer = io.BytesIO()
    copy.save(buffer, format="JPEG", quality=70)
    return Image.open(buffer).convert("RGB")


def shirts(fashion_dir, count: int) -> list[Image.Image]:
    with (fashion_dir / "catalog.csv").open(encoding="utf-8") as handle:
        rows = [r for r in csv.DictReader(handle) if r["category"].endswith("> Shirts")][:count]
    return [Image.open(fashion_dir / r["image"]).convert("RGB") for r in rows]


def test_an_edited_copy_is_confirmed_and_similar_products_are_not(fashion_dir):
    images = shirts(fashion_dir, 24)  # one studio, one pose: the hardest distinct pairs
    found = [keypoints(image) for image in images]
    copies = [same_picture(found[k], keypoints(seller_copy(image))) for k, image in enumerate(images)]
    assert np.mean(copies) >= 0.9
    distinct = [same_picture(found[a], found[b]) for a, b in itertools.combinations(range(len(images)), 2)]
    assert not any(distinct)


def test_verify_pairs_keeps_pair_order_across_chunks_and_workers(fashion_dir):
    images = shirts(fashion_dir, 6)
    encoded = {}
    for k, image in enumerate(images):
        for key, picture in ((k, image), (100 + k, seller_copy(image))):
            buffer = io.BytesIO()
            picture.save(buffer, format="JPEG", quality=90)
            encoded[key] = buffer.getvalue()
    first = np.array([5, 0, 3, 1, 2, 4, 0, 2])
    second = np.array([105, 100, 1, 101, 102, 104, 3, 5])  # copies, then distinct shirts
    expected = [same_picture(keypoints(Image.open(io.BytesIO(encoded[a]))), keypoints(Image.open(io.BytesIO(encoded[b]))))
                for a, b in zip(first, second)]
    assert expected[:6].count(True) >= 5 and not any(expected[6:])
    for workers, chunk in ((1, 512), (2, 3)):
        read = lambda keys: {int(k): encoded[int(k)] for k in keys}  # noqa: E731
        assert verify_pairs(first, second, read, workers, chunk=chunk).tolist() == expected
