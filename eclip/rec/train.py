"""Training runs: config, the run folder, the resumable training loop, and loading a trained run.

RUN_DIR/
  config.json            model + train config, the sequences file, the item features folder and column, the
                         run it started from (--init)
  items.json             the item vocabulary (ids in index order)
  model.safetensors      the weights with the best validation NDCG@10 (full ranking)
  last.safetensors       the weights after the last finished epoch, with last_state.pt (optimizer, epoch,
                         counters), for --resume
  history.jsonl          one line per epoch: loss, validation metrics, cumulative training wall and CPU seconds
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import time
import tomllib
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from eclip.errors import EclipError
from eclip.files import output_folder
from eclip.progress import progress_bar
from eclip.rec.data import (Sequences, Split, Vocabulary, cloze_batch, cold_item_mask, item_counts,
                            length_batches, load_sequences, next_item_batch, split_sequences)
from eclip.rec.evaluate import evaluate, fix_mmap_threshold
from eclip.rec.features import align_features, load_item_features
from eclip.rec.model import ModelConfig, SequenceRecommender


@dataclass
class TrainConfig:
    epochs: int = 200
    batch_size: int = 256
    lr: float = 1e-3                 # peak learning rate: linear warm-up, then cosine decay to 0 at `epochs`
    warmup_epochs: float = 1.0
    weight_decay: float = 0.0
    mask_prob: float = 0.6           # Cloze: share of items masked (BERT4Rec uses 0.6 on sparse Beauty)
    last_item_fraction: float = 0.1  # Cloze: share of sequences that mask only their last item
    next_item_weight: float = 0.0    # Cloze: each batch also trains next-item prediction with the causal mask,
                                     # its loss weighted by this (learns from every position; 0 = pure Cloze)
    softmax_negatives: int = 0       # 0: softmax over every trained item; N: over the target and N items drawn
                                     # uniformly per batch (for catalogues too large for the full softmax)
    patience: int = 10               # stop after this many epochs without a better validation NDCG@10
    time_limit_minutes: float = 0.0  # stop before an epoch as long as the last one would end past this; 0 = none
    cold_fraction: float = 0.0       # share of items hidden from training (cold-start split)
    val_cases: int = 0               # validate each epoch on this many fixed random users; 0 = all
    seed: int = 0

    def __post_init__(self):
        for name in ("epochs", "batch_size", "patience"):
            if not getattr(self, name) >= 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
        if not self.lr > 0:
            raise ValueError(f"lr must be positive, got {self.lr}")
        for name in ("warmup_epochs", "weight_decay", "time_limit_minutes", "val_cases", "seed", "softmax_negatives",
                     "next_item_weight"):
            if not getattr(self, name) >= 0:
                raise ValueError(f"{name} must be 0 or more, got {getattr(self, name)}")
        for name in ("mask_prob", "last_item_fraction"):
            if not 0 <= getattr(self, name) <= 1:
                raise ValueError(f"{name} must be between 0 and 1, got {getattr(self, name)}")
        if not 0 <= self.cold_fraction < 1:
            raise ValueError(f"cold_fraction must be at least 0 and below 1, got {self.cold_fraction}")


# Below this share of the sequence items with content the features barely inform the model; it usually means
# the two files name items differently and only a few ids coincide.
LOW_CONTENT_SHARE = 0.5

# Fields that may change on --resume: they decide when to stop, not what is learned per epoch.
_RESUMABLE_CHANGES = {"patience", "time_limit_minutes"}


@dataclass
class RecConfig:
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    @classmethod
    def from_dict(cls, data: dict, source: str = "config") -> RecConfig:
        unknown = set(data) - {"model", "train"}
        if unknown:
            raise EclipError(f"{source}: unknown section(s) {', '.join(sorted(unknown))}; expected [model] and [train]")
        return cls(_fill(ModelConfig, data.get("model", {}), f"{source} [model]"),
                   _fill(TrainConfig, data.get("train", {}), f"{source} [train]"))

    @classmethod
    def from_toml(cls, path: Path) -> RecConfig:
        try:
            data = tomllib.loads(Path(path).read_text())
        except (OSError, tomllib.TOMLDecodeError) as error:
            raise EclipError(f"{path}: cannot read the config ({error})") from None
        return cls.from_dict(data, str(path))

    def override(self, assignments: list[str]) -> RecConfig:
        """Apply `section.name=value` strings, e.g. `train.epochs=5`, `model.causal=true`."""
        data = self.to_dict()
        for text in assignments:
            key, _, value = text.partition("=")
            section, _, name = key.strip().partition(".")
            if section not in data or name not in data[section] or not value:
                raise EclipError(f"--set {text!r}: expected SECTION.NAME=VALUE with a known name, e.g. train.epochs=5")
            try:
                data[section][name] = tomllib.loads(f"v = {value.strip()}")["v"]
            except tomllib.TOMLDecodeError:
                data[section][name] = value.strip()
        return RecConfig.from_dict(data, "--set")

    def to_dict(self) -> dict:
        return {"model": asdict(self.model), "train": asdict(self.train)}


def _fill(kind, values: dict, source: str):
    fields = {f.name: f for f in dataclasses.fields(kind)}
    unknown = set(values) - set(fields)
    if unknown:
        raise EclipError(f"{source}: unknown key(s) {', '.join(sorted(unknown))}; known: {', '.join(fields)}")
    checked = {}
    for name, value in values.items():
        expected = {"int": int, "float": (int, float), "bool": bool}.get(fields[name].type, object)
        if isinstance(value, bool) and expected is not bool or not isinstance(value, expected):
            raise EclipError(f"{source}: {name} = {value!r} is not a {fields[name].type}")
        checked[name] = float(value) if fields[name].type == "float" else value
    try:
        return kind(**checked)
    except ValueError as error:
        raise EclipError(f"{source}: {error}") from None


@dataclass
class RunData:
    """Everything a run's model is built and evaluated from, rebuilt deterministically from config.json."""

    sequences: Sequences
    vocab: Vocabulary
    encoded: list[np.ndarray]
    split: Split
    counts: np.ndarray                # (n_items + 1,) training interactions per item
    content: np.ndarray | None        # (n_items + 1, C) or None
    content_share: float | None       # share of the items in the sequences that have content (None: no features)


def load_run_data(sequences_path: Path, config: RecConfig, item_features: Path | None = None,
                  feature_column: str = "fused", items: list[str] | None = None) -> RunData:
    """`items`: a saved vocabulary (when loading a run), so indices match the trained weights."""
    sequences = load_sequences(sequences_path)
    product_ids = matrix = None
    if item_features is not None:
        product_ids, matrix = load_item_features(item_features, feature_column)
    vocab = Vocabulary(items) if items is not None else Vocabulary.build(sequences, product_ids or [])
    encoded = [vocab.encode(seq) for seq in sequences.items]
    split = split_sequences(encoded, cold_item_mask(vocab.ids, config.train.cold_fraction, config.train.seed))
    content = content_share = None
    if matrix is not None:
        content, content_share = align_features(vocab.ids, product_ids, matrix, str(item_features),
                                                np.unique(np.concatenate(encoded)))
    return RunData(sequences, vocab, encoded, split, item_counts(split.train, vocab.n_items), content, content_share)


def build_model(config: RecConfig, data: RunData) -> SequenceRecommender:
    torch.manual_seed(config.train.seed)
    trained = data.counts > 0
    return SequenceRecommender(config.model, data.vocab.n_items, trained, data.content,
                               sparse_items=samples_negatives(config.train.softmax_negatives, int(trained.sum())))


def _check_device(name: str) -> torch.device:
    """The torch device `name` (cpu, cuda, cuda:N, mps) if this machine has it."""
    try:
        device = torch.device(name)
    except RuntimeError:
        device = None
    if device is None or device.type not in ("cpu", "cuda", "mps"):
        raise EclipError(f"--device {name!r}: not a device; use cpu, cuda, cuda:N or mps")
    if device.type == "cuda" and (device.index or 0) >= torch.cuda.device_count():
        raise EclipError(f"--device {name}: this machine has {torch.cuda.device_count()} CUDA GPU(s); use --device cpu")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise EclipError(f"--device {name}: MPS is not available on this machine; use --device cpu")
    return device


def _save_atomic(write, path: Path) -> None:
    tmp = path.with_name(path.name + ".tmp")
    write(tmp)
    os.replace(tmp, path)


def train(run_dir: Path, sequences_path: Path, config: RecConfig, item_features: Path | None = None,
          feature_column: str = "fused", resume: bool = False, device: str = "cpu", init: Path | None = None) -> dict:
    """Train (or, with `resume`, continue) a run; returns {"epoch", "best_epoch", "best_val", "seconds",
    "cpu_seconds", "notes"} (notes: things about the input the user should know, one line each).
    `init`: a run on the same items whose best weights the new run starts from (see `start_from`)."""
    run_dir, device = Path(run_dir), _check_device(device)
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
        _check_resumable(run_dir, setup, config)
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
        (run_dir / "history.jsonl").write_text("")

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
                _save_atomic(lambda p: save_file(model.state_dict(), p), run_dir / "model.safetensors")
            else:
                state["bad_epochs"] += 1
            _save_atomic(lambda p: save_file(model.state_dict(), p), run_dir / "last.safetensors")
            _save_atomic(lambda p: torch.save({**state, **{key: optimizer.state_dict() for optimizer, key
                                                           in zip(optimizers, OPTIMIZER_KEYS)}}, p), state_path)
            with open(run_dir / "history.jsonl", "a") as f:
                f.write(json.dumps({"epoch": epoch + 1, "loss": float(np.mean(losses)), "val": val,
                                    "seconds": round(state["seconds"], 2),
                                    "cpu_seconds": round(state["cpu_seconds"], 2)}) + "\n")
            advance(0, val_ndcg10=f"{val['NDCG@10']:.4f}")
    return {**{k: state[k] for k in ("epoch", "best_epoch", "best_val", "seconds", "cpu_seconds")}, "notes": notes}


OPTIMIZER_KEYS = ("optimizer", "sparse_optimizer")  # their states in last_state.pt

# What a run started from another (`--init`) must share with it: the shapes of the weights.
_INIT_SHARED = ("dim", "layers", "heads", "max_len", "embedding_norm")


def start_from(model: SequenceRecommender, init_dir: Path, vocab: Vocabulary) -> None:
    """Load the best weights of the run in `init_dir` into `model`: a run on the same items, split and item
    features, with the same shapes; attention (causal or not) and dropout may differ. BERT4Rec started from a
    SASRec-style run learns from every position first, then from the Cloze objective (docs/recommendation.md)."""
    other = load_run(init_dir, with_data=False)
    for name in _INIT_SHARED:
        mine, theirs = getattr(model.config, name), getattr(other.config.model, name)
        if mine != theirs:
            raise EclipError(f"--init {init_dir}: it has model.{name}={theirs!r}, this run {mine!r}; "
                             f"{', '.join(_INIT_SHARED)} must match")
    if other.vocab.ids != vocab.ids:
        raise EclipError(f"--init {init_dir}: trained on other items (its items.json differs); start from a run on "
                         "the same sequences and item features")
    weights = other.model.state_dict()
    if not torch.equal(weights["id_usable"], model.id_usable):
        raise EclipError(f"--init {init_dir}: trained on another split (train.cold_fraction or train.seed differ)")
    if (model.content is None) != (other.model.content is None) or (
            model.content is not None and not torch.equal(weights["content"], model.content)):
        raise EclipError(f"--init {init_dir}: trained with other item features; start from a run with the same "
                         "--item-features and --item-feature-column")
    model.load_state_dict(weights)


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


def samples_negatives(n: int, n_trained: int) -> bool:
    """Whether `softmax_negatives` = n asks for a sampled softmax: 0 and n >= the trained items are the full one."""
    return 0 < n < n_trained


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


def _check_resumable(run_dir: Path, setup: dict, config: RecConfig) -> None:
    saved = json.loads((run_dir / "config.json").read_text())
    new = {**setup, **config.to_dict()}
    for key in setup:
        if saved[key] != new[key]:
            raise EclipError(f"{run_dir}: --resume with {key} {new[key]!r}, but the run used {saved[key]!r}")
    # Through the dataclasses, so a run saved before a field existed compares as that field's default.
    recorded = RecConfig.from_dict({k: saved[k] for k in ("model", "train")}, str(run_dir / "config.json")).to_dict()
    for section in ("model", "train"):
        for name, value in new[section].items():
            if name not in _RESUMABLE_CHANGES and recorded[section][name] != value:
                raise EclipError(f"{run_dir}: --resume with {section}.{name}={value!r}, but the run used "
                                 f"{recorded[section][name]!r}; only {', '.join(sorted(_RESUMABLE_CHANGES))} may change")


@dataclass
class TrainedRun:
    run_dir: Path
    config: RecConfig
    setup: dict
    vocab: Vocabulary
    model: SequenceRecommender
    data: RunData | None  # None when loaded without its sequences


def load_run(run_dir: Path, sequences_path: Path | None = None, with_data: bool = True) -> TrainedRun:
    """The best weights of a finished (or interrupted) run. The model needs only the run folder; `with_data`
    also rebuilds the run's data from the sequences recorded in config.json, or from `sequences_path` (the same
    users and items, e.g. a moved copy)."""
    run_dir = Path(run_dir)
    if not (run_dir / "model.safetensors").is_file():
        raise EclipError(f"{run_dir}: no model.safetensors; train a run there first (eclip rec train ... --out {run_dir})")
    for name in ("config.json", "items.json"):  # a graph run folder holds a model.safetensors too
        if not (run_dir / name).is_file():
            raise EclipError(f"{run_dir}: not a rec run (no {name}); give a folder written by eclip rec train")
    saved = json.loads((run_dir / "config.json").read_text())
    config = RecConfig.from_dict({"model": saved["model"], "train": saved["train"]}, str(run_dir / "config.json"))
    setup = {k: saved[k] for k in ("sequences", "item_features", "item_feature_column")}
    vocab = Vocabulary(json.loads((run_dir / "items.json").read_text()))
    model = _model_from_weights(config, vocab.n_items, load_file(run_dir / "model.safetensors"))
    data = None
    if with_data:
        path = Path(sequences_path or setup["sequences"])
        if sequences_path is None and not path.is_file():
            raise EclipError(f"{run_dir}: trained on {path}, which is no longer there; pass --sequences with the "
                             "file's new place")
        data = load_run_data(path, config, items=vocab.ids)
    return TrainedRun(run_dir, config, setup, vocab, model, data)


def _model_from_weights(config: RecConfig, n_items: int, weights: dict[str, torch.Tensor]) -> SequenceRecommender:
    """The model the saved `weights` belong to. Their persistent buffers hold which items were trained
    (`id_usable`) and the items' content, so neither the sequences nor the item features are read again."""
    trained = weights["id_usable"][:n_items + 1].numpy() > 0
    content = weights["content"][:n_items + 1].numpy() if "content" in weights else None
    model = SequenceRecommender(config.model, n_items, trained, content)
    model.load_state_dict(weights)
    return model.eval()
