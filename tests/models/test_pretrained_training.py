"""Training from Hugging Face towers goes through everything the from-scratch towers do: `eclip train` steps with
each objective and gradient caching on real fashion-dev products, an exact resume, the checkpoint's preprocessing
in the RUN_DIR's config, and gradient caching equal to the full batch with the HF towers' dropout on."""

from __future__ import annotations

import json
import math

import pytest
import torch
from safetensors.torch import load_file

from eclip.models import build_model, load_model
from eclip.models.config import ModelConfig
from eclip.train.config import Config, TrainConfig
from eclip.train.loop import train
from eclip.train.loss import Objective
from tests.models.hf_checkpoints import PROCESSORS, TITLES, save_checkpoint
from tests.train.test_train_gradcache import cached_gradients, full_batch_gradients
from tests.train.train_helpers import max_relative_error, split


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("hf-train")
    dropout = {"attention_dropout": 0.1}
    return {"clip": save_checkpoint("clip", root / "clip"), "siglip": save_checkpoint("siglip", root / "siglip"),
            "clip-dropout": save_checkpoint("clip", root / "clip-dropout", vision_changes=dropout, **dropout)}


def hf_config(init, objective: str, steps: int = 2) -> Config:
    return Config(model=ModelConfig(init=str(init)),
                  train=TrainConfig(objective=objective, steps=steps, batch_size=16, micro_batch_size=8,
                                    batch_size_multiple=8, warmup_steps=1, checkpoint_every=1, threads=1,
                                    val_every=0))  # the last step kept: these tests check that the steps moved the weights


@pytest.mark.parametrize("kind, objective", [("clip", "clip"), ("clip", "eclip"), ("siglip", "siglip")])
def test_train_steps_from_a_pretrained_dual_encoder(prepared_fashion, checkpoints, tmp_path, kind, objective):
    record = train(prepared_fashion, tmp_path / "run", hf_config(checkpoints[kind], objective))
    assert record["step"] == 2 and record["micro_batches"] == 2 and math.isfinite(record["loss"])
    saved = json.loads((tmp_path / "run" / "config.json").read_text())["model"]
    assert saved["vision"]["image_size"] == 32 and saved["vision"]["image_mean"] == PROCESSORS[kind]["image_mean"]
    model, _, _ = load_model(tmp_path / "run")
    start, _ = build_model(ModelConfig(init=str(checkpoints[kind])))
    trained = load_file(str(tmp_path / "run" / "model.safetensors"))
    moved = [name for name, value in start.state_dict().items() if not torch.equal(value, trained[name])]
    assert any(name.startswith("visual.model.") for name in moved) and "text_projection.weight" in moved
    assert ("logit_bias" in moved) == (objective == "siglip")  # the bias learns under the sigmoid loss only


def test_a_resumed_run_from_a_pretrained_model_ends_with_the_same_weights(prepared_fashion, checkpoints, tmp_path):
    config = hf_config(checkpoints["clip"], "eclip", steps=3)
    train(prepared_fashion, tmp_path / "straight", config)

    def stop_after_two(step):
        if step == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train(prepared_fashion, tmp_path / "resumed", config, on_step=stop_after_two)
    train(prepared_fashion, tmp_path / "resumed", config, resume=True)  # as given, not resolved: config.json rules
    straight = load_file(str(tmp_path / "straight" / "model.safetensors"))
    again = load_file(str(tmp_path / "resumed" / "model.safetensors"))
    assert all(torch.equal(straight[name], again[name]) for name in straight)


@pytest.mark.parametrize("objective", ["eclip", "siglip"])
def test_gradient_caching_is_exact_with_hf_towers_and_dropout(checkpoints, objective):
    model, _ = build_model(ModelConfig(init=str(checkpoints["clip-dropout"])))
    model.train()
    objective = Objective(objective)
    model.logit_bias.requires_grad_(objective.name == "siglip")
    input_ids, attention_mask = model.processor(TITLES[:12])
    batch = {"pixels": torch.randn(12, 3, 32, 32, generator=torch.Generator().manual_seed(1)),
             "input_ids": input_ids, "attention_mask": attention_mask,
             "groups": torch.tensor([0, 0, 1, 2, 2, 2, 3, 4, 5, 5, 6, 7])}
    micro_batches = split(batch, 4)
    expected = full_batch_gradients(model, batch, objective, micro_batches, seed=7)
    got, _ = cached_gradients(model, batch, objective, micro_batches, seed=7)
    assert max_relative_error(got, expected) < 1e-5
    # dropout is on: another seed gives other gradients, so the equality above is the replay's doing
    other = full_batch_gradients(model, batch, objective, micro_batches, seed=8)
    assert max_relative_error(other, expected) > 1e-3


@pytest.mark.parametrize("name, kind, pooling, max_length", [("clip-b32", "clip", "eos", 16),
                                                             ("siglip-b16", "siglip", "pooler", 16)])
def test_the_shipped_gpu_recipes_resolve_from_a_local_checkpoint(checkpoints, name, kind, pooling, max_length):
    """`--set model.init=PATH`, as the recipes say where no network is: the recipe's own values stay, the
    checkpoint's fill the rest (the tiny checkpoints have 16 text positions)."""
    from eclip.train.config import load_config

    config = load_config(name)
    config.model.init = str(checkpoints[kind])
    model, _ = build_model(config.model)
    assert (config.model.text.pooling, config.model.text.max_length, config.model.vision.image_size) == (
        pooling, max_length, 32)
    assert model.visual.model.config.model_type == f"{kind}_vision_model"
