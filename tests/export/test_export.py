"""`eclip export`: the ONNX graphs under onnxruntime give eclip's own vectors within 1e-4 at other batch sizes and
title lengths than they were traced with (dynamic axes), for HF towers and for the from-scratch towers with the
word-piece and n-gram paths; the HF folder loads with transformers' AutoModel and gives the same vectors; the model
card carries the config and the headline table; bad input is one line."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import transformers

from eclip.cli import main
from eclip.export import export
from eclip.models import MODEL_FILE, build_model, embed_images, embed_texts, image_pixels, load_model, save_model
from eclip.models.config import ModelConfig, TextConfig, VisionConfig
from eclip.train.checkpoint import save_weights
from eclip.train.config import Config, TrainConfig
from tests.models.hf_checkpoints import TITLES, save_checkpoint
from tests.models.test_models_inference import IMAGES

QUERIES = ["red", "Puma Men Black Shoes", "나이키 러닝화 블랙 남성용 초경량",
           "Baggit Women Brown Handbag with a long strap"]
REPORT = {"retrieval": {"t2i": {"r10": 0.61}, "i2t": {"r10": 0.58}}, "matching": {"f1": 0.97},
          "baselines": {"tfidf": {"matching": {"f1": 0.80}}},
          "signature": {"data": "/data/shop", "data_report": {"accepted": 20910, "splits": {"train": 16716}}}}


def write_run(run_dir, model_config: ModelConfig) -> torch.nn.Module:
    """A RUN_DIR as `eclip train` leaves it, every weight moved off its start."""
    torch.manual_seed(0)
    model, hf_text_config = build_model(model_config, TITLES)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.add_(0.01 * torch.randn_like(parameter))
    run_dir.mkdir()
    config = Config(model=model_config, train=TrainConfig(objective="eclip", steps=3))
    (run_dir / "config.json").write_text(json.dumps(config.to_dict()))
    (run_dir / "metrics.jsonl").write_text(json.dumps({"step": 3, "loss": 1.234}) + "\n")
    save_model(model, hf_text_config, run_dir)
    save_weights(model, run_dir / MODEL_FILE)
    return model.eval()


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("export")
    clip = save_checkpoint("clip", root / "clip-checkpoint")
    scratch = ModelConfig(embed_dim=16, vision=VisionConfig(image_size=16, patch_size=8, width=32, depth=1, heads=2),
                          text=TextConfig(model="scratch", vocab_size=200, width=32, depth=1, heads=2, max_length=16,
                                          lexical=True, char_ngram_buckets=64))
    for run, config in (("clip", ModelConfig(init=str(clip))), ("scratch", scratch),
                        ("siglip", ModelConfig(init=str(save_checkpoint("siglip", root / "siglip-checkpoint"))))):
        write_run(root / run, config)
    return {name: root / name for name in ("clip", "scratch", "siglip")}


@pytest.mark.parametrize("name", ["clip", "scratch", "siglip"])
def test_onnx_export_gives_eclips_vectors_under_onnxruntime(runs, tmp_path, name):
    from eclip.export.onnx import OnnxDualEncoder

    terms = export(runs[name], tmp_path / "onnx", "onnx")
    model, _, config = load_model(runs[name])
    assert terms["image"]["size"] == config.vision.image_size and terms["image"]["mean"] == config.vision.image_mean
    assert (terms["text"]["char_ngrams"] is not None) == (name == "scratch")
    onnx = OnnxDualEncoder(tmp_path / "onnx")
    images = IMAGES + IMAGES[:1]  # 5 images, 4 titles of 1 to 14 tokens: neither is the traced shape
    assert np.abs(onnx.embed_images(images) - embed_images(model, images)).max() < 1e-4
    assert np.abs(onnx.embed_texts(QUERIES) - embed_texts(model, QUERIES)).max() < 1e-4
    assert onnx.embed_texts([]).shape == (0, config.embed_dim)


def test_hf_export_of_a_clip_model_loads_as_a_clip_model_with_the_same_vectors(runs, tmp_path):
    report_dir = tmp_path / "report"
    report_dir.mkdir()
    (report_dir / "report.json").write_text(json.dumps(REPORT))
    manifest = export(runs["clip"], tmp_path / "hf", "hf", report_dir)
    assert manifest["layout"] == "CLIPModel"
    model, processor, _ = load_model(runs["clip"])
    loaded = transformers.AutoModel.from_pretrained(tmp_path / "hf").eval()
    assert type(loaded).__name__ == "CLIPModel"
    tokenizer = transformers.AutoTokenizer.from_pretrained(tmp_path / "hf")
    inputs = tokenizer(QUERIES, padding=True, truncation=True, return_tensors="pt")
    assert torch.equal(inputs["input_ids"], processor(QUERIES)[0])
    pixels = image_pixels(model, IMAGES)
    with torch.no_grad():
        text = torch.nn.functional.normalize(loaded.get_text_features(**inputs).pooler_output, dim=-1)
        image = torch.nn.functional.normalize(loaded.get_image_features(pixel_values=pixels).pooler_output, dim=-1)
    assert np.abs(text.numpy() - embed_texts(model, QUERIES)).max() < 1e-5
    assert np.abs(image.numpy() - embed_images(model, IMAGES)).max() < 1e-5
    assert float(loaded.logit_scale.detach()) == pytest.approx(float(model.logit_scale.detach()), abs=1e-6)
    card = (tmp_path / "hf" / "README.md").read_text()
    assert "objective `eclip`" in card and "3 steps, final loss 1.234" in card and "whole dual encoder" in card
    assert "`/data/shop` (20910 accepted products, 16716 in the train split it was trained on)" in card
    assert "| retrieval text->image | R@10 | 0.610 |" in card
    assert "| product matching (pairs) | F1 @ val threshold | 0.970 | 0.800 (tfidf) | 0.950 | pass |" in card


def test_hf_export_of_other_models_goes_tower_by_tower(runs, tmp_path):
    from safetensors.torch import load_file

    manifest = export(runs["scratch"], tmp_path / "hf", "hf")
    assert manifest["layout"] == "towers" and manifest["image_tower"] is None  # a from-scratch ViT: eclip/ only
    model, processor, _ = load_model(runs["scratch"])
    text_tower = transformers.AutoModel.from_pretrained(tmp_path / "hf" / "text").eval()
    assert type(text_tower).__name__ == "BertModel"
    head = load_file(str(tmp_path / "hf" / "eclip_head.safetensors"))
    input_ids, attention_mask = processor(QUERIES)
    with torch.no_grad():
        hidden = text_tower(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state  # (B, L, W)
        mask = attention_mask.unsqueeze(-1).float()
        projected = ((hidden * mask).sum(dim=1) / mask.sum(dim=1)) @ head["text_projection.weight"].T  # (B, D)
        assert torch.allclose(projected, model.text_projection(model.text(input_ids, attention_mask)), atol=1e-5)
    again, _, _ = load_model(tmp_path / "hf" / "eclip")
    assert np.array_equal(embed_texts(again, QUERIES), embed_texts(model, QUERIES))
    assert "No `eclip eval` report was given" in (tmp_path / "hf" / "README.md").read_text()


def test_bad_exports_are_one_line_and_leave_nothing(runs, tmp_path, capsys):
    unfinished = tmp_path / "unfinished"
    unfinished.mkdir()
    assert main(["export", str(unfinished), "--format", "onnx", "--out", str(tmp_path / "out")]) == 2
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and "is not a finished `eclip train` run" in error
    assert not (tmp_path / "out").exists() and not (tmp_path / ".out.building").exists()
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep")
    assert main(["export", str(runs["scratch"]), "--format", "hf", "--out", str(tmp_path / "mine")]) == 2
    assert "holds other files than `eclip export` writes (notes.txt)" in capsys.readouterr().err
    assert (tmp_path / "mine" / "notes.txt").read_text() == "keep"
