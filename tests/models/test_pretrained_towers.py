"""Towers started from Hugging Face checkpoints (tiny random ones the tests save): each tower's features equal the
HF model's own forward; a dual encoder from a CLIPModel / SiglipModel gives the checkpoint's own logits at step 0;
the checkpoint's preprocessing reaches inference; a RUN_DIR of such a model loads without the checkpoint; bad
checkpoints are refused in one line."""

from __future__ import annotations

import json

import pytest
import torch
import transformers
from PIL import Image

from eclip.errors import EclipError
from eclip.models import MODEL_FILE, build_model, image_pixels, load_model, save_model, tokenize
from eclip.models.config import ModelConfig, TextConfig, VisionConfig
from eclip.train.checkpoint import save_weights
from eclip.train.config import Config
from tests.models.hf_checkpoints import PROCESSORS, TITLES, save_checkpoint

PIXELS = torch.randn(3, 3, 32, 32, generator=torch.Generator().manual_seed(0))


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("hf")
    return {kind: save_checkpoint(kind, root / kind) for kind in ("clip", "siglip", "vit", "xlm-roberta")}


def scratch_text() -> TextConfig:
    return TextConfig(model="scratch", vocab_size=200, width=32, depth=1, heads=2, max_length=16)


@pytest.mark.parametrize("kind, hf_class", [("clip", "CLIPVisionModel"), ("siglip", "SiglipVisionModel"),
                                            ("vit", "ViTModel")])
def test_image_tower_equals_the_checkpoints_own_forward_and_takes_its_preprocessing(checkpoints, kind, hf_class):
    config = ModelConfig(embed_dim=16, vision=VisionConfig(model=str(checkpoints[kind])), text=scratch_text())
    model, _ = build_model(config, TITLES)
    reference = getattr(transformers, hf_class).from_pretrained(checkpoints[kind]).eval()
    with torch.no_grad():
        output = reference(pixel_values=PIXELS)
        expected = output.last_hidden_state[:, 0] if kind == "vit" else output.pooler_output
        assert torch.allclose(model.visual.eval()(PIXELS), expected, atol=1e-5)
    processor = PROCESSORS[kind]
    assert (config.vision.image_size, config.vision.image_mean, config.vision.image_std, config.vision.resample) == (
        32, processor["image_mean"], processor["image_std"], {2: "bilinear", 3: "bicubic"}[processor["resample"]])
    white = image_pixels(model, [Image.new("RGB", (40, 20), (255, 255, 255))])  # (1, 3, 32, 32)
    expected_white = (1 - torch.tensor(processor["image_mean"])) / torch.tensor(processor["image_std"])
    assert white.shape == (1, 3, 32, 32)
    assert torch.allclose(white[0, :, 5, 5], expected_white, atol=1e-6)


@pytest.mark.parametrize("kind", ["clip", "siglip"])
def test_a_dual_encoder_from_the_checkpoint_gives_its_logits_at_step_0(checkpoints, kind):
    config = ModelConfig(init=str(checkpoints[kind]))
    model, _ = build_model(config)
    model.eval()
    input_ids, attention_mask = tokenize(model, TITLES[:7])
    reference = getattr(transformers, {"clip": "CLIPModel", "siglip": "SiglipModel"}[kind]).from_pretrained(
        checkpoints[kind]).eval()
    with torch.no_grad():
        # SigLIP's own recipe: titles padded to the full length, no attention mask
        expected = reference(input_ids=input_ids, attention_mask=attention_mask if kind == "clip" else None,
                             pixel_values=PIXELS).logits_per_image  # (3, 7)
        logits = model.logit_scale.exp() * model.encode_image(PIXELS) @ model.encode_text(input_ids, attention_mask).T
        if kind == "siglip":
            logits = logits + model.logit_bias
    assert torch.allclose(logits, expected, atol=1e-5)
    assert (config.text.pooling, config.embed_dim) == ({"clip": "eos", "siglip": "pooler"}[kind],
                                                       {"clip": 24, "siglip": 32}[kind])
    if kind == "siglip":
        assert input_ids.shape[1] == 16 and config.text.max_length == 16  # padded to the checkpoint's length
        assert float(model.logit_bias.detach()) == pytest.approx(float(reference.logit_bias.detach()), abs=1e-6)
    else:
        assert input_ids.shape[1] < 16  # CLIP's causal tower: padding to the longest title is enough


def test_xlm_roberta_text_tower_equals_the_checkpoints_mean_pooled_forward(checkpoints):
    config = ModelConfig(embed_dim=16, vision=VisionConfig(image_size=16, patch_size=8, width=32, depth=1, heads=2),
                         text=TextConfig(model=str(checkpoints["xlm-roberta"]), max_length=16))
    model, hf_text_config = build_model(config)
    assert hf_text_config["model_type"] == "xlm-roberta"
    reference = transformers.XLMRobertaModel.from_pretrained(checkpoints["xlm-roberta"]).eval()
    input_ids, attention_mask = tokenize(model, TITLES[:7])
    assert model.processor.pad_id == 0  # the checkpoint tokenizer's own pad token
    with torch.no_grad():
        hidden = reference(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state  # (B, L, W)
        mask = attention_mask.unsqueeze(-1).float()
        expected = (hidden * mask).sum(dim=1) / mask.sum(dim=1)
        assert torch.allclose(model.text.eval()(input_ids, attention_mask), expected, atol=1e-5)


@pytest.mark.parametrize("kind", ["clip", "siglip"])
def test_a_run_dir_of_a_pretrained_model_loads_without_the_checkpoint(checkpoints, tmp_path, kind):
    import shutil

    checkpoint = shutil.copytree(checkpoints[kind], tmp_path / "checkpoint")
    config = ModelConfig(init=str(checkpoint))
    model, hf_text_config = build_model(config)
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.json").write_text(json.dumps(Config(model=config).to_dict()))
    save_model(model, hf_text_config, run)
    save_weights(model, run / MODEL_FILE)
    shutil.rmtree(checkpoint)
    loaded, processor, loaded_config = load_model(run)
    assert loaded_config.vision.image_mean == config.vision.image_mean and processor.fixed_length == (kind == "siglip")
    input_ids, attention_mask = tokenize(loaded, TITLES[:5])
    assert torch.equal(input_ids, tokenize(model, TITLES[:5])[0])
    with torch.no_grad():
        model.eval()
        assert torch.allclose(loaded.encode_image(PIXELS), model.encode_image(PIXELS), atol=1e-6)
        assert torch.allclose(loaded.encode_text(input_ids, attention_mask),
                              model.encode_text(input_ids, attention_mask), atol=1e-6)
    assert torch.equal(loaded.logit_scale, model.logit_scale)


def test_bad_checkpoints_are_refused_in_one_line(checkpoints, tmp_path):
    def refused(config: ModelConfig, match: str) -> str:
        with pytest.raises(EclipError, match=match) as error:
            build_model(config, TITLES)
        assert "\n" not in str(error.value)
        return str(error.value)

    # an architecture eclip has no image tower for
    refused(ModelConfig(vision=VisionConfig(model=str(checkpoints["xlm-roberta"])), text=scratch_text()),
            r"model.vision.model .*xlm-roberta: unsupported architecture 'xlm-roberta'; supported: clip, ")
    refused(ModelConfig(init=str(checkpoints["vit"])), r"model.init .*: unsupported architecture 'vit'")
    # a folder with a config but no weights
    empty = tmp_path / "no-weights"
    empty.mkdir()
    (empty / "config.json").write_text((checkpoints["vit"] / "config.json").read_text())
    refused(ModelConfig(vision=VisionConfig(model=str(empty)), text=scratch_text()),
            r"no-weights: no weights \(model.safetensors or pytorch_model.bin\)")
    # a SigLIP pair whose towers differ in width: there are no projections to bridge them
    narrow = save_checkpoint("siglip", tmp_path / "narrow", hidden_size=16, intermediate_size=32)
    refused(ModelConfig(init=str(narrow)), r"widths 32 and 16: a SigLIP checkpoint needs both equal")
    # a CLIP text pooling on a BERT-family tower
    refused(ModelConfig(vision=VisionConfig(image_size=16, patch_size=8, width=32, depth=1, heads=2),
                        text=TextConfig(model=str(checkpoints["xlm-roberta"]), pooling="eos")),
            r"text.pooling 'eos' needs a clip_text_model tower")
