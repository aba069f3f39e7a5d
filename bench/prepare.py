"""Benchmark of data preparation on real fashion-dev listings with K=3 multi-seller offers.

Planted duplicates need a clean source: fashion-dev itself holds listings of different products with the same
photo or title, so the source catalogue is first deduplicated by `prepare` and offers are generated from the
accepted originals only; then every same-catalog pair is a true duplicate and every other pair is not.

Measures, in one run on the same images:
- the whole `eclip prepare` in products/s with 2 worker processes, with and without its ORB verification;
  with `--engine both`, also `--engine spark` on local[2] in the same run: its products/s over the local
  engine's, whether both accept and reject the same rows for the same reasons, and the driver's peak memory
  (this Python process's resident set, sampled; Spark's own JVM is another process);
- the 29-digit hash per core (decode + hash), beside the `imagehash` library's pHash (decode + pHash);
- duplicate detection against the offers' ground truth (same catalog_id = duplicate pair): precision and recall
  of each method alone (identical title, identical 29-digit hash, near-duplicate descriptor at several
  thresholds and with its first view only, the descriptor with `prepare`'s ORB verification of its uncertain
  band, pHash at Hamming distance <= 8), and of their union as `prepare` applies it.

Writes bench/results/prepare.json and prints a markdown table.
Usage: .venv/bin/python bench/prepare.py [--limit N] [--threshold T] [--engine local|both]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import threading
import time
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from eclip.data.catalog import read_catalog  # noqa: E402
from eclip.data.config import PrepareConfig  # noqa: E402
from eclip.data.dedup import near_duplicate_pairs, verified_near_duplicates  # noqa: E402
from eclip.data.images import ImageLimits, decode_image, image_hash, near_duplicate_descriptor  # noqa: E402
from eclip.data.offers import make_offers  # noqa: E402
from eclip.data.prepare import prepare  # noqa: E402
from eclip.data.text import normalize_title  # noqa: E402

FASHION = REPO.parent / "shared" / "data" / "fashion-dev"
RESULTS = REPO / "bench" / "results"
PHASH_DISTANCE = 8  # the usual pHash near-duplicate threshold on 64-bit hashes


def _features(paths: list[str]) -> list[tuple[str, np.ndarray, int]]:
    import imagehash

    out = []
    for path in paths:
        image, _, _ = decode_image(Path(path).read_bytes(), ImageLimits())
        phash = int(str(imagehash.phash(image)), 16)
        out.append((image_hash(image), near_duplicate_descriptor(image), phash))
    return out


def per_core_speed(paths: list[Path]) -> dict:
    """Images/s on one core, bytes already in memory: decode + 29-digit hash vs decode + imagehash pHash."""
    import imagehash

    blobs = [p.read_bytes() for p in paths]
    limits = ImageLimits()
    result = {}
    for name, fn in (("hash29", image_hash), ("imagehash_phash", imagehash.phash)):
        best = 0.0
        for _ in range(3):
            start = time.perf_counter()
            for blob in blobs:
                fn(decode_image(blob, limits)[0])
            best = max(best, len(blobs) / (time.perf_counter() - start))
        result[name] = round(best, 1)
    result["hash29_over_phash"] = round(result["hash29"] / result["imagehash_phash"], 2)
    return result


def pairs_from_keys(keys: list) -> set[tuple[int, int]]:
    groups: dict = {}
    for index, key in enumerate(keys):
        if key is not None:
            groups.setdefault(key, []).append(index)
    out = set()
    for members in groups.values():
        for a in range(len(members)):
            for b in range(a + 1, len(members)):
                out.add((members[a], members[b]))
    return out


def phash_pairs(hashes: np.ndarray, distance: int) -> set[tuple[int, int]]:
    out = set()
    for start in range(0, len(hashes), 2048):
        block = hashes[start:start + 2048, None] ^ hashes[None, :]  # (b, N)
        close = np.argwhere(np.bitwise_count(block) <= distance)
        for i, j in close:
            i = int(i) + start
            if i < j:
                out.add((i, int(j)))
    return out


def score(predicted: set, truth: set) -> dict:
    hit = len(predicted & truth)
    return {"pairs": len(predicted), "precision": round(hit / max(1, len(predicted)), 4),
            "recall": round(hit / max(1, len(truth)), 4)}


def clean_source(folder: Path, limit: int | None) -> Path:
    """fashion-dev's products that `prepare` accepts (no duplicate among them), copied with their images."""
    import csv
    import filecmp
    import shutil

    from eclip.data.store import read_products

    with open(FASHION / "catalog.csv", encoding="utf-8") as handle:
        source_rows = list(csv.DictReader(handle))[:limit]
    staging = folder.with_name(folder.name + ".tmp")
    shutil.rmtree(staging, ignore_errors=True)
    (staging / "images").mkdir(parents=True)
    for row in source_rows:
        shutil.copy(FASHION / row["image"], staging / row["image"])
    with open(staging / "all.csv", "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(source_rows[0]), lineterminator="\n")
        writer.writeheader()
        writer.writerows(source_rows)
    prepare(staging / "all.csv", staging / "prepared", config=PrepareConfig(workers=2), force=True)
    accepted = set(read_products(staging / "prepared", columns=["product_id"]).column("product_id").to_pylist())
    with open(staging / "catalog.csv", "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(source_rows[0]), lineterminator="\n")
        writer.writeheader()
        writer.writerows([r for r in source_rows if r["product_id"] in accepted])
    shutil.rmtree(staging / "prepared")
    # Cleaned afresh on every run, so the source follows the current `prepare`; an unchanged result keeps the
    # old folder (and its file times), so the offers made from it are reused.
    previous = folder / "catalog.csv"
    if previous.is_file() and filecmp.cmp(previous, staging / "catalog.csv", shallow=False):
        shutil.rmtree(staging)
        return folder
    shutil.rmtree(folder, ignore_errors=True)
    staging.rename(folder)
    return folder


class PeakMemory:
    """This process's peak resident set while the block runs, sampled every 50 ms (MB)."""

    def __enter__(self):
        self.peak, self._running = self._rss(), True
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._running = False
        self._thread.join()

    def _sample(self):
        while self._running:
            self.peak = max(self.peak, self._rss())
            time.sleep(0.05)

    @staticmethod
    def _rss() -> float:
        with open("/proc/self/status") as status:
            return next(int(line.split()[1]) for line in status if line.startswith("VmRSS")) / 1024


def engines_compared(catalog: Path, work: Path, local_seconds: float) -> dict:
    """`--engine spark` (local[2]) on the catalogue the local run just prepared into work/prepared: speed
    ratio, the same accepted rows and rejections, the driver's peak memory."""
    import pyarrow.parquet as pq

    from eclip.data.store import REJECTED, read_products

    with PeakMemory() as memory:
        start = time.perf_counter()
        report = prepare(catalog, work / "prepared-spark", config=PrepareConfig(workers=2), force=True,
                         engine="spark")
        seconds = time.perf_counter() - start

    def decided(folder: Path):
        accepted = set(read_products(folder, columns=["product_id"]).column("product_id").to_pylist())
        rejected = pq.read_table(folder / REJECTED, columns=["row", "reason", "detail"]).sort_by("row").to_pylist()
        return accepted, rejected

    local_accepted, local_rejected = decided(work / "prepared")
    spark_accepted, spark_rejected = decided(work / "prepared-spark")
    return {"seconds": round(seconds, 2), "products_per_s": round(report["input_rows"] / seconds, 1),
            "stage_seconds": report["stage_seconds"], "time_over_local": round(seconds / local_seconds, 2),
            "same_accepted": local_accepted == spark_accepted, "same_rejected": local_rejected == spark_rejected,
            "accepted": len(spark_accepted), "driver_peak_rss_mb": round(memory.peak)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--limit", type=int, default=None, help="use the first N fashion-dev products (default all)")
    parser.add_argument("--per-product", type=int, default=3)
    parser.add_argument("--threshold", type=float, default=PrepareConfig().near_duplicate_threshold)
    parser.add_argument("--verify-threshold", type=float, default=PrepareConfig().near_duplicate_verify_threshold)
    parser.add_argument("--engine", choices=["local", "both"], default="local",
                        help="both: also --engine spark on local[2], compared with the local run")
    args = parser.parse_args()
    print("timings: the machine may be shared with other work", flush=True)
    if not (FASHION / "catalog.csv").is_file():
        sys.exit(f"needs {FASHION}")
    work = RESULTS / "prepare-work"
    source = clean_source(work / f"source-{args.limit or 'all'}", args.limit)  # one clean source per --limit
    offers = work / f"offers-{args.limit or 'all'}-k{args.per_product}"
    make_offers(source / "catalog.csv", offers, per_product=args.per_product, seed=0)
    rows = [r for batch in read_catalog(offers / "catalog.csv") for r in batch.to_pylist()]
    paths = [str(offers / r["image"]) for r in rows]
    print(f"{len(rows)} offers of {len(set(r['catalog_id'] for r in rows))} source-distinct products")

    # 1. the whole prepare, 2 workers; and without the ORB verification, to show its cost in the same run
    with PeakMemory() as local_memory:
        start = time.perf_counter()
        report = prepare(offers / "catalog.csv", work / "prepared", config=PrepareConfig(workers=2), force=True)
        prepare_seconds = time.perf_counter() - start
    spark = engines_compared(offers / "catalog.csv", work, prepare_seconds) if args.engine == "both" else None
    start = time.perf_counter()
    prepare(offers / "catalog.csv", work / "prepared-unverified",
            config=PrepareConfig(workers=2, near_duplicate_verify_threshold=0), force=True)
    unverified_seconds = time.perf_counter() - start

    # 2. per-core hash speed, same images
    speed = per_core_speed([Path(p) for p in paths[:2000]])

    # 3. dedup quality against the ground truth
    chunks = [paths[i:i + 500] for i in range(0, len(paths), 500)]
    with ProcessPoolExecutor(2, mp_context=get_context("forkserver")) as pool:
        features = [f for part in pool.map(_features, chunks) for f in part]
    hashes29 = [f[0] for f in features]
    descriptors = np.stack([f[1] for f in features])
    phashes = np.array([f[2] for f in features], dtype=np.uint64)
    truth = pairs_from_keys([r["catalog_id"] for r in rows])
    title = pairs_from_keys([normalize_title(r["title"]) for r in rows])
    hashed = pairs_from_keys(hashes29)
    methods = {"title (identical normalized)": title, "hash29 (identical)": hashed}
    sweep = {}
    near_default = None
    for threshold in sorted({0.85, 0.9, 0.93, 0.95, 0.96, 0.965, 0.97, args.threshold}):
        left, right, _ = near_duplicate_pairs(descriptors, threshold)
        near = set(zip(left.tolist(), right.tolist()))
        sweep[threshold] = score(near, truth)
        if threshold == args.threshold:
            near_default = near
    methods[f"descriptor (cosine >= {args.threshold})"] = near_default
    faint_only = near_duplicate_pairs(descriptors[:, :1], args.threshold)  # the one-box descriptor of before
    methods[f"descriptor, faint box only (cosine >= {args.threshold})"] = set(zip(*[a.tolist() for a in faint_only[:2]]))
    # as prepare applies it: pairs from the verification threshold up to the threshold need ORB's confirmation
    start = time.perf_counter()
    left, right, uncertain = verified_near_duplicates(descriptors, args.threshold, args.verify_threshold,
                                                      lambda keys: {k: Path(paths[k]).read_bytes() for k in keys}, 2)
    verify_seconds = time.perf_counter() - start
    verified = set(zip(left.tolist(), right.tolist()))
    methods[f"descriptor + verified {args.verify_threshold}..{args.threshold}"] = verified
    methods[f"imagehash pHash (distance <= {PHASH_DISTANCE})"] = phash_pairs(phashes, PHASH_DISTANCE)
    methods["combined: title | hash29 | descriptor + verified"] = title | hashed | verified
    methods["combined images: hash29 | descriptor + verified"] = hashed | verified
    quality = {name: score(pairs, truth) for name, pairs in methods.items()}

    result = {
        "offers": len(rows), "products": len(set(r["catalog_id"] for r in rows)), "cores": os.cpu_count(),
        "prepare": {"seconds": round(prepare_seconds, 2), "products_per_s": round(len(rows) / prepare_seconds, 1),
                    "unverified_products_per_s": round(len(rows) / unverified_seconds, 1),
                    "accepted": report["accepted"], "rejected": report["rejected"],
                    "stage_seconds": report["stage_seconds"], "peak_rss_mb": round(local_memory.peak)},
        "spark_local_2": spark,
        "per_core_images_per_s": speed, "true_pairs": len(truth), "dedup": quality,
        "verification": {"uncertain_pairs": uncertain, "confirmed": len(verified - near_default),
                         "seconds_2_workers": round(verify_seconds, 2)},
        "descriptor_threshold_sweep": {str(k): v for k, v in sweep.items()},
        "targets": {"hash29_per_core": 1500, "prepare_products_per_s_2_cores": 300,
                    "combined_recall": 0.95, "combined_precision": 0.99, "hash29_faster_than_phash": True},
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "prepare.json").write_text(json.dumps(result, indent=2))
    lines = ["| measure | value | target |", "| --- | --- | --- |",
             f"| prepare, 2 workers | {result['prepare']['products_per_s']} products/s | >= 300 |",
             f"| prepare without ORB verification, 2 workers | {result['prepare']['unverified_products_per_s']} products/s | |",
             *([f"| prepare --engine spark, local[2] | {spark['products_per_s']} products/s, x{spark['time_over_local']} "
                f"the local time; same accepted: {spark['same_accepted']}, same rejections: {spark['same_rejected']}; "
                f"driver peak RSS {spark['driver_peak_rss_mb']} MB (local run's process: "
                f"{result['prepare']['peak_rss_mb']} MB) | time <= x1.5 |"] if spark else []),
             f"| 29-digit hash, 1 core (decode + hash) | {speed['hash29']} images/s | >= 1500 |",
             f"| imagehash pHash, 1 core (decode + pHash) | {speed['imagehash_phash']} images/s | hash29 faster: x{speed['hash29_over_phash']} |",
             "", "| dedup method | predicted pairs | precision | recall |", "| --- | --- | --- | --- |"]
    lines += [f"| {name} | {q['pairs']} | {q['precision']} | {q['recall']} |" for name, q in quality.items()]
    check = result["verification"]
    lines += ["", f"ORB verification: {check['confirmed']} of {check['uncertain_pairs']} uncertain pairs confirmed; "
              f"search and verification {check['seconds_2_workers']} s on 2 workers"]
    lines += ["", "| descriptor threshold | pairs | precision | recall |", "| --- | --- | --- | --- |"]
    lines += [f"| {t} | {q['pairs']} | {q['precision']} | {q['recall']} |" for t, q in sweep.items()]
    table = "\n".join(lines)
    (RESULTS / "prepare.md").write_text(table + "\n")
    print(table)


if __name__ == "__main__":
    main()
