"""Training configuration: typed dataclasses filled from a named recipe (`eclip/configs/train/`, see
`eclip.configs.list_configs("train")`) or any TOML/JSON file, then overridden from the command line. The resolved
config is saved in the RUN_DIR. The model's own sections live beside the model (`eclip.models.config`)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

from eclip.config import load, option, require, section, to_dict
from eclip.configs import config_path
from eclip.models.config import ModelConfig

OBJECTIVES = ("clip", "eclip", "siglip")
PRECISION_CHOICES = ("fp32", "bf16", "fp16", "auto")
SCHEDULES = ("constant", "cosine")


@dataclass
class TrainConfig:
    objective: str = option("eclip", "clip (hard diagonal), eclip (same group_id = positive) or siglip",
                            choices=OBJECTIVES)
    steps: int = option(200, "optimizer steps", above=0)
    batch_size: int = option(256, "effective (global) batch at the end of the batch-size schedule", above=0)
    batch_size_start: int = option(0, "first step's effective batch under a cosine batch schedule; 0 = batch_size",
                                   low=0)
    batch_schedule: str = option("constant", "constant, or cosine: half-cosine growth from batch_size_start",
                                 choices=SCHEDULES)
    micro_batch_size: int = option(0, "per-process micro-batch for gradient caching; 0 = the whole batch at once",
                                   low=0)
    # Smaller than the micro-batch, a batch that fits one micro-batch is a plain step: caching re-runs the
    # forward pass, so on a CPU, where memory is not the limit, it only costs time.
    batch_size_multiple: int = option(0, "the schedule's batch sizes are rounded to multiples of this (0: "
                                         "micro_batch_size x processes)", low=0)
    unmasked_steps: int = option(0, "FLIP's unmasking tuning: the last N steps see every patch "
                                    "(model.vision.mask_ratio)", low=0)
    lr: float = option(5e-4, "peak learning rate", above=0)
    text_lr_scale: float = option(0.1, "the pretrained text tower learns at this share of lr, more gently than "
                                       "the fresh image tower", low=0)
    lr_schedule: str = option("constant", "constant or cosine, after a linear warmup", choices=SCHEDULES)
    warmup_steps: int = option(20, "linear warmup steps", low=0)
    weight_decay: float = option(0.1, "AdamW weight decay (not on gains, biases, tokens, temperature)", low=0)
    grad_clip: float = option(1.0, "max global gradient norm; 0 = off", low=0)
    image_ssl_weight: float = option(0.0, "weight of SimCLR's NT-Xent between two augmented views of each image",
                                     low=0)
    ssl_temperature: float = option(0.1, "temperature of the SimCLR loss", above=0)
    shuffle_buffer: int = option(50_000, "rows per process read and shuffled together: DATA_DIR's row groups are "
                                         "streamed a window of this many rows at a time (the next read while one "
                                         "trains); 0 = a process's whole share at once", low=0)
    category_batches: bool = option(False, "fill batches from a few categories at a time (hard negatives)")
    category_fraction: float = option(0.5, "share of each batch drawn category by category; the rest at random",
                                      low=0, high=1)
    group_batches: bool = option(False, "keep the offers of a catalog group in one batch (soft labels then act)")
    group_fraction: float = option(1.0, "with --group-batches: the share of the catalog groups kept together in a "
                                        "batch, drawn each epoch", above=0, high=1)
    text_column: str = option("title", "the DATA_DIR column the text tower reads")
    precision: str = option("fp32", "autocast of the towers; fp16 uses a grad scaler on CUDA; auto = bf16 where "
                                    "the device computes it natively (CUDA with bf16, CPUs with AVX512-BF16 or "
                                    "AMX), else fp32", choices=PRECISION_CHOICES)
    device: str = option("cpu", "cpu or cuda (under torchrun, each process's LOCAL_RANK GPU)",
                         choices=("cpu", "cuda"))
    threads: int = option(0, "torch intra-op threads on CPU; 0 = torch's default", low=0)
    seed: int = option(0, "seed of the initial weights, batches, augmentation and dropout", low=0)
    checkpoint_every: int = option(50, "steps between checkpoints", above=0)
    keep_checkpoints: int = option(2, "newest checkpoints kept (0: all)", low=0)

    def check(self) -> None:
        require(self.batch_size_start <= self.batch_size, "batch_size_start must be between 0 and batch_size")
        require(self.unmasked_steps <= self.steps, "unmasked_steps must be between 0 and steps")


@dataclass
class AugmentConfig:
    crop_scale_min: float = option(0.5, "random resized crop keeps between this share of the area and all of it",
                                   above=0, high=1)
    flip: bool = option(True, "random horizontal flips")
    jitter: float = option(0.2, "colour jitter strength for brightness, contrast and saturation", low=0)


@dataclass
class Config:
    LABEL: ClassVar[str] = "training"
    model: ModelConfig = section(ModelConfig)
    train: TrainConfig = section(TrainConfig)
    augment: AugmentConfig = section(AugmentConfig, flag_prefix="augment-")

    def to_dict(self) -> dict:
        return to_dict(self)


@dataclass
class DistillConfig:
    LABEL: ClassVar[str] = "distill"
    epochs: int = option(8, "passes over the strings", above=0)
    batch_size: int = option(256, "strings per step", above=0)
    lr: float = option(2e-3, "peak learning rate (one-cycle schedule)", above=0)
    hidden: int = option(1024, "width of the student's MLP", above=0)
    queries_per_title: int = option(3, "query-like strings cut from each train title, besides the title itself",
                                    low=0)
    seed: int = option(0, "seed of the strings and of the student's start", low=0)
    threads: int = option(0, "torch threads; 0 leaves the process's setting alone", low=0)


def load_config(name_or_file: str | Path) -> Config:
    """A training recipe shipped with eclip (`list_configs("train")`: tiny, small, b32-bert, clip-b32, siglip-b16)
    or a .toml/.json file (a RUN_DIR's config.json included)."""
    return load(Config, config_path("train", name_or_file))
