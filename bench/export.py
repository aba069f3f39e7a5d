"""Benchmark of `eclip export --format onnx`: torch against onnxruntime per query and per image on CPU, in the same
run, on the same weights, after checking that both give the same vectors.

Two models, each written as a RUN_DIR with random weights (no pretrained weights can be fetched here; speed does
not depend on their values): the `tiny` recipe's towers (64 px hybrid ViT, locked MiniLM-L6 text tower with the
word-piece and n-gram paths) and CLIP ViT-B/32's exact architecture (224 px, `CLIPModel`'s default config, the
`clip-b32` recipe's start), with a WordPiece tokenizer of fashion-dev's titles in place of CLIP's BPE.
Per query: one title per call (what `eclip serve` does for a search); per image: one 224 px (or 64 px) photo per
call, and a batch of 32 for throughput. Times are medians of repeated calls after warm-up, both runtimes limited to
the same threads.

Writes bench/results/export.json and export.md and prints the table. The machine may be shared with other jobs:
compare the ratios within one run, not the absolute times across runs.
Usage: .venv/bin/python bench/export.py [--threads 2] [--repeats 30]
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "bench" / "results"
FASHION = REPO.parent / "shared" / "data" / "fashion-dev"


def titles_and_images(count: int) -> tuple[list[str], list[bytes]]:
    import csv

    with open(FASHION / "catalog.csv", newline="") as handle:
        rows = [row for _, row in zip(range(count), csv.DictReader(handle))]
    return [row["title"] for row in rows], [(FASHION / row["image"]).read_bytes() for row in rows]


def write_run(run_dir: Path, name: str, titles: list[str]) -> None:
    """A RUN_DIR of `name` (tiny, clip-b32) with random weights, as `eclip train` leaves it."""
    import torch

    from eclip.models import MODEL_FILE, build_model, save_model
    from eclip.train.checkpoint import save_weights
    from eclip.train.config import load_config

    config = load_config(name)
    if name == "clip-b32":
        import transformers

        from eclip.models.text import train_wordpiece

        checkpoint = run_dir.parent / "clip-b32-random"
        tokenizer = train_wordpiece(titles, 8000)
        text = dict(vocab_size=tokenizer.get_vocab_size(), pad_token_id=tokenizer.token_to_id("[PAD]"),
                    bos_token_id=tokenizer.token_to_id("[CLS]"), eos_token_id=tokenizer.token_to_id("[SEP]"))
        transformers.CLIPModel(transformers.CLIPConfig(text_config=text)).save_pretrained(checkpoint)
        tokenizer.save(str(checkpoint / "tokenizer.json"))
        (checkpoint / "tokenizer_config.json").write_text(json.dumps({"pad_token": "[PAD]"}))
        config.model.init = str(checkpoint)
    torch.manual_seed(0)
    model, hf_text_config = build_model(config.model, titles)
    run_dir.mkdir(parents=True)
    (run_dir / "config.json").write_text(json.dumps(config.to_dict()))
    save_model(model, hf_text_config, run_dir)
    save_weights(model, run_dir / MODEL_FILE)


def median_ms(call, repeats: int) -> float:
    for _ in range(3):
        call()
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        call()
        times.append(time.perf_counter() - started)
    return 1000 * statistics.median(times)


def measure(name: str, root: Path, titles: list[str], images: list[bytes], threads: int, repeats: int) -> dict:
    import numpy as np
    import torch

    from eclip.export import export
    from eclip.export.onnx import OnnxDualEncoder
    from eclip.models import embed_images, embed_texts, load_model

    write_run(root / name, name, titles)
    started = time.perf_counter()
    export(root / name, root / f"{name}-onnx", "onnx")
    export_seconds = time.perf_counter() - started
    torch.set_num_threads(threads)
    model, _, config = load_model(root / name)
    onnx = OnnxDualEncoder(root / f"{name}-onnx", threads=threads)
    gap = max(float(np.abs(onnx.embed_texts(titles[:64]) - embed_texts(model, titles[:64])).max()),
              float(np.abs(onnx.embed_images(images[:32]) - embed_images(model, images[:32])).max()))
    queries = iter(titles * repeats)
    row = {"model": name, "image_size": config.vision.image_size, "export_s": round(export_seconds, 1),
           "max_abs_difference": gap}
    for runtime, texts, pictures in (("torch", lambda t: embed_texts(model, t), lambda i: embed_images(model, i)),
                                     ("onnxruntime", onnx.embed_texts, onnx.embed_images)):
        row[f"{runtime}_query_ms"] = median_ms(lambda: texts([next(queries)]), repeats)
        row[f"{runtime}_image_ms"] = median_ms(lambda: pictures(images[:1]), repeats)
        row[f"{runtime}_image_batch32_ms"] = median_ms(lambda: pictures(images[:32]), max(5, repeats // 5))
    for key in ("query_ms", "image_ms", "image_batch32_ms"):
        row[f"speedup_{key[:-3]}"] = row[f"torch_{key}"] / row[f"onnxruntime_{key}"]
    return row


def table(rows: list[dict], threads: int) -> str:
    lines = [f"torch vs onnxruntime on CPU, {threads} threads, medians (ms); shared machine: compare ratios", "",
             "| model | px | per query torch | per query ORT | x | per image torch | per image ORT | x | "
             "32 images torch | 32 images ORT | x | max abs diff |", "|" + " --- |" * 12]
    for r in rows:
        lines.append(f"| {r['model']} | {r['image_size']} | {r['torch_query_ms']:.1f} | {r['onnxruntime_query_ms']:.1f}"
                     f" | {r['speedup_query']:.2f} | {r['torch_image_ms']:.1f} | {r['onnxruntime_image_ms']:.1f} | "
                     f"{r['speedup_image']:.2f} | {r['torch_image_batch32_ms']:.0f} | "
                     f"{r['onnxruntime_image_batch32_ms']:.0f} | {r['speedup_image_batch32']:.2f} | "
                     f"{r['max_abs_difference']:.1e} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--models", default="tiny,clip-b32")
    args = parser.parse_args()
    titles, images = titles_and_images(400)
    with tempfile.TemporaryDirectory() as scratch:
        rows = [measure(name, Path(scratch), titles, images, args.threads, args.repeats)
                for name in args.models.split(",")]
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "export.json").write_text(json.dumps({"threads": args.threads, "rows": rows}, indent=1))
    text = table(rows, args.threads)
    (RESULTS / "export.md").write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
