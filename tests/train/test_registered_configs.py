"""Every training recipe shipped with eclip builds and trains one step (timm's test_models.py over list_models()):
each is scaled down to seconds on a CPU, keeping what makes it that recipe (objective, stem, pooling, masking, the
lexical and n-gram paths, a locked or trainable text tower, the SimCLR term), with a from-scratch text tower in
place of the pretrained one, which no test may download."""

from __future__ import annotations

import copy
import math

import pytest
import torch

from eclip.config import validate
from eclip.configs import list_configs
from eclip.models import build_model
from eclip.train.config import load_config
from eclip.train.loop import parameter_groups
from eclip.train.loss import Objective

TITLES = ["Reebok Men Black Sports Shoes", "Baggit Women Brown Handbag", "Ray-Ban Unisex Sunglasses",
          "Puma Men Blue Running T-shirt", "Titan Women Silver Watch", "Nike Men White Sneakers"] * 3


def scaled_down(name: str):
    config = copy.deepcopy(load_config(name))
    # A pretrained start is a download too: its towers are tested on tiny checkpoints in tests/models.
    config.model.init, config.model.vision.model = "", "scratch"
    vision, text = config.model.vision, config.model.text
    vision.patch_size = min(vision.patch_size, 8)  # a power of two, as a conv stem needs
    vision.image_size, vision.width, vision.depth, vision.heads = 2 * vision.patch_size, 32, 1, 2
    # Locked stays locked; a partly frozen tower keeps its lower layer of two fixed and its top one trainable.
    text.frozen_layers = -1 if text.frozen_layers < 0 else min(text.frozen_layers, 1)
    text.model, text.vocab_size, text.width, text.depth, text.heads = "scratch", 200, 32, 2, 2
    text.max_length = min(text.max_length, 16)
    text.char_ngram_buckets = min(text.char_ngram_buckets, 64)
    config.model.embed_dim = 16
    validate(config)
    return config


def test_every_recipe_is_listed():
    assert {"tiny", "small", "b32-bert", "clip-b32", "siglip-b16"} <= set(list_configs("train"))
    assert not {"default", "eval", "serve", "graph"} & set(list_configs("train"))  # defaults are not recipes


@pytest.mark.parametrize("name", list_configs("train"))
def test_recipe_builds_and_takes_a_training_step(name):
    config = scaled_down(name)
    torch.manual_seed(0)
    model, _ = build_model(config.model, TITLES)
    t = config.train
    model.logit_bias.requires_grad_(t.objective == "siglip")
    model.train()
    objective = Objective(t.objective, t.image_ssl_weight, t.ssl_temperature)
    size = config.model.vision.image_size
    pixels = torch.randn(6, 3, size, size)  # (B, 3, S, S)
    input_ids, attention_mask = model.processor(TITLES[:6])  # (B, L) each
    second_view = pixels.flip(-1) if objective.needs_second_view else None
    embeddings = model(pixels, input_ids, attention_mask, second_view=second_view)  # each (B, D)
    assert all(e.shape == (6, 16) for e in embeddings)
    groups = torch.tensor([0, 0, 1, 2, 3, 4])  # two offers of one product: eclip's soft labels act
    loss = objective(embeddings, [getattr(model, n) for n in objective.scalar_names], groups)
    assert math.isfinite(loss.item())

    optimizer = torch.optim.AdamW(parameter_groups(model, config), lr=t.lr)
    before = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
    loss.backward()
    trainable = {n: p for n, p in model.named_parameters() if p.requires_grad}
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in trainable.values())
    assert model.image_projection.weight.grad.abs().sum() > 0 and model.text_projection.weight.grad.abs().sum() > 0
    optimizer.step()
    assert not torch.equal(before["image_projection.weight"], model.image_projection.weight)
    text_trainable = [n for n in trainable if n.startswith("text.")]
    if config.model.text.frozen_layers < 0:
        assert text_trainable == []
    elif config.model.text.frozen_layers > 0:
        assert text_trainable and not any("embeddings" in n or ".layer.0." in n for n in text_trainable)
