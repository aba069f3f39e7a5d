"""The edits a seller makes to a product's listing before re-uploading it: to the title (a shop tag, a dropped or
swapped word, a typo, other casing) and to the photo (crop, pad, resize, border, watermark, re-encode). Each
takes its own `random.Random`, so `eclip offers` is byte-identical whatever the worker count."""

from __future__ import annotations

import io
import random
from functools import lru_cache

from PIL import Image, ImageDraw, ImageFont, ImageOps

SELLER_TAGS = (
    "[Free shipping]", "[Free Shipping]", "2024 NEW", "NEW", "Best Seller", "(Official)", "★Sale★",
    "[Hot Deal]", "[Today Only]", "[Limited Stock]", "100% Genuine", "[Fast Delivery]", "[Special Price]",
    "Official Store", "[Ships Today]",
)
WATERMARKS = (
    "StyleMart", "@fashionhub", "BestDeals", "Official Store", "trendy.shop", "MEGA MALL", "(c) UrbanWear",
    "shopnow", "DailyLook", "Outlet24",
)
PAD_COLOURS = ((255, 255, 255), (248, 248, 248), (245, 242, 235), (238, 242, 248), (242, 248, 242))
BORDER_COLOURS = ((0, 0, 0), (90, 90, 90), (200, 200, 200), (20, 40, 110), (180, 30, 40), (230, 120, 20))
DARK_INKS = ((0, 0, 0), (110, 110, 110), (180, 30, 40))
LIGHT_INK = (255, 255, 255)
CORNERS = ("top-left", "top-right", "bottom-left", "bottom-right")


# ---------------------------------------------------------------- titles
def _swap_adjacent_words(words: list[str], rng: random.Random, ops: list[str]) -> None:
    """One or two swaps of neighbouring, different words at non-overlapping positions."""
    positions = [i for i in range(len(words) - 1) if words[i].lower() != words[i + 1].lower()]
    rng.shuffle(positions)
    wanted = rng.choice((1, 1, 2))
    chosen: list[int] = []
    for i in positions:
        if len(chosen) < wanted and all(abs(i - j) > 1 for j in chosen):
            chosen.append(i)
    for i in sorted(chosen):
        words[i], words[i + 1] = words[i + 1], words[i]
        ops.append(f"swap={words[i + 1]}<->{words[i]}")


def _typo(word: str, rng: random.Random) -> tuple[str, str]:
    kind = rng.choice(("swap", "drop", "duplicate"))
    if kind == "swap":
        pairs = [i for i in range(1, len(word) - 2) if word[i] != word[i + 1]]
        if pairs:
            i = rng.choice(pairs)
            return word[:i] + word[i + 1] + word[i] + word[i + 2:], kind
        kind = "drop"
    if kind == "drop":
        i = rng.randrange(1, len(word) - 1)  # keep the first and last letter, as readers do
        return word[:i] + word[i + 1:], kind
    i = rng.randrange(1, len(word))
    return word[:i] + word[i] + word[i:], kind


def _capitalize_words(text: str) -> str:
    return " ".join(w[:1].upper() + w[1:].lower() for w in text.split(" "))


_CASINGS = {"upper": str.upper, "lower": str.lower, "title": _capitalize_words}


def vary_title(title: str, rng: random.Random) -> tuple[str, list[str]]:
    """A seller's version of `title` and the names of the edits; always differs from `title`."""
    words = title.split()
    ops: list[str] = []
    # At most two word edits (drop, swaps, typo), or the listing stops reading like the same product.
    edits = 0
    # The first word (usually the brand) and the last (the product type) are what buyers search for.
    if len(words) >= 4 and rng.random() < 0.3:
        i = rng.randrange(1, len(words) - 1)
        ops.append(f"drop={words.pop(i)}")
        edits += 1
    if len(words) >= 2 and rng.random() < 0.35:
        _swap_adjacent_words(words, rng, ops)
        edits += 1
    typo_candidates = [i for i, w in enumerate(words) if w.isalpha() and len(w) >= 4]
    if edits < 2 and typo_candidates and rng.random() < 0.3:
        i = rng.choice(typo_candidates)
        misspelt, kind = _typo(words[i], rng)
        ops.append(f"typo_{kind}={words[i]}->{misspelt}")
        words[i] = misspelt
    text = " ".join(words)
    if rng.random() < 0.25:
        casings = [name for name, recase in _CASINGS.items() if recase(text) != text]
        if casings:
            name = rng.choice(casings)
            text = _CASINGS[name](text)
            ops.append(f"case={name}")
    placement = rng.random()
    if placement < 0.55 or not ops:
        first, second = rng.sample(SELLER_TAGS, 2)
        if placement < 0.3 or not ops:
            text = f"{first} {text}".strip()
            ops.append(f"tag_prefix={first}")
        elif placement < 0.45:
            text = f"{text} {first}"
            ops.append(f"tag_suffix={first}")
        else:
            text = f"{first} {text} {second}"
            ops += [f"tag_prefix={first}", f"tag_suffix={second}"]
    return text, ops


# ---------------------------------------------------------------- images
@lru_cache(maxsize=64)
def _font(size: int) -> ImageFont.FreeTypeFont:
    return ImageFont.load_default(size=size)


def _crop(image: Image.Image, rng: random.Random) -> tuple[Image.Image, str]:
    width, height = image.size
    left, right = (rng.randint(0, round(0.08 * width)) for _ in range(2))
    top, bottom = (rng.randint(0, round(0.08 * height)) for _ in range(2))
    if not left + right + top + bottom:
        left = max(1, round(0.04 * width))
    return image.crop((left, top, width - right, height - bottom)), f"crop=l{left},t{top},r{right},b{bottom}"


def _pad(image: Image.Image, rng: random.Random) -> tuple[Image.Image, str]:
    width, height = image.size
    colour = PAD_COLOURS[0] if rng.random() < 0.6 else rng.choice(PAD_COLOURS[1:])
    horizontal = rng.randint(0, round(0.1 * width))
    vertical = rng.randint(0, round(0.1 * height))
    if not horizontal + vertical:
        horizontal = max(1, round(0.05 * width))
    padded = ImageOps.expand(image, border=(horizontal, vertical, horizontal, vertical), fill=colour)
    return padded, f"pad=x{horizontal},y{vertical},#{bytes(colour).hex()}"


def _resize(image: Image.Image, rng: random.Random) -> tuple[Image.Image, str]:
    scale = rng.uniform(0.7, 0.95) if rng.random() < 0.5 else rng.uniform(1.05, 1.3)
    size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
    resample = rng.choice((Image.Resampling.BILINEAR, Image.Resampling.BICUBIC, Image.Resampling.LANCZOS))
    return image.resize(size, resample), f"resize={scale:.3f}->{size[0]}x{size[1]}"


def _border(image: Image.Image, rng: random.Random) -> tuple[Image.Image, str]:
    width = rng.randint(1, max(2, min(image.size) // 60))
    colour = rng.choice(BORDER_COLOURS)
    return ImageOps.expand(image, border=width, fill=colour), f"border={width}px,#{bytes(colour).hex()}"


def _watermark(image: Image.Image, rng: random.Random) -> tuple[Image.Image, str]:
    text = rng.choice(WATERMARKS)
    corner = rng.choice(CORNERS)
    font = _font(max(9, round(image.height * rng.uniform(0.045, 0.07))))
    overlay = Image.new("RGBA", image.size, (0, 0, 0, 0))
    draw = ImageDraw.Draw(overlay)
    left, top, right, bottom = draw.textbbox((0, 0), text, font=font)
    margin = max(2, round(0.03 * min(image.size)))
    x = margin - left if corner.endswith("left") else image.width - margin - right
    y = margin - top if corner.startswith("top") else image.height - margin - bottom
    # Sellers pick an ink that shows: dark on the usual white studio background, white on dark photos.
    behind = image.crop((x + left, y + top, x + right, y + bottom)).convert("L").resize((1, 1), Image.Resampling.BOX)
    ink = (rng.choice(DARK_INKS) if behind.getpixel((0, 0)) > 128 else LIGHT_INK) + (rng.randint(70, 140),)
    draw.text((x, y), text, font=font, fill=ink)
    marked = Image.alpha_composite(image.convert("RGBA"), overlay).convert("RGB")
    return marked, f"watermark={corner},alpha{ink[3]},{text}"


# Applied in this order, each with its probability: what a seller's editing tool would do before upload.
_IMAGE_VARIATIONS = ((_crop, 0.35), (_pad, 0.3), (_resize, 0.5), (_border, 0.15), (_watermark, 0.25))


def vary_image(image: Image.Image, rng: random.Random) -> tuple[bytes, list[str]]:
    """JPEG bytes of a seller's version of the RGB `image` and the names of the edits (re-encode last)."""
    ops: list[str] = []
    for variation, probability in _IMAGE_VARIATIONS:
        if rng.random() < probability:
            image, op = variation(image, rng)
            ops.append(op)
    quality = rng.randint(60, 95)
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=quality)
    ops.append(f"jpeg=q{quality}")
    return buffer.getvalue(), ops
