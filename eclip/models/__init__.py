"""Model towers and the one-call inference API over a training RUN_DIR, a library that imports nothing of training,
data, evaluation, serving or the command line:

    model, processor, config = load_model("runs/tiny")
    image_vectors = embed_images(model, jpeg_bytes_or_pil_images, batch_size=256)   # (N, D) float32
    text_vectors = embed_texts(model, titles, batch_size=256)                      # (N, D) float32

The configs sit beside the towers (`eclip.models.config`); the training recipes that fill them ship in
`eclip/configs/train/` (`eclip.configs.list_configs("train")`). Names are loaded on first use, so that reading a
config does not import torch.
"""

from __future__ import annotations

import importlib

_EXPORTS = {
    "ModelConfig": "config", "TextConfig": "config", "VisionConfig": "config",
    "DualEncoder": "dual_encoder", "VisionTransformer": "vit", "TextProcessor": "text",
    "CONFIG_FILE": "inference", "MODEL_FILE": "inference", "TEXT_CONFIG_FILE": "inference",
    "TOKENIZER_FILE": "inference", "build_model": "inference", "embed_images": "inference",
    "embed_texts": "inference", "image_pixels": "inference", "load_model": "inference", "save_model": "inference",
    "tokenize": "inference", "restore_model": "inference", "VISION_CONFIG_FILE": "inference",
    "ImagePreprocessing": "image_processing",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
