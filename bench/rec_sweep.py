"""Recommender settings sweep on Amazon Beauty: many variants of the shipped beauty recipe trained side by side,
each scored on the test split (full ranking) with its best-validation weights. Run by hand:

    python bench/rec_sweep.py --device cuda --jobs 14 --minutes 6.5      # a GPU machine, ~8 minutes
    python bench/rec_sweep.py --only bert4rec --minutes 20 --jobs 1      # one variant, the CPU budget

A variant is a list of --set overrides on the config as it was when the sweep ran (SWEPT_FROM). Every variant
gets the same wall-clock limit, so one that asks for more epochs than fit is cut short (its cosine schedule
unfinished); the table says how many ran. On a GPU the epoch count, not the minutes, is what carries over to the
20-minute CPU budget of the shipped beauty recipe. Writes JSON + a markdown table (sorted by test NDCG@20).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

BEAUTY = REPO.parent / "shared" / "data" / "amazon-beauty" / "sequences.txt"
# The sweep (2026-11-29) started from the config of that day; these keep its variants meaning what was measured.
SWEPT_FROM = ["model.embedding_norm=false", "train.last_item_fraction=0.1", "train.epochs=70"]
CAUSAL = ["model.causal=true", "model.dropout=0.5", "model.attention_dropout=0.5"]
VARIANTS = {
    "bert4rec": [],
    "bert4rec-150ep": ["train.epochs=150"],
    "bert4rec-last0.3": ["train.last_item_fraction=0.3"],
    "bert4rec-last0.5": ["train.last_item_fraction=0.5"],
    "bert4rec-mask0.4": ["train.mask_prob=0.4"],
    "bert4rec-mask0.2": ["train.mask_prob=0.2"],
    "bert4rec-drop0.5-150ep": ["model.dropout=0.5", "model.attention_dropout=0.5", "train.epochs=150"],
    "bert4rec-drop0.2": ["model.dropout=0.2", "model.attention_dropout=0.2"],
    "bert4rec-dim128-drop0.5-150ep": ["model.dim=128", "model.dropout=0.5", "model.attention_dropout=0.5",
                                      "train.epochs=150"],
    "bert4rec-batch256": ["train.batch_size=256", "train.lr=0.003"],
    "sasrec": CAUSAL + ["train.epochs=50"],
    "sasrec-drop0.3": ["model.causal=true", "train.epochs=50"],
    "sasrec-150ep": CAUSAL + ["train.epochs=150"],
}
# Second round, 40-epoch schedules (comparable among themselves): less dropout, more last-item rows.
for dropout in (0.3, 0.2, 0.1):
    drop = [f"model.dropout={dropout}", f"model.attention_dropout={dropout}", "train.epochs=40"]
    VARIANTS[f"bert4rec-last0.3-drop{dropout}-40ep"] = ["train.last_item_fraction=0.3"] + drop
    VARIANTS[f"sasrec-drop{dropout}-40ep"] = ["model.causal=true"] + drop
VARIANTS["bert4rec-last0.2-drop0.2-40ep"] = ["train.last_item_fraction=0.2", "model.dropout=0.2",
                                             "model.attention_dropout=0.2", "train.epochs=40"]
for name in ("bert4rec-last0.3-drop0.2", "sasrec-drop0.2"):
    VARIANTS[f"{name}-embnorm-40ep"] = VARIANTS[f"{name}-40ep"] + ["model.embedding_norm=true"]
VARIANTS["bert4rec-last0.3-drop0.2-lr0.003-40ep"] = VARIANTS["bert4rec-last0.3-drop0.2-40ep"] + ["train.lr=0.003"]


def run_one(name: str, args: argparse.Namespace) -> dict:
    import numpy as np
    import torch

    from rec import train_or_resume  # bench/rec.py, beside this file

    from eclip.rec.evaluate import evaluate
    from eclip.rec.config import RecConfig
    from eclip.rec.run import load_run

    torch.set_num_threads(args.threads)
    config = RecConfig.from_toml("beauty").override(
        SWEPT_FROM + VARIANTS[name] + [f"train.time_limit_minutes={args.minutes}", "train.patience=1000"])
    trained = train_or_resume(args.runs / name, args.sequences, config, device=args.device)
    history = trained.pop("history")
    run = load_run(args.runs / name, args.sequences)
    test = evaluate(run.model.to(args.device).score, run.data.split.test)["full"]
    return {"name": name, "overrides": VARIANTS[name], "test": test, **trained,
            "epochs_asked": config.train.epochs,
            "val_ndcg10": [round(h["val"]["NDCG@10"], 5) for h in history],
            "val_hr20": [round(h["val"]["HR@20"], 5) for h in history],
            "mean_epoch_seconds": float(np.mean(np.diff([0.0] + [h["seconds"] for h in history])))}


def table(results: list[dict]) -> str:
    lines = ["| variant | HR@10 | NDCG@10 | HR@20 | NDCG@20 | epochs run / asked | best epoch | s / epoch |",
             "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for r in sorted(results, key=lambda r: -r["test"]["NDCG@20"]):
        t = r["test"]
        lines.append(f"| {r['name']} | {t['HR@10']:.4f} | {t['NDCG@10']:.4f} | {t['HR@20']:.4f} | {t['NDCG@20']:.4f} "
                     f"| {r['epoch']} / {r['epochs_asked']} | {r['best_epoch']} | {r['mean_epoch_seconds']:.1f} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", nargs="*", choices=sorted(VARIANTS), help="variants to run (default all)")
    parser.add_argument("--one", choices=sorted(VARIANTS), help=argparse.SUPPRESS)  # a worker process
    parser.add_argument("--sequences", type=Path, default=BEAUTY)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--jobs", type=int, default=1, help="variants trained at once, one process each")
    parser.add_argument("--threads", type=int, default=1, help="torch threads per process")
    parser.add_argument("--minutes", type=float, default=20.0, help="training wall-clock limit per variant")
    parser.add_argument("--runs", type=Path, default=REPO / "runs" / "rec" / "sweep")
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results", help="folder for rec-sweep.json/.md")
    args = parser.parse_args()
    if args.one:
        print(json.dumps(run_one(args.one, args)), flush=True)
        return

    names = args.only or list(VARIANTS)
    passed = ["--sequences", str(args.sequences), "--device", args.device, "--threads", str(args.threads),
              "--minutes", str(args.minutes), "--runs", str(args.runs)]
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads), "ECLIP_PROGRESS": "0"}
    args.runs.mkdir(parents=True, exist_ok=True)
    log = lambda name: args.runs / f"{name}.log"  # noqa: E731
    waiting, running, results, started = list(names), {}, [], time.perf_counter()
    while waiting or running:
        while waiting and len(running) < args.jobs:
            name = waiting.pop(0)
            with open(log(name), "w") as stderr:
                running[name] = subprocess.Popen([sys.executable, __file__, "--one", name, *passed], env=env,
                                                 stdout=subprocess.PIPE, stderr=stderr, text=True)
        for name, process in list(running.items()):
            if process.poll() is None:
                continue
            del running[name]
            output = process.stdout.read().strip().splitlines()
            if process.returncode == 0 and output:
                results.append(json.loads(output[-1]))
                print(f"{name}: test NDCG@20 {results[-1]['test']['NDCG@20']:.4f} "
                      f"({time.perf_counter() - started:.0f} s)", flush=True)
            else:
                tail = log(name).read_text().strip().splitlines()[-3:]
                print(f"{name}: failed (rc {process.returncode}): {' / '.join(tail)}", flush=True)
        time.sleep(1.0)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "rec-sweep.json").write_text(json.dumps({"device": args.device, "minutes": args.minutes,
                                                          "results": results}, indent=2))
    (args.out / "rec-sweep.md").write_text(table(results) + "\n")
    print(table(results))


if __name__ == "__main__":
    main()
