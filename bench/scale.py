"""Benchmark of training on large DATA_DIRs: peak RSS and pairs/s of the streamed loader at 100k and 1M products,
against the whole split held in memory, with the same config.

DATA_DIRs of N products are written directly, as `eclip prepare` lays them out (shards of 5,000 rows, row groups
of 250, zstd), from a prepared fashion-dev DATA_DIR (`--source`, made with `eclip prepare
../shared/data/fashion-dev/catalog.csv --out SOURCE`): its real thumbnails and titles, copied over and over,
each copy's product_id, catalog_id and group_id suffixed with the copy's number (so ids are unique and each copy
keeps fashion-dev's catalog groups and split). Each measurement is `eclip.train.loop.train` in its own subprocess
(peak RSS is its own): a fixed number of steps of a small model (32 px ViT, from-scratch 2-layer BERT, batch 256,
one torch thread, so the loader's threads have the other core), pairs/s the median over the steps after the
first five.

Rows: `stream` (train.shuffle_buffer 50,000, the default), `stream-40k` (40,000: 100k products' 80k training
rows then fill two whole windows, as every size above does), `memory` (shuffle_buffer 0: each process's whole
share in one window, i.e. the split in RAM) and, with `--baseline-src DIR` (a checkout of eclip before the
stream, e.g. `git worktree add --detach /tmp/base 3bffdc0`), that code's in-memory loader (`eclip/train/
dataset.py` reading the whole train split and tokenizing every title up front).

Writes bench/results/scale.json and scale.md and prints the table.
Usage: .venv/bin/python bench/scale.py --source DATA_DIR --work /tmp/scale [--sizes 100000,1000000] [--steps 40]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "bench" / "results"
SHARD_ROWS, ROW_GROUP_ROWS = 5000, 250
CONFIG = {
    "model": {"embed_dim": 64, "vision": {"image_size": 32, "patch_size": 8, "width": 96, "depth": 2, "heads": 2},
              "text": {"model": "scratch", "vocab_size": 8000, "width": 96, "depth": 2, "heads": 2,
                       "max_length": 32}},
    "train": {"objective": "eclip", "batch_size": 256, "micro_batch_size": 0, "warmup_steps": 5, "threads": 1,
              "checkpoint_every": 1000, "keep_checkpoints": 1, "precision": "fp32"},
}


# ---------------------------------------------------------------- DATA_DIRs of N products
def write_data_dir(source: Path, out: Path, products: int) -> Path:
    """`products` rows copied from SOURCE's shards into a DATA_DIR at `out` (reused when complete)."""
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    from eclip.data.store import ShardWriter

    if (out / "report.json").is_file():
        return out
    shutil.rmtree(out, ignore_errors=True)
    table = pa.concat_tables(pq.read_table(path) for path in sorted((source / "shards").glob("part-*.parquet")))
    writer = ShardWriter(out, table.schema, SHARD_ROWS)
    for copy in range(-(-products // table.num_rows)):
        part = table.slice(0, min(table.num_rows, products - copy * table.num_rows))
        for name in ("product_id", "catalog_id", "group_id"):
            suffixed = pc.binary_join_element_wise(part.column(name), pa.scalar(f"~{copy}"), "")
            part = part.set_column(part.column_names.index(name), name, suffixed)
        part = part.set_column(0, "row", pc.add(part.column("row"), copy * table.num_rows))
        for start in range(0, part.num_rows, ROW_GROUP_ROWS):
            writer.write(part.slice(start, ROW_GROUP_ROWS))
    writer.close()
    report = json.loads((source / "report.json").read_text())
    report.update(accepted=products, fingerprint=f"{report.get('fingerprint')}-scale-{products}")
    (out / "report.json").write_text(json.dumps(report))
    return out


# ---------------------------------------------------------------- one measurement (runs in a subprocess)
def _worker(spec: dict) -> None:
    from eclip.config import from_dict
    from eclip.train.config import Config
    from eclip.train.loop import train

    config = json.loads(json.dumps(CONFIG))
    config["train"].update(steps=spec["steps"], **spec["train"])
    started = time.perf_counter()
    train(Path(spec["data"]), Path(spec["run"]), from_dict(Config, config, where="bench"))
    seconds = time.perf_counter() - started
    records = [json.loads(line) for line in (Path(spec["run"]) / "metrics.jsonl").read_text().splitlines()]
    print("RESULT " + json.dumps({
        "pairs_per_s": statistics.median(r["pairs_per_s"] for r in records[5:]),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
        "seconds": round(seconds, 1), "step_seconds": round(sum(r["batch_size"] / r["pairs_per_s"] for r in records), 1)}))


def measure(label: str, data: Path, products: int, work: Path, steps: int, src: Path, train: dict) -> dict:
    run = work / "runs" / f"{label}-{products}"
    shutil.rmtree(run, ignore_errors=True)
    env = {**os.environ, "PYTHONPATH": str(src), "HF_HUB_OFFLINE": "1", "ECLIP_PROGRESS": "0"}
    spec = {"data": str(data), "run": str(run), "steps": steps, "train": train}
    done = subprocess.run([sys.executable, __file__, "--worker", json.dumps(spec)], capture_output=True, text=True,
                          env=env, timeout=3600)
    lines = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
    shutil.rmtree(run, ignore_errors=True)
    if done.returncode or not lines:  # recorded, not fatal: the loader before the stream cannot hold 1M thumbnails
        error = (done.stderr.strip().splitlines() or [f"exit status {done.returncode}"])[-1]
        row = {"loader": label, "products": products, "error": error[:300]}
        print(row, flush=True)
        return row
    row = {"loader": label, "products": products, **json.loads(lines[-1][len("RESULT "):])}
    print(row, flush=True)
    return row


def table(rows: list[dict]) -> str:
    lines = ["| loader | products in DATA_DIR | pairs/s | peak RSS MB | steps s | run s (with setup) |",
             "|---|---:|---:|---:|---:|---:|"]
    lines += [f"| {r['loader']} | {r['products']:,} | {r['pairs_per_s']:.0f} | {r['peak_rss_mb']} | "
              f"{r['step_seconds']} | {r['seconds']} |" if "error" not in r else
              f"| {r['loader']} | {r['products']:,} | failed: {r['error']} | | | |" for r in rows]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--source", type=Path, help="a prepared fashion-dev DATA_DIR")
    parser.add_argument("--work", type=Path, default=Path("/tmp/eclip-scale"), help="where the DATA_DIRs go")
    parser.add_argument("--sizes", default="100000,1000000")
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--baseline-src", type=Path, help="a checkout of eclip before the stream")
    parser.add_argument("--loaders", default="stream,stream-40k,memory,baseline")
    args = parser.parse_args()
    if args.worker:
        return _worker(json.loads(args.worker))
    loaders = {"stream": (REPO, {}), "stream-40k": (REPO, {"shuffle_buffer": 40_000}),
               "memory": (REPO, {"shuffle_buffer": 0})}
    if args.baseline_src:
        loaders["baseline"] = (args.baseline_src, {})
    rows = []
    for products in [int(size) for size in args.sizes.split(",")]:
        data = write_data_dir(args.source, args.work / f"data-{products}", products)
        for label in [name for name in args.loaders.split(",") if name in loaders]:
            src, train = loaders[label]
            rows.append(measure(label, data, products, args.work, args.steps, src, train))
    by = {(r["loader"], r["products"]): r for r in rows if "error" not in r}
    sizes = sorted({r["products"] for r in rows})
    ratios = {}
    for label in ("stream", "stream-40k"):
        if len(sizes) > 1 and all((label, size) in by for size in sizes):
            small, large = by[(label, sizes[0])], by[(label, sizes[-1])]
            ratios[f"{label} peak RSS, largest / smallest"] = round(large["peak_rss_mb"] / small["peak_rss_mb"], 3)
            ratios[f"{label} pairs/s, largest / smallest"] = round(large["pairs_per_s"] / small["pairs_per_s"], 3)
    for label in ("memory", "baseline"):
        for size in sizes:
            if (label, size) in by and ("stream", size) in by:
                ratios[f"stream / {label} at {size:,}: peak RSS"] = round(
                    by[("stream", size)]["peak_rss_mb"] / by[(label, size)]["peak_rss_mb"], 3)
                ratios[f"stream / {label} at {size:,}: pairs/s"] = round(
                    by[("stream", size)]["pairs_per_s"] / by[(label, size)]["pairs_per_s"], 3)
    note = (f"{args.steps} steps of batch 256 per row; measured on a 2-core machine shared with other work "
            f"(load average {os.getloadavg()[0]:.1f} at the end): compare ratios within one run, not absolute figures")
    markdown = table(rows) + "\n\n" + "\n".join(f"- {key}: {value}" for key, value in ratios.items()) + f"\n\n{note}\n"
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "scale.json").write_text(json.dumps({"rows": rows, "ratios": ratios, "note": note}, indent=1))
    (RESULTS / "scale.md").write_text(markdown)
    print(markdown)


if __name__ == "__main__":
    main()
