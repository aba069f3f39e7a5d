"""The HTTP API in-process (FastAPI's TestClient): every endpoint against the library computed directly, the
limits, and requests that name files."""

from __future__ import annotations

import io
import time

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from eclip.data.store import read_products
from eclip.models import embed_images
from eclip.serve.app import create_app
from eclip.serve.config import ServeConfig
from eclip.serve.engine import SearchEngine
from eclip.index.vectors import normalize_rows, read_embeddings


@pytest.fixture(scope="module")
def engine(served):
    run_dir, emb_dir, data_dir = served
    return SearchEngine(run_dir, emb_dir, data_dir, ServeConfig(max_k=50, max_upload_bytes=200_000, max_pixels=1_000_000))


@pytest.fixture(scope="module")
def client(engine):
    with TestClient(create_app(engine)) as client:
        yield client


@pytest.fixture(scope="module")
def index_vectors(served):
    table, vectors = read_embeddings(served[1])
    return table.column("product_id").to_pylist(), vectors["fused"]


def jpeg(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, "JPEG")
    return buffer.getvalue()


def brute_force(ids, fused, query: np.ndarray, k: int, skip: str | None = None) -> list[float]:
    scores = fused @ query  # (N,)
    return [float(scores[i]) for i in np.argsort(-scores, kind="stable") if ids[i] != skip][:k]


def test_text_search_matches_the_model_and_the_index(client, engine, index_vectors, served):
    ids, fused = index_vectors
    title = read_products(served[2], columns=["title"]).column("title")[3].as_py()
    body = client.get("/api/search", params={"q": title, "k": 8}).json()
    assert body["query"] == title and [r["rank"] for r in body["results"]] == list(range(1, 9))
    expected = brute_force(ids, fused, engine.embed_texts([title])[0], 8)
    assert np.allclose([r["score"] for r in body["results"]], expected, atol=1e-5)
    first = body["results"][0]
    assert engine.index.titles[engine.index.row_of[first["product_id"]]] == first["title"]

    category = first["category"].split(" > ")[0]
    filtered = client.get("/api/search", params={"q": title, "k": 50, "category": category}).json()["results"]
    assert filtered and all(r["category"].startswith(category) for r in filtered)


def test_image_combined_and_similar_search(client, engine, index_vectors, served):
    ids, fused = index_vectors
    thumbnail = read_products(served[2], columns=["thumbnail"]).column("thumbnail")[0].as_py()
    image_vector = embed_images(engine.model, [thumbnail])[0]  # the library's decoding of the same bytes
    body = client.post("/api/search/image", files={"image": ("shoe.jpg", thumbnail, "image/jpeg")}, data={"k": "5"}).json()
    assert np.allclose([r["score"] for r in body["results"]], brute_force(ids, fused, image_vector, 5), atol=1e-5)

    text_vector = engine.embed_texts(["red"])[0]
    for op, sign in (("plus", 1), ("minus", -1)):
        body = client.post("/api/search/combined", files={"image": ("a.jpg", thumbnail)},
                           data={"text": "red", "op": op, "k": "5"}).json()
        query = normalize_rows((image_vector + sign * text_vector)[None])[0]
        assert np.allclose([r["score"] for r in body["results"]], brute_force(ids, fused, query, 5), atol=1e-5)

    product_id = ids[10]
    similar = client.get(f"/api/products/{product_id}/similar", params={"k": 6}).json()["results"]
    assert len(similar) == 6 and product_id not in [r["product_id"] for r in similar]
    assert np.allclose([r["score"] for r in similar], brute_force(ids, fused, fused[10], 6, skip=product_id), atol=1e-5)


def test_product_details_thumbnail_classify_and_embed(client, engine, index_vectors, served):
    ids, _ = index_vectors
    products = read_products(served[2], columns=["product_id", "title", "thumbnail", "category"])
    product_id, title = products.column("product_id")[0].as_py(), products.column("title")[0].as_py()
    details = client.get(f"/api/products/{product_id}").json()
    assert details["title"] == title and details["category"] == products.column("category")[0].as_py()
    assert details["prediction"]["method"] == "zero-shot"  # the test run has no task heads
    labels = [c["label"] for c in details["prediction"]["category"]]
    assert labels and set(labels) <= set(engine.index.categories())
    scores = [c["score"] for c in details["prediction"]["category"]]
    assert scores == sorted(scores, reverse=True)

    response = client.get(details["thumbnail"])
    assert response.headers["content-type"] == "image/jpeg"
    assert response.content == products.column("thumbnail")[0].as_py()

    thumbnail = products.column("thumbnail")[0].as_py()
    classified = client.post("/api/classify", files={"image": ("x.jpg", thumbnail)}, data={"title": title}).json()
    assert classified["category"][0]["label"] in engine.index.categories()
    vectors = client.post("/api/embed", files={"image": ("x.jpg", thumbnail)}, data={"text": title}).json()
    assert np.allclose(vectors["text"], engine.embed_texts([title])[0], atol=1e-6)
    assert np.allclose(vectors["image"], embed_images(engine.model, [thumbnail])[0], atol=1e-6)
    assert np.isclose(np.linalg.norm(vectors["fused"]), 1, atol=1e-5)
    assert client.post("/api/embed", data={"text": "   "}).status_code == 422
    assert client.post("/api/embed").json()["detail"] == "send an image, a text, or both"


def test_add_then_remove_a_product_while_serving(served, emb_copy):
    run_dir, _, data_dir = served
    engine = SearchEngine(run_dir, emb_copy, data_dir, ServeConfig())
    image = jpeg(Image.new("RGB", (120, 90), (200, 30, 40)))
    with TestClient(create_app(engine)) as client:
        added = client.post("/api/products", data={"product_id": "shop-1", "title": "Crimson wool scarf",
                                                   "category": "Accessories > Scarves"},
                            files={"image": ("s.jpg", image, "image/jpeg")})
        assert added.status_code == 201 and added.json()["product_id"] == "shop-1"
        found = client.get("/api/search", params={"q": "Crimson wool scarf", "k": 3, "category": "Accessories > Scarves"})
        assert [r["product_id"] for r in found.json()["results"]] == ["shop-1"]
        assert client.get("/api/products/shop-1/thumbnail").headers["content-type"] == "image/jpeg"
        assert "Accessories > Scarves" in client.get("/api/categories").json()["categories"]
        assert client.delete("/api/products/shop-1").json()["removed"] == "shop-1"
        assert client.get("/api/products/shop-1").status_code == 404
        assert client.delete("/api/products/shop-1").status_code == 404
        for bad_id in ("a/b", "..", "."):  # "." and ".." would be folded out of the product's URLs
            bad = client.post("/api/products", data={"product_id": bad_id, "title": "Crimson wool scarf"},
                              files={"image": ("s.jpg", image)})
            assert bad.status_code == 422, bad_id
        odd = client.post("/api/products", data={"product_id": "shop?1#x", "title": "Crimson wool scarf"},
                          files={"image": ("s.jpg", image)})
        assert odd.status_code == 201
        thumbnail = client.get("/api/products/shop%3F1%23x").json()["thumbnail"]
        assert thumbnail == "/api/products/shop%3F1%23x/thumbnail"
        assert client.get(thumbnail).headers["content-type"] == "image/jpeg"


def test_limits_give_clear_4xx(client):
    assert client.get("/api/search", params={"q": "shirt", "k": 51}).status_code == 422
    assert client.get("/api/search", params={"q": "   "}).json()["detail"] == "the query is empty or has no letters or digits"
    assert client.get("/api/search", params={"q": "x" * 600}).status_code == 422

    huge = client.post("/api/search/image", files={"image": ("big.jpg", b"\xff" * 300_000)})
    assert huge.status_code == 413 and "over the cap of 200,000 bytes" in huge.json()["detail"]

    buffer = io.BytesIO()
    Image.new("1", (2000, 1000)).save(buffer, "PNG")  # 2 M pixels in a few kilobytes: refused from its header
    bomb = client.post("/api/search/image", files={"image": ("bomb.png", buffer.getvalue())})
    assert bomb.status_code == 413 and "2000x1000" in bomb.json()["detail"]

    boundary = "eclip-test-boundary"
    streamed = client.post(  # no Content-Length: the cap is found while reading, inside FastAPI's form parser
        "/api/search/image", headers={"content-type": f"multipart/form-data; boundary={boundary}"},
        content=iter([f'--{boundary}\r\ncontent-disposition: form-data; name="image"; filename="big.jpg"\r\n'
                      f"content-type: image/jpeg\r\n\r\n".encode(), *[b"\xff" * 50_000] * 6,
                      f"\r\n--{boundary}--\r\n".encode()]))
    assert streamed.status_code == 413 and "over the cap of 200,000 bytes" in streamed.json()["detail"]

    garbage = client.post("/api/search/image", files={"image": ("x.jpg", b"not an image")})
    assert garbage.status_code == 422 and "not an image" in garbage.json()["detail"]
    assert "BytesIO" not in garbage.json()["detail"]
    assert client.post("/api/search/image", files={"image": ("x.jpg", b"")}).status_code == 422
    assert client.get("/api/products/nope/similar").status_code == 404


def test_category_filters_and_queries_without_words(client, engine):
    path = next(p for p in engine.index.categories() if " > " in p)
    exact = client.get("/api/search", params={"q": "shirt", "k": 5, "category": path}).json()["results"]
    assert exact and all(r["category"].startswith(path) for r in exact)
    loose = client.get("/api/search", params={"q": "shirt", "k": 5, "category": f" {path.upper().replace(' > ', '>')} "})
    assert loose.json()["results"] == exact
    every = client.get("/api/search", params={"q": "shirt", "k": 5}).json()["results"]
    assert client.get("/api/search", params={"q": "shirt", "k": 5, "category": " "}).json()["results"] == every
    unknown = client.get("/api/search", params={"q": "shirt", "category": "Spaceships"})
    assert unknown.status_code == 422 and "GET /api/categories" in unknown.json()["detail"]
    for query in ("\u200b", "\x00", "?!"):
        assert client.get("/api/search", params={"q": query}).status_code == 422, repr(query)


def test_uploads_are_read_upright_and_thin_images_stay_small(client, engine):
    sideways = Image.new("RGB", (60, 30), (255, 0, 0))
    exif = Image.Exif()
    exif[0x0112] = 6  # Orientation: a phone's portrait photo, stored sideways
    buffer = io.BytesIO()
    sideways.save(buffer, "JPEG", exif=exif)
    assert engine.decode_image(buffer.getvalue()).size == (30, 60)
    buffer = io.BytesIO()
    Image.new("RGB", (25_000, 1), (0, 0, 255)).save(buffer, "PNG")  # a few hundred bytes, a 1.9 GB square if padded
    thin = client.post("/api/search/image", data={"k": 3}, files={"image": ("thin.png", buffer.getvalue())})
    assert thin.status_code == 200 and len(thin.json()["results"]) == 3


def test_request_paths_and_names_are_never_opened(client):
    # The upload is read as bytes: a path in it is just a short invalid image.
    response = client.post("/api/search/image", files={"image": ("/etc/passwd", b"/etc/passwd")})
    assert response.status_code == 422
    for url in ("/static/..%2Fapp.py", "/static/%2Fetc%2Fpasswd", "/api/products/..%2F..%2Fetc%2Fpasswd/thumbnail"):
        assert client.get(url).status_code == 404, url
    assert client.get("/static/app.js").text.startswith("// The search page")
    assert "<title>eclip product search</title>" in client.get("/").text
    docs = client.get("/docs").text
    assert "/static/swagger-ui-bundle.js" in docs and "cdn" not in docs.lower()  # no external resource
    assert client.get("/static/swagger-ui-bundle.js").status_code == 200
    assert client.get("/healthz").json() == {"status": "ok"}
    assert client.get("/readyz").json()["status"] == "ready"


def test_a_slow_request_times_out_with_503(served):
    run_dir, emb_dir, data_dir = served
    engine = SearchEngine(run_dir, emb_dir, data_dir, ServeConfig(request_timeout_s=0.3))
    engine.run_queries = lambda queries: time.sleep(1) or [[] for _ in queries]
    with TestClient(create_app(engine)) as client:
        response = client.get("/api/search", params={"q": "shirt"})
        assert response.status_code == 503 and "longer than 0.3 s" in response.json()["detail"]


def test_classify_uses_the_saved_task_heads_when_their_view_is_given(served, tmp_path, capsys):
    import json
    import shutil

    from sklearn.linear_model import LogisticRegression

    from eclip.runs.provenance import weights_fingerprint
    from eclip.eval.heads import HEADS_DIR, META_FILE, apply_head, load_heads, save_heads

    run_dir, emb_dir, _ = served
    run = shutil.copytree(run_dir, tmp_path / "run")
    table, vectors = read_embeddings(emb_dir)
    fused = vectors["fused"]  # (N, D)
    categories = table.column("category").to_pylist()
    stand_in = np.array([c.startswith("Apparel") for c in categories])  # any binary label exercises the adult head
    text = vectors["text"]  # (N, D)
    save_heads(run / HEADS_DIR, {"category": (LogisticRegression(max_iter=300).fit(fused, categories), "fused"),
                                 "attributes": {"apparel": (LogisticRegression().fit(text, stand_in.astype(str)), "text")},
                                 "adult": (LogisticRegression().fit(fused, stand_in), "fused"), "adult_threshold": 0.5},
               {"weights": weights_fingerprint(run)})
    meta, tensors = load_heads(run / HEADS_DIR)
    engine = SearchEngine(run, emb_dir, None, ServeConfig())

    answer = engine.classify(vectors["image"][0], vectors["text"][0])
    assert answer["method"] == "heads" and answer["views"] == {"category": "fused", "adult": "fused", "attr_apparel": "text"}
    expected = apply_head(meta, tensors, "category", fused[0])
    assert [(c["label"], c["score"]) for c in answer["category"]] == [(label, round(p, 6)) for label, p in expected[:5]]
    apparel = apply_head(meta, tensors, "attr_apparel", text[0])[0]  # this head reads the text vector
    assert answer["attributes"]["apparel"][0] == {"label": str(apparel[0]), "score": round(apparel[1], 6)}
    adult = dict(apply_head(meta, tensors, "adult", fused[0]))[True]
    assert answer["adult"] == {"score": round(adult, 6), "threshold": 0.5, "restricted": adult >= 0.5}
    assert engine.classify(vectors["image"][0], None)["method"] == "zero-shot"  # the heads read image + text

    meta["heads"]["category"]["weights"] = {"size": 1, "mtime_ns": 1, "sha256": "0" * 64}  # fit on other weights
    (run / HEADS_DIR / META_FILE).write_text(json.dumps(meta))
    capsys.readouterr()
    answer = SearchEngine(run, emb_dir, None, ServeConfig()).classify(vectors["image"][0], vectors["text"][0])
    assert answer["views"] == {"adult": "fused", "attr_apparel": "text"} and answer["category"] == []
    assert "task heads category in" in capsys.readouterr().err


def test_search_queries_use_the_distilled_encoder_when_the_run_has_one(served, index_vectors, tmp_path):
    import shutil

    from eclip.errors import EclipError
    from eclip.models.query_encoder import embed_queries
    from eclip.train.config import DistillConfig
    from eclip.train.distill import distill

    run_dir, emb_dir, data_dir = served
    with pytest.raises(EclipError, match="eclip distill"):
        SearchEngine(run_dir, emb_dir, None, ServeConfig(query_encoder="distilled"))
    run = shutil.copytree(run_dir, tmp_path / "run")
    distill(run, data_dir, DistillConfig(epochs=2, batch_size=64, hidden=32, threads=1))
    ids, fused = index_vectors
    query = "blue denim jacket"
    engine = SearchEngine(run, emb_dir, None, ServeConfig())  # auto
    assert engine.query_encoder is not None
    with TestClient(create_app(engine)) as client:
        assert client.get("/readyz").json()["query_encoder"] == "distilled"
        scores = [r["score"] for r in client.get("/api/search", params={"q": query, "k": 5}).json()["results"]]
        assert np.allclose(scores, brute_force(ids, fused, embed_queries(engine.query_encoder, [query])[0], 5), atol=1e-5)
        # Product vectors, classification and /api/embed stay with the text tower.
        embedded = client.post("/api/embed", data={"text": query}).json()["text"]
        assert np.allclose(embedded, engine.embed_texts([query])[0], atol=1e-5)
    full = SearchEngine(run, emb_dir, None, ServeConfig(query_encoder="full"))
    assert full.query_encoder is None
    with TestClient(create_app(full)) as client:
        assert client.get("/readyz").json()["query_encoder"] == "full"
        scores = [r["score"] for r in client.get("/api/search", params={"q": query, "k": 5}).json()["results"]]
        assert np.allclose(scores, brute_force(ids, fused, full.embed_texts([query])[0], 5), atol=1e-5)
