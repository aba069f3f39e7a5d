"""`eclip offers`: K seller offers per real product, with a ground truth that names every variation."""

from __future__ import annotations

import csv
import io
import json
import random
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from eclip.cli import main
from eclip.data import offers as offers_module
from eclip.data.offers import make_offers
from eclip.data.seller_edits import SELLER_TAGS, vary_title
from eclip.errors import EclipError

FASHION = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "fashion-dev"
needs_fashion = pytest.mark.skipif(not (FASHION / "catalog.csv").is_file(), reason="shared fashion-dev data absent")
SUBSET = 16
K = 3


def _read_csv(path: Path) -> list[dict[str, str]]:
    with path.open(newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def _folder_bytes(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def _write_catalog(folder: Path, rows: list[dict[str, str]], header=("product_id", "title", "image", "category")) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "catalog.csv"
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(header), lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
    return path


def _jpeg(size=(160, 200), colour=(200, 40, 40)) -> bytes:
    image = Image.new("RGB", size, (255, 255, 255))
    image.paste(colour, (30, 40, size[0] - 30, size[1] - 40))
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=90)
    return buffer.getvalue()


@pytest.fixture(scope="module")
def fashion_offers(tmp_path_factory) -> Path:
    if not (FASHION / "catalog.csv").is_file():
        pytest.skip("shared fashion-dev data absent")
    out = tmp_path_factory.mktemp("offers") / "out"
    summary = make_offers(FASHION / "catalog.csv", out, per_product=K, seed=0, limit=SUBSET, workers=1)
    assert summary == {"products": SUBSET, "offers": SUBSET * K, "passed_through": 0}
    return out


@pytest.fixture
def small_catalog(tmp_path) -> Path:
    (tmp_path / "src" / "images").mkdir(parents=True)
    rows = []
    for i, colour in enumerate([(200, 40, 40), (40, 160, 60), (30, 30, 150)]):
        (tmp_path / "src" / "images" / f"p{i}.jpg").write_bytes(_jpeg(colour=colour))
        rows.append({"product_id": f"p{i}", "title": f"Brand{i} Women Casual Red Summer Dress",
                     "image": f"images/p{i}.jpg", "category": "Apparel > Dress"})
    return _write_catalog(tmp_path / "src", rows)


# ---------------------------------------------------------------- output on real products
def test_counts_ids_and_catalog_columns(fashion_offers):
    source = _read_csv(FASHION / "catalog.csv")[:SUBSET]
    rows = _read_csv(fashion_offers / "catalog.csv")
    assert len(rows) == SUBSET * K
    assert list(rows[0]) == ["product_id", "catalog_id"] + [c for c in source[0] if c != "product_id"]
    assert len({r["product_id"] for r in rows}) == len(rows)
    for i, row in enumerate(rows):
        original = source[i // K]
        assert row["product_id"] == f"{original['product_id']}-o{i % K}"
        assert row["catalog_id"] == f"c{original['product_id']}"
        assert row["image"] == f"images/{row['product_id']}.jpg"
        assert (fashion_offers / row["image"]).is_file()
        # Everything but the listing itself is the product's own data.
        assert {k: v for k, v in row.items() if k not in ("product_id", "catalog_id", "title", "image")} == \
               {k: v for k, v in original.items() if k not in ("product_id", "title", "image")}
    assert sorted(p.name for p in (fashion_offers / "images").iterdir()) == sorted(f"{r['product_id']}.jpg" for r in rows)


def test_truth_table_matches_catalog(fashion_offers):
    truth = pq.read_table(fashion_offers / "offers_truth.parquet")
    assert truth.column_names == ["product_id", "catalog_id", "source_product_id", "offer_index", "image_ops", "title_ops"]
    for column in ("image_ops", "title_ops"):
        kind = truth.schema.field(column).type
        assert pa.types.is_list(kind) and kind.value_type == pa.string()
    rows = _read_csv(fashion_offers / "catalog.csv")
    for row, fact in zip(rows, truth.to_pylist(), strict=True):
        assert fact["product_id"] == row["product_id"]
        assert fact["catalog_id"] == row["catalog_id"] == f"c{fact['source_product_id']}"
        assert row["product_id"] == f"{fact['source_product_id']}-o{fact['offer_index']}"
        if fact["offer_index"] == 0:
            assert fact["image_ops"] == [] and fact["title_ops"] == []
        else:
            assert fact["image_ops"][-1].startswith("jpeg=q") and 60 <= int(fact["image_ops"][-1][6:]) <= 95
            assert fact["title_ops"]
    record = json.loads((fashion_offers / "offers.json").read_text())
    assert record["summary"] == {"products": SUBSET, "offers": SUBSET * K, "passed_through": 0}
    assert record["arguments"]["per_product"] == K and record["arguments"]["limit"] == SUBSET


def test_offer_zero_is_the_original_listing(fashion_offers):
    source = {r["product_id"]: r for r in _read_csv(FASHION / "catalog.csv")[:SUBSET]}
    for row in _read_csv(fashion_offers / "catalog.csv")[::K]:
        original = source[row["product_id"].removesuffix("-o0")]
        assert row["title"] == original["title"]
        assert (fashion_offers / row["image"]).read_bytes() == (FASHION / original["image"]).read_bytes()


def _replay_size(size: tuple[int, int], ops: list[str]) -> tuple[tuple[int, int], dict]:
    """The final image size the recorded ops imply, and each geometric op's parameters."""
    width, height = size
    steps = {}
    for op in ops:
        name, value = op.split("=", 1)
        if name == "crop":
            left, top, right, bottom = (int(part[1:]) for part in value.split(","))
            steps["crop"] = (left, top, width - right, height - bottom)
            width, height = width - left - right, height - top - bottom
        elif name == "pad":
            x, y = (int(part[1:]) for part in value.split(",")[:2])
            steps["pad"] = (x, y, width, height)
            width, height = width + 2 * x, height + 2 * y
        elif name == "resize":
            steps["resize"] = (width, height)
            width, height = map(int, value.split("->")[1].split("x"))
        elif name == "border":
            border = int(value.split("px")[0])
            steps["border"] = border
            width, height = width + 2 * border, height + 2 * border
    return (width, height), steps


def test_transformed_images_decode_differ_and_match_their_ops(fashion_offers):
    truth = [f for f in pq.read_table(fashion_offers / "offers_truth.parquet").to_pylist() if f["offer_index"]]
    differences = []
    for fact in truth:
        data = (fashion_offers / "images" / f"{fact['product_id']}.jpg").read_bytes()
        original_bytes = (fashion_offers / "images" / f"{fact['source_product_id']}-o0.jpg").read_bytes()
        assert data != original_bytes
        offer = Image.open(io.BytesIO(data))
        assert offer.format == "JPEG"
        offer = offer.convert("RGB")
        original = Image.open(io.BytesIO(original_bytes)).convert("RGB")
        size, steps = _replay_size(original.size, fact["image_ops"])
        assert offer.size == size, fact
        # Undo the geometry the truth names; what remains must be the same photo (re-encoded, maybe watermarked).
        if "border" in steps:
            border = steps["border"]
            offer = offer.crop((border, border, offer.width - border, offer.height - border))
        if "resize" in steps:
            offer = offer.resize(steps["resize"], Image.Resampling.BILINEAR)
        if "pad" in steps:
            x, y, width, height = steps["pad"]
            offer = offer.crop((x, y, x + width, y + height))
        if "crop" in steps:
            original = original.crop(steps["crop"])
        assert offer.size == original.size
        difference = np.abs(np.asarray(offer, np.int16) - np.asarray(original, np.int16)).mean()
        assert 0 < difference < 12, (fact, difference)
        differences.append(difference)
    assert len(differences) == SUBSET * (K - 1)


def test_titles_differ_but_keep_most_words(fashion_offers):
    rows = _read_csv(fashion_offers / "catalog.csv")
    truth = pq.read_table(fashion_offers / "offers_truth.parquet").to_pylist()
    for i in range(0, len(rows), K):
        original = rows[i]["title"]
        original_words = original.lower().split()
        for row, fact in zip(rows[i + 1:i + K], truth[i + 1:i + K]):
            assert row["title"] != original
            words = row["title"].lower().split()
            kept = sum(w in words for w in original_words)
            assert kept >= len(original_words) / 2, (original, row["title"])
            for op in fact["title_ops"]:
                name, value = op.split("=", 1)
                if name == "tag_prefix":
                    assert row["title"].startswith(value + " ")
                elif name == "tag_suffix":
                    assert row["title"].endswith(" " + value)


# ---------------------------------------------------------------- title variations
def test_vary_title_is_seeded_bounded_and_always_differs():
    title = "Puma Men Future Cat Remix Black Casual Shoes"
    assert vary_title(title, random.Random(7)) == vary_title(title, random.Random(7))
    seen_ops = set()
    for seed in range(300):
        text, ops = vary_title(title, random.Random(seed))
        assert text != title and ops
        names = [op.split("=")[0] for op in ops]
        seen_ops.update(names)
        # A dropped word is never the brand (first) nor the product type (last).
        assert all(op.split("=")[1] not in ("Puma", "Shoes") for op in ops if op.startswith("drop="))
        # At most two word edits: a drop, a swap group, a typo.
        assert ("drop" in names) + ("swap" in names) + any(n.startswith("typo_") for n in names) <= 2
        if "case=upper" in ops and not any(n.startswith("tag_") for n in names):
            assert text == text.upper()
    assert {"drop", "swap", "typo_swap", "typo_drop", "typo_duplicate", "case", "tag_prefix", "tag_suffix"} <= seen_ops


def test_vary_title_handles_short_and_empty_titles():
    for seed in range(50):
        text, ops = vary_title("Titan Watch", random.Random(seed))
        assert not any(op.startswith("drop=") for op in ops)  # keeps >= 2 words of a short title
        assert {"titan", "watch"} <= set(text.lower().split()) or any(op.startswith("typo_") for op in ops)
    text, ops = vary_title("", random.Random(0))
    assert ops[0].startswith("tag_prefix=") and text in SELLER_TAGS


# ---------------------------------------------------------------- determinism, reuse, atomicity
def test_same_bytes_whatever_the_worker_count(small_catalog, tmp_path, monkeypatch):
    monkeypatch.setattr(offers_module, "CHUNK_PRODUCTS", 1)  # three chunks, so two workers share them
    make_offers(small_catalog, tmp_path / "one", per_product=4, seed=3, workers=1)
    make_offers(small_catalog, tmp_path / "two", per_product=4, seed=3, workers=2)
    one, two = _folder_bytes(tmp_path / "one"), _folder_bytes(tmp_path / "two")
    assert len(one) == 3 * 4 + 3 and one == two
    make_offers(small_catalog, tmp_path / "other", per_product=4, seed=4, workers=1)
    other = _folder_bytes(tmp_path / "other")
    assert other["images/p0-o0.jpg"] == one["images/p0-o0.jpg"]
    assert other["images/p0-o1.jpg"] != one["images/p0-o1.jpg"]


def test_limit_keeps_each_products_offers(small_catalog, tmp_path):
    make_offers(small_catalog, tmp_path / "all", per_product=3, seed=0, workers=1)
    make_offers(small_catalog, tmp_path / "two", per_product=3, seed=0, limit=2, workers=1)
    every, first_two = _folder_bytes(tmp_path / "all"), _folder_bytes(tmp_path / "two")
    assert sorted(k for k in first_two if k.startswith("images/")) == [f"images/p{i}-o{k}.jpg" for i in range(2) for k in range(3)]
    assert all(every[k] == v for k, v in first_two.items() if k.startswith("images/"))


def test_rerun_is_a_no_op_and_force_or_new_arguments_regenerate(small_catalog, tmp_path, monkeypatch):
    out = tmp_path / "out"
    make_offers(small_catalog, out, per_product=2, seed=0, workers=1)
    calls = []
    real_generate = offers_module._generate
    monkeypatch.setattr(offers_module, "_generate", lambda *a, **kw: calls.append(a) or real_generate(*a, **kw))
    before = _folder_bytes(out)
    assert make_offers(small_catalog, out, per_product=2, seed=0, workers=1) == {"products": 3, "offers": 6, "passed_through": 0}
    assert calls == []
    make_offers(small_catalog, out, per_product=2, seed=0, force=True, workers=1)
    assert len(calls) == 1 and _folder_bytes(out) == before
    make_offers(small_catalog, out, per_product=3, seed=0, workers=1)
    assert len(calls) == 2 and len(_read_csv(out / "catalog.csv")) == 9
    assert not (tmp_path / ".out.building").exists() and not list(tmp_path.glob(".out.old-*"))


def test_failure_mid_way_leaves_no_complete_looking_out(small_catalog, tmp_path, monkeypatch):
    real_vary = offers_module.vary_image
    made = []

    def fail_on_third(image, rng):
        if len(made) == 2:
            raise RuntimeError("disk full")
        made.append(1)
        return real_vary(image, rng)

    monkeypatch.setattr(offers_module, "vary_image", fail_on_third)
    with pytest.raises(RuntimeError, match="disk full"):
        make_offers(small_catalog, tmp_path / "out", per_product=3, seed=0, workers=1)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["src"]

    # A run killed outright leaves its hidden partial folder; the next run clears it and finishes.
    monkeypatch.setattr(offers_module, "vary_image", real_vary)
    (tmp_path / ".out.building" / "images").mkdir(parents=True)
    (tmp_path / ".out.building" / "catalog.csv").write_text("stale")
    make_offers(small_catalog, tmp_path / "out", per_product=3, seed=0, workers=1)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out", "src"]
    complete = _folder_bytes(tmp_path / "out")

    # A failing regeneration keeps the previous complete folder as it was.
    def killed(*args):
        raise RuntimeError("killed")

    monkeypatch.setattr(offers_module, "_write_truth", killed)
    with pytest.raises(RuntimeError, match="killed"):
        make_offers(small_catalog, tmp_path / "out", per_product=3, seed=1, workers=1)
    assert _folder_bytes(tmp_path / "out") == complete
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out", "src"]


# ---------------------------------------------------------------- bad input
def test_bad_inputs_raise_one_line_errors(small_catalog, tmp_path):
    with pytest.raises(EclipError, match="no such file"):
        make_offers(tmp_path / "missing.csv", tmp_path / "out")
    with pytest.raises(EclipError, match="per-product must be at least 1"):
        make_offers(small_catalog, tmp_path / "out", per_product=0)
    with pytest.raises(EclipError, match="limit must be at least 1"):
        make_offers(small_catalog, tmp_path / "out", limit=0)
    no_title = _write_catalog(tmp_path / "no_title", [{"product_id": "1", "name": "x", "image": "a.jpg"}],
                              header=("product_id", "name", "image"))
    with pytest.raises(EclipError, match=r"missing column\(s\) title; found product_id, name, image"):
        make_offers(no_title, tmp_path / "out")
    two_titles = _write_catalog(tmp_path / "two_titles", [{"product_id": "1", "title": "x", "image": "a.jpg"}],
                                header=("product_id", "title", "image", "title"))
    with pytest.raises(EclipError, match=r"column 'title' appears twice in the header \(columns 2 and 4\)"):
        make_offers(two_titles, tmp_path / "out")
    repeated = _write_catalog(tmp_path / "repeated", [{"product_id": "7", "title": "a b c", "image": "a.jpg", "category": ""}] * 2)
    with pytest.raises(EclipError, match="row 2 repeats product_id '7' of row 1"):
        make_offers(repeated, tmp_path / "out")
    padded = _write_catalog(tmp_path / "padded", [{"product_id": pid, "title": "a b c", "image": "a.jpg", "category": ""}
                                                  for pid in ("7", " 7 ")])
    with pytest.raises(EclipError, match="row 2 repeats product_id ' 7 ' of row 1"):
        make_offers(padded, tmp_path / "out")
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    with pytest.raises(EclipError, match=r"holds other files than `eclip offers` writes \(notes.txt\)"):
        make_offers(small_catalog, foreign, workers=1)
    assert (foreign / "notes.txt").read_text() == "mine"
    assert not (tmp_path / "out").exists()


def test_a_rebuild_never_deletes_files_offers_did_not_write(small_catalog, tmp_path, capsys):
    out = tmp_path / "out"
    make_offers(small_catalog, out, per_product=2, workers=1)
    (out / "notes.txt").write_text("mine")
    assert main(["offers", str(small_catalog), "--out", str(out), "--per-product", "3"]) == 2
    assert capsys.readouterr().err.strip() == (
        f"eclip offers: error: {out} holds other files than `eclip offers` writes (notes.txt): "
        "choose an empty or new --out (nothing was deleted)")
    assert (out / "notes.txt").read_text() == "mine" and len(_read_csv(out / "catalog.csv")) == 6
    (out / "notes.txt").unlink()
    make_offers(small_catalog, out, per_product=3, workers=1)  # only its own files: rebuilt
    assert len(_read_csv(out / "catalog.csv")) == 9


def test_a_catalogue_that_is_not_utf8_fails_with_one_line(tmp_path):
    (tmp_path / "catalog.csv").write_bytes("product_id,title,image\n1,Café Summer Dress,a.jpg\n".encode("latin-1"))
    with pytest.raises(EclipError, match="catalog.csv: line 2 is not valid UTF-8; re-encode the file as UTF-8"):
        make_offers(tmp_path / "catalog.csv", tmp_path / "out")


def test_fields_over_the_csv_modules_128_kb_are_read(tmp_path):
    source = tmp_path / "src"
    (source / "images").mkdir(parents=True)
    (source / "images" / "a.jpg").write_bytes(_jpeg())
    description = "<p>Soft cotton, relaxed fit.</p>" * 8000  # 256 KB of seller HTML
    rows = [{"product_id": "1", "title": "Brand Women Red Summer Dress", "image": "images/a.jpg", "description": description}]
    make_offers(_write_catalog(source, rows, header=("product_id", "title", "image", "description")),
                tmp_path / "out", per_product=2, workers=1)
    assert [r["description"] for r in _read_csv(tmp_path / "out" / "catalog.csv")] == [description] * 2


def test_one_pixel_wide_images_pass_through_as_offer_zero_only(tmp_path):
    source = tmp_path / "src"
    (source / "images").mkdir(parents=True)
    rows = []
    for size in [(1, 1), (1, 5), (5, 1), (2, 2)]:
        name = f"images/p{size[0]}x{size[1]}.png"
        Image.new("RGB", size, (200, 40, 40)).save(source / name)
        rows.append({"product_id": f"p{size[0]}x{size[1]}", "title": "Placeholder Pixel Red Shirt", "image": name})
    # seed 4 draws no crop margin for the 1x1 image, whose forced one-column crop left an empty image
    summary = make_offers(_write_catalog(source, rows, header=("product_id", "title", "image")), tmp_path / "out",
                          per_product=8, seed=4, workers=1)
    assert summary == {"products": 4, "offers": 3 + 8, "passed_through": 3}


def test_ids_too_long_for_a_file_name_get_a_short_hashed_one(tmp_path):
    source = tmp_path / "src"
    (source / "images").mkdir(parents=True)
    (source / "images" / "a.jpg").write_bytes(_jpeg())
    long_ids = ["p" + "x" * 300, "p" + "x" * 299 + "y"]  # alike for their first 200 characters
    rows = [{"product_id": pid, "title": "Brand Women Red Summer Dress", "image": "images/a.jpg", "category": ""}
            for pid in long_ids]
    make_offers(_write_catalog(source, rows), tmp_path / "out", per_product=2, workers=1)
    written = _read_csv(tmp_path / "out" / "catalog.csv")
    assert [r["product_id"] for r in written] == [f"{pid}-o{k}" for pid in long_ids for k in range(2)]
    names = [Path(r["image"]).name for r in written]
    assert len(set(names)) == 4 and all(len(name) <= 255 for name in names)
    assert all((tmp_path / "out" / r["image"]).is_file() for r in written)


def test_unusable_images_pass_through_as_offer_zero_only(tmp_path):
    source = tmp_path / "src"
    (source / "images").mkdir(parents=True)
    (tmp_path / "secret.jpg").write_bytes(_jpeg())
    (source / "images" / "good.jpg").write_bytes(_jpeg())
    (source / "images" / "broken.jpg").write_bytes(b"not an image")
    rows = [{"product_id": pid, "title": "Brand Women Red Summer Dress", "image": image, "category": ""}
            for pid, image in [("escape", "../secret.jpg"), ("absent", "images/absent.jpg"),
                               ("broken", "images/broken.jpg"), ("good", "images/good.jpg")]]
    summary = make_offers(_write_catalog(source, rows), tmp_path / "out", per_product=3, workers=1)
    assert summary == {"products": 4, "offers": 1 + 1 + 1 + 3, "passed_through": 3}
    written = {r["product_id"]: r for r in _read_csv(tmp_path / "out" / "catalog.csv")}
    assert list(written) == ["escape-o0", "absent-o0", "broken-o0", "good-o0", "good-o1", "good-o2"]
    # Paths that could not be opened stay as given, so `prepare` rejects them for the same reason.
    assert written["escape-o0"]["image"] == "../secret.jpg"
    assert written["absent-o0"]["image"] == "images/absent.jpg"
    assert (tmp_path / "out" / written["broken-o0"]["image"]).read_bytes() == b"not an image"
    truth = pq.read_table(tmp_path / "out" / "offers_truth.parquet").to_pylist()
    assert [t["offer_index"] for t in truth] == [0, 0, 0, 0, 1, 2]


def test_paths_no_file_can_have_pass_through_as_offer_zero_only(tmp_path):
    source = tmp_path / "src"
    (source / "images").mkdir(parents=True)
    (source / "images" / "good.jpg").write_bytes(_jpeg())
    (source / "images" / "loop-a").symlink_to("loop-b")
    (source / "images" / "loop-b").symlink_to("loop-a")
    impossible = {"nul-byte": "images/good\x00.jpg", "name-too-long": "images/" + "a" * 300 + ".jpg",
                  "symlink-loop": "images/loop-a"}
    rows = [{"product_id": pid, "title": "Brand Women Red Summer Dress", "image": image, "category": ""}
            for pid, image in [("good", "images/good.jpg"), *impossible.items()]]
    summary = make_offers(_write_catalog(source, rows), tmp_path / "out", per_product=2, workers=1)
    assert summary == {"products": 4, "offers": 2 + 3, "passed_through": 3}
    written = {r["product_id"]: r["image"] for r in _read_csv(tmp_path / "out" / "catalog.csv")}
    assert [written[f"{pid}-o0"] for pid in impossible] == list(impossible.values())


def test_unsafe_product_ids_get_safe_unique_file_names(tmp_path):
    source = tmp_path / "src"
    (source / "images").mkdir(parents=True)
    (source / "images" / "a.jpg").write_bytes(_jpeg())
    rows = [{"product_id": pid, "title": "Brand Women Red Summer Dress", "image": "images/a.jpg", "category": ""}
            for pid in ("../x", "__/x", "a b")]
    make_offers(_write_catalog(source, rows), tmp_path / "out", per_product=2, workers=1)
    written = _read_csv(tmp_path / "out" / "catalog.csv")
    images = [r["image"] for r in written]
    assert len(set(images)) == 6 and all(i.startswith("images/") and "/" not in i[7:] for i in images)
    assert all((tmp_path / "out" / i).is_file() for i in images)
    assert [r["product_id"] for r in written[:2]] == ["../x-o0", "../x-o1"]


def test_a_given_catalog_id_column_is_replaced_by_the_truth(tmp_path):
    source = tmp_path / "src"
    (source / "images").mkdir(parents=True)
    (source / "images" / "a.jpg").write_bytes(_jpeg())
    rows = [{"title": "Brand Women Red Summer Dress", "catalog_id": "seller-7", "product_id": "9", "image": "images/a.jpg"}]
    make_offers(_write_catalog(source, rows, header=("title", "catalog_id", "product_id", "image")),
                tmp_path / "out", per_product=2, workers=1)
    written = _read_csv(tmp_path / "out" / "catalog.csv")
    assert list(written[0]) == ["title", "catalog_id", "product_id", "image"]
    assert [r["catalog_id"] for r in written] == ["c9", "c9"]


# ---------------------------------------------------------------- command line
def test_cli_writes_offers_and_reports_bad_input(small_catalog, tmp_path, capsys):
    assert main(["offers", str(small_catalog), "--out", str(tmp_path / "out"), "--per-product", "2", "--seed", "5"]) == 0
    assert "3 products -> 6 offers" in capsys.readouterr().out
    assert json.loads((tmp_path / "out" / "offers.json").read_text())["arguments"]["seed"] == 5
    assert main(["offers", str(small_catalog), "--out", str(tmp_path / "bad"), "--per-product", "0"]) == 2
    assert capsys.readouterr().err.strip() == \
        "eclip offers: error: --per-product must be at least 1 (the original listing), got 0"
