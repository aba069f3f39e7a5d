"""What the service computes, free of HTTP: decoding uploads under caps, embedding, searching, classifying.

Queries from concurrent requests are embedded and searched together (`run_queries`): the web layer queues them
while the model is busy, so a batch forms by itself under load and a lone query waits for nothing.
"""

from __future__ import annotations

import io
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from eclip.config import validate
from eclip.errors import EclipError
from eclip.serve.config import ServeConfig
from eclip.index.journal import Operation, ProductIndex
from eclip.index.embed import check_embedded_by, fuse
from eclip.index.vectors import normalize_rows

# Labels of products that have no category head: the leaf of the path, as catalogues name it.
ZERO_SHOT_TEMPLATES = ["{}", "a photo of {}", "a product photo of a {}"]
DETAIL_COLUMNS = ("brand", "description", "price", "adult")


class RequestError(EclipError):
    """Bad input from a request: `status` is the HTTP code (4xx) to answer with."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


@dataclass
class Query:
    """One search: text, an image, both (image + or - text, as in ALIGN), or a stored product's vector."""
    k: int
    category: str | None = None
    text: str | None = None
    image: Image.Image | None = None
    subtract_text: bool = False
    product_row: int | None = None


class Catalog:
    """Details and thumbnails of a prepared DATA_DIR's products, held in memory."""

    def __init__(self, data_dir: str | Path):
        from eclip.data.store import read_products

        table = read_products(data_dir)
        self.attributes = [name for name in table.column_names if name.startswith("attr_")]
        keep = ["product_id", "thumbnail", *[c for c in DETAIL_COLUMNS if c in table.column_names], *self.attributes]
        self.table = table.select(keep)
        self.row_of = {product_id: row for row, product_id in enumerate(self.table.column("product_id").to_pylist())}

    def details(self, product_id: str) -> dict:
        row = self.row_of.get(product_id)
        if row is None:
            return {}
        record = self.table.slice(row, 1).drop_columns(["thumbnail", "product_id"]).to_pylist()[0]
        attributes = {name[len("attr_"):]: record.pop(name) for name in self.attributes}
        return {**{k: v for k, v in record.items() if v is not None},
                "attributes": {k: v for k, v in attributes.items() if v is not None}}

    def thumbnail(self, product_id: str) -> bytes | None:
        row = self.row_of.get(product_id)
        return None if row is None else self.table.column("thumbnail")[row].as_py()


class SearchEngine:
    def __init__(self, run_dir: str | Path, emb_dir: str | Path, data_dir: str | Path | None, config: ServeConfig):
        from eclip.models import load_model
        from eclip.eval.heads import HEADS_DIR, load_current_heads

        import faiss
        import torch

        validate(config)
        self.config = config
        # Intra-op threads only pay off on big batches; on a busy machine they spin against each other.
        if config.threads > 0:
            torch.set_num_threads(config.threads)
            faiss.omp_set_num_threads(config.threads)
        self.model, processor, model_config = load_model(run_dir)
        self.query_encoder = _query_encoder(run_dir, processor, config.query_encoder)
        self.index = ProductIndex(emb_dir)
        check_embedded_by(run_dir, emb_dir)
        self.image_size = model_config.vision.image_size
        self.catalog = Catalog(data_dir) if data_dir else None
        self.heads, stale = load_current_heads(Path(run_dir) / HEADS_DIR, run_dir)
        if stale:
            print(f"eclip serve: the task heads {', '.join(stale)} in {Path(run_dir) / HEADS_DIR} were fit on other "
                  f"weights than {run_dir}'s; classifying without them (re-run eclip eval to refit)", file=sys.stderr)
        self._zero_shot: tuple[list[str], np.ndarray] | None = None  # (category paths, (C, D) class vectors)

    # ------------------------------------------------------------ input
    def decode_image(self, data: bytes) -> Image.Image:
        """Upload bytes -> RGB image; the pixel cap is checked on the header, before anything is decoded."""
        if not data:
            raise RequestError(422, "the uploaded image is empty")
        try:
            image = Image.open(io.BytesIO(data))
            width, height = image.size
            if width * height > self.config.max_pixels:
                raise RequestError(413, f"the image is {width}x{height} = {width * height:,} pixels, above the cap of "
                                        f"{self.config.max_pixels:,}: send a smaller image")
            image.draft("RGB", (2 * self.image_size, 2 * self.image_size))
            image.load()
            ImageOps.exif_transpose(image, in_place=True)  # phone photos: upright, as `eclip prepare` stores them
            return image.convert("RGB")
        except RequestError:
            raise
        except (UnidentifiedImageError, Image.DecompressionBombError, OSError, SyntaxError, ValueError) as error:
            detail = "" if isinstance(error, UnidentifiedImageError) else f": {error}"  # its text names a BytesIO
            raise RequestError(422, f"the upload is not an image that can be decoded (JPEG, PNG, WebP, GIF){detail}")

    def check_category(self, category: str | None) -> str | None:
        """A search's category filter -> the served path it names (case aside), or None for every category."""
        if category is None or not category.strip():
            return None
        wanted = " > ".join(part.strip() for part in category.split(">")).casefold()
        self.index.sync()
        for path in self.index.categories():
            if path.casefold() == wanted:
                return path
        raise RequestError(422, f"no product is in the category {category.strip()!r}: GET /api/categories lists them")

    def check_text(self, text: str | None, name: str) -> str | None:
        if text is None:
            return None
        text = text.strip()
        if not any(character.isalnum() for character in text):  # blank, or only punctuation / invisible characters
            raise RequestError(422, f"{name} is empty or has no letters or digits")
        if len(text) > self.config.max_query_chars:
            raise RequestError(422, f"{name} has {len(text)} characters, above the cap of {self.config.max_query_chars}")
        return text

    # ------------------------------------------------------------ model
    def embed_texts(self, texts: list[str]) -> np.ndarray:
        from eclip.models import embed_texts

        return embed_texts(self.model, texts, batch_size=self.config.max_batch)  # (N, D)

    def embed_queries(self, texts: list[str]) -> np.ndarray:
        """Search-query text -> (N, D): the distilled query encoder when one serves, else the text tower.
        Products, classification and /api/embed always use the text tower."""
        if self.query_encoder is None:
            return self.embed_texts(texts)
        from eclip.models.query_encoder import embed_queries

        return embed_queries(self.query_encoder, texts)

    def embed_images(self, images: list[Image.Image]) -> np.ndarray:
        from eclip.models import embed_images

        return embed_images(self.model, images, batch_size=self.config.max_batch)  # (N, D)

    def run_queries(self, queries: list[Query]) -> list[list[dict]]:
        """Embed every text and image of the batch in one model call each, then search grouped by category."""
        self.index.sync()
        texts = [i for i, q in enumerate(queries) if q.text is not None]
        images = [i for i, q in enumerate(queries) if q.image is not None]
        text_vectors = dict(zip(texts, self.embed_queries([queries[i].text for i in texts]))) if texts else {}
        image_vectors = dict(zip(images, self.embed_images([queries[i].image for i in images]))) if images else {}
        vectors = np.zeros((len(queries), self.index.dim), np.float32)  # (Q, D)
        for i, query in enumerate(queries):
            if query.product_row is not None:
                vectors[i] = self.index.vectors[self.index.view][query.product_row]
            elif i in image_vectors and i in text_vectors:
                vectors[i] = image_vectors[i] - text_vectors[i] if query.subtract_text else image_vectors[i] + text_vectors[i]
            else:
                vectors[i] = image_vectors[i] if i in image_vectors else text_vectors[i]
        vectors = normalize_rows(vectors)
        results: list[list[dict]] = [[] for _ in queries]
        for category in {q.category for q in queries}:
            members = [i for i, q in enumerate(queries) if q.category == category]
            # A similar-products query asks for one more: the product itself comes back and is dropped.
            k = max(queries[i].k + (queries[i].product_row is not None) for i in members)
            for i, found in zip(members, self.index.search(vectors[members], k, category)):
                query = queries[i]
                found = [(row, score) for row, score in found if row != query.product_row][:query.k]
                results[i] = [self.result(row, score, rank) for rank, (row, score) in enumerate(found, 1)]
        return results

    def result(self, row: int, score: float, rank: int) -> dict:
        product_id = self.index.ids[row]
        return {"rank": rank, "product_id": product_id, "title": self.index.titles[row],
                "category": self.index.category(row), "score": round(score, 6)}

    # ------------------------------------------------------------ classification
    def classify(self, image_vector: np.ndarray | None, text_vector: np.ndarray | None, top: int = 5) -> dict:
        """Category (with scores), attributes and adult score: the task heads of RUN_DIR/heads when they exist and
        every vector they read is available, else a zero-shot category from the served category names."""
        from eclip.eval.heads import apply_head, head_view

        available = {"image": image_vector, "text": text_vector,
                     "fused": fuse(image_vector[None], text_vector[None])[0]
                     if image_vector is not None and text_vector is not None else None}
        views = {name: head_view(self.heads[0], name) for name in self.heads[0]["heads"]} if self.heads else {}
        if views and all(available[view] is not None for view in views.values()):
            meta, tensors = self.heads
            answer = {"method": "heads", "views": views, "category": [], "attributes": {}, "adult": None}
            for name, view in views.items():
                features = available[view]
                scored = [{"label": str(label), "score": round(p, 6)} for label, p in apply_head(meta, tensors, name, features)]
                if name == "category":
                    answer["category"] = scored[:top]
                elif name.startswith("attr_"):
                    answer["attributes"][name[len("attr_"):]] = scored[:top]
                elif name == "adult":
                    probability = dict(apply_head(meta, tensors, name, features))[True]
                    threshold = meta["heads"]["adult"]["threshold"]
                    answer["adult"] = {"score": round(probability, 6), "threshold": threshold,
                                       "restricted": probability >= threshold}
            return answer
        query = available["fused"] if available["fused"] is not None else (
            image_vector if image_vector is not None else text_vector)
        paths, classifier = self._zero_shot_classifier()
        if not paths:
            return {"method": "zero-shot", "category": [], "attributes": {}, "adult": None}
        scores = classifier @ query  # (C,)
        order = np.argsort(-scores, kind="stable")[:top]
        return {"method": "zero-shot", "category": [{"label": paths[i], "score": round(float(scores[i]), 6)} for i in order],
                "attributes": {}, "adult": None}

    def _zero_shot_classifier(self) -> tuple[list[str], np.ndarray]:
        """The deepest category paths served, each named by its leaf; rebuilt only when that set changes."""
        from eclip.eval.zeroshot import prompt_classifier

        paths = self.index.categories()
        depth = max((path.count(" > ") for path in paths), default=0)
        paths = [path for path in paths if path.count(" > ") == depth]
        if self._zero_shot is None or self._zero_shot[0] != paths:
            leaves = [path.split(" > ")[-1] for path in paths]
            classifier = prompt_classifier(self.embed_texts, leaves, ZERO_SHOT_TEMPLATES) if paths else np.zeros((0, 1))
            self._zero_shot = (paths, np.asarray(classifier, np.float32))
        return self._zero_shot

    # ------------------------------------------------------------ updates
    def add_product(self, product_id: str, title: str, category: str | None, image_bytes: bytes) -> None:
        image = self.decode_image(image_bytes)
        image_vector = self.embed_images([image])[0]
        text_vector = self.embed_texts([title])[0]
        vectors = {"image": image_vector, "text": text_vector, "fused": fuse(image_vector[None], text_vector[None])[0]}
        self.index.append([Operation("add", product_id, title, category, vectors, _thumbnail(image))])

    def remove_product(self, product_id: str) -> bool:
        self.index.sync()
        if product_id not in self.index.row_of:
            return False
        self.index.append([Operation("remove", product_id)])
        return True

    def thumbnail(self, product_id: str) -> bytes | None:
        if product_id not in self.index.row_of:
            return None
        if product_id in self.index.added_thumbnails:
            return self.index.added_thumbnails[product_id]
        return self.catalog.thumbnail(product_id) if self.catalog else None


def _query_encoder(run_dir, processor, choice: str):
    """The query encoder `choice` asks for: None means the text tower."""
    from eclip.models.query_encoder import load_query_encoder

    if choice == "full":
        return None
    encoder = load_query_encoder(run_dir, processor)
    if encoder is None and choice == "distilled":
        raise EclipError(f"{run_dir} has no distilled query encoder: run `eclip distill --model {run_dir} --data "
                         f"DATA_DIR` first, or serve with --query-encoder full")
    return encoder


def _thumbnail(image: Image.Image, size: int = 256) -> bytes:
    """The same thumbnail `eclip prepare` stores: JPEG, longest side <= 256."""
    copy = image.copy()
    copy.thumbnail((size, size))
    buffer = io.BytesIO()
    copy.save(buffer, "JPEG", quality=90)
    return buffer.getvalue()
