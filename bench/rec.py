"""Recommendation benchmark, run by hand (wrap it in the shared CPU lock on a shared machine):

    flock /tmp/eclip-cpu.lock .venv/bin/python bench/rec.py --part beauty   # ~30 min: 13 + 9 + 4 min training + eval
    flock /tmp/eclip-cpu.lock .venv/bin/python bench/rec.py --part cold     # ~3 min
    flock /tmp/eclip-cpu.lock .venv/bin/python bench/rec.py --part cold --cold-model runs/demo/model   # ~5 min
    flock /tmp/eclip-cpu.lock .venv/bin/python bench/rec.py --part scale    # ~5 min

beauty: BERT4Rec and SASRec (the same model with a causal mask) trained on Amazon Beauty with
the shipped beauty recipe (eclip/configs/rec/beauty.toml) (at most 20 minutes of training each), and BERT4Rec started from that SASRec run's weights
(both stages together within the 20 minutes), and those two as one ensemble, scored with the most-popular baseline
in one table, full ranking and 100 sampled negatives.
cold: synthetic shopping sequences over the real fashion-dev catalogue with 10% of the items hidden from training;
BERT4Rec with content item features (TF-IDF + SVD of titles and labels, a stand-in for e-CLIP embeddings) against
the ID-only BERT4Rec, on cold and warm test targets; with --cold-model RUN_DIR also BERT4Rec with that trained
e-CLIP model's fused image + title embeddings of the catalogue's products.
scale: training steps and evaluation on synthetic catalogues of 12k to 3M items, the full softmax against the
sampled one (train.softmax_negatives), each in a process of its own: seconds per step and peak memory.

Runs go to runs/rec/ (an interrupted run resumes); JSON and markdown to bench/results/.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from eclip.index.vectors import write_embeddings  # noqa: E402
from eclip.rec.report import evaluate_runs, markdown_table  # noqa: E402
from eclip.rec.synthetic import label_text_features, read_catalog, synthetic_sequences, write_sequences  # noqa: E402
from eclip.rec.data import EvalCases, next_item_batch  # noqa: E402
from eclip.rec.evaluate import evaluate, fix_mmap_threshold  # noqa: E402
from eclip.rec.model import ModelConfig, SequenceRecommender  # noqa: E402
from eclip.rec.config import RecConfig, TrainConfig  # noqa: E402
from eclip.rec.train import make_optimizers, optimization_step, softmax_sample, train  # noqa: E402

BEAUTY = REPO.parent / "shared" / "data" / "amazon-beauty" / "sequences.txt"
FASHION = REPO.parent / "shared" / "data" / "fashion-dev" / "catalog.csv"
RESULTS = REPO / "bench" / "results"


def train_or_resume(run_dir: Path, sequences: Path, config: RecConfig, features: Path | None = None,
                    device: str = "cpu", init: Path | None = None) -> dict:
    """Train `run_dir` (from the weights of the run `init` if given), or continue it where an earlier
    (interrupted) run stopped; the summary and the per-epoch history."""
    resume = (run_dir / "last_state.pt").is_file()
    summary = train(run_dir, sequences, config, features, resume=resume, device=device,
                    init=None if resume else init)
    history = [json.loads(line) for line in (run_dir / "history.jsonl").read_text().splitlines()]
    return {**summary, "epochs_run": len(history), "run": str(run_dir), "history": history}


# The recipes of the shipped beauty recipe (eclip/configs/rec/beauty.toml)'s header: the SASRec-style baseline (every position is labelled, so far
# fewer epochs) and BERT4Rec's Cloze stage after it, in what is left of the same 20 minutes.
SASREC = ["model.causal=true", "train.epochs=25", "model.dropout=0.5", "model.attention_dropout=0.5"]
AFTER_SASREC = ["train.epochs=20", "train.lr=0.001"]


def beauty(runs: Path) -> dict:
    config = RecConfig.from_toml("beauty")
    sasrec = train_or_resume(runs / "beauty-sasrec", BEAUTY, config.override(SASREC))
    left_minutes = config.train.time_limit_minutes - sasrec["seconds"] / 60
    trained = {"BERT4Rec": train_or_resume(runs / "beauty-bert4rec", BEAUTY, config),
               "SASRec": sasrec,
               "BERT4Rec from SASRec": train_or_resume(
                   runs / "beauty-bert4rec-init", BEAUTY,
                   config.override(AFTER_SASREC + [f"train.time_limit_minutes={max(left_minutes, 1e-9)}"]),
                   init=runs / "beauty-sasrec")}
    # The SASRec-style run and the BERT4Rec started from it, also as one ensemble: no training beyond theirs.
    report = evaluate_runs([Path(t["run"]) for t in trained.values()], ensembles=[(1, 2)])
    lines = [markdown_table(report), "**training (wall / CPU seconds, epochs, best epoch; the last row's wall "
             "seconds include its SASRec run's)**\n",
             "| model | wall s | CPU s | epochs | best epoch |", "| --- | --- | --- | --- | --- |"]
    for name, t in trained.items():
        before = sasrec if name == "BERT4Rec from SASRec" else {"seconds": 0, "cpu_seconds": 0}
        lines.append(f"| {name} | {t['seconds'] + before['seconds']:.0f} | {t['cpu_seconds'] + before['cpu_seconds']:.0f} "
                     f"| {t['epoch']} | {t['best_epoch']} |")
    return {"report": report, "training": trained, "table": "\n".join(lines)}


def eclip_features(model_dir: Path, catalog: list[dict], emb_dir: Path) -> Path:
    """The catalogue's products embedded by a trained e-CLIP run: photo + title -> the fused vector `eclip embed`
    computes (here from the original photos, not a prepared DATA_DIR's thumbnails)."""
    from eclip.models import embed_images, embed_texts, load_model
    from eclip.index.embed import fuse

    model, _, _ = load_model(model_dir)
    image = embed_images(model, [str(FASHION.parent / row["image"]) for row in catalog])
    text = embed_texts(model, [row["title"] for row in catalog])
    write_embeddings(emb_dir / "embeddings.parquet", [row["product_id"] for row in catalog], {"fused": fuse(image, text)})
    return emb_dir


def cold(runs: Path, users: int, epochs: int, model_dir: Path | None) -> dict:
    root = runs / "cold"
    catalog = read_catalog(FASHION)
    sequences = write_sequences(root / "sequences.txt", synthetic_sequences(catalog, users, seed=0))
    product_ids, features = label_text_features(catalog, dim=64)
    write_embeddings(root / "emb" / "embeddings.parquet", product_ids, {"fused": features})
    base = ["train.cold_fraction=0.1", f"train.epochs={epochs}", "train.patience=100"]
    content = RecConfig().override(base + ["model.id_dropout=0.3"])
    trained = {"BERT4Rec + content": train_or_resume(root / "content", sequences, content, root / "emb"),
               "BERT4Rec ID-only": train_or_resume(root / "id-only", sequences, RecConfig().override(base))}
    if model_dir is not None:
        trained["BERT4Rec + e-CLIP content"] = train_or_resume(
            root / "eclip-content", sequences, content, eclip_features(model_dir, catalog, root / "eclip-emb"))
    report = evaluate_runs([Path(t["run"]) for t in trained.values()])
    lines = [markdown_table(report), "**training (wall / CPU seconds, epochs)**\n",
             "| model | wall s | CPU s | epochs |", "| --- | --- | --- | --- |"]
    lines += [f"| {name} | {t['seconds']:.0f} | {t['cpu_seconds']:.0f} | {t['epoch']} |" for name, t in trained.items()]
    return {"users": users, "report": report, "training": trained, "table": "\n".join(lines)}


SCALE_ITEMS = (12_101, 100_000, 300_000, 1_000_000, 3_000_000)
FULL_SOFTMAX_MAX_ITEMS = 300_000  # (rows x items) float32 logits, several copies: about 16 GB at 1M items
SCALE_NEGATIVES = 1024


def scale_case(n_items: int, negatives: int, steps: int = 20, eval_users: int = 2000) -> dict:
    """One process: a SASRec-style model (dim 64, batch 128, lengths like Beauty's) over `n_items` Zipf-popular
    items; mean seconds of a training step (after 3 warm-up steps), of evaluating one user, and the peak RSS."""
    fix_mmap_threshold(n_items)  # as train() does
    rng = np.random.default_rng(0)
    popularity = 1.0 / np.arange(1, n_items + 1) ** 0.8
    cumulative = np.cumsum(popularity / popularity.sum())

    def sequences(n):
        lengths = np.clip(rng.geometric(1 / 9, n), 3, 50)
        return [1 + np.minimum(np.searchsorted(cumulative, rng.random(k)), n_items - 1) for k in lengths]

    model = SequenceRecommender(ModelConfig(causal=True, embedding_norm=True), n_items,
                                np.ones(n_items + 1, dtype=bool), sparse_items=negatives > 0)
    optimizers = make_optimizers(model, TrainConfig())
    rss_model = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    model.train()
    times = []
    for _ in range(steps + 3):
        batch = next_item_batch(sequences(128), 50)
        started = time.perf_counter()
        optimization_step(optimizers, model.loss(batch, softmax_sample(model, negatives)))
        times.append(time.perf_counter() - started)
    model.eval()
    histories = sequences(eval_users)
    started = time.perf_counter()
    evaluate(model.score, EvalCases(np.arange(eval_users), [h[:-1] for h in histories],
                                    np.array([h[-1] for h in histories])))
    return {"items": n_items, "softmax": f"sampled {negatives}" if negatives else "full",
            "step_s": float(np.mean(times[3:])), "eval_ms_per_user": (time.perf_counter() - started) / eval_users * 1e3,
            "model_gb": rss_model, "peak_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20}


def scale(threads: int) -> dict:
    cases = []
    for n_items in SCALE_ITEMS:
        for negatives in (0, SCALE_NEGATIVES):
            if negatives == 0 and n_items > FULL_SOFTMAX_MAX_ITEMS:
                continue
            out = subprocess.run([sys.executable, __file__, "--scale-case", str(n_items), str(negatives),
                                  "--threads", str(threads)], capture_output=True, text=True, check=True)
            cases.append(json.loads(out.stdout.splitlines()[-1]))
            print(cases[-1], flush=True)
    full = {c["items"]: c for c in cases if c["softmax"] == "full"}
    lines = ["| items | softmax | s / step | vs full | eval ms / user | model GB | peak GB |",
             "| --- | --- | --- | --- | --- | --- | --- |"]
    for c in cases:
        ratio = f"{full[c['items']]['step_s'] / c['step_s']:.1f}x faster" if c["items"] in full and \
            c["softmax"] != "full" else "-"
        lines.append(f"| {c['items']:,} | {c['softmax']} | {c['step_s']:.3f} | {ratio} | {c['eval_ms_per_user']:.2f} | "
                     f"{c['model_gb']:.2f} | {c['peak_gb']:.2f} |")
    return {"cases": cases, "table": "\n".join(lines)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--part", choices=("beauty", "cold", "scale", "all"), default="all")
    parser.add_argument("--scale-case", nargs=2, type=int, metavar=("ITEMS", "NEGATIVES"), help=argparse.SUPPRESS)
    parser.add_argument("--runs", type=Path, default=REPO / "runs" / "rec")
    parser.add_argument("--cold-users", type=int, default=5000)
    parser.add_argument("--cold-epochs", type=int, default=12)
    parser.add_argument("--cold-model", type=Path, help="a trained `eclip train` RUN_DIR whose embeddings of the "
                        "fashion-dev products the cold part also tries as item features")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--fresh", action="store_true", help="delete the part's runs first instead of resuming them")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.scale_case:
        print(json.dumps(scale_case(*args.scale_case)))
        return
    RESULTS.mkdir(parents=True, exist_ok=True)
    machine = {"cpu": platform.processor() or platform.machine(), "threads": args.threads, "torch": torch.__version__}
    for part in ("beauty", "cold", "scale") if args.part == "all" else (args.part,):
        if args.fresh:
            for name in {"beauty": ("beauty-bert4rec", "beauty-sasrec", "beauty-bert4rec-init"), "cold": ("cold",),
                         "scale": ()}[part]:
                shutil.rmtree(args.runs / name, ignore_errors=True)
        result = (beauty(args.runs) if part == "beauty" else scale(args.threads) if part == "scale"
                  else cold(args.runs, args.cold_users, args.cold_epochs, args.cold_model))
        result["machine"] = machine
        (RESULTS / f"rec-{part}.json").write_text(json.dumps(result, indent=2))
        (RESULTS / f"rec-{part}.md").write_text(result["table"] + "\n")
        print(f"## {part}\n\n{result['table']}\n", flush=True)


if __name__ == "__main__":
    main()
