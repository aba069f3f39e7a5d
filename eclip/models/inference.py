"""The one-call inference API over a training RUN_DIR: build, save, load, embed (re-exported by `eclip.models`)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from eclip.config import from_dict
from eclip.errors import EclipError
from eclip.models.config import SCRATCH, ModelConfig
from eclip.models.dual_encoder import DualEncoder
from eclip.models.image_processing import ImagePreprocessing, eval_pixels
from eclip.models.pretrained import (VISION_CLASSES, PretrainedVisionTower, copy_dual_encoder_head, load_tower,
                                     resolve_pretrained, tower_from_config)
from eclip.models.text import TextProcessor, build_text_tower, text_tower_from_saved
from eclip.runs.provenance import WEIGHTS_FILE as MODEL_FILE

CONFIG_FILE = "config.json"
TOKENIZER_FILE = "tokenizer.json"
TEXT_CONFIG_FILE = "text_config.json"
VISION_CONFIG_FILE = "vision_config.json"  # only for a pretrained image tower: its Hugging Face architecture


def build_model(config: ModelConfig, titles=None) -> tuple[DualEncoder, dict]:
    """A fresh dual encoder -> (model, hf_text_config); `titles` train the tokenizer of a from-scratch text tower.
    Pretrained towers come from their checkpoints, and `config` is first filled from them (`resolve_pretrained`)."""
    resolve_pretrained(config)
    text_encoder, processor, hf_config = build_text_tower(config.text, titles)
    visual = None
    if config.vision.model != SCRATCH:
        visual = PretrainedVisionTower(load_tower(config.vision.model, VISION_CLASSES, "model.vision.model"),
                                       config.vision.pooling)
    model = DualEncoder(config, text_encoder, processor, visual)
    if config.init:
        copy_dual_encoder_head(model, config.init)
    return model, hf_config


def save_model(model: DualEncoder, hf_text_config: dict, run_dir: Path) -> None:
    """Tokenizer and tower architectures; the weights go to model.safetensors via `save_weights`."""
    model.processor.save(run_dir / TOKENIZER_FILE)
    (run_dir / TEXT_CONFIG_FILE).write_text(json.dumps(hf_text_config, indent=1, default=str))
    if isinstance(model.visual, PretrainedVisionTower):
        (run_dir / VISION_CONFIG_FILE).write_text(json.dumps(model.visual.hf_config, indent=1, default=str))


def restore_model(run_dir: Path, config: ModelConfig) -> DualEncoder:
    """The architecture a RUN_DIR records, with fresh weights (the caller loads them); no checkpoint is read."""
    text_encoder, processor = text_tower_from_saved(config.text, run_dir / TEXT_CONFIG_FILE, run_dir / TOKENIZER_FILE)
    visual = None
    if config.vision.model != SCRATCH:
        if not (run_dir / VISION_CONFIG_FILE).is_file():
            raise EclipError(f"{run_dir / VISION_CONFIG_FILE} is missing: {run_dir} is not a finished `eclip train` "
                             f"run")
        hf_config = json.loads((run_dir / VISION_CONFIG_FILE).read_text())
        visual = PretrainedVisionTower(tower_from_config(hf_config, VISION_CLASSES), config.vision.pooling)
    return DualEncoder(config, text_encoder, processor, visual)


def load_model(run_dir, device: str = "cpu") -> tuple[DualEncoder, TextProcessor, ModelConfig]:
    """A trained RUN_DIR -> (model in eval mode, text processor, model config)."""
    from safetensors.torch import load_file

    run_dir = Path(run_dir)
    for name in (CONFIG_FILE, TOKENIZER_FILE, TEXT_CONFIG_FILE, MODEL_FILE):
        if not (run_dir / name).is_file():
            raise EclipError(f"{run_dir / name} is missing: {run_dir} is not a finished `eclip train` run")
    config = from_dict(ModelConfig, json.loads((run_dir / CONFIG_FILE).read_text())["model"],
                       where=str(run_dir / CONFIG_FILE))
    model = restore_model(run_dir, config)
    processor = model.processor
    model.load_state_dict(load_file(str(run_dir / MODEL_FILE)))
    return model.to(device).eval(), processor, config


def tokenize(model: DualEncoder, titles: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
    """Titles -> input_ids (B, L), attention_mask (B, L)."""
    return model.processor(titles)


def image_pixels(model: DualEncoder, images) -> torch.Tensor:
    """PIL images, JPEG bytes or paths -> eval-time pixels (B, 3, S, S), no augmentation."""
    return eval_pixels(images, ImagePreprocessing.of(model.config.vision))


def _device(model: torch.nn.Module) -> torch.device:
    return next(model.parameters()).device


@torch.no_grad()
def embed_images(model: DualEncoder, images, batch_size: int = 256) -> np.ndarray:
    images = list(images)
    chunks = [model.encode_image(image_pixels(model, images[i:i + batch_size]).to(_device(model))).float().cpu()
              for i in range(0, len(images), batch_size)]
    return torch.cat(chunks).numpy() if chunks else np.zeros((0, model.config.embed_dim), np.float32)


@torch.no_grad()
def embed_texts(model: DualEncoder, titles, batch_size: int = 256, on_batch=None) -> np.ndarray:
    """Titles -> (N, D) unit rows in input order. They go through the tower in length order, so that a batch
    carries little padding; `on_batch(n)` is called after each batch of n (a progress bar's advance)."""
    titles = [str(title) for title in titles]
    vectors = np.zeros((len(titles), model.config.embed_dim), np.float32)
    order = np.argsort([len(title) for title in titles], kind="stable")
    for start in range(0, len(titles), batch_size):
        rows = order[start:start + batch_size]
        input_ids, attention_mask = tokenize(model, [titles[i] for i in rows])
        vectors[rows] = model.encode_text(input_ids.to(_device(model)), attention_mask.to(_device(model))).float().cpu()
        if on_batch is not None:
            on_batch(len(rows))
    return vectors
