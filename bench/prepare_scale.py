"""Scale of `eclip prepare --engine spark` (issue 27): rows/s, driver and executor peak memory per catalogue size.

Catalogue: N rows of Parquet part files (--part-rows each) with the images as bytes (an `image_bytes` column),
made from fashion-dev's 7,905 real listings: row k is listing k mod 7,905; its first copy is the listing as it is,
every later copy another seller's, its photo and title varied by the offers generator's seller edits
(`eclip.data.seller_edits`: crops, resizes, padding, watermarks, re-encodes; seller tags, typos), seeded per row.
So every row is its own file, and the copies of a listing are the near-duplicates a marketplace has, which
`prepare` finds and rejects. The parts are made once under --work and shared by every size (hard links: the
N-row catalogue is the first N/--part-rows parts), so only the largest size costs disk (about 10 KB a row).

Measures, per size, `eclip prepare --engine spark` run as its own process (Spark started and stopped in it):
- rows/s: input rows over the command's wall time, and per core of `local[--cores]`;
- driver peak RSS: the driver's Python, its JVM and the driver's own process pool (sampled every 0.2 s, summed);
- executor peak RSS: the Python workers (`pyspark.daemon` and its forks), the largest one and the largest sum.
  In local mode the executor's JVM is the driver's JVM, so its heap is in the driver's figure.
Targets (issue 27): driver memory flat (the largest size within 1.2x of the smallest), executor memory bounded by
the partition size (flat), rows/s per core constant within 20%.

Writes bench/results/prepare_scale.json and .md. Usage:
  .venv/bin/python bench/prepare_scale.py --sizes 10000 30000 100000 [--cores 2] [--spark-master URL]
      [--spark-conf K=V ...] [--work /tmp/prepare_scale]
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import os
import random
import shutil
import subprocess
import sys
import threading
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import pyarrow as pa  # noqa: E402
import pyarrow.parquet as pq  # noqa: E402
from PIL import Image  # noqa: E402

from eclip.data.seller_edits import vary_image, vary_title  # noqa: E402

FASHION = REPO.parent / "shared" / "data" / "fashion-dev"
RESULTS = REPO / "bench" / "results"
CLI = "import sys; from eclip.cli import main; sys.exit(main())"
PAGE = os.sysconf("SC_PAGE_SIZE")


# ---------------------------------------------------------------- the catalogue
def _listings() -> list[dict]:
    return list(csv.DictReader(open(FASHION / "catalog.csv", encoding="utf-8")))


def _make_part(index: int, part_rows: int, seed: int, folder: str) -> str:
    listings = _listings()
    rows = []
    for k in range(index * part_rows, (index + 1) * part_rows):
        listing, copy = listings[k % len(listings)], k // len(listings)
        data, title = (FASHION / listing["image"]).read_bytes(), listing["title"]
        if copy:
            rng = random.Random(f"{seed}/{k}")
            data, _ = vary_image(Image.open(io.BytesIO(data)).convert("RGB"), rng)
            title, _ = vary_title(title, rng)
        rows.append({"product_id": f"{listing['product_id']}-c{copy}", "title": title,
                     "category": listing["category"], "image_bytes": data})
    path = Path(folder) / f"part-{index:05d}.parquet"
    temporary = path.with_suffix(".tmp")
    pq.write_table(pa.Table.from_pylist(rows), temporary)
    temporary.rename(path)  # a killed run leaves no half part that a later one would take as made
    return str(path)


def make_parts(work: Path, rows: int, part_rows: int, seed: int, workers: int) -> list[Path]:
    folder = work / "parts"
    folder.mkdir(parents=True, exist_ok=True)
    wanted = [i for i in range(rows // part_rows) if not (folder / f"part-{i:05d}.parquet").exists()]
    with ProcessPoolExecutor(workers) as pool:
        list(pool.map(_make_part, wanted, [part_rows] * len(wanted), [seed] * len(wanted),
                      [str(folder)] * len(wanted)))
    return [folder / f"part-{i:05d}.parquet" for i in range(rows // part_rows)]


def catalogue_of(work: Path, parts: list[Path], rows: int, part_rows: int) -> Path:
    folder = work / f"catalog-{rows}"
    if not folder.exists():
        folder.mkdir()
        for part in parts[:rows // part_rows]:
            os.link(part, folder / part.name)
    return folder


# ---------------------------------------------------------------- memory of a process tree
def _processes() -> dict[int, tuple[int, str, int]]:
    """pid -> (parent pid, command line, RSS bytes) of every live process."""
    out = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            parent = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            command = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            rss = int((entry / "statm").read_text().split()[1]) * PAGE
        except (OSError, IndexError, ValueError):  # it ended while being read
            continue
        out[int(entry.name)] = (parent, command, rss)
    return out


class PeakMemory:
    """Samples the tree under `root`: driver (everything but Python workers) and executor Python workers."""

    def __init__(self, root: int):
        self.root, self.driver, self.worker_sum, self.worker_max = root, 0, 0, 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self):
        while not self._stop.wait(0.2):
            table = _processes()
            tree, executor = {self.root}, set()
            for _ in range(8):  # a few levels: driver python -> JVM -> pyspark.daemon -> worker forks
                for pid, (parent, command, _) in table.items():
                    if parent in tree:
                        tree.add(pid)
                        if "pyspark.daemon" in command or "pyspark.worker" in command or parent in executor:
                            executor.add(pid)
            driver = sum(table[p][2] for p in tree - executor if p in table)
            workers = [table[p][2] for p in executor if p in table]
            self.driver = max(self.driver, driver)
            self.worker_sum = max(self.worker_sum, sum(workers))
            self.worker_max = max(self.worker_max, max(workers, default=0))

    def stop(self) -> dict:
        self._stop.set()
        self._thread.join()
        mib = lambda b: round(b / 2**20, 1)
        return {"driver_peak_rss_mib": mib(self.driver), "executor_worker_peak_rss_mib": mib(self.worker_max),
                "executor_workers_sum_peak_rss_mib": mib(self.worker_sum)}


def run_prepare(catalogue: Path, out: Path, cores: int, master: str | None, conf: list[str]) -> dict:
    shutil.rmtree(out, ignore_errors=True)
    command = [sys.executable, "-c", CLI, "prepare", str(catalogue), "--out", str(out), "--engine", "spark",
               "--workers", str(cores), "--spark-conf", "spark.ui.enabled=false",
               "--spark-conf", "spark.ui.showConsoleProgress=false"]
    command += ["--spark-master", master] * bool(master)
    for pair in conf:
        command += ["--spark-conf", pair]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, (str(REPO), os.environ.get("PYTHONPATH"))))}
    started = time.perf_counter()
    process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    memory = PeakMemory(process.pid)
    stdout, stderr = process.communicate()
    seconds = time.perf_counter() - started
    figures = memory.stop()
    if process.returncode:
        raise SystemExit(f"prepare failed on {catalogue}:\n{stderr[-3000:]}")
    report = json.loads((out / "report.json").read_text())
    shutil.rmtree(out)
    return {"rows": report["input_rows"], "accepted": report["accepted"], "rejected": report["rejected"],
            "seconds": round(seconds, 1), "rows_per_s": round(report["input_rows"] / seconds, 1),
            "rows_per_s_per_core": round(report["input_rows"] / seconds / cores, 1),
            "stage_seconds": report["stage_seconds"], **figures}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 30_000, 100_000])
    parser.add_argument("--part-rows", type=int, default=2_000, help="rows per Parquet part (sizes are multiples)")
    parser.add_argument("--cores", type=int, default=2, help="local[N] cores (and rows/s per core)")
    parser.add_argument("--spark-master", help="a cluster instead of local[--cores]")
    parser.add_argument("--spark-conf", action="append", default=[], metavar="K=V")
    parser.add_argument("--work", type=Path, default=Path("/tmp/prepare_scale"))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--note", default="", help="what else ran on the machine, for the record")
    args = parser.parse_args()
    sizes = sorted(args.sizes)
    if any(size % args.part_rows for size in sizes):
        parser.error(f"every size must be a multiple of --part-rows ({args.part_rows})")
    free = shutil.disk_usage(args.work.parent if not args.work.exists() else args.work).free
    if sizes[-1] * 12_000 > free * 0.5:
        parser.error(f"{sizes[-1]} rows need about {sizes[-1] * 12_000 / 1e9:.1f} GB; only {free / 1e9:.1f} GB free")
    started = time.perf_counter()
    parts = make_parts(args.work, sizes[-1], args.part_rows, args.seed, args.cores)
    generation = round(time.perf_counter() - started, 1)
    runs = []
    for size in sizes:
        runs.append({"size": size, **run_prepare(catalogue_of(args.work, parts, size, args.part_rows),
                                                 args.work / "out", args.cores, args.spark_master, args.spark_conf)})
        print(json.dumps(runs[-1]), flush=True)
    first, last = runs[0], runs[-1]
    checks = {"driver_growth": round(last["driver_peak_rss_mib"] / first["driver_peak_rss_mib"], 3),
              "executor_worker_growth": round(last["executor_worker_peak_rss_mib"]
                                              / max(first["executor_worker_peak_rss_mib"], 1e-9), 3),
              "rows_per_s_per_core_spread": round(max(r["rows_per_s_per_core"] for r in runs)
                                                  / min(r["rows_per_s_per_core"] for r in runs) - 1, 3)}
    result = {"machine": f"{os.cpu_count()} cores; {args.note}".strip("; "), "cores": args.cores,
              "master": args.spark_master or f"local[{args.cores}]", "spark_conf": args.spark_conf,
              "part_rows": args.part_rows, "catalogue_seconds": generation, "runs": runs, "checks": checks,
              "targets": {"driver_growth": "<= 1.2", "executor_worker_growth": "bounded (about 1)",
                          "rows_per_s_per_core_spread": "<= 0.2"}}
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "prepare_scale.json").write_text(json.dumps(result, indent=2))
    lines = [f"prepare --engine spark on {result['master']} ({result['machine']})", "",
             "| rows | s | rows/s | rows/s per core | driver peak RSS MiB | largest Python worker MiB | "
             "all workers MiB | accepted |", "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    lines += [f"| {r['size']} | {r['seconds']} | {r['rows_per_s']} | {r['rows_per_s_per_core']} | "
              f"{r['driver_peak_rss_mib']} | {r['executor_worker_peak_rss_mib']} | "
              f"{r['executor_workers_sum_peak_rss_mib']} | {r['accepted']} |" for r in runs]
    lines += ["", f"driver {first['size']} -> {last['size']} rows: x{checks['driver_growth']} (target <= 1.2); "
              f"largest worker x{checks['executor_worker_growth']}; rows/s per core spread "
              f"{checks['rows_per_s_per_core_spread']:.1%} (target <= 20%)"]
    (RESULTS / "prepare_scale.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
