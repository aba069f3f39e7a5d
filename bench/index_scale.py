"""The index at scale: IVF-PQ built from parts against the flat index, at --sizes vectors of the model's dimension.

1. Vectors: the real fashion-dev `fused` embeddings of --emb (an `eclip embed` output), then generated ones drawn
   from a Gaussian mixture fitted to them (full covariances, renormalized to unit rows), written as an EMB_DIR's
   parts of --part-rows rows under --work, one part at a time (bounded memory). Each generated row takes the title
   and category of a random real product.
2. Build (`eclip.index.build.build_from_parts`, in a child process): wall time, peak RSS (the child's max RSS),
   index.faiss and vectors.npy sizes; IVF-PQ with the default rule from N, and flat where it fits (--flat-max).
3. Recall@10 against exact search (brute force over vectors.npy, streamed) for --queries real title (`text`)
   vectors, IVF-PQ with and without the exact re-rank, at the default nprobe and at others.
4. Serving: `eclip serve` (one worker, 2 threads) on the EMB_DIR with --model, text search of real titles at 8
   concurrent clients (bench/serve.py's client) -> p50/p99; and the index search path alone (ProductIndex.search,
   the embedded query given) at 8 threads.

Writes bench/results/index_scale.json and index_scale.md and prints the table. The machine may be shared: the
report says so, and timings compare indexes measured in the same run.
Usage: .venv/bin/python bench/index_scale.py --emb EMB_DIR --model RUN_DIR [--sizes 1000000,10000000]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path
from urllib.parse import quote

import numpy as np
import pyarrow as pa

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.serve import free_port, get, load, start_server  # noqa: E402
from eclip.index import EMBEDDINGS_FILE, META_FILE, VECTORS_FILE  # noqa: E402
from eclip.index.embed import embedding_weights  # noqa: E402
from eclip.index.vectors import normalize_rows, read_embeddings, write_embeddings  # noqa: E402

RESULTS = REPO / "bench" / "results"
TARGET = {"peak_over_index": 3.0, "recall_at_10": 0.95, "text_p99_ms_at_8": 50.0, "build_gb": 24.0}
NPROBES = (16, 64, 128)


def write_parts(source: Path, out: Path, count: int, part_rows: int, components: int, seed: int = 0) -> dict:
    """The real rows of `source`, then generated ones up to `count`, as out/embeddings.parquet/part-*.parquet."""
    from sklearn.mixture import GaussianMixture

    table, vectors = read_embeddings(source, columns=["product_id", "split", "category", "title", "fused"])
    real = vectors["fused"]  # (R, D)
    mixture = GaussianMixture(components, covariance_type="full", reg_covar=1e-4, random_state=seed).fit(real)
    rng = np.random.default_rng(seed)
    shutil.rmtree(out, ignore_errors=True)
    titles, categories = table.column("title").to_pylist(), table.column("category").to_pylist()
    ids, splits = table.column("product_id").to_pylist(), table.column("split").to_pylist()
    cosines = []
    for number, start in enumerate(range(0, count, part_rows)):
        rows = np.arange(start, min(start + part_rows, count))
        generated = rows >= len(real)
        fused = np.zeros((len(rows), real.shape[1]), np.float32)
        fused[~generated] = real[rows[~generated]]
        if generated.any():
            mixture.random_state = int(rng.integers(1 << 31))
            drawn, _ = mixture.sample(int(generated.sum()))
            fused[generated] = normalize_rows(drawn.astype(np.float32))
        origin = np.where(generated, rng.integers(0, len(real), len(rows)), np.minimum(rows, len(real) - 1))
        if generated.any() and not cosines:
            cosines.append(float(np.mean(np.max(fused[generated][:500] @ real.T, axis=1))))
        write_embeddings(out / EMBEDDINGS_FILE / f"part-{number:05d}.parquet",
                         [ids[r] if not g else f"gen-{r}" for r, g in zip(rows, generated)], {"fused": fused},
                         {"split": pa.array([splits[o] for o in origin], pa.string()),
                          "category": pa.array([categories[o] for o in origin], pa.string()),
                          "title": pa.array([titles[o] for o in origin], pa.string())})
    meta = json.loads((source / META_FILE).read_text())
    (out / META_FILE).write_text(json.dumps({"products": count, "real": len(real), "dim": real.shape[1],
                                             "model": meta.get("model"), "weights": embedding_weights(meta)}))
    return {"real": len(real), "generated": count - len(real), "mixture_components": components,
            "generated_nearest_real_cosine": round(cosines[0], 3) if cosines else None}


BUILD = """
import json, resource, sys, time
sys.path.insert(0, {repo!r})
from pathlib import Path
from eclip.index.build import build_from_parts
from eclip.index.config import IndexConfig
started = time.perf_counter()
description = build_from_parts(Path({emb!r}) / "embeddings.parquet", Path({emb!r}), IndexConfig(**{config!r}))
print(json.dumps({{"seconds": round(time.perf_counter() - started, 1), "description": description,
                   "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)}}))
"""


def build(emb: Path, config: dict) -> dict:
    for name in ("index.faiss", "index.json", VECTORS_FILE):
        (emb / name).unlink(missing_ok=True)
    script = BUILD.format(repo=str(REPO), emb=str(emb), config=config)
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    out = json.loads(result.stdout.strip().splitlines()[-1])
    out["index_mb"] = round((emb / "index.faiss").stat().st_size / 1e6, 1)
    out["vectors_mb"] = round((emb / VECTORS_FILE).stat().st_size / 1e6, 1)
    out["peak_over_index"] = round(out["peak_rss_mb"] / out["index_mb"], 2)
    out["peak_over_index_and_vectors"] = round(out["peak_rss_mb"] / (out["index_mb"] + out["vectors_mb"]), 2)
    return out


def exact_top(emb: Path, queries: np.ndarray, k: int = 10, chunk: int = 500_000) -> tuple[np.ndarray, float]:
    """Brute force over vectors.npy, chunk by chunk -> ((Q, k) rows, seconds per query)."""
    vectors = np.load(emb / VECTORS_FILE, mmap_mode="r")
    best_scores = np.full((len(queries), k), -np.inf, np.float32)
    best_rows = np.zeros((len(queries), k), np.int64)
    started = time.perf_counter()
    for start in range(0, len(vectors), chunk):
        scores = queries @ np.asarray(vectors[start:start + chunk]).T  # (Q, C)
        top = np.argpartition(-scores, k, axis=1)[:, :k]
        merged_scores = np.concatenate([best_scores, np.take_along_axis(scores, top, 1)], axis=1)
        merged_rows = np.concatenate([best_rows, top + start], axis=1)
        order = np.argsort(-merged_scores, axis=1)[:, :k]
        best_scores, best_rows = np.take_along_axis(merged_scores, order, 1), np.take_along_axis(merged_rows, order, 1)
    return best_rows, (time.perf_counter() - started) / len(queries)


def recall(found: np.ndarray, exact: np.ndarray) -> float:
    return round(float(np.mean([len(set(f) & set(e)) / exact.shape[1] for f, e in zip(found, exact)])), 4)


def index_recalls(emb: Path, queries: np.ndarray, exact: np.ndarray) -> dict:
    import faiss

    from eclip.index.build import load_vectors
    from eclip.index.faiss_index import load_index, search

    index, description = load_index(emb)
    vectors = load_vectors(emb)
    out = {}
    for nprobe in (NPROBES if description["type"] == "ivfpq" else (0,)):
        described = {**description, "nprobe": nprobe} if nprobe else description
        if nprobe:
            faiss.extract_index_ivf(index).nprobe = nprobe
        started = time.perf_counter()
        _, reranked = search(index, described, queries, 10, exact=vectors)
        reranked_ms = (time.perf_counter() - started) * 1000 / len(queries)
        started = time.perf_counter()
        _, codes = search(index, described, queries, 10)
        codes_ms = (time.perf_counter() - started) * 1000 / len(queries)
        out[f"nprobe {nprobe}" if nprobe else "exact"] = {
            "recall_at_10": recall(codes, exact), "reranked_recall_at_10": recall(reranked, exact),
            "ms_per_query": round(codes_ms, 3), "reranked_ms_per_query": round(reranked_ms, 3)}
    return out


def search_path_latency(emb: Path, queries: np.ndarray, clients: int, seconds: float) -> dict:
    """ProductIndex.search of one query at a time from `clients` threads (FAISS releases the GIL) -> ms."""
    import faiss

    from eclip.index.journal import ProductIndex

    faiss.omp_set_num_threads(1)
    index = ProductIndex(emb, read_only=True)
    latencies, stop = [], time.perf_counter() + seconds

    def run(offset: int) -> None:
        i = offset
        while time.perf_counter() < stop:
            started = time.perf_counter()
            index.search(queries[i % len(queries)][None], 10)
            latencies.append(time.perf_counter() - started)
            i += clients

    threads = [threading.Thread(target=run, args=(i,)) for i in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    ms = np.array(latencies) * 1000
    return {"clients": clients, "queries": len(ms), "p50_ms": round(float(np.percentile(ms, 50)), 2),
            "p99_ms": round(float(np.percentile(ms, 99)), 2), "queries_per_s": round(len(ms) / seconds, 1)}


def serve_text_latency(model: Path, emb: Path, titles: list[str], clients: int, seconds: float) -> dict:
    import signal

    port = free_port()
    started = time.perf_counter()
    server = start_server(model, emb, None, port, workers=1, threads=2)
    ready_s = time.perf_counter() - started
    try:
        result = asyncio.run(load(port, [get(f"/api/search?q={quote(t)}&k=10") for t in titles], clients, seconds,
                                  warmup=2.0))
        result["rss_mb"] = round(int(Path(f"/proc/{server.pid}/status").read_text().split("VmRSS:")[1].split()[0])
                                 / 1024, 1)
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait()
    return {**result, "ready_s": round(ready_s, 1)}


def markdown(report: dict) -> str:
    lines = [f"Index at scale ({report['dim']}-d, {report['machine']}); real + generated vectors, "
             f"{report['queries']} real title queries, recall@10 against brute force.", "",
             "| vectors | index | build s | peak RSS MB | index.faiss MB | vectors.npy MB | peak / index | "
             "recall@10 | re-ranked | ms/query (re-ranked) | exact ms/query |",
             "| ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for size in report["sizes"]:
        for kind in ("ivfpq", "flat"):
            if kind not in size:
                continue
            b = size[kind]["build"]
            default = size[kind]["recalls"][f"nprobe {b['description']['nprobe']}" if kind == "ivfpq" else "exact"]
            lines.append(f"| {size['count']:,} | {kind} {_knobs(b['description'])} | {b['seconds']} | "
                         f"{b['peak_rss_mb']} | {b['index_mb']} | {b['vectors_mb']} | {b['peak_over_index']} | "
                         f"{default['recall_at_10']} | {default['reranked_recall_at_10']} | "
                         f"{default['reranked_ms_per_query']} | {size['exact_ms_per_query']} |")
    for size in report["sizes"]:
        recalls = size["ivfpq"]["recalls"]
        lines += ["", f"{size['count']:,} vectors, IVF-PQ by nprobe: " + "; ".join(
            f"{name}: {row['recall_at_10']} / {row['reranked_recall_at_10']} re-ranked, {row['reranked_ms_per_query']} ms"
            for name, row in recalls.items())]
        for name, row in size.get("serving", {}).items():
            lines.append(f"- {name}: p50 {row['p50_ms']} ms, p99 {row['p99_ms']} ms at {row['clients']} clients, "
                         f"{row.get('requests_per_s', row.get('queries_per_s'))}/s")
    return "\n".join(lines)


def _knobs(description: dict) -> str:
    if description["type"] != "ivfpq":
        return ""
    return (f"(nlist {description['nlist']}, nprobe {description['nprobe']}, m {description['pq_m']}, "
            f"rerank {description['rerank']})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--emb", type=Path, required=True, help="EMB_DIR of the real products (`eclip embed`)")
    parser.add_argument("--model", type=Path, required=True, help="the RUN_DIR that embedded it, for `eclip serve`")
    parser.add_argument("--sizes", default="1000000", help="comma-separated vector counts")
    parser.add_argument("--work", type=Path, default=Path("/tmp/index-scale/bench"), help="scratch EMB_DIRs")
    parser.add_argument("--part-rows", type=int, default=250_000)
    parser.add_argument("--components", type=int, default=16, help="Gaussian mixture components")
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--flat-max", type=int, default=2_000_000, help="largest size that also builds flat")
    parser.add_argument("--seconds", type=float, default=15.0, help="seconds per serving measurement")
    parser.add_argument("--machine", default="2 shared CPU cores (other jobs ran beside it)")
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")

    table, vectors = read_embeddings(args.emb, columns=["title", "text"])
    rng = np.random.default_rng(1)
    rows = rng.choice(table.num_rows, args.queries, replace=False)
    queries = np.ascontiguousarray(vectors["text"][rows], np.float32)  # (Q, D) real title vectors
    titles = [table.column("title")[int(i)].as_py() for i in rows]
    report = {"machine": args.machine, "dim": int(queries.shape[1]), "queries": args.queries, "targets": TARGET,
              "sizes": []}
    for count in map(int, args.sizes.split(",")):
        emb = args.work / f"emb-{count}"
        started = time.perf_counter()
        size = {"count": count, "vectors": write_parts(args.emb, emb, count, args.part_rows, args.components),
                "write_s": None}
        size["write_s"] = round(time.perf_counter() - started, 1)
        print(json.dumps(size), flush=True)
        kinds = ["flat", "ivfpq"] if count <= args.flat_max else ["ivfpq"]
        for kind in kinds:  # ivfpq last: its files stay for the serving measurement
            size[kind] = {"build": build(emb, {"index": kind})}
            if "exact_ms_per_query" not in size:
                exact, seconds = exact_top(emb, queries)
                size["exact_ms_per_query"] = round(seconds * 1000, 2)
            size[kind]["recalls"] = index_recalls(emb, queries, exact)
            print(kind, json.dumps(size[kind]), flush=True)
        size["serving"] = {"index search path, ivfpq (8 threads)": search_path_latency(emb, queries, 8, args.seconds),
                           "eclip serve text search, ivfpq": serve_text_latency(args.model, emb, titles, 8,
                                                                               args.seconds)}
        print(json.dumps(size["serving"]), flush=True)
        report["sizes"].append(size)
        RESULTS.mkdir(parents=True, exist_ok=True)  # after every size: a long run killed later keeps these
        (RESULTS / "index_scale.json").write_text(json.dumps(report, indent=1))
        (RESULTS / "index_scale.md").write_text(markdown(report) + "\n")
    print(markdown(report))


if __name__ == "__main__":
    main()
