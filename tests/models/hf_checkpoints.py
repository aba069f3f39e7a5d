"""Tiny randomly initialised Hugging Face checkpoints, written by the tests themselves (nothing is downloaded):
CLIP and SigLIP dual encoders, a ViT, an XLM-RoBERTa, each saved with `save_pretrained`, a tokenizer.json and,
for the image towers, a preprocessor_config.json like the hub's."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from eclip.models.text import train_wordpiece

TITLES = ["Reebok Men Black Sports Shoes", "Baggit Women Brown Handbag", "Ray-Ban Unisex Sunglasses",
          "Titan Women Silver Watch", "Puma Men Black Shoes", "Nike Women Pink Sports Bra",
          "나이키 러닝화 블랙"] * 4
VOCAB = 120
TEXT = dict(vocab_size=VOCAB, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
            max_position_embeddings=16)
VISION = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2, image_size=32,
              patch_size=8)
PROCESSORS = {  # as the hub's CLIP, SigLIP and ViT processor configs state them
    "clip": {"image_mean": [0.48145466, 0.4578275, 0.40821073], "image_std": [0.26862954, 0.26130258, 0.27577711],
             "resample": 3, "size": {"shortest_edge": 32}, "crop_size": {"height": 32, "width": 32}},
    "siglip": {"image_mean": [0.5, 0.5, 0.5], "image_std": [0.5, 0.5, 0.5], "resample": 3,
               "size": {"height": 32, "width": 32}},
    "vit": {"image_mean": [0.5, 0.5, 0.5], "image_std": [0.5, 0.5, 0.5], "resample": 2,
            "size": {"height": 32, "width": 32}},
}


def _tokenizer(folder: Path) -> dict:
    """A WordPiece tokenizer of the titles, its special tokens' ids for the model config."""
    tokenizer = train_wordpiece(TITLES, VOCAB)
    tokenizer.save(str(folder / "tokenizer.json"))
    (folder / "tokenizer_config.json").write_text(json.dumps({"pad_token": "[PAD]"}))
    return dict(pad_token_id=tokenizer.token_to_id("[PAD]"), bos_token_id=tokenizer.token_to_id("[CLS]"),
                eos_token_id=tokenizer.token_to_id("[SEP]"))


def save_checkpoint(kind: str, folder: Path, seed: int = 0, vision_changes: dict | None = None, **changes) -> Path:
    """kind: clip, siglip (whole dual encoders), vit, xlm-roberta; `changes` edit the text config,
    `vision_changes` the image tower's."""
    import transformers

    folder.mkdir(parents=True)
    torch.manual_seed(seed)
    special = _tokenizer(folder) if kind != "vit" else {}
    text = {**TEXT, **special, **changes}
    vision = {**VISION, **(vision_changes or {})}
    if kind == "clip":
        model = transformers.CLIPModel(transformers.CLIPConfig(text_config=text, vision_config=vision,
                                                               projection_dim=24))
    elif kind == "siglip":
        model = transformers.SiglipModel(transformers.SiglipConfig(text_config=text, vision_config=vision))
    elif kind == "vit":
        model = transformers.ViTModel(transformers.ViTConfig(**vision), add_pooling_layer=False)
    else:
        model = transformers.XLMRobertaModel(transformers.XLMRobertaConfig(
            **{**text, "max_position_embeddings": 40}))
    with torch.no_grad():  # away from the initialisation, so that copying the weights is what makes outputs equal
        for parameter in model.parameters():
            parameter.add_(0.02 * torch.randn_like(parameter))
    model.save_pretrained(folder)
    if kind in PROCESSORS:
        (folder / "preprocessor_config.json").write_text(json.dumps(PROCESSORS[kind]))
    return folder
