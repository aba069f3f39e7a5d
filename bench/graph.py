"""Benchmark of the product graph (metapath2vec / metapath2vec++): speed against peers, and the evaluation table.

On fashion-dev (catalog.csv, 7,905 products, the graph `eclip graph train` builds, the shipped graph config):
  1. walks/s of the vectorized walker (eclip.graph.walks: one numpy gather per step position for all walks at
     once) against a reference walker that steps one walk at a time in Python over the same CSR arrays (what
     most metapath2vec scripts do), on the same meta-paths; the reference walks only --reference-walks walks.
  2. skip-gram pairs/s: this project's trainer (analytic gradients, row-wise Adagrad, one thread) against
     gensim's Word2Vec (skip-gram, negative sampling, compiled C loops; run from its own venv, created if
     missing) on the very same walks, window, dimension, negatives, one epoch, no subsampling. gensim shrinks
     every window at random (word2vec's reduced windows), so it trains fewer pairs: its pairs/s counts the pairs
     it trains on average. Rates are given per wall second and per CPU second (the machine is shared).
  3. The evaluation table (`eclip graph eval`): logistic-regression macro/micro F1 at several training fractions
     and k-means NMI for metapath2vec, metapath2vec++, gensim on the same walks, TF-IDF of the titles, one-hot of
     the walked node types and the majority class. No walk visits a category node (the label).
  4. With --eclip-data DATA_DIR --embeddings EMB_DIR: both variants trained on DATA_DIR and scored with the
     e-CLIP embeddings of EMB_DIR (`eclip embed`), alone and concatenated, in one table.

Writes bench/results/graph.json and graph.md, and prints the tables.
Usage: .venv/bin/python bench/graph.py [--part all|fashion|eclip] [--eclip-data DATA_DIR --embeddings EMB_DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from eclip.graph.build import build_product_graph, load_products  # noqa: E402
from eclip.graph.config import load_config  # noqa: E402
from eclip.graph.evaluate import (Features, category_labels, evaluate, evaluate_runs, markdown_table,  # noqa: E402
                                  onehot_features, tfidf_features)
from eclip.graph.skipgram import count_pairs, train_skipgram  # noqa: E402
from eclip.graph.train import train_graph  # noqa: E402
from eclip.graph.walks import generate_walks, parse_metapath  # noqa: E402

RESULTS = REPO / "bench" / "results"
RUNS = REPO / "runs" / "graph" / "bench"
FASHION = REPO.parent / "shared" / "data" / "fashion-dev" / "catalog.csv"
GENSIM_VENV = Path(os.environ.get("ECLIP_GENSIM_VENV", REPO.parent / "bench-venv-gensim"))

# Runs in the gensim venv: train Word2Vec on walks.npy and write the product vectors and the timings.
GENSIM_SCRIPT = r"""
import json, resource, sys, time
import numpy as np
from gensim.models import Word2Vec
walks_path, out, n_products, dim, window, negatives, workers, seed = sys.argv[1:]
walks = np.load(walks_path)
sentences = [[str(node) for node in walk[walk >= 0]] for walk in walks]
model = Word2Vec(vector_size=int(dim), window=int(window), min_count=1, sg=1, hs=0, negative=int(negatives),
                 sample=0, workers=int(workers), seed=int(seed))
model.build_vocab(sentences)
cpu, wall = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
model.train(sentences, total_examples=len(sentences), epochs=1)
wall, after = time.perf_counter() - wall, resource.getrusage(resource.RUSAGE_SELF)
ids = [i for i in range(int(n_products)) if str(i) in model.wv.key_to_index]
np.save(out + ".npy", np.stack([model.wv[str(i)] for i in ids]))
json.dump({"rows": ids, "seconds": wall, "cpu_seconds": after.ru_utime + after.ru_stime - cpu.ru_utime - cpu.ru_stime},
          open(out + ".json", "w"))
"""


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def python_walks(graph, metapath: tuple[str, ...], starts: list[int], walk_length: int, seed: int) -> list[list[int]]:
    """The reference walker: one walk at a time, one Python step at a time, same CSR arrays and rule."""
    offsets, period, rng = graph.offsets, len(metapath) - 1, random.Random(seed)
    csr = {key: (r.indptr.tolist(), r.indices.tolist()) for key, r in graph.relations.items()}
    walks = []
    for node in starts:
        walk = [offsets[metapath[0]] + node]
        for step in range(1, walk_length):
            target = metapath[step % period]
            indptr, indices = csr[(metapath[(step - 1) % period], target)]
            low, high = indptr[node], indptr[node + 1]
            if low == high:
                break
            node = indices[low + int(rng.random() * (high - low))]
            walk.append(offsets[target] + node)
        walks.append(walk)
    return walks


def bench_walks(graph, config, reference_walks: int, repeats: int = 3) -> tuple[dict, np.ndarray]:
    steps = []
    for _ in range(repeats):
        wall, cpu = time.perf_counter(), cpu_seconds()
        walks = generate_walks(graph, config.metapaths, config.walks_per_node, config.walk_length, config.seed)
        steps.append((time.perf_counter() - wall, cpu_seconds() - cpu))
    wall, cpu = sorted(steps)[len(steps) // 2]
    # The reference walks the same meta-paths in turn, from the same starts, up to `reference_walks` walks.
    per_path = max(1, reference_walks // len(config.metapaths))
    ref_walks, ref_nodes, ref_wall, ref_cpu = 0, 0, 0.0, 0.0
    for i, text in enumerate(config.metapaths):
        metapath = parse_metapath(text, graph)
        first = graph.relations[metapath[:2]]
        starts = np.repeat(np.flatnonzero(np.diff(first.indptr) > 0), config.walks_per_node)[:per_path].tolist()
        started, cpu_started = time.perf_counter(), cpu_seconds()
        reference = python_walks(graph, metapath, starts, config.walk_length, config.seed + i)
        ref_wall += time.perf_counter() - started
        ref_cpu += cpu_seconds() - cpu_started
        ref_walks += len(reference)
        ref_nodes += sum(map(len, reference))
    return {"walks": len(walks), "walk_length": config.walk_length, "nodes": int((walks >= 0).sum()),
            "seconds": wall, "cpu_seconds": cpu,
            "walks_per_s": len(walks) / wall, "walks_per_cpu_s": len(walks) / cpu,
            "reference": {"walks": ref_walks, "nodes": ref_nodes, "seconds": ref_wall, "cpu_seconds": ref_cpu,
                          "walks_per_s": ref_walks / ref_wall, "walks_per_cpu_s": ref_walks / ref_cpu}}, walks


def bench_skipgram(graph, walks: np.ndarray, config) -> tuple[dict, Features]:
    """What `eclip graph train` does after the walks, timed in wall and CPU seconds."""
    groups = graph.node_type_ids() if config.variant == "metapath2vec++" else np.zeros(graph.num_nodes, np.int64)
    cpu = cpu_seconds()
    model, stats = train_skipgram(walks, groups, config.dim, config.window, config.negatives, config.epochs,
                                  config.batch_size, config.lr, config.seed)
    cpu = cpu_seconds() - cpu
    n_products = len(graph.names["product"])
    result = {"variant": config.variant, "pairs": stats.pairs, "seconds": stats.seconds, "cpu_seconds": cpu,
              "pairs_per_s": stats.pairs / stats.seconds, "pairs_per_cpu_s": stats.pairs / cpu,
              "first_loss": stats.first_loss, "last_loss": stats.last_loss}
    return result, Features(config.variant, graph.names["product"].tolist(), model.center[:n_products].numpy())


def ensure_gensim() -> Path | None:
    python = GENSIM_VENV / "bin" / "python"
    if not python.exists():
        subprocess.run([sys.executable, "-m", "venv", str(GENSIM_VENV)], check=True)
    if subprocess.run([str(python), "-c", "import gensim"], capture_output=True).returncode != 0:
        if subprocess.run([str(python), "-m", "pip", "install", "-q", "gensim"]).returncode != 0:
            return None
    return python


def bench_gensim(python: Path, walks: np.ndarray, n_products: int, config, workers: int, work: Path) -> tuple[dict, Features]:
    work.mkdir(parents=True, exist_ok=True)
    np.save(work / "walks.npy", walks)
    out = work / f"gensim-{workers}"
    subprocess.run([str(python), "-c", GENSIM_SCRIPT, str(work / "walks.npy"), str(out), str(n_products),
                    str(config.dim), str(config.window), str(config.negatives), str(workers), str(config.seed)],
                   check=True)
    timing = json.loads(Path(f"{out}.json").read_text())
    # Reduced windows: each centre's window is uniform in 1..window, so the pairs trained are the mean over them.
    pairs = float(np.mean([count_pairs(walks, w) for w in range(1, config.window + 1)]))
    result = {"workers": workers, "pairs": pairs, "seconds": timing["seconds"], "cpu_seconds": timing["cpu_seconds"],
              "pairs_per_s": pairs / timing["seconds"], "pairs_per_cpu_s": pairs / timing["cpu_seconds"]}
    return result, Features("gensim Word2Vec on the metapath2vec walks", [str(i) for i in timing["rows"]],
                            np.load(f"{out}.npy"))


def speed_table(result: dict) -> str:
    walks, runs, gensim = result["walks"], result["runs"], result["gensim"]
    reference = walks["reference"]
    lines = ["| measurement | this project | peer | ratio (ours / peer) |", "|---|---|---|---|",
             f"| meta-path walks/s (length {walks['walk_length']}), wall | {walks['walks_per_s']:,.0f} | "
             f"{reference['walks_per_s']:,.0f} (Python loop) | {walks['walks_per_s'] / reference['walks_per_s']:.0f}x |",
             f"| meta-path walks per CPU-s | {walks['walks_per_cpu_s']:,.0f} | {reference['walks_per_cpu_s']:,.0f} "
             f"(Python loop) | {walks['walks_per_cpu_s'] / reference['walks_per_cpu_s']:.0f}x |"]
    for variant, run in runs.items():
        rate, cpu_rate = run["pairs_per_s"], run["pairs_per_cpu_s"]
        for g in gensim:
            peer = f"gensim, {g['workers']} worker{'s' if g['workers'] > 1 else ''}"
            lines.append(f"| {variant} skip-gram pairs/s, wall | {rate:,.0f} | {g['pairs_per_s']:,.0f} ({peer}) | "
                         f"{rate / g['pairs_per_s']:.2f} |")
            lines.append(f"| {variant} skip-gram pairs per CPU-s | {cpu_rate:,.0f} | {g['pairs_per_cpu_s']:,.0f} ({peer}) | "
                         f"{cpu_rate / g['pairs_per_cpu_s']:.2f} |")
        if not gensim:
            lines.append(f"| {variant} skip-gram pairs/s, wall | {rate:,.0f} | (gensim not run) | |")
    return "\n".join(lines)


def fashion_part(args, train_config, eval_config) -> dict:
    """Parts 1-3: speed against the peers and the evaluation table on --data."""
    result = {"data": str(args.data), "cpus": os.cpu_count(), "load_average": os.getloadavg()[0]}
    products = load_products(args.data)
    graph = build_product_graph(products, train_config.brand_max_words, train_config.brand_min_count)
    result["graph"] = graph.summary()
    print(f"graph: {result['graph']}", flush=True)
    result["walks"], walks = bench_walks(graph, train_config, args.reference_walks)
    print(f"walks: {result['walks']['walks_per_s']:,.0f} walks/s "
          f"(Python loop {result['walks']['reference']['walks_per_s']:,.0f})", flush=True)

    features, result["runs"] = [], {}
    for variant in ("metapath2vec", "metapath2vec++"):
        result["runs"][variant], vectors = bench_skipgram(graph, walks, replace(train_config, variant=variant))
        features.append(vectors)
        print(f"{variant}: {result['runs'][variant]['pairs']:,} pairs at "
              f"{result['runs'][variant]['pairs_per_s']:,.0f} pairs/s", flush=True)

    result["gensim"] = []
    python = None if args.no_gensim else ensure_gensim()
    if python is not None:
        for workers in (1, 2):
            timing, vectors = bench_gensim(python, walks, len(graph.names["product"]), train_config, workers, RUNS / "gensim")
            result["gensim"].append(timing)
            print(f"gensim, {workers} worker(s): {timing['pairs_per_s']:,.0f} pairs/s", flush=True)
            if workers == 1:  # one worker is deterministic
                vectors.product_ids = graph.names["product"][np.array(vectors.product_ids, dtype=np.int64)].tolist()
                features.append(vectors)
    walked = sorted({t for path in train_config.metapaths for t in path.split("-")} - {"product"})
    features += [tfidf_features(products, train_config.dim),
                 onehot_features(graph, [t for t in graph.types if t in walked])]
    result["eval"] = evaluate(features, category_labels(products, eval_config.label_level), eval_config)
    result["eval"]["walked_node_types"] = walked
    return result


def eclip_part(args, train_config, eval_config) -> dict:
    """Part 4: both variants trained on --eclip-data, scored with the e-CLIP embeddings of --embeddings."""
    runs = []
    for variant in ("metapath2vec", "metapath2vec++"):
        runs.append(RUNS / f"eclip-data-{variant.replace('+', 'p')}")
        summary = train_graph(args.eclip_data, runs[-1], replace(train_config, variant=variant), force=True)
        print(f"{variant} on {args.eclip_data}: {summary['graph']}", flush=True)
    report = evaluate_runs(args.eclip_data, runs, args.embeddings, eval_config,
                           train_config.brand_max_words, train_config.brand_min_count)
    return {"data": str(args.eclip_data), "embeddings": str(args.embeddings), "load_average": os.getloadavg()[0],
            "eval": report}


def tables(result: dict) -> str:
    parts = []
    if "fashion" in result:
        fashion, report = result["fashion"], result["fashion"]["eval"]
        parts += [f"Speed ({fashion['graph']}; load average {fashion['load_average']:.1f} on {fashion['cpus']} CPUs)",
                  "", speed_table(fashion), "",
                  f"Evaluation on {Path(fashion['data']).name}: {report['products']} products, {report['classes']} "
                  f"categories at level {report['label_level']}, {report['repeats']} splits per fraction; walks visit "
                  f"{', '.join(report['walked_node_types'])} only", "", markdown_table(report)]
    if "eclip" in result:
        eclip, report = result["eclip"], result["eclip"]["eval"]
        parts += ["" if parts else None,
                  f"With e-CLIP ({eclip['embeddings']}) on {eclip['data']}: {report['products']} products, "
                  f"{report['classes']} categories at level {report['label_level']}; walks visit "
                  f"{', '.join(report['walked_node_types'])} only", "", markdown_table(report)]
    return "\n".join(part for part in parts if part is not None)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--part", choices=("all", "fashion", "eclip"), default="all",
                        help="fashion = parts 1-3, eclip = part 4; a single part keeps the other's saved results")
    parser.add_argument("--data", type=Path, default=FASHION, help="products for parts 1-3 (default fashion-dev)")
    parser.add_argument("--config", default="default", help="graph config: a file or a shipped name (default: default)")
    parser.add_argument("--reference-walks", type=int, default=8000, help="walks of the Python reference walker")
    parser.add_argument("--no-gensim", action="store_true", help="skip the gensim peer")
    parser.add_argument("--eclip-data", type=Path, help="part 4: the DATA_DIR the e-CLIP embeddings were made from")
    parser.add_argument("--embeddings", type=Path, help="part 4: EMB_DIR of `eclip embed` on --eclip-data")
    args = parser.parse_args()
    if bool(args.eclip_data) != bool(args.embeddings) or (args.part == "eclip" and not args.eclip_data):
        parser.error("part 4 needs --eclip-data and --embeddings together")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    config = load_config(args.config)
    train_config, eval_config = config.train, config.eval
    saved = RESULTS / "graph.json"
    result = json.loads(saved.read_text()) if args.part != "all" and saved.exists() else {}
    result["config"] = str(args.config)
    if args.part in ("all", "fashion"):
        result["fashion"] = fashion_part(args, train_config, eval_config)
        write(result)  # part 4 is long: parts 1-3 are kept if it is stopped
    if args.eclip_data and args.part in ("all", "eclip"):
        result["eclip"] = eclip_part(args, train_config, eval_config)
        write(result)
    print(tables(result))


def write(result: dict) -> None:
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "graph.json").write_text(json.dumps(result, indent=2))
    (RESULTS / "graph.md").write_text(tables(result) + "\n")


if __name__ == "__main__":
    main()
