"""Load benchmark of `eclip serve` on 127.0.0.1, and the index's memory per million products.

1. An EMB_DIR of --products products (default 100,000): the real fashion-dev embeddings of --emb, plus generated
   products around them (a random real product's vectors + Gaussian noise, renormalized; its title and category).
2. `eclip serve` on it with --model (the tiny config), in a child process.
3. A bounded closed-loop load from a raw asyncio HTTP/1.1 keep-alive client (light enough to share 2 cores with the
   server): text search (real titles), image search (real thumbnails), similar products (random ids), each at 1,
   8 and 32 concurrent clients for --seconds; p50/p99 latency, requests/s, errors (any status but 200).
   Search queries use RUN_DIR's distilled query encoder when it has one (`eclip distill`); text search is then
   measured again on a second server with `--query-encoder full` (the text tower), the in-run comparison.
4. The peer, in the same run: the library alone, one query at a time (embed + FAISS search, no HTTP, no batching).
5. Scale: flat vs IVF-PQ indexes over --scale-products generated vectors: bytes per product (serialized index),
   recall@10 of IVF-PQ against exact search, query time.

Writes bench/results/serve.json and serve.md and prints the table.
Usage (after `make demo` and `eclip embed --model runs/demo/model --data runs/demo/data --out runs/demo/emb`):
       flock /tmp/eclip-cpu.lock .venv/bin/python bench/serve.py [--model runs/demo/model --emb runs/demo/emb \
           --data runs/demo/data]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import quote

import numpy as np
import pyarrow as pa

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from eclip.data.store import read_products  # noqa: E402
from eclip.errors import EclipError  # noqa: E402
from eclip.serve.app import wait_until_ready  # noqa: E402
from eclip.index import EMBEDDINGS_FILE, META_FILE, VIEWS  # noqa: E402
from eclip.index.embed import embedding_weights  # noqa: E402
from eclip.index.build import build_from_parts  # noqa: E402
from eclip.index.config import IndexConfig  # noqa: E402
from eclip.index.vectors import read_embeddings, write_embeddings  # noqa: E402
from eclip.index.vectors import normalize_rows  # noqa: E402

RESULTS = REPO / "bench" / "results"
CONCURRENCY = (1, 8, 32)
TARGET = {"p99_ms_at_8": 30.0, "requests_per_s": 300.0}
FULL_TEXT_SEARCH = "text search, full text tower"


# ---------------------------------------------------------------- the 100k EMB_DIR
def generated_emb_dir(source: Path, out: Path, products: int, noise: float, index_type: str, seed: int = 0) -> dict:
    """Real rows of `source` + generated neighbours up to `products` rows, written as an EMB_DIR."""
    table, vectors = read_embeddings(source, columns=["product_id", "split", "category", "title", *VIEWS])
    real = table.num_rows
    extra = max(0, products - real)
    rng = np.random.default_rng(seed)
    origin = rng.integers(0, real, extra)
    dim = vectors["fused"].shape[1]
    columns = {"product_id": table.column("product_id").to_pylist() + [f"gen-{i}" for i in range(extra)]}
    for name in ("split", "category", "title"):
        values = table.column(name).to_pylist()
        columns[name] = values + [values[i] for i in origin]
    matrices = {}
    for view in VIEWS:
        noisy = vectors[view][origin] + rng.standard_normal((extra, dim)).astype(np.float32) * noise / np.sqrt(dim)
        matrices[view] = np.concatenate([vectors[view], normalize_rows(noisy).astype(np.float32)])
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    product_ids = columns.pop("product_id")
    write_embeddings(out / EMBEDDINGS_FILE / "part-00000.parquet", product_ids, matrices,
                     {name: pa.array(values, pa.string()) for name, values in columns.items()})
    # sqrt(N) lists (`eclip embed` takes 4 sqrt(N)): a quarter of the k-means work on these shared cores.
    description = build_from_parts(out / EMBEDDINGS_FILE, out,
                                   IndexConfig(index=index_type, nlist=int(np.sqrt(real + extra))))
    source_meta = json.loads((source / META_FILE).read_text())
    # The model that embedded the source serves this folder: `eclip serve` checks the weights it records.
    (out / META_FILE).write_text(json.dumps({"products": real + extra, "real": real, "generated": extra, "dim": dim,
                                             "noise": noise, "index": description, "model": source_meta.get("model"),
                                             "weights": embedding_weights(source_meta)}))
    cosine = float(np.mean(np.sum(matrices["fused"][real:real + 1000] * vectors["fused"][origin[:1000]], axis=1))) if extra else 1.0
    return {"products": real + extra, "real": real, "generated": extra, "mean_cosine_to_source": round(cosine, 3),
            "index": description}


# ---------------------------------------------------------------- load client
def get(path: str) -> bytes:
    return f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode()


def multipart_post(path: str, image: bytes, fields: dict[str, str]) -> bytes:
    boundary = "eclipbenchboundary"
    parts = [f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'.encode()
             for name, value in fields.items()]
    parts.append(f'--{boundary}\r\nContent-Disposition: form-data; name="image"; filename="q.jpg"\r\n'
                 f"Content-Type: image/jpeg\r\n\r\n".encode() + image + b"\r\n")
    body = b"".join(parts) + f"--{boundary}--\r\n".encode()
    return (f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: multipart/form-data; boundary={boundary}\r\n"
            f"Content-Length: {len(body)}\r\n\r\n").encode() + body


async def client(port: int, requests: list[bytes], stop: float, latencies: list[float], statuses: dict, seed: int):
    rng = random.Random(seed)
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        while time.perf_counter() < stop:
            request = requests[rng.randrange(len(requests))]
            started = time.perf_counter()
            writer.write(request)
            await writer.drain()
            status = int((await reader.readline()).split()[1])
            length = 0
            while (line := await reader.readline()) not in (b"\r\n", b""):
                if line.lower().startswith(b"content-length:"):
                    length = int(line.split(b":")[1])
            await reader.readexactly(length)
            latencies.append(time.perf_counter() - started)
            statuses[status] = statuses.get(status, 0) + 1
    finally:
        writer.close()


async def load(port: int, requests: list[bytes], clients: int, seconds: float, warmup: float) -> dict:
    await asyncio.gather(*(client(port, requests, time.perf_counter() + warmup, [], {}, 1000 + i) for i in range(clients)))
    latencies, statuses = [], {}
    started = time.perf_counter()
    await asyncio.gather(*(client(port, requests, started + seconds, latencies, statuses, i) for i in range(clients)))
    elapsed = time.perf_counter() - started
    ms = np.array(latencies) * 1000
    return {"clients": clients, "requests": len(latencies), "requests_per_s": round(len(latencies) / elapsed, 1),
            "p50_ms": round(float(np.percentile(ms, 50)), 2), "p99_ms": round(float(np.percentile(ms, 99)), 2),
            "errors": sum(count for status, count in statuses.items() if status != 200),
            "statuses": {str(k): v for k, v in statuses.items()}}


# ---------------------------------------------------------------- server
def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_server(model: Path, emb_dir: Path, data: Path | None, port: int, workers: int,
                 threads: int, query_encoder: str = "auto") -> subprocess.Popen:
    command = [sys.executable, "-m", "eclip.cli", "serve", "--model", str(model), "--index", str(emb_dir),
               "--port", str(port), "--workers", str(workers), "--threads", str(threads),
               "--query-encoder", query_encoder] + (["--data", str(data)] if data else [])
    process = subprocess.Popen(command, cwd=REPO, start_new_session=True, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    try:
        wait_until_ready(port, process, timeout_s=300)
    except EclipError as error:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGTERM)
        raise SystemExit(str(error)) from error
    return process


def _rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


# ---------------------------------------------------------------- the peer: the library, one query at a time
def library_peer(model_dir: Path, emb_dir: Path, titles: list[str], thumbnails: list[bytes], seconds: float) -> dict:
    from eclip.models import embed_images, embed_texts, load_model
    from eclip.models.query_encoder import embed_queries, load_query_encoder
    from eclip.index.faiss_index import load_index

    import faiss
    import torch

    torch.set_num_threads(1)  # as the service runs it
    faiss.omp_set_num_threads(1)
    model, processor, _ = load_model(model_dir)
    query_encoder = load_query_encoder(model_dir, processor)
    index, _ = load_index(emb_dir)
    out = {}
    peers = [("text", lambda texts: embed_texts(model, texts), titles),
             ("image", lambda images: embed_images(model, images), thumbnails)]
    if query_encoder is not None:
        peers.append(("text, distilled query encoder", lambda texts: embed_queries(query_encoder, texts), titles))
    for name, embed, inputs in peers:
        for warmup in inputs[:3]:
            index.search(embed([warmup]), 10)
        latencies, stop = [], time.perf_counter() + seconds
        while time.perf_counter() < stop:
            started = time.perf_counter()
            index.search(embed([inputs[len(latencies) % len(inputs)]]), 10)
            latencies.append(time.perf_counter() - started)
        ms = np.array(latencies) * 1000
        out[name] = {"queries_per_s": round(len(ms) / ms.sum() * 1000, 1), "p50_ms": round(float(np.median(ms)), 2)}
    return out


# ---------------------------------------------------------------- scale
def scale(products: int, dim: int, nlist: int, pq_m: int, seed: int = 0) -> dict:
    """Flat vs IVF-PQ over `products` clustered unit vectors: serialized bytes per product, recall@10, query time."""
    import faiss

    rng = np.random.default_rng(seed)
    centres = normalize_rows(rng.standard_normal((2000, dim)).astype(np.float32))
    vectors = np.empty((products, dim), np.float32)
    for start in range(0, products, 100_000):
        n = min(100_000, products - start)
        vectors[start:start + n] = normalize_rows(centres[rng.integers(0, 2000, n)]
                                                  + 0.6 / np.sqrt(dim) * rng.standard_normal((n, dim)).astype(np.float32))
    queries = vectors[rng.integers(0, products, 200)] + 0.3 / np.sqrt(dim) * rng.standard_normal((200, dim)).astype(np.float32)
    queries = normalize_rows(queries).astype(np.float32)
    flat = faiss.IndexFlatIP(dim)
    flat.add(vectors)
    started = time.perf_counter()
    _, exact = flat.search(queries, 10)
    flat_ms = (time.perf_counter() - started) / len(queries) * 1000
    started = time.perf_counter()
    ivfpq = faiss.index_factory(dim, f"IVF{nlist},PQ{pq_m}", faiss.METRIC_INNER_PRODUCT)
    ivfpq.train(vectors[rng.choice(products, min(products, 40 * nlist), replace=False)])
    ivfpq.add(vectors)
    build_s = time.perf_counter() - started
    out = {"products": products, "dim": dim, "flat": {"bytes_per_product": len(faiss.serialize_index(flat)) / products,
                                                      "ms_per_query": round(flat_ms, 3)}}
    ivfpq_bytes = len(faiss.serialize_index(ivfpq)) / products
    for nprobe in (8, 32):
        ivfpq.nprobe = nprobe
        started = time.perf_counter()
        _, found = ivfpq.search(queries, 10)
        ms = (time.perf_counter() - started) / len(queries) * 1000
        # Re-ranking: the top 100 codes' exact vectors (read from disk at scale, not held in RAM) decide the top 10.
        started = time.perf_counter()
        _, candidates = ivfpq.search(queries, 100)
        reranked = [c[np.argsort(-(vectors[c] @ q))[:10]] for c, q in zip(candidates, queries)]
        rerank_ms = (time.perf_counter() - started) / len(queries) * 1000
        out[f"ivfpq_nprobe{nprobe}"] = {"bytes_per_product": ivfpq_bytes, "recall_at_10": _recall(found, exact),
                                        "ms_per_query": round(ms, 3), "reranked_recall_at_10": _recall(reranked, exact),
                                        "reranked_ms_per_query": round(rerank_ms, 3)}
    out["ivfpq_build_s"] = round(build_s, 1)
    out["factory"] = f"IVF{nlist},PQ{pq_m}"
    return out


def _recall(found, exact) -> float:
    return round(float(np.mean([len(set(f) & set(e)) / len(e) for f, e in zip(found, exact)])), 3)


def markdown(report: dict) -> str:
    lines = [f"Index: {report['index']['products']:,} products ({report['index']['real']:,} real fashion-dev + "
             f"{report['index']['generated']:,} generated), {report['index']['index']['type']} index, "
             f"{report['index']['index']['dim']}-d; model {report['model']}; {report['workers']} worker(s), "
             f"{report['threads']} thread(s) each; search queries embedded by the {report['query_encoder']} encoder; "
             f"{report['seconds']} s per cell on {os.cpu_count()} cores shared with the client; server RSS after the "
             f"load {report['server_rss_mb']:,} MB.",
             "", "| endpoint | clients | requests/s | p50 ms | p99 ms | errors |", "| --- | ---: | ---: | ---: | ---: | ---: |"]
    for endpoint, rows in report["load"].items():
        for row in rows:
            lines.append(f"| {endpoint} | {row['clients']} | {row['requests_per_s']} | {row['p50_ms']} | {row['p99_ms']} | "
                         f"{row['errors']} |")
    if FULL_TEXT_SEARCH in report["load"]:
        distilled, full = (next(row for row in report["load"][name] if row["clients"] == 8)
                           for name in ("text search", FULL_TEXT_SEARCH))
        lines += ["", f"Text search at 8 clients, distilled query encoder against the full text tower: "
                      f"{distilled['requests_per_s'] / full['requests_per_s']:.2f}x the requests/s, p99 "
                      f"{distilled['p99_ms']} ms against {full['p99_ms']} ms."]
    peer = report["peer"]
    lines += ["", "| peer: library, one query at a time | queries/s | p50 ms | service req/s at 8 clients / peer |",
              "| --- | ---: | ---: | ---: |"]
    for name, endpoint in (("text", FULL_TEXT_SEARCH if FULL_TEXT_SEARCH in report["load"] else "text search"),
                           ("text, distilled query encoder", "text search"), ("image", "image search")):
        if name not in peer:
            continue
        at8 = next(row for row in report["load"][endpoint] if row["clients"] == 8)
        lines.append(f"| {name} | {peer[name]['queries_per_s']} | {peer[name]['p50_ms']} | "
                     f"{at8['requests_per_s'] / peer[name]['queries_per_s']:.2f}x |")
    if report.get("scale"):
        s = report["scale"]
        lines += ["", f"Scale: {s['products']:,} generated {s['dim']}-d vectors; 200 queries; memory = serialized index.", "",
                  "| index | bytes / product | per million products | recall@10 vs exact | ms / query |",
                  "| --- | ---: | ---: | ---: | ---: |",
                  f"| flat (exact) | {s['flat']['bytes_per_product']:.0f} | {s['flat']['bytes_per_product']:.0f} MB | 1.000 | "
                  f"{s['flat']['ms_per_query']} |"]
        for nprobe in (8, 32):
            row = s[f"ivfpq_nprobe{nprobe}"]
            lines.append(f"| {s['factory']}, nprobe {nprobe} | {row['bytes_per_product']:.1f} | "
                         f"{row['bytes_per_product']:.1f} MB | {row['recall_at_10']:.3f} | {row['ms_per_query']} |")
            lines.append(f"| same + exact re-rank of its top 100 | {row['bytes_per_product']:.1f} (+ vectors on disk) | "
                         f"{row['bytes_per_product']:.1f} MB | {row['reranked_recall_at_10']:.3f} | "
                         f"{row['reranked_ms_per_query']} |")
    return "\n".join(lines)


def serve_load(args, emb_dir: Path, requests: dict[str, list[bytes]], report: dict, query_encoder: str) -> str:
    """Start `eclip serve`, run each endpoint's load at every concurrency into report["load"], stop it;
    -> the query encoder it used."""
    import httpx

    port = free_port()
    server = start_server(args.model, emb_dir, args.data, port, args.workers, args.threads, query_encoder)
    try:
        used = httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=5).json()["query_encoder"]
        for endpoint, batch in requests.items():
            report["load"][endpoint] = [asyncio.run(load(port, batch, clients, args.seconds, warmup=1.0))
                                        for clients in CONCURRENCY]
            print(endpoint, report["load"][endpoint], flush=True)
        report.setdefault("server_rss_mb", round(_rss_kb(server.pid) / 1024, 1))
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait()
    return used


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=REPO / "runs" / "demo" / "model", help="RUN_DIR (tiny config)")
    parser.add_argument("--emb", type=Path, default=REPO / "runs" / "demo" / "emb", help="EMB_DIR of real products")
    parser.add_argument("--data", type=Path, default=REPO / "runs" / "demo" / "data", help="DATA_DIR: titles, thumbnails")
    parser.add_argument("--products", type=int, default=100_000)
    parser.add_argument("--noise", type=float, default=0.5, help="generated = normalize(real + noise * N(0, I/D))")
    parser.add_argument("--index", default="ivf", choices=("flat", "ivf", "hnsw", "ivfpq"),
                        help="index type of the 100k EMB_DIR (`eclip embed --index`); flat scans 100 MB per query")
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--threads", type=int, default=1, help="torch and FAISS threads per worker (eclip serve --threads)")
    parser.add_argument("--seconds", type=float, default=6.0, help="measured seconds per endpoint and concurrency")
    parser.add_argument("--scale-products", type=int, default=200_000,
                        help="vectors for the flat vs IVF-PQ memory measurement (bytes per product); 0 skips it")
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")

    emb_dir = REPO / "runs" / "serve" / f"bench-{args.products}-{args.index}"
    report = {"model": str(args.model), "workers": args.workers, "threads": args.threads, "seconds": args.seconds,
              "index": generated_emb_dir(args.emb, emb_dir, args.products, args.noise, args.index)}
    products = read_products(args.data, columns=["product_id", "title", "thumbnail"])
    rng = random.Random(0)
    rows = rng.sample(range(products.num_rows), 500)
    titles = [products.column("title")[i].as_py() for i in rows]
    thumbnails = [products.column("thumbnail")[i].as_py() for i in rows[:100]]
    ids = read_embeddings(emb_dir, columns=["product_id"])[0].column("product_id").to_pylist()
    requests = {
        "text search": [get(f"/api/search?q={quote(title)}&k=10") for title in titles],
        "image search": [multipart_post("/api/search/image", image, {"k": "10"}) for image in thumbnails],
        "similar products": [get(f"/api/products/{quote(ids[i])}/similar?k=10") for i in rng.sample(range(len(ids)), 500)],
    }
    report["load"] = {}
    report["query_encoder"] = serve_load(args, emb_dir, requests, report, "auto")
    if report["query_encoder"] == "distilled":  # the same load with the text tower embedding the queries
        serve_load(args, emb_dir, {FULL_TEXT_SEARCH: requests["text search"]}, report, "full")
    report["peer"] = library_peer(args.model, emb_dir, titles, thumbnails, args.seconds)
    text_at_8 = next(row for row in report["load"]["text search"] if row["clients"] == 8)
    report["targets"] = {**TARGET, "met": text_at_8["p99_ms"] <= TARGET["p99_ms_at_8"]
                         and text_at_8["requests_per_s"] >= TARGET["requests_per_s"]
                         and all(row["errors"] == 0 for rows in report["load"].values() for row in rows)}
    if args.scale_products:
        report["scale"] = scale(args.scale_products, report["index"]["index"]["dim"], nlist=512, pq_m=32)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "serve.json").write_text(json.dumps(report, indent=1))
    table = markdown(report)
    (RESULTS / "serve.md").write_text(table + "\n")
    print(table)


if __name__ == "__main__":
    main()
