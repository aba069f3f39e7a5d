"""Safe image decoding, validation, thumbnails, the 29-digit image hash and a cheap near-duplicate descriptor.

Everything here works on bytes already read from disk: the caller decides which paths may be opened
(`locate_image`, through `resolve_inside`), so no path from a catalogue row is ever followed outside the
catalogue's folder.
"""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from PIL import Image, ImageFile, ImageOps, UnidentifiedImageError

# We enforce our own pixel cap from the header, before any decoding; Pillow's own check would raise a
# DecompressionBombError only above 2x its limit and warn below it.
Image.MAX_IMAGE_PIXELS = None
ImageFile.LOAD_TRUNCATED_IMAGES = False

HASH_GRID = 5
HASH_SIZE_STEP = 16
DESCRIPTOR_GRID = 8
DCT_SIDE = 32
DCT_KEEP = 12
DESCRIPTOR_DIM = DESCRIPTOR_GRID * DESCRIPTOR_GRID * 3 + DCT_KEEP * DCT_KEEP - 1
CONTENT_TOLERANCES = (24, 96)  # grey levels off the background: faint (a pale product) and strong
DESCRIPTOR_VIEWS = len(CONTENT_TOLERANCES)
_CROSS = cv2.getStructuringElement(cv2.MORPH_CROSS, (3, 3))  # 4-connected dilation


class ImageRejected(Exception):
    """An image that cannot be used; `reason` is the rejection reason recorded for its row."""

    def __init__(self, reason: str, detail: str = ""):
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail


def resolve_inside(root: Path, relative: str) -> Path:
    """The file `relative` names under `root`, or ImageRejected if it is absolute or escapes `root`."""
    candidate = Path(relative)
    if candidate.is_absolute() or candidate.drive:
        raise ImageRejected("image_path_outside_catalog", relative)
    resolved = (root / candidate).resolve()
    if not resolved.is_relative_to(root.resolve()):
        raise ImageRejected("image_path_outside_catalog", relative)
    return resolved


def locate_image(root: Path, image_field: str) -> Path:
    """The file a catalogue row's `image` field names under `root`, or ImageRejected: `image_missing` when the field
    is blank, names no file, or names a path no file can have (a NUL byte, a name too long for the filesystem, a
    symlink loop); `image_path_outside_catalog` when it leads out of `root`."""
    relative = image_field.strip()
    if not relative:
        raise ImageRejected("image_missing", "no image given")
    try:
        path = resolve_inside(root, relative)
        found = path.is_file()
    except ValueError as error:  # a NUL byte, refused before any system call
        raise ImageRejected("image_missing", f"{relative!r}: no file can have this path ({error})") from None
    except (OSError, RuntimeError) as error:  # ENAMETOOLONG and the like; pathlib's symlink loop (Python < 3.13)
        raise ImageRejected("image_missing", f"{relative!r}: no file can have this path "
                                             f"({getattr(error, 'strerror', None) or error})") from None
    if not found:
        raise ImageRejected("image_missing", relative)
    return path


def _looks_truncated(data: bytes, image_format: str | None) -> bool:
    tail = data.rstrip(b"\x00")
    if image_format == "JPEG":
        return not tail.endswith(b"\xff\xd9")
    if image_format == "PNG":
        return b"IEND" not in tail[-16:]
    return False


def _to_rgb(image: Image.Image) -> Image.Image:
    """8-bit RGB: alpha composited on white, CMYK converted, 16-bit channels scaled (not clipped)."""
    if image.mode in ("I;16", "I;16B", "I;16L", "I"):
        array = np.asarray(image, dtype=np.uint32)
        peak = 65535 if image.mode.startswith("I;16") or array.max() > 255 else 255
        image = Image.fromarray((array * 255 // peak).astype(np.uint8), "L")
    if image.mode == "P":
        image = image.convert("RGBA" if "transparency" in image.info else "RGB")
    if image.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        image = Image.alpha_composite(background, rgba)
    return image.convert("RGB") if image.mode != "RGB" else image


@dataclass(frozen=True)
class ImageLimits:
    min_side: int = 100
    max_aspect: float = 3.0
    max_pixels: int = 40_000_000


def decode_image(data: bytes, limits: ImageLimits) -> tuple[Image.Image, int, int]:
    """Decode and validate image bytes; returns (RGB image, width, height) or raises ImageRejected."""
    if not data:
        raise ImageRejected("image_unreadable", "empty file")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            image = Image.open(io.BytesIO(data))
            width, height = image.size
            image_format = image.format
    except UnidentifiedImageError:  # its text names the BytesIO's address, which differs from run to run
        raise ImageRejected("image_unreadable", "UnidentifiedImageError: not an image format Pillow reads") from None
    except Exception as error:  # Pillow raises many types for non-images
        raise ImageRejected("image_unreadable", f"{type(error).__name__}: {error}"[:200]) from None
    if width * height > limits.max_pixels:
        raise ImageRejected("image_too_large", f"{width}x{height} exceeds {limits.max_pixels} pixels")
    if min(width, height) < limits.min_side:
        raise ImageRejected("image_too_small", f"{width}x{height}, shorter side below {limits.min_side}")
    if max(width, height) / min(width, height) > limits.max_aspect:
        raise ImageRejected("image_aspect", f"{width}x{height}, aspect above {limits.max_aspect}")
    if _looks_truncated(data, image_format):
        raise ImageRejected("image_truncated", f"{image_format} file has no end marker")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            image.load()
            ImageOps.exif_transpose(image, in_place=True)  # the default returns a copy of every image
    except Exception as error:
        text = str(error)
        reason = "image_truncated" if "truncated" in text or "broken data stream" in text else "image_unreadable"
        raise ImageRejected(reason, f"{type(error).__name__}: {text}"[:200]) from None
    return _to_rgb(image), width, height


def image_hash(image: Image.Image) -> str:
    """The e-CLIP 29-digit image hash of an RGB image.

    Digits 1-25: the image is split into a 5x5 grid of equal patches (row-major); each patch's mean
    colour (box average over its pixels, rounded to 8 bits per channel) becomes its luminance Y = 0.299 R + 0.587 G + 0.114 B,
    quantized to one digit floor(Y * 10 / 256) in 0..9. Digits 26-29: the width and the height, each as
    min(99, side // 16) in two digits. Identical hashes mean duplicate images; re-encodes keep the hash,
    resizes change its size digits.
    """
    means = np.asarray(image.resize((HASH_GRID, HASH_GRID), Image.Resampling.BOX), dtype=np.float32)  # (5, 5, 3)
    luminance = means @ np.array([0.299, 0.587, 0.114], dtype=np.float32)  # (5, 5)
    digits = np.minimum(9, (luminance * 10 / 256).astype(np.int32)).ravel()
    width, height = image.size
    size = f"{min(99, width // HASH_SIZE_STEP):02d}{min(99, height // HASH_SIZE_STEP):02d}"
    return "".join(map(str, digits)) + size


def _frame_box(grey: np.ndarray, tolerance: int) -> tuple[int, int, int, int]:
    """Box inside the outer one-colour lines of the full-resolution grey image: a seller's border or padding
    strip, then flat background. Peeled before the product is searched on a reduced copy, where a 2 px border
    blends with a product touching it into one blob. Two rounds: rows are judged within the columns left by
    the first. Lines are scanned from the outside in growing chunks, so the cost follows what is peeled."""

    def uniform_run(lines: np.ndarray) -> int:  # lines: (n, length), outermost first
        start, chunk = 0, 32
        while start < len(lines):
            part = lines[start:start + chunk].astype(np.int32)  # (k, n)
            # A line is uniform when under 1% of its pixels are off its mean (the median costs 10x more;
            # with 1% outliers the mean moves by under 3 levels). In integers, exactly: with s the line's sum
            # over its n pixels, |p - s/n| > t  <=>  |n p - s| > n t.
            n = part.shape[1]
            off = np.abs(n * part - part.sum(axis=1, keepdims=True)) > n * tolerance
            busy = np.flatnonzero(off.sum(axis=1) / n >= 0.01)
            if len(busy):
                return start + int(busy[0])
            start, chunk = start + chunk, chunk * 2
        return len(lines)

    left, top, right, bottom = 0, 0, grey.shape[1], grey.shape[0]
    for _ in range(2):
        window = grey[top:bottom, left:right]
        height, width = window.shape
        peel_top, peel_bottom = uniform_run(window), uniform_run(window[::-1])
        peel_left, peel_right = uniform_run(window.T), uniform_run(window[:, ::-1].T)
        if peel_top + peel_bottom >= height - 2 or peel_left + peel_right >= width - 2:
            break  # a flat image: nothing to peel to
        left, top, right, bottom = left + peel_left, top + peel_top, right - peel_right, bottom - peel_bottom
    return (left, top, right, bottom)


def _content_boxes(image: Image.Image, grey: Image.Image) -> list[tuple[int, int, int, int]]:
    """Bounding boxes of the product, one per tolerance of CONTENT_TOLERANCES (`grey`: the image in mode L).
    Outer uniform lines (borders, padding, flat background) are peeled first, at full resolution and again on a
    ~64 px copy; then pixels that differ from the remaining background by more than the tolerance are kept if
    they belong to a large connected blob, so a small watermark in a corner does not stretch the box. The faint
    tolerance keeps a pale product whole; the strong one leaves out a grey watermark or a soft shadow next to
    the product, which the faint box takes in. Both share the peeling, the only costly part."""
    faint = CONTENT_TOLERANCES[0]
    frame = _frame_box(np.asarray(grey), faint)
    x0, y0 = frame[:2]
    image = image.crop(frame)
    factor = max(1, round(min(image.size) / 64))
    small = np.asarray(image.reduce(factor) if factor > 1 else image, dtype=np.int32)  # (H, W, 3)
    scale = image.size[0] / small.shape[1]
    # A line is uniform when under 3% of its pixels are off its mean colour (a median would be robust to the
    # other 3% too, at 10x the cost: 3% outliers move the mean by under 8 levels), in integers as in
    # `_frame_box`. Rows are judged within the current columns and columns within the current rows, twice, so a
    # thin frame does not make every line busy. Lines run along axis 0 of a contiguous array (rows on a
    # transposed copy): numpy reduces that axis many times faster than a middle one.
    by_row = np.ascontiguousarray(small.transpose(1, 0, 2))  # (W, H, 3)
    top, bottom, left, right = 0, small.shape[0], 0, small.shape[1]
    for _ in range(2):
        for judge_rows in (True, False):
            window = by_row[left:right, top:bottom] if judge_rows else small[top:bottom, left:right]
            n = len(window)  # (n, lines, 3): each line's n pixels along axis 0
            off = channel_max(np.abs(n * window - window.sum(axis=0))) > n * faint  # (n, lines)
            busy = np.flatnonzero(off.sum(axis=0) / n >= 0.03)
            if len(busy) == 0:  # a flat image: nothing to crop to
                return [frame] * len(CONTENT_TOLERANCES)
            if judge_rows:
                top, bottom = top + busy[0], top + busy[-1] + 1
            else:
                left, right = left + busy[0], left + busy[-1] + 1
    inner = small[top:bottom, left:right]
    border = np.concatenate([inner[0], inner[-1], inner[:, 0], inner[:, -1]])
    difference = channel_max(np.abs(inner - np.median(border, axis=0)))  # (h, w)
    boxes = []
    for tolerance in CONTENT_TOLERANCES:
        mask = (difference > tolerance).astype(np.uint8)
        count, labels = cv2.connectedComponents(cv2.dilate(mask, _CROSS), connectivity=4)
        if count > 1:
            areas = np.bincount(labels.ravel(), weights=mask.ravel(), minlength=count)  # (count,), 0: background
            areas[0] = 0
            mask = mask.astype(bool) & (areas >= 0.15 * areas.max())[labels]
        rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
        if len(rows) < 2 or len(cols) < 2:
            rows, cols = np.arange(inner.shape[0]), np.arange(inner.shape[1])
        boxes.append((x0 + int((left + cols[0]) * scale), y0 + int((top + rows[0]) * scale),
                      x0 + int((left + cols[-1] + 1) * scale), y0 + int((top + rows[-1] + 1) * scale)))
    return boxes


def channel_max(pixels: np.ndarray) -> np.ndarray:
    """(..., 3) -> (...): the channel maximum, many times faster than .max(axis=-1) over a length-3 axis."""
    return np.maximum(np.maximum(pixels[..., 0], pixels[..., 1]), pixels[..., 2])


def _unit(vector: np.ndarray) -> np.ndarray:
    return vector / max(float(np.linalg.norm(vector)), 1e-6)


def _dct_rows(size: int, keep: int) -> np.ndarray:
    """The first `keep` rows of the orthonormal DCT-II matrix of `size` points: D x is scipy's dct(x, norm="ortho")."""
    k, n = np.arange(keep)[:, None], np.arange(size)[None, :]
    rows = np.sqrt(2 / size) * np.cos(np.pi * (2 * n + 1) * k / (2 * size))
    rows[0] /= np.sqrt(2)
    return rows.astype(np.float32)  # (keep, size)


_DCT = _dct_rows(DCT_SIDE, DCT_KEEP)


def _describe(image: Image.Image, grey: Image.Image, box: tuple[int, int, int, int]) -> np.ndarray:
    layout = np.asarray(image.crop(box).resize((DESCRIPTOR_GRID, DESCRIPTOR_GRID), Image.Resampling.BOX),
                        dtype=np.float32)  # (8, 8, 3)
    small = np.asarray(grey.crop(box).resize((DCT_SIDE, DCT_SIDE), Image.Resampling.BOX), dtype=np.float32)
    detail = (_DCT @ small @ _DCT.T).ravel()[1:]  # the lowest 2-D DCT frequencies, minus the DC term: brightness
    return _unit(np.concatenate([_unit((layout - layout.mean()).ravel()), _unit(detail)]))


def near_duplicate_descriptor(image: Image.Image) -> np.ndarray:
    """A fixed, training-free descriptor for near-duplicate search: (DESCRIPTOR_VIEWS, 335) float32, unit rows.

    One view per content box of `_content_boxes` (so padding, borders, small crops and watermarks matter
    little), each described twice with equal weight: its 8x8 colour layout (box means, minus the overall
    mean so brightness shifts cancel but colour stays) and the 143 lowest 2-D DCT frequencies of its 32x32
    grey version (detail such as prints and logos, as in pHash but real-valued). Two images match when any
    view of one is close (cosine) to any view of the other.
    """
    grey = image.convert("L")
    return np.stack([_describe(image, grey, box) for box in _content_boxes(image, grey)]).astype(np.float32)


def thumbnail_jpeg(data: bytes, image: Image.Image, max_side: int, quality: int = 90) -> bytes:
    """JPEG bytes with the longest side <= max_side; small RGB JPEGs are kept byte for byte."""
    if max(image.size) <= max_side and data[:3] == b"\xff\xd8\xff" and _is_rgb_jpeg(data):
        return data
    small = image.copy()
    small.thumbnail((max_side, max_side), Image.Resampling.BICUBIC)
    buffer = io.BytesIO()
    small.save(buffer, format="JPEG", quality=quality)
    return buffer.getvalue()


def _is_rgb_jpeg(data: bytes) -> bool:
    """An RGB JPEG whose pixels need no EXIF rotation: its bytes can serve as the thumbnail unchanged."""
    with Image.open(io.BytesIO(data)) as probe:
        return probe.mode == "RGB" and probe.getexif().get(0x0112, 1) == 1
