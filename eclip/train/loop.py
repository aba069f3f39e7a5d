"""The training loop: data, model, optimizer, then one contrastive step per iteration with gradient caching
and the batch-size schedule, logged to metrics.jsonl and checkpointed atomically for an exact --resume.

RUN_DIR after a run:
    config.json           the resolved config
    model.safetensors     final weights;  tokenizer.json + text_config.json rebuild the text tower
    checkpoints/          step-NNNNNNN.pt: model, optimizer, grad scaler, each process's data position and RNG state
    metrics.jsonl         one line per step
    curves.png            loss, temperature and batch size over steps
"""

from __future__ import annotations

import copy
import json
import os
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import nullcontext
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist

from eclip.errors import EclipError
from eclip.models import (CONFIG_FILE, MODEL_FILE, TEXT_CONFIG_FILE, ImagePreprocessing, build_model, restore_model,
                          save_model)
from eclip.models.dual_encoder import DualEncoder
from eclip.models.pretrained import resolve_for_run
from eclip.progress import progress_bar
from eclip.runs.device import resolve_device
from eclip.runs.jsonl import append_jsonl, read_jsonl, rewrite_jsonl
from eclip.runs.rng import capture_rng, restore_rng
from eclip.train.checkpoint import checkpoint_step, checkpoints, load_checkpoint, save_checkpoint, save_weights
from eclip.train.config import Config
from eclip.train.dataset import PairDataset
from eclip.train.features import cached_text_features
from eclip.train.gradcache import contrastive_backward
from eclip.train.loss import Objective
from eclip.train.stream import PairStream
from eclip.train.schedule import batch_size_at, lr_at

METRICS_FILE = "metrics.jsonl"
CURVES_FILE = "curves.png"
PRECISIONS = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


def resolve_precision(precision: str, device: torch.device) -> str:
    """`auto` -> bf16 where the device computes it natively, else fp32: emulated bf16 is slower than fp32. On a
    CPU with AVX512-BF16 the `tiny` config trains 1.25x faster in bf16, with the same scores (docs/training.md)."""
    if precision != "auto":
        return precision
    if device.type == "cuda":
        native = torch.cuda.is_bf16_supported()
    else:  # torch's own CPU feature probes; private, hence the fallback
        native = any(getattr(torch.cpu, probe, lambda: False)()
                     for probe in ("_is_avx512_bf16_supported", "_is_amx_tile_supported"))
    return "bf16" if native else "fp32"


def _init_distributed(device_type: str) -> tuple[int, int]:
    """(rank, world size); joins the process group when launched by torchrun."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if device_type == "cuda" else "gloo")
    return (dist.get_rank(), world) if world > 1 else (0, 1)


def parameter_groups(model: DualEncoder, config: Config) -> list[dict]:
    """AdamW groups: no weight decay on gains, biases, tokens and the temperature; the text tower at a scaled lr."""
    groups = {}
    for name, parameter in model.named_parameters():
        if not parameter.requires_grad:
            continue
        decay = parameter.ndim >= 2 and "token" not in name and "pos_embed" not in name
        lr_scale = config.train.text_lr_scale if name.startswith("text.") else 1.0
        key = (decay, lr_scale)
        groups.setdefault(key, {"params": [], "weight_decay": config.train.weight_decay if decay else 0.0,
                                "lr_scale": lr_scale})["params"].append(parameter)
    return list(groups.values())


def _split(batch: dict[str, torch.Tensor], size: int) -> list[dict[str, torch.Tensor]]:
    """Micro-batches of `size` rows (the text tower cuts away their padding itself)."""
    return [{key: value[start:start + size] for key, value in batch.items()}
            for start in range(0, len(batch["pixels"]), size)]


def _restore_model(run_dir: Path, config: Config) -> DualEncoder:
    model = restore_model(run_dir, config.model)
    model.text.freeze_lower(config.model.text.frozen_layers)
    return model


def _metrics_upto(path: Path, step: int) -> list[dict]:
    """Records of metrics.jsonl for steps <= `step` (a resumed run rewrites what came after its checkpoint)."""
    return [record for record in read_jsonl(path) if record["step"] <= step]


def train(data_dir: Path, run_dir: Path, config: Config, resume: bool = False, on_step=None) -> dict:
    """Train per `config` on DATA_DIR's train split into RUN_DIR; returns the last metrics line.
    `on_step(step)` is called after each finished step (tests use it to interrupt a run)."""
    data_dir, run_dir = Path(data_dir), Path(run_dir)
    device = resolve_device(config.train.device)
    config = copy.deepcopy(config)
    config.train.precision = resolve_precision(config.train.precision, device)  # config.json records the outcome
    t = config.train
    rank, world = _init_distributed(device.type)
    if t.threads:
        torch.set_num_threads(t.threads)
    torch.manual_seed(t.seed + rank)
    saved = checkpoints(run_dir)
    if saved and not resume:
        raise EclipError(f"{run_dir} already holds a training run: pass --resume to continue it, or choose another --out")
    metrics = _metrics_upto(run_dir / METRICS_FILE, t.steps)
    if saved and checkpoint_step(saved[-1]) >= t.steps and (run_dir / CURVES_FILE).is_file() and metrics:
        # Finished: the final weights and curves are written after the last checkpoint. Leave them untouched,
        # so that what was computed from them (an `eclip eval` report) stays valid.
        return metrics[-1]

    # ---------------------------------------------------------------- data and model
    objective = Objective(t.objective, t.image_ssl_weight, t.ssl_temperature)
    resolve_for_run(config.model, run_dir, resuming=resume and bool(saved))
    dataset = PairDataset(data_dir, ImagePreprocessing.of(config.model.vision), config.augment, t.text_column,
                          second_view=objective.needs_second_view, world=world)
    if len(dataset) < t.batch_size:
        raise EclipError(f"{data_dir}: {len(dataset)} training pairs, fewer than batch_size {t.batch_size}: "
                         f"use a smaller --batch-size")
    if resume and saved:
        model, hf_text_config = _restore_model(run_dir, config), json.loads((run_dir / TEXT_CONFIG_FILE).read_text())
    else:
        model, hf_text_config = build_model(config.model, dataset.titles())
    dataset.set_batch_rules(model.processor, t.category_fraction if t.category_batches else 0.0,
                            t.group_fraction if t.group_batches else None)
    model.logit_bias.requires_grad_(t.objective == "siglip")
    model.to(device)

    micro = t.micro_batch_size or t.batch_size // world
    multiple = t.batch_size_multiple or micro * world
    if multiple % world or t.batch_size % multiple or (t.batch_size_start and t.batch_size_start % multiple):
        raise EclipError(f"batch sizes must be multiples of {'batch_size_multiple' if t.batch_size_multiple else 'micro_batch_size x processes'}"
                         f" = {multiple}, which must be a multiple of the {world} process(es)")
    optimizer = torch.optim.AdamW(parameter_groups(model, config), lr=t.lr, betas=(0.9, 0.98), eps=1e-6)
    scaler = torch.amp.GradScaler(device.type, enabled=t.precision == "fp16" and device.type == "cuda")
    reader = ThreadPoolExecutor(1)  # reads the next shuffle window while the current one trains
    stream = PairStream(dataset.units, t.seed, rank, world, t.shuffle_buffer,
                        lambda key, units: dataset.open_window(key, units, t.seed, rank), reader)
    start_step = 0
    if saved:
        state = load_checkpoint(saved[-1])
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scaler.load_state_dict(state["scaler"])
        positions = state["sampler"] if isinstance(state["sampler"], list) else [state["sampler"]]  # one per rank
        if len(positions) != world:
            raise EclipError(f"{saved[-1]} was written by {len(positions)} process(es): resume it with as many")
        stream.load_state_dict(positions[rank])
        restore_rng(state["rng"][rank], device)
        start_step = state["step"]

    network = model
    if world > 1:
        network = torch.nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda"
                                                            else None)
    scalars = [getattr(model, name) for name in objective.scalar_names]
    autocast = (torch.autocast(device.type, dtype=PRECISIONS[t.precision]) if PRECISIONS[t.precision]
                else nullcontext())

    if model.text.locked:
        dataset.text_features = cached_text_features(dataset, model.text, t.precision, autocast, rank, world)

    def embed(micro_batch):
        # Micro-batches move to the device one at a time: a large effective batch stays in host memory.
        with autocast:
            return network(**{key: value.to(device, non_blocking=True) for key, value in micro_batch.items()})

    metrics = _metrics_upto(run_dir / METRICS_FILE, start_step)
    if rank == 0:
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / CONFIG_FILE).write_text(json.dumps(config.to_dict(), indent=2))
        save_model(model, hf_text_config, run_dir)
        rewrite_jsonl(run_dir / METRICS_FILE, metrics)

    # ---------------------------------------------------------------- steps
    def draw(step: int, loader: ThreadPoolExecutor):
        """-> (batch size, the batch being made in `loader`, the sampler state that a checkpoint of `step` keeps).
        A batch depends on (seed, step, rank) alone, so making the next one while a step computes (JPEG decoding
        and augmentation, about 15 % of a `tiny` step) leaves the run exactly as it would be without. Each
        process draws its share of the batch from its own stream."""
        batch_size = batch_size_at(step, t.steps, t.batch_size_start, t.batch_size, t.batch_schedule, multiple)
        pieces = stream.next(batch_size // world)
        return (batch_size, loader.submit(dataset.batch, pieces, np.random.default_rng([t.seed, step, rank])),
                stream.state_dict())

    model.train()
    record = metrics[-1] if metrics else {}
    with progress_bar("train", t.steps, "loss", "pairs_per_s") as advance, ThreadPoolExecutor(1) as loader, reader:
        advance(start_step)
        upcoming = draw(start_step, loader) if start_step < t.steps else None
        for step in range(start_step, t.steps):
            started = time.perf_counter()
            batch_size, pending, sampler_state = upcoming
            if step + 1 < t.steps:
                upcoming = draw(step + 1, loader)
            lr = lr_at(step, t.steps, t.lr, t.warmup_steps, t.lr_schedule)
            model.visual.mask_ratio = 0.0 if step >= t.steps - t.unmasked_steps else config.model.vision.mask_ratio
            for group in optimizer.param_groups:
                group["lr"] = lr * group["lr_scale"]
            batch = pending.result()
            micro_batches = _split({k: v for k, v in batch.items() if k != "groups"}, micro)

            loss = contrastive_backward(embed, micro_batches, objective, scalars, batch["groups"].to(device),
                                        no_sync=network.no_sync if world > 1 else nullcontext,
                                        loss_multiplier=scaler.scale(torch.ones((), device=device)))
            scaler.unscale_(optimizer)
            if t.grad_clip:
                torch.nn.utils.clip_grad_norm_(model.parameters(), t.grad_clip)
            scaler.step(optimizer)
            scaler.update()
            optimizer.zero_grad(set_to_none=True)
            model.clamp_logit_scale()

            seconds = time.perf_counter() - started
            record = {"step": step + 1, "loss": round(loss, 5), "batch_size": batch_size, "micro_batch": micro,
                      "micro_batches": len(micro_batches), "lr": lr, "temperature": round(model.temperature, 5),
                      "pairs_per_s": round(batch_size / seconds, 1), "epoch": sampler_state["epoch"]}
            if rank == 0:
                append_jsonl(run_dir / METRICS_FILE, record)
            if (step + 1) % t.checkpoint_every == 0 or step + 1 == t.steps:
                _checkpoint(run_dir, step + 1, model, optimizer, scaler, sampler_state, device, rank, world,
                            t.keep_checkpoints)
            advance(loss=f"{loss:.3f}", pairs_per_s=f"{record['pairs_per_s']:.0f}")
            if on_step is not None:
                on_step(step + 1)

    if rank == 0:
        save_weights(model, run_dir / MODEL_FILE)
        plot_curves(run_dir / METRICS_FILE, run_dir / CURVES_FILE)
    return record


def _checkpoint(run_dir, step, model, optimizer, scaler, sampler_state, device, rank, world, keep) -> None:
    rng, sampler = [capture_rng(device)], [sampler_state]
    if world > 1:  # every rank's dropout stream and data position, so that each resumes exactly
        rng, sampler = [None] * world, [None] * world
        dist.all_gather_object(rng, capture_rng(device))
        dist.all_gather_object(sampler, sampler_state)
    if rank == 0:
        state = {"step": step, "model": model.state_dict(), "optimizer": optimizer.state_dict(),
                 "scaler": scaler.state_dict(), "sampler": sampler, "rng": rng}
        save_checkpoint(run_dir, step, state, keep)


def plot_curves(metrics_file: Path, image_file: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    records = read_jsonl(metrics_file)
    steps = [r["step"] for r in records]
    figure, axes = plt.subplots(1, 3, figsize=(13, 3.5))
    for axis, key, title in zip(axes, ("loss", "temperature", "batch_size"), ("loss", "temperature", "effective batch")):
        axis.plot(steps, [r[key] for r in records])
        axis.set_title(title)
        axis.set_xlabel("step")
        axis.grid(alpha=0.3)
    figure.tight_layout()
    figure.savefig(image_file, dpi=100)
    plt.close(figure)
