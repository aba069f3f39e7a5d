"""A recommender RUN_DIR: what a run is rebuilt from, started from (`--init`), resumed from, and loaded as.

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

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file

from eclip.errors import EclipError
from eclip.rec.config import RecConfig
from eclip.rec.data import (Sequences, Split, Vocabulary, cold_item_mask, item_counts, load_sequences,
                            split_sequences)
from eclip.rec.features import align_features, load_item_features
from eclip.rec.model import SequenceRecommender

# Below this share of the sequence items with content the features barely inform the model; it usually means
# the two files name items differently and only a few ids coincide.
LOW_CONTENT_SHARE = 0.5

# Fields that may change on --resume: they decide when to stop, not what is learned per epoch.
_RESUMABLE_CHANGES = {"patience", "time_limit_minutes"}


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


def samples_negatives(n: int, n_trained: int) -> bool:
    """Whether `softmax_negatives` = n asks for a sampled softmax: 0 and n >= the trained items are the full one."""
    return 0 < n < n_trained


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


def check_resumable(run_dir: Path, setup: dict, config: RecConfig) -> None:
    saved = json.loads((run_dir / "config.json").read_text())
    new = {**setup, **config.to_dict()}
    for key in setup:
        if saved[key] != new[key]:
            raise EclipError(f"{run_dir}: --resume with {key} {new[key]!r}, but the run used {saved[key]!r}")
    # Through the dataclasses, so a run saved before a field existed compares as that field's default.
    recorded = RecConfig.from_dict(saved, str(run_dir / "config.json")).to_dict()
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
    config = RecConfig.from_dict(saved, str(run_dir / "config.json"))
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
