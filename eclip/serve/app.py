"""The HTTP layer: FastAPI routes over a SearchEngine, request limits, and the web page (`eclip serve`).

Model and index work runs on one thread, fed by a queue: concurrent queries are embedded and searched as one batch.
Nothing a request names is opened as a file: uploads are read from memory, thumbnails come from the loaded data,
and the page's files are read once at startup from the package.
(No `from __future__ import annotations` here: FastAPI reads the routes' annotations, which name local limits.)
"""

import asyncio
import json
import os
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Annotated, Literal
from urllib.parse import quote

import swagger_ui
from fastapi import FastAPI, File, Form, Query as QueryParam, UploadFile
from fastapi import Path as PathParam
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import JSONResponse, Response
from PIL import Image

from eclip.errors import EclipError
from eclip.serve.config import ServeConfig
from eclip.serve.engine import Query, RequestError, SearchEngine
from eclip.index.embed import fuse

STATIC_DIR = Path(__file__).resolve().parent / "static"
SWAGGER_DIR = Path(swagger_ui.__file__).parent / "static"  # Swagger UI 5 (OpenAPI 3.1) for /docs, served from here
MEDIA_TYPES = {".html": "text/html; charset=utf-8", ".js": "text/javascript; charset=utf-8",
               ".css": "text/css; charset=utf-8", ".svg": "image/svg+xml"}
ENVIRONMENT_VARIABLE = "ECLIP_SERVE"  # JSON {run_dir, emb_dir, data_dir, config} for worker processes

ProductId = Annotated[str, PathParam(min_length=1, max_length=200, description="a product id of the index")]
Category = Annotated[str | None, QueryParam(max_length=300, description="only products in this category path or under it")]


class Batcher:
    """Queues items from concurrent requests; one worker runs `run(items)` on the model thread for all that are
    waiting (up to `max_batch`), so a batch forms while the previous one runs."""

    def __init__(self, run, executor: ThreadPoolExecutor, max_batch: int):
        self.run, self.executor, self.max_batch = run, executor, max_batch
        self.queue: asyncio.Queue | None = None

    async def __call__(self, item):
        loop = asyncio.get_running_loop()
        if self.queue is None:
            self.queue = asyncio.Queue()
            self.worker = loop.create_task(self._work())
        future = loop.create_future()
        self.queue.put_nowait((item, future))
        return await future

    async def _work(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            waiting = [await self.queue.get()]
            while len(waiting) < self.max_batch and not self.queue.empty():
                waiting.append(self.queue.get_nowait())
            waiting = [(item, future) for item, future in waiting if not future.done()]  # timed-out requests
            if not waiting:
                continue
            try:
                results = await loop.run_in_executor(self.executor, self.run, [item for item, _ in waiting])
            except Exception as error:  # noqa: BLE001 - handed to every waiting request, which answers 500
                for _, future in waiting:
                    if not future.done():
                        future.set_exception(error)
                continue
            for (_, future), result in zip(waiting, results):
                if not future.done():
                    future.set_result(result)


class RequestLimits:
    """ASGI middleware: 413 for a body above the cap (declared or streamed), 503 past the request timeout."""

    class _TooLarge(Exception):
        pass

    def __init__(self, app, max_body: int, timeout_s: float):
        self.app, self.max_body, self.timeout_s = app, max_body, timeout_s

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > self.max_body):
            return await _send_json(send, 413, f"the request body is over the cap of {self.max_body:,} bytes")
        received, started, too_large = 0, False, False
        over_cap = f"the request body is over the cap of {self.max_body:,} bytes"

        async def limited_receive():
            nonlocal received, too_large
            message = await receive()
            received += len(message.get("body", b""))
            if received > self.max_body:
                too_large = True
                raise self._TooLarge
            return message

        async def tracked_send(message):
            nonlocal started
            if too_large:  # the app caught the overflow (FastAPI's form parser answers 400 to it): send the 413
                if not started:
                    started = True
                    await _send_json(send, 413, over_cap)
                return
            started = True
            await send(message)

        try:
            await asyncio.wait_for(self.app(scope, limited_receive, tracked_send), self.timeout_s)
        except self._TooLarge:
            if not started:
                await _send_json(send, 413, over_cap)
        except TimeoutError:
            if not started:
                await _send_json(send, 503, f"the request took longer than {self.timeout_s:g} s; try again")


async def _send_json(send, status: int, message: str) -> None:
    body = json.dumps({"detail": message}).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


def create_app(engine: SearchEngine) -> FastAPI:
    config = engine.config
    executor = ThreadPoolExecutor(1, thread_name_prefix="eclip-model")
    batch = Batcher(engine.run_queries, executor, config.max_batch)
    static = {path.name: (path.read_bytes(), MEDIA_TYPES.get(path.suffix, "application/octet-stream"))
              for path in STATIC_DIR.iterdir() if path.is_file()}
    static.update({name: ((SWAGGER_DIR / name).read_bytes(), media_type) for name, media_type in
                   (("swagger-ui-bundle.js", MEDIA_TYPES[".js"]), ("swagger-ui.css", MEDIA_TYPES[".css"]),
                    ("favicon-32x32.png", "image/png"))})
    K = Annotated[int, QueryParam(ge=1, le=config.max_k, description=f"number of results, at most {config.max_k}")]
    FormK = Annotated[int, Form(ge=1, le=config.max_k, description=f"number of results, at most {config.max_k}")]
    FormCategory = Annotated[str | None, Form(max_length=300, description="only products in this category or under it")]

    async def on_model_thread(function, *args):
        return await asyncio.get_running_loop().run_in_executor(executor, function, *args)

    async def read_image(upload: UploadFile) -> Image.Image:
        return await on_model_thread(engine.decode_image, await upload.read())

    def live_row(product_id: str) -> int:
        engine.index.sync()  # another worker may have added or removed it
        row = engine.index.row_of.get(product_id)
        if row is None:
            raise RequestError(404, f"no product {product_id!r} in the index")
        return row

    @asynccontextmanager
    async def lifespan(_):
        yield
        executor.shutdown(wait=False, cancel_futures=True)

    app = FastAPI(title="eclip product search", version="1", lifespan=lifespan, docs_url=None, redoc_url=None,
                  description="Search, match and classify products with an e-CLIP model. Limits: "
                              f"k <= {config.max_k}, bodies <= {config.max_upload_bytes:,} bytes, images <= "
                              f"{config.max_pixels:,} pixels, {config.request_timeout_s:g} s per request.")
    app.add_middleware(RequestLimits, max_body=config.max_upload_bytes, timeout_s=config.request_timeout_s)

    @app.exception_handler(RequestError)
    async def request_error(_, error: RequestError):
        return JSONResponse({"detail": str(error)}, status_code=error.status)

    @app.exception_handler(EclipError)
    async def server_error(_, error: EclipError):
        return JSONResponse({"detail": str(error)}, status_code=500)

    # ------------------------------------------------------------ health
    @app.get("/healthz", tags=["health"], summary="the process answers")
    async def healthz():
        return {"status": "ok"}

    @app.get("/readyz", tags=["health"], summary="the index is loaded and follows the journal")
    async def readyz():
        try:
            await on_model_thread(engine.index.sync)
        except (EclipError, OSError) as error:
            return JSONResponse({"status": "not ready", "detail": str(error)}, status_code=503)
        return {"status": "ready", "products": len(engine.index),
                "query_encoder": "full" if engine.query_encoder is None else "distilled"}

    # ------------------------------------------------------------ search
    @app.get("/api/search", tags=["search"], summary="products matching a text query")
    async def search_text(q: Annotated[str, QueryParam(min_length=1, max_length=config.max_query_chars)],
                          k: K = 10, category: Category = None):
        text = engine.check_text(q, "the query")
        return {"query": text, "results": await batch(Query(k, engine.check_category(category), text=text))}

    @app.post("/api/search/image", tags=["search"], summary="products looking like an uploaded image")
    async def search_image(image: Annotated[UploadFile, File(description="JPEG, PNG, WebP or GIF")],
                           k: FormK = 10, category: FormCategory = None):
        return {"results": await batch(Query(k, engine.check_category(category), image=await read_image(image)))}

    @app.post("/api/search/combined", tags=["search"], summary="an image modified by text: image + text or image - text")
    async def search_combined(image: Annotated[UploadFile, File(description="JPEG, PNG, WebP or GIF")],
                              text: Annotated[str, Form(min_length=1, max_length=config.max_query_chars)],
                              op: Annotated[Literal["plus", "minus"], Form()] = "plus",
                              k: FormK = 10, category: FormCategory = None):
        text = engine.check_text(text, "text")
        query = Query(k, engine.check_category(category), text=text, image=await read_image(image),
                      subtract_text=op == "minus")
        return {"results": await batch(query)}

    @app.get("/api/products/{product_id}/similar", tags=["products"], summary="nearest products to an indexed one")
    async def similar(product_id: ProductId, k: K = 10, category: Category = None):
        query = Query(k, engine.check_category(category), product_row=live_row(product_id))
        return {"product_id": product_id, "results": await batch(query)}

    @app.get("/api/categories", tags=["search"], summary="category paths for the filter, prefixes included")
    async def categories():
        engine.index.sync()
        return {"categories": engine.index.categories()}

    # ------------------------------------------------------------ products
    @app.get("/api/products/{product_id}", tags=["products"], summary="details and predicted labels of a product")
    async def product(product_id: ProductId):
        row = live_row(product_id)
        vectors = engine.index.vectors
        prediction = await on_model_thread(engine.classify, vectors["image"][row], vectors["text"][row])
        details = engine.catalog.details(product_id) if engine.catalog else {}
        return {**engine.index.product(product_id), **details, "prediction": prediction,
                "thumbnail": f"/api/products/{quote(product_id, safe='')}/thumbnail"}

    @app.get("/api/products/{product_id}/thumbnail", tags=["products"], summary="the product's JPEG thumbnail",
             responses={200: {"content": {"image/jpeg": {}}}, 404: {"description": "no such product or no thumbnail"}})
    async def thumbnail(product_id: ProductId):
        live_row(product_id)
        data = engine.thumbnail(product_id)
        if data is None:
            raise RequestError(404, f"no thumbnail for product {product_id!r}")
        return Response(data, media_type="image/jpeg", headers={"cache-control": "max-age=3600"})

    @app.post("/api/products", tags=["products"], status_code=201,
              summary="add (or replace) a product: embedded, indexed and journaled before the reply")
    async def add_product(product_id: Annotated[str, Form(min_length=1, max_length=200, pattern=r"^[^/\s]+$",
                                                          description="no slash or space; not . or ..")],
                          title: Annotated[str, Form(min_length=1, max_length=config.max_query_chars)],
                          image: Annotated[UploadFile, File(description="JPEG, PNG, WebP or GIF")],
                          category: FormCategory = None):
        if product_id in (".", ".."):  # its URLs would be folded away by browsers
            raise RequestError(422, f"the product id {product_id!r} cannot be a URL path segment: choose another")
        title = engine.check_text(title, "title")
        await on_model_thread(engine.add_product, product_id, title, category or None, await image.read())
        return {"product_id": product_id, "products": len(engine.index)}

    @app.delete("/api/products/{product_id}", tags=["products"], summary="remove a product (journaled before the reply)")
    async def remove_product(product_id: ProductId):
        if not await on_model_thread(engine.remove_product, product_id):
            raise RequestError(404, f"no product {product_id!r} in the index")
        return {"removed": product_id, "products": len(engine.index)}

    # ------------------------------------------------------------ models
    async def embed_inputs(image: UploadFile | None, text: str | None):
        text = engine.check_text(text, "text")
        if image is None and text is None:
            raise RequestError(422, "send an image, a text, or both")
        decoded = await read_image(image) if image is not None else None

        def run():
            image_vector = engine.embed_images([decoded])[0] if decoded is not None else None
            text_vector = engine.embed_texts([text])[0] if text is not None else None
            return image_vector, text_vector
        return await on_model_thread(run)

    @app.post("/api/classify", tags=["models"], summary="category path with scores, attributes and adult score")
    async def classify(image: Annotated[UploadFile | None, File(description="JPEG, PNG, WebP or GIF")] = None,
                       title: Annotated[str | None, Form(max_length=config.max_query_chars)] = None):
        image_vector, text_vector = await embed_inputs(image, title)
        return await on_model_thread(engine.classify, image_vector, text_vector)

    @app.post("/api/embed", tags=["models"], summary="unit vectors of an image and/or a text (fused when both)")
    async def embed(image: Annotated[UploadFile | None, File(description="JPEG, PNG, WebP or GIF")] = None,
                    text: Annotated[str | None, Form(max_length=config.max_query_chars)] = None):
        image_vector, text_vector = await embed_inputs(image, text)
        vectors = {"image": image_vector, "text": text_vector}
        if image_vector is not None and text_vector is not None:
            vectors["fused"] = fuse(image_vector[None], text_vector[None])[0]
        return {view: vector.tolist() for view, vector in vectors.items() if vector is not None}

    # ------------------------------------------------------------ page
    @app.get("/", include_in_schema=False)
    async def page():
        body, media_type = static["index.html"]
        return Response(body, media_type=media_type)

    @app.get("/docs", include_in_schema=False)
    async def docs():
        return get_swagger_ui_html(openapi_url="/openapi.json", title="eclip product search API",
                                   swagger_js_url="/static/swagger-ui-bundle.js", swagger_css_url="/static/swagger-ui.css",
                                   swagger_favicon_url="/static/favicon-32x32.png")

    @app.get("/static/{name}", include_in_schema=False)
    async def static_file(name: str):
        if name not in static:
            raise RequestError(404, f"no static file {name!r}")
        body, media_type = static[name]
        return Response(body, media_type=media_type, headers={"cache-control": "max-age=600"})

    return app


def app_from_environment() -> FastAPI:
    """The app of one uvicorn worker process, configured by `eclip serve` through $ECLIP_SERVE."""
    settings = json.loads(os.environ[ENVIRONMENT_VARIABLE])
    engine = SearchEngine(settings["run_dir"], settings["emb_dir"], settings["data_dir"], ServeConfig(**settings["config"]))
    return create_app(engine)


def serve(run_dir: Path, emb_dir: Path, data_dir: Path | None, config: ServeConfig) -> None:
    """Fold the journal into the snapshot, then run uvicorn: this process serves when `config.workers` is 1, else
    each worker process loads its own engine (and follows the others' updates through the journal)."""
    import uvicorn

    from eclip.index.journal import ProductIndex

    ProductIndex(emb_dir).compact()  # alone now: the workers only append and follow
    options = dict(host=config.host, port=config.port, log_level="warning", timeout_graceful_shutdown=5)
    if config.workers == 1:
        uvicorn.run(create_app(SearchEngine(run_dir, emb_dir, data_dir, config)), **options)
        return
    os.environ[ENVIRONMENT_VARIABLE] = json.dumps({"run_dir": str(run_dir), "emb_dir": str(emb_dir),
                                                   "data_dir": str(data_dir) if data_dir else None,
                                                   "config": config.to_dict()})
    uvicorn.run("eclip.serve.app:app_from_environment", factory=True, workers=config.workers, **options)


def wait_until_ready(port: int, process, timeout_s: float = 60.0, host: str = "127.0.0.1") -> None:
    """Poll http://HOST:PORT/readyz until it answers 200 (a started `eclip serve` child `process` loads its model
    and index first); EclipError when the process exits or `timeout_s` passes."""
    import time
    import urllib.error
    import urllib.request

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise EclipError(f"eclip serve exited with {process.returncode} before it was ready")
        try:
            with urllib.request.urlopen(f"http://{host}:{port}/readyz", timeout=1) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass  # not listening yet, or 503 while loading
        time.sleep(0.2)
    raise EclipError(f"eclip serve did not become ready in {timeout_s:g} s")
