"""Image primitives: the 29-digit hash against a hand-computed value, path containment, descriptor robustness."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw, ImageOps

from eclip.data.images import (_DCT, DCT_KEEP, DESCRIPTOR_DIM, DESCRIPTOR_VIEWS, ImageLimits, ImageRejected, _content_boxes,
                               decode_image, image_hash,
                               near_duplicate_descriptor, resolve_inside, thumbnail_jpeg)
from eclip.data.text import normalize_title, title_tokens


def test_hash_matches_hand_computation():
    # 160x80: left 40% black, right 40% white, the middle column half and half.
    image = Image.new("RGB", (160, 80), "white")
    image.paste((0, 0, 0), (0, 0, 80, 80))
    # patch columns are 32 px wide: cols 0-1 black, col 2 = 16 black + 16 white -> mean 127.5, stored as the
    # 8-bit 128 -> Y = 128 -> floor(1280 / 256) = 5; cols 3-4 white -> 9; size 160 // 16 = 10, 80 // 16 = 5
    assert image_hash(image) == "00599" * 5 + "1005"


def test_hash_uses_luminance_and_caps_size():
    red = Image.new("RGB", (2000, 48), (255, 0, 0))  # Y = 76.2 -> digit 2; 2000 // 16 = 125 -> capped at 99
    assert image_hash(red) == "2" * 25 + "9903"


def test_hash_survives_reencoding_of_a_real_photo(fashion_dir):
    path = next((fashion_dir / "images").glob("*.jpg"))
    image, _, _ = decode_image(path.read_bytes(), ImageLimits())
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=85)
    again, _, _ = decode_image(buffer.getvalue(), ImageLimits())
    assert image_hash(again) == image_hash(image)
    assert image_hash(again.resize((300, 300)))[-4:] == "1818"


def test_exif_orientation_is_applied_and_the_thumbnail_reencoded():
    stored = Image.new("RGB", (200, 120), "white")
    stored.paste((255, 0, 0), (0, 0, 40, 40))  # red in the stored top-left corner
    exif = Image.Exif()
    exif[0x0112] = 6  # shown rotated 90 degrees clockwise: the red corner moves to the top right
    buffer = io.BytesIO()
    stored.save(buffer, format="JPEG", quality=95, exif=exif)
    data = buffer.getvalue()
    image, _, _ = decode_image(data, ImageLimits())
    assert image.size == (120, 200)
    assert image.getpixel((100, 20))[0] > 200 and image.getpixel((100, 20))[1] < 60
    assert image.getpixel((20, 20)) == pytest.approx((255, 255, 255), abs=8)
    thumbnail = Image.open(io.BytesIO(thumbnail_jpeg(data, image, max_side=512)))
    assert thumbnail.size == (120, 200) and thumbnail.getexif().get(0x0112, 1) == 1


@pytest.mark.parametrize("relative", ["../x.jpg", "a/../../x.jpg", "/etc/passwd"])
def test_paths_cannot_escape_the_catalogue(tmp_path, relative):
    with pytest.raises(ImageRejected) as error:
        resolve_inside(tmp_path / "root", relative)
    assert error.value.reason == "image_path_outside_catalog"


def test_symlink_out_of_the_catalogue_is_refused(tmp_path):
    (tmp_path / "root").mkdir()
    (tmp_path / "outside.jpg").write_bytes(b"x")
    (tmp_path / "root" / "link.jpg").symlink_to(tmp_path / "outside.jpg")
    with pytest.raises(ImageRejected):
        resolve_inside(tmp_path / "root", "link.jpg")
    assert resolve_inside(tmp_path / "root", "sub/ok.jpg") == (tmp_path / "root" / "sub" / "ok.jpg").resolve()


def test_descriptor_tolerates_seller_edits_but_separates_products(fashion_dir):
    paths = sorted((fashion_dir / "images").glob("*.jpg"))[:20]
    images = [decode_image(p.read_bytes(), ImageLimits())[0] for p in paths]
    reference = np.stack([near_duplicate_descriptor(i) for i in images])  # (20, V, D)
    assert reference.shape == (20, DESCRIPTOR_VIEWS, DESCRIPTOR_DIM)
    assert np.allclose(np.linalg.norm(reference, axis=2), 1, atol=1e-5)

    def marked(image):
        image = image.resize((180, 180))
        ImageDraw.Draw(image).text((4, 166), "SHOP", fill=(120, 120, 120))
        return image

    edits = {
        "framed": lambda i: ImageOps.expand(ImageOps.expand(i, border=20, fill=(250, 250, 250)), border=4, fill=(200, 0, 0)),
        "thin border": lambda i: ImageOps.expand(i, border=2, fill=(180, 30, 40)),  # touches the product
        "watermarked": marked,
        "cropped": lambda i: i.crop((8, 8, i.width - 8, i.height - 8)),
    }
    for name, edit in edits.items():
        edited = np.stack([near_duplicate_descriptor(edit(i)) for i in images])
        same = np.einsum("nvd,nwd->nvw", edited, reference).max(axis=(1, 2))  # best view against best view
        assert np.median(same) > 0.97 and (same > 0.9).mean() >= 0.8, name
    cross = np.einsum("nvd,mwd->nmvw", reference, reference).max(axis=(2, 3))
    assert np.median(cross[np.triu_indices(len(images), 1)]) < 0.9


def test_descriptor_dct_is_scipys_orthonormal_dct():
    from scipy.fft import dctn

    grey = np.random.default_rng(0).integers(0, 256, (32, 32)).astype(np.float32)
    expected = dctn(grey.astype(np.float64), norm="ortho")[:DCT_KEEP, :DCT_KEEP]
    assert np.allclose(_DCT @ grey @ _DCT.T, expected, atol=1e-3)


def test_content_boxes_peel_the_frame_and_leave_out_a_small_mark():
    # 200x160 white canvas, a 2 px red frame, a dark 60x80 product at (70, 40), a pale grey 30x10 mark at (150, 140)
    # (under the strong tolerance, over the faint one, far from the product: its blob is too small to count).
    pixels = np.full((160, 200, 3), 250, np.uint8)
    pixels[:2], pixels[-2:], pixels[:, :2], pixels[:, -2:] = (200, 0, 0), (200, 0, 0), (200, 0, 0), (200, 0, 0)
    pixels[40:120, 70:130] = (30, 60, 90)
    pixels[140:150, 150:180] = (190, 190, 190)
    image = Image.fromarray(pixels)
    faint, strong = _content_boxes(image, image.convert("L"))
    for box in (faint, strong):  # within the reduction's rounding (factor 2 on the 156x196 inside of the frame)
        assert np.allclose(box, (70, 40, 130, 120), atol=2), box
    pale = np.full((160, 200, 3), 250, np.uint8)
    pale[40:120, 70:130] = (180, 180, 180)  # a pale product, 70 levels off white: under the strong tolerance
    image = Image.fromarray(pale)
    for box in _content_boxes(image, image.convert("L")):
        assert np.allclose(box, (70, 40, 130, 120), atol=2), box


def test_title_normalization():
    assert normalize_title("[Free Shipping] NIKE Air-Max 90 (Black)!!") == "free shipping nike air max 90 black"
    assert normalize_title("나이키 에어맥스_90 ★정품★") == "나이키 에어맥스 90 정품"
    assert title_tokens(normalize_title("*** Nike ###")) == 1
