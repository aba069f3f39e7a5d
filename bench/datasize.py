"""Training length against catalogue size (issue 29): fashion-dev subsampled to a few sizes, each with K=3 seller
offers, trained with `tiny` (validation, the best validation kept, early stopping) and, with --fixed, beside it
the same recipe for a fixed number of steps keeping the last one (the old behaviour); each scored by `eclip eval`
against the untrained towers and TF-IDF. Results in bench/results/datasize.{json,md}.

    python bench/datasize.py --sizes 2000,5000,all --work /tmp/datasize            # about 2 x 25 min per size
    python bench/datasize.py --sizes 2000 --fixed 900 --work /tmp/datasize

A size is a number of fashion-dev listings (catalog groups), drawn with --seed from the offers of the whole
catalogue, so every size shares its products' offers and images. Each step's output is reused when it exists.
Timings are from whatever shares the machine: the JSON records the CPU count and the load average at the start.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import random
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from eclip.data.offers import make_offers  # noqa: E402
from eclip.data.prepare import prepare  # noqa: E402
from eclip.eval.config import load_eval_config  # noqa: E402
from eclip.eval.evaluate import evaluate  # noqa: E402
from eclip.eval.report import lookup  # noqa: E402
from eclip.train.config import load_config  # noqa: E402
from eclip.train.loop import SELECTION_FILE, train  # noqa: E402

SCORES = [("t2i R@10", "retrieval.t2i.r10"),
          ("zero-shot leaf wF1, image view", "category.zeroshot.by_view.image.weighted_f1"),
          ("zero-shot leaf wF1, text view", "category.zeroshot.by_view.text.weighted_f1"),
          ("probe leaf top-1", "category.probe.top1"), ("matching F1", "matching.f1")]
METHODS = ("trained", "untrained", "tfidf")


def subset_catalog(offers_dir: Path, listings: str, seed: int) -> Path:
    """A CSV beside the whole catalogue's offers (so its image paths stay inside the catalogue's folder) with the
    offers of `listings` catalog groups drawn with `seed`; "all" is the whole catalogue."""
    if listings == "all":
        return offers_dir / "catalog.csv"
    out = offers_dir / f"listings-{listings}-seed{seed}.csv"
    if not out.is_file():
        with (offers_dir / "catalog.csv").open(newline="") as handle:
            rows = list(csv.DictReader(handle))
        groups = sorted({row["catalog_id"] for row in rows})
        random.Random(seed).shuffle(groups)
        kept = set(groups[:int(listings)])
        with out.open("w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(row for row in rows if row["catalog_id"] in kept)
    return out


def trained(data_dir: Path, run_dir: Path, overrides: dict) -> dict:
    """Train `tiny` with `overrides` (train fields) unless RUN_DIR is finished -> seconds, kept step, last step."""
    config = load_config("tiny")
    for name, value in overrides.items():
        setattr(config.train, name, value)
    started = time.perf_counter()
    train(data_dir, run_dir, config, resume=run_dir.exists())
    seconds = time.perf_counter() - started
    timing = run_dir / "bench-seconds.json"
    if not timing.is_file():  # a reused run keeps the time it took when it was trained
        timing.write_text(json.dumps({"seconds": seconds}))
    selection = json.loads((run_dir / SELECTION_FILE).read_text())
    return {"seconds": json.loads(timing.read_text())["seconds"], "kept_step": selection["step"],
            "last_step": selection["last_step"], "selection": selection}


def scores(report: dict) -> dict:
    """{method: {score key: value}} for the model and its baselines, every level and attribute included."""
    keys = [key for _, key in SCORES]
    keys += [f"category.levels.{level}.zeroshot.top1" for level in report.get("category", {}).get("levels", {})]
    keys += [f"attributes.{name}.zeroshot_macro_f1" for name in report.get("attributes", {})]
    sources = {"trained": report, **{name: report["baselines"].get(name, {}) for name in METHODS[1:]}}
    return {method: {key: lookup(source, key) for key in keys} for method, source in sources.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--catalog", type=Path, default=REPO.parent / "shared" / "data" / "fashion-dev" / "catalog.csv")
    parser.add_argument("--sizes", default="2000,5000,all", help="listings per size, comma-separated; all = every one")
    parser.add_argument("--fixed", type=int, default=0, help="also train N fixed steps, last kept (0: not)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=0, help="torch threads per training run (0: torch's default)")
    parser.add_argument("--work", type=Path, required=True, help="offers, DATA_DIRs, RUN_DIRs and reports")
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results")
    args = parser.parse_args()

    offers_dir = args.work / "offers"
    make_offers(args.catalog, offers_dir, per_product=3, seed=args.seed)
    eval_config = load_eval_config(tasks=["retrieval", "category", "attributes", "matching"],
                                   baselines=["tfidf", "untrained"])
    rows = []
    started_load = os.getloadavg()[0]
    for size in args.sizes.split(","):
        data_dir = args.work / f"data-{size}"
        report = prepare(subset_catalog(offers_dir, size, args.seed), data_dir)
        variants = {"tiny": {"threads": args.threads, "seed": args.seed}}
        if args.fixed:
            variants[f"fixed-{args.fixed}"] = {**variants["tiny"], "steps": args.fixed, "patience": 0,
                                               "select": "last", "val_every": 0}
        for name, overrides in variants.items():
            run = trained(data_dir, args.work / f"run-{size}-{name}", overrides)
            scored = evaluate(args.work / f"run-{size}-{name}", data_dir, args.work / f"report-{size}-{name}",
                              eval_config)
            rows.append({"listings": size, "products": report.get("splits"), "run": name, **run,
                         "scores": scores(scored)})
            print(json.dumps({k: v for k, v in rows[-1].items() if k != "selection"}), flush=True)

    args.out.mkdir(parents=True, exist_ok=True)
    meta = {"cpus": os.cpu_count(), "load_average_at_start": started_load,
            "note": "the machine was shared with other jobs: timings are indicative only"}
    (args.out / "datasize.json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=2))
    header = ["listings", "run", "train min", "kept step / last"] + [f"{label} ({m})" for label, _ in SCORES
                                                                    for m in METHODS]
    lines = ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
    for row in rows:
        cells = [row["listings"], row["run"], f"{row['seconds'] / 60:.1f}", f"{row['kept_step']} / {row['last_step']}"]
        cells += [f"{row['scores'][m][key]:.3f}" if row["scores"][m][key] is not None else "-"
                  for _, key in SCORES for m in METHODS]
        lines.append("| " + " | ".join(map(str, cells)) + " |")
    (args.out / "datasize.md").write_text(f"{meta['note']} ({meta['cpus']} CPUs, load {started_load:.1f})\n\n"
                                          + "\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
