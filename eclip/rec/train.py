"""`eclip rec train`: the resumable training loop of a recommender run (its folder: `eclip.rec.run`)."""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from eclip.errors import EclipError
from eclip.files import output_folder
from eclip.progress import progress_bar
from eclip.rec.config import RecConfig, TrainConfig
from eclip.rec.data import cloze_batch, length_batches, next_item_batch
from eclip.rec.evaluate import evaluate, fix_mmap_threshold
from eclip.rec.model import SequenceRecommender
from eclip.rec.run import (LOW_CONTENT_SHARE, build_model, check_resumable, load_run_data, samples_negatives,
                           start_from)
from eclip.runs.atomic import atomic_write
from eclip.runs.device import resolve_device
from eclip.runs.jsonl import append_jsonl, rewrite_jsonl

OPTIMIZER_KEYS = ("optimizer", "sparse_optimizer")  # their states in last_state.pt


def train(run_dir: Path, sequences_path: Path, config: RecConfig, item_features: Path | None = None,
          feature_column: str = "fused", resume: bool = False, device: str = "cpu", init: Path | None = None) -> dict:
    """Train (or, with `resume`, continue) a run; returns {"epoch", "best_epoch", "best_val", "seconds",
    "cpu_seconds", "notes"} (notes: things about the input the user should know, one line each).
    `init`: a run on the same items whose best weights the new run starts from (see `start_from`)."""
    run_dir, device = Path(run_dir), resolve_device(device)
    setup = {"sequences": str(Path(sequences_path).resolve()),
             "item_features": str(Path(item_features).resolve()) if item_features else None,
             "item_feature_column": feature_column if item_features else None}
    state_path = run_dir / "last_state.pt"
    if config.model.causal and config.train.next_item_weight > 0:
        raise EclipError("train.next_item_weight adds next-item training to BERT4Rec's Cloze objective; the causal "
                         "model (model.causal=true) trains on next items alone, so leave it at 0")
    if resume:
        if init is not None:
            raise EclipError(f"{run_dir}: --init starts a new run; --resume continues from the run's own last "
                             "weights, so drop --init")
        if not state_path.is_file():
            raise EclipError(f"{run_dir}: nothing to resume (no last_state.pt); train without --resume first")
        check_resumable(run_dir, setup, config)
    elif state_path.is_file():
        raise EclipError(f"{run_dir}: already holds a run; pass --resume to continue it or choose another --out")

    items = json.loads((run_dir / "items.json").read_text()) if resume else None
    data = load_run_data(sequences_path, config, item_features, feature_column, items)
    notes = []
    if data.content_share is not None and data.content_share < LOW_CONTENT_SHARE:
        notes.append(f"only {data.content_share:.0%} of the sequence items have a product_id in {item_features}; "
                     "the others are learned from their ids alone")
    model = build_model(config, data)
    if init is not None:
        start_from(model, Path(init), data.vocab)
    model = model.to(device)
    optimizers = make_optimizers(model, config.train)
    fix_mmap_threshold(data.vocab.n_items)
    state = {"epoch": 0, "best_val": -1.0, "best_epoch": 0, "bad_epochs": 0, "seconds": 0.0, "cpu_seconds": 0.0,
             "epoch_seconds": 0.0}
    if resume:
        model.load_state_dict(load_file(run_dir / "last.safetensors", device=str(device)))
        saved = torch.load(state_path, weights_only=True)
        for optimizer, key in zip(optimizers, OPTIMIZER_KEYS):
            optimizer.load_state_dict(saved.pop(key))
        state.update(saved)
    else:
        output_folder(run_dir)
        init_record = {"init": str(Path(init).resolve())} if init is not None else {}
        (run_dir / "config.json").write_text(json.dumps({**setup, **init_record, **config.to_dict()}, indent=2))
        (run_dir / "items.json").write_text(json.dumps(data.vocab.ids))
        rewrite_jsonl(run_dir / "history.jsonl", [])

    cfg, causal = config.train, config.model.causal
    rows = [s for s in data.split.train if len(s) >= (2 if causal else 1)]
    if not rows:
        raise EclipError(f"{sequences_path}: no training sequences long enough (users need at least 3 items)")
    lengths = np.array([min(len(s), config.model.max_len) for s in rows])
    steps = math.ceil(len(rows) / cfg.batch_size)
    limit_s = cfg.time_limit_minutes * 60 if cfg.time_limit_minutes > 0 else math.inf
    val_cases = data.split.val
    if 0 < cfg.val_cases < len(val_cases.targets):
        # Full-ranking validation of every user costs a sizeable share of an epoch on large data.
        chosen = np.random.default_rng(cfg.seed).choice(len(val_cases.targets), cfg.val_cases, replace=False)
        val_cases = val_cases.subset(np.isin(np.arange(len(val_cases.targets)), chosen))
    with progress_bar("rec train", cfg.epochs * steps, "epoch", "loss", "val_ndcg10") as advance:
        advance(min(state["epoch"], cfg.epochs) * steps)
        while state["epoch"] < cfg.epochs and state["bad_epochs"] < cfg.patience \
                and state["seconds"] + state["epoch_seconds"] <= limit_s:
            started, started_cpu, epoch = time.perf_counter(), time.process_time(), state["epoch"]
            # Every epoch draws from its own seeds, so a resumed run repeats an uninterrupted one exactly.
            rng = np.random.default_rng([cfg.seed, epoch])
            torch.manual_seed(cfg.seed * 1_000_003 + epoch)
            model.train()
            losses = []
            for step, batch_rows in enumerate(length_batches(lengths, cfg.batch_size, rng), epoch * steps):
                for optimizer in optimizers:
                    for group in optimizer.param_groups:
                        group["lr"] = learning_rate(cfg, step / steps)
                seqs = [rows[i] for i in batch_rows]
                batch = (next_item_batch(seqs, config.model.max_len) if causal else
                         cloze_batch(seqs, config.model.max_len, data.vocab.mask_token, cfg.mask_prob,
                                     cfg.last_item_fraction, rng))
                negatives = softmax_sample(model, cfg.softmax_negatives)
                loss = model.loss(batch.to(device), negatives)
                if not causal and cfg.next_item_weight > 0 and any(len(s) >= 2 for s in seqs):
                    # The same users' next items too, with the causal mask: a signal at every position.
                    next_items = next_item_batch([s for s in seqs if len(s) >= 2], config.model.max_len).to(device)
                    loss = loss + cfg.next_item_weight * model.loss(next_items, negatives, causal=True)
                optimization_step(optimizers, loss)
                losses.append(loss.item())
                advance(epoch=epoch + 1, loss=f"{losses[-1]:.3f}")
            model.eval()
            val = evaluate(model.score, val_cases)["full"]
            state["epoch"] = epoch + 1
            state["epoch_seconds"] = time.perf_counter() - started
            state["seconds"] += state["epoch_seconds"]
            state["cpu_seconds"] += time.process_time() - started_cpu
            if val["NDCG@10"] > state["best_val"]:
                state.update(best_val=val["NDCG@10"], best_epoch=epoch + 1, bad_epochs=0)
                atomic_write(run_dir / "model.safetensors", lambda p: save_file(model.state_dict(), p))
            else:
                state["bad_epochs"] += 1
            atomic_write(run_dir / "last.safetensors", lambda p: save_file(model.state_dict(), p))
            optimizer_states = {key: optimizer.state_dict() for optimizer, key in zip(optimizers, OPTIMIZER_KEYS)}
            atomic_write(state_path, lambda p: torch.save({**state, **optimizer_states}, p))
            append_jsonl(run_dir / "history.jsonl", {"epoch": epoch + 1, "loss": float(np.mean(losses)), "val": val,
                                                     "seconds": round(state["seconds"], 2),
                                                     "cpu_seconds": round(state["cpu_seconds"], 2)})
            advance(0, val_ndcg10=f"{val['NDCG@10']:.4f}")
    return {**{k: state[k] for k in ("epoch", "best_epoch", "best_val", "seconds", "cpu_seconds")}, "notes": notes}


def make_optimizers(model: SequenceRecommender, cfg: TrainConfig) -> list[torch.optim.Optimizer]:
    """AdamW; with a sampled softmax the item table goes to a SparseAdam instead, which updates only the rows a
    batch touched, so a step's cost barely grows with the catalogue (the table then gets no weight decay)."""
    if not model.item_embedding.sparse:
        return [torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)]
    table = model.item_embedding.weight
    rest = [p for p in model.parameters() if p is not table]
    return [torch.optim.AdamW(rest, lr=cfg.lr, weight_decay=cfg.weight_decay),
            torch.optim.SparseAdam([table], lr=cfg.lr)]


def optimization_step(optimizers: list[torch.optim.Optimizer], loss: torch.Tensor) -> None:
    """Clear the gradients, back-propagate `loss` and step every optimizer (the gradients stay until the next)."""
    for optimizer in optimizers:
        optimizer.zero_grad(set_to_none=True)
    loss.backward()
    for optimizer in optimizers:
        optimizer.step()


def softmax_sample(model: SequenceRecommender, n: int) -> torch.Tensor | None:
    """(n,) distinct items seen in training, uniformly (torch's generator, seeded per epoch); None (the full
    softmax) when n is 0 or covers them all."""
    trained = model.trained_items
    if not samples_negatives(n, len(trained)):
        return None
    return trained[torch.randperm(len(trained), device=trained.device)[:n]]


def learning_rate(cfg: TrainConfig, epoch: float) -> float:
    """Linear warm-up to `cfg.lr` over `warmup_epochs`, then cosine decay to 0 at `epochs` (`epoch` is fractional)."""
    if epoch < cfg.warmup_epochs:
        return cfg.lr * (epoch + 1e-3) / cfg.warmup_epochs
    progress = (epoch - cfg.warmup_epochs) / max(cfg.epochs - cfg.warmup_epochs, 1e-9)
    return cfg.lr * 0.5 * (1.0 + math.cos(math.pi * min(progress, 1.0)))
