"""The per-row stage of `prepare`: one Arrow record batch in, the same rows with their checks out.

`inspect_batch` is a pure function of a canonical batch (see `catalog.py`), so it runs unchanged in a local
process pool and under Spark's `mapInArrow` (`eclip.data.spark.rows`). It adds:
`title_norm`, `price_value`, `width`, `height`, `image_hash`, `thumbnail`, `descriptor`, and
`reject_reason`/`reject_detail` (null when the row passed every per-row check). A row's image is its
`image_bytes` where that cell holds any, else the file its `image` names; the bytes are checked as a file's are,
then dropped (the thumbnail keeps what later stages need), so the spool stays small.
"""

from __future__ import annotations

import re
import unicodedata
from pathlib import Path

import numpy as np
import pyarrow as pa

from eclip.data.catalog import FALSE_TEXTS, IMAGE_BYTES, TRUE_TEXTS, flag_value
from eclip.data.config import PrepareConfig
from eclip.data.descriptors import ImageDescriptor
from eclip.data.images import ImageLimits, ImageRejected, decode_image, image_hash, locate_image, thumbnail_jpeg
from eclip.data.text import normalize_title, title_tokens

# One amount, its currency symbol or three-letter code (ISO 4217) before and/or after it.
_PRICE = re.compile(r"\s*(?P<before>[^\d\s]*)\s*(?P<amount>\d[\d.,]*)\s*(?P<after>[^\d\s]*)\s*")
# The amount forms whose separators can be read one way only. A thousands separator groups three digits, so a
# comma before one or two final digits is a decimal comma (19,99), and two kinds of separator or a repeated one
# say which is which (1,299.00, 1.299,00, 1.299.000). A single separator before three digits is the one form left
# open; it is read the way Python and English write numbers: a comma groups thousands (12,900 won) and a dot is
# the decimal point (1.299, tried first). A form that fits none of these is rejected, never guessed.
_AMOUNT_FORMS = (
    (re.compile(r"\d+(?:\.\d+)?"), lambda text: text),
    (re.compile(r"\d{1,3}(?:,\d{3})+(?:\.\d+)?"), lambda text: text.replace(",", "")),
    (re.compile(r"\d{1,3}(?:\.\d{3})+(?:,\d{1,2})?"), lambda text: text.replace(".", "").replace(",", ".")),
    (re.compile(r"\d+,\d{1,2}"), lambda text: text.replace(",", ".")),
)


def _is_currency(marker: str) -> bool:
    """'' (none), currency symbols with up to three letters ('$', '€', 'US$') or a three-letter code ('EUR'):
    not a unit or multiplier such as 'k', nor an exponent, sign or second number."""
    symbols = sum(unicodedata.category(c) == "Sc" for c in marker)
    letters = sum(c.isalpha() for c in marker)
    if symbols + letters != len(marker):
        return False
    return letters <= 3 if symbols else letters in (0, 3)


def _price(text: str | None) -> float | None:
    """A price as sellers write it ('12,900', '$12.99', '12,50 €', '1.299,00 EUR'); ValueError unless the text is
    one non-negative amount in a form read one way only (`_AMOUNT_FORMS`): not '1e3', '1.5k', '-5' or '10-20'."""
    if text is None or not text.strip():
        return None
    match = _PRICE.fullmatch(text)
    if match and _is_currency(match["before"]) and _is_currency(match["after"]):
        for form, plain in _AMOUNT_FORMS:
            if form.fullmatch(match["amount"]):
                return float(plain(match["amount"]))
    raise ValueError(text)


def _check_text(row: dict, config: PrepareConfig) -> tuple[str, str] | None:
    flagged = flag_value(row.get("flagged"))
    if flagged is None:  # a moderation flag that cannot be read must not let the row through
        return "flagged_invalid", (f"flagged value {row['flagged']!r} is neither true ({'/'.join(TRUE_TEXTS)}) nor "
                                   f"false ({'/'.join(FALSE_TEXTS[:-1])} or empty)")
    if flagged:
        return "flagged", "flagged by the catalogue"
    if not (row.get("product_id") or "").strip():
        return "missing_product_id", ""
    tokens = title_tokens(row["title_norm"])
    if tokens < config.min_title_tokens:
        return "title_too_short", f"{tokens} tokens after normalization"
    if tokens > config.max_title_tokens:
        return "title_too_long", f"{tokens} tokens"
    try:
        _price(row.get("price"))
    except ValueError:
        return "price_invalid", (f"price {row.get('price')!r} is not one amount that reads only one way (12.99, "
                                 "1,299.00, 1.299,00, 19,99; a currency symbol or code may come before or after)")
    return None


def _image_data(row: dict, root: Path) -> bytes:
    """The encoded image of a row: its image-bytes cell where it has one (part files may mix both ways), else the
    file its `image` names, under `root` only."""
    if row.get(IMAGE_BYTES):
        return row[IMAGE_BYTES]
    path = locate_image(root, row.get("image") or "")
    try:
        return path.read_bytes()
    except OSError as error:  # no permission, an I/O error
        raise ImageRejected("image_unreadable", f"{type(error).__name__}: {error.strerror}") from None


def inspect_batch(batch: pa.RecordBatch, root: Path, config: PrepareConfig,
                  descriptor: ImageDescriptor) -> pa.RecordBatch:
    """Validate every row of `batch`, reading its image from its bytes or from under `root` only."""
    limits = ImageLimits(config.min_side, config.max_aspect, config.max_pixels)
    rows = batch.to_pylist()
    n = len(rows)
    title_norm = [normalize_title(r.get("title") or "") for r in rows]
    reasons: list[str | None] = [None] * n
    details: list[str | None] = [None] * n
    width, height = [None] * n, [None] * n
    hashes, thumbnails = [None] * n, [None] * n
    prices = [None] * n
    decoded, decoded_at = [], []
    for i, row in enumerate(rows):
        row["title_norm"] = title_norm[i]
        rejection = _check_text(row, config)
        if rejection is None:
            try:
                data = _image_data(row, root)
                image, width[i], height[i] = decode_image(data, limits)
                hashes[i] = image_hash(image)
                thumbnails[i] = thumbnail_jpeg(data, image, config.thumbnail_size)
                prices[i] = _price(row.get("price"))
                decoded.append(image)
                decoded_at.append(i)
            except ImageRejected as error:
                rejection = (error.reason, error.detail)
        if rejection is not None:
            reasons[i], details[i] = rejection
    vectors = np.zeros((n, descriptor.views, descriptor.dim), dtype=np.float32)  # (n, V, D); rejected rows stay zero
    if decoded:
        vectors[decoded_at] = descriptor(decoded)
    view_type = pa.list_(pa.float32(), descriptor.dim)
    columns = {
        "title_norm": pa.array(title_norm, pa.string()),
        "price_value": pa.array(prices, pa.float64()),
        "width": pa.array(width, pa.int32()),
        "height": pa.array(height, pa.int32()),
        "image_hash": pa.array(hashes, pa.string()),
        "thumbnail": pa.array(thumbnails, pa.binary()),
        "descriptor": pa.FixedSizeListArray.from_arrays(
            pa.FixedSizeListArray.from_arrays(pa.array(vectors.ravel(), pa.float32()), type=view_type),
            type=pa.list_(view_type, descriptor.views)),
        "reject_reason": pa.array(reasons, pa.string()),
        "reject_detail": pa.array(details, pa.string()),
    }
    out = batch.drop_columns([IMAGE_BYTES]) if IMAGE_BYTES in batch.schema.names else batch
    for name, array in columns.items():
        out = out.append_column(name, array)
    return out
