"""`eclip rec train`'s config: the model (`eclip.rec.model.ModelConfig`, beside the model) and the training
schedule, filled from a shipped recipe (`eclip/configs/rec/`, e.g. `beauty`) or a TOML file, then `--set`."""

from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

from eclip.config import assign, from_dict, load, option, section, to_dict, validate
from eclip.configs import config_path
from eclip.rec.model import ModelConfig


@dataclass
class TrainConfig:
    epochs: int = option(200, "passes over the training users", low=1)
    batch_size: int = option(256, "users per step", low=1)
    lr: float = option(1e-3, "peak learning rate: linear warm-up, then cosine decay to 0 at `epochs`", above=0)
    warmup_epochs: float = option(1.0, "linear warm-up length in epochs", low=0)
    weight_decay: float = option(0.0, "AdamW weight decay", low=0)
    mask_prob: float = option(0.6, "Cloze: share of items masked (BERT4Rec uses 0.6 on sparse Beauty)", low=0, high=1)
    last_item_fraction: float = option(0.1, "Cloze: share of sequences that mask only their last item", low=0,
                                       high=1)
    next_item_weight: float = option(0.0, "Cloze: each batch also trains next-item prediction with the causal "
                                          "mask, its loss weighted by this (learns from every position; 0 = pure "
                                          "Cloze)", low=0)
    softmax_negatives: int = option(0, "0: softmax over every trained item; N: over the target and N items drawn "
                                       "uniformly per batch (for catalogues too large for the full softmax)", low=0)
    patience: int = option(10, "stop after this many epochs without a better validation NDCG@10", low=1)
    time_limit_minutes: float = option(0.0, "stop before an epoch as long as the last one would end past this; "
                                            "0 = none", low=0)
    cold_fraction: float = option(0.0, "share of items hidden from training (cold-start split)", low=0, below=1)
    val_cases: int = option(0, "validate each epoch on this many fixed random users; 0 = all", low=0)
    seed: int = option(0, "seed of the split, the batches and the initial weights", low=0)


@dataclass
class RecConfig:
    LABEL: ClassVar[str] = "rec"
    model: ModelConfig = section(ModelConfig)
    train: TrainConfig = section(TrainConfig)

    @classmethod
    def from_dict(cls, data: dict, source: str = "config") -> RecConfig:
        """From the [model] and [train] tables of a saved config.json (other keys are the run's setup)."""
        config = from_dict(cls, {key: data[key] for key in ("model", "train") if key in data}, source)
        validate(config)
        return config

    @classmethod
    def from_toml(cls, name_or_file: str | Path) -> RecConfig:
        """A shipped recipe (`list_configs("rec")`, e.g. beauty) or a TOML file."""
        return load(cls, config_path("rec", name_or_file))

    def override(self, assignments: list[str]) -> RecConfig:
        """A copy with `section.name=value` strings applied, e.g. `train.epochs=5`, `model.causal=true`."""
        return assign(copy.deepcopy(self), assignments)

    def to_dict(self) -> dict:
        return to_dict(self)
