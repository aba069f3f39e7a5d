"""`eclip export --format hf`: a folder that `transformers` loads, and its model card.

A model made only of standard parts (a CLIP image tower and CLIP text tower with its end-of-text pooling, no
word-piece or n-gram path) is written as one `CLIPModel`: `AutoModel.from_pretrained(EXPORT_DIR)` then gives
eclip's image and text vectors (`get_image_features` / `get_text_features`, L2-normalized) and its logits.
Any other model is written tower by tower, each in its standard class where it has one:

EXPORT_DIR (hf):
    config.json, model.safetensors    the CLIPModel (standard CLIP models only)
    text/                             otherwise: the text tower (BertModel, XLMRobertaModel, CLIPTextModel,
                                      SiglipTextModel), loadable with AutoModel; pool as `pooling` in eclip.json
    vision/                           otherwise, for a pretrained image tower: CLIPVisionModel, SiglipVisionModel
                                      or ViTModel with its preprocessor_config.json
    eclip_head.safetensors            otherwise: image_projection.weight (D, Wi), text_projection.weight (D, Wt),
                                      logit_scale, logit_bias (and the lexical / char-n-gram tables)
    eclip/                            always: the RUN_DIR's inference files, for `eclip.models.load_model`
                                      (the only form of a from-scratch ViT, which has no transformers class)
    eclip.json                        what went where, the pooling, the preprocessing contract
    tokenizer.json, tokenizer_config.json, preprocessor_config.json, README.md (the model card)
"""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import torch

from eclip.eval.report import headline_table
from eclip.export.onnx import contract
from eclip.models import (CONFIG_FILE, MODEL_FILE, TEXT_CONFIG_FILE, TOKENIZER_FILE, VISION_CONFIG_FILE, DualEncoder,
                          ImagePreprocessing, load_model)
from eclip.models.pretrained import PretrainedVisionTower
from eclip.runs.jsonl import read_jsonl

HEAD_FILE = "eclip_head.safetensors"
MANIFEST_FILE = "eclip.json"
CARD_FILE = "README.md"
PIL_FILTERS = {"bilinear": 2, "bicubic": 3}
OBJECTIVES = {"clip": "InfoNCE, one positive per row", "eclip": "InfoNCE with soft labels: offers of one catalog "
              "group are positives", "siglip": "pairwise sigmoid"}


def is_standard_clip(model: DualEncoder) -> bool:
    return (isinstance(model.visual, PretrainedVisionTower) and model.visual.model.config.model_type ==
            "clip_vision_model" and model.text.bert.config.model_type == "clip_text_model"
            and model.text.pooling == "eos" and model.lexical is None and model.char_ngrams is None)


def _clip_model(model: DualEncoder):
    import transformers

    config = transformers.CLIPConfig(text_config=model.text.bert.config.to_dict(),
                                     vision_config=model.visual.model.config.to_dict(),
                                     projection_dim=model.config.embed_dim,
                                     logit_scale_init_value=float(model.logit_scale.detach()))
    clip = transformers.CLIPModel(config)
    clip.text_model.load_state_dict(model.text.bert.state_dict())
    clip.vision_model.load_state_dict(model.visual.model.state_dict())
    with torch.no_grad():
        clip.visual_projection.weight.copy_(model.image_projection.weight)
        clip.text_projection.weight.copy_(model.text_projection.weight)
        clip.logit_scale.copy_(model.logit_scale)
    return clip


def _head_state(model: DualEncoder) -> dict:
    state = {"image_projection.weight": model.image_projection.weight, "text_projection.weight":
             model.text_projection.weight, "logit_scale": model.logit_scale, "logit_bias": model.logit_bias}
    if model.lexical is not None:
        state["lexical.weight"] = model.lexical.weight
    if model.char_ngrams is not None:
        state["char_ngrams.table.weight"] = model.char_ngrams.table.weight
    return {name: tensor.detach().contiguous() for name, tensor in state.items()}


def _tokenizer_files(run_dir: Path, model: DualEncoder, out: Path) -> None:
    shutil.copyfile(run_dir / TOKENIZER_FILE, out / TOKENIZER_FILE)
    pad = model.processor.tokenizer.id_to_token(model.processor.pad_id)
    (out / "tokenizer_config.json").write_text(json.dumps(
        {"tokenizer_class": "PreTrainedTokenizerFast", "pad_token": pad, "model_max_length": model.processor.max_length,
         "padding_side": "right"}, indent=1))


def _processor_file(preprocessing: ImagePreprocessing, path: Path) -> None:
    """transformers' CLIP processor settings; on a photo padded to a white square first (eclip's step) they
    resize it to the square eclip's towers saw."""
    path.write_text(json.dumps({
        "image_processor_type": "CLIPImageProcessor", "image_mean": list(preprocessing.mean),
        "image_std": list(preprocessing.std), "resample": PIL_FILTERS[preprocessing.resample],
        "size": {"shortest_edge": preprocessing.size}, "crop_size": {"height": preprocessing.size,
                                                                     "width": preprocessing.size},
        "do_resize": True, "do_center_crop": True, "do_normalize": True, "do_rescale": True,
        "rescale_factor": 1 / 255, "do_convert_rgb": True}, indent=1))


def export_hf(run_dir: Path, out: Path, report_dir: Path | None = None) -> dict:
    """Write RUN_DIR as a transformers folder into `out` (new or empty) -> the manifest (eclip.json)."""
    from safetensors.torch import save_file

    run_dir, out = Path(run_dir), Path(out)
    model, _, config = load_model(run_dir)
    out.mkdir(parents=True, exist_ok=True)
    preprocessing = ImagePreprocessing.of(config.vision)
    standard = is_standard_clip(model)
    if standard:
        _clip_model(model).save_pretrained(out)
    else:
        model.text.bert.save_pretrained(out / "text")
        _tokenizer_files(run_dir, model, out / "text")
        if isinstance(model.visual, PretrainedVisionTower):
            model.visual.model.save_pretrained(out / "vision")
            _processor_file(preprocessing, out / "vision" / "preprocessor_config.json")
        save_file(_head_state(model), str(out / HEAD_FILE))
    _tokenizer_files(run_dir, model, out)
    _processor_file(preprocessing, out / "preprocessor_config.json")
    (out / "eclip").mkdir(exist_ok=True)
    for name in (CONFIG_FILE, MODEL_FILE, TOKENIZER_FILE, TEXT_CONFIG_FILE, VISION_CONFIG_FILE):
        if (run_dir / name).is_file():
            shutil.copyfile(run_dir / name, out / "eclip" / name)
    manifest = {"layout": "CLIPModel" if standard else "towers", "text_pooling": config.text.pooling,
                "vision_pooling": None if config.vision.model == "scratch" else config.vision.pooling,
                "image_tower": "vision/" if isinstance(model.visual, PretrainedVisionTower) and not standard
                else None if not standard else "CLIPModel",
                "contract": contract(model, run_dir)}
    (out / MANIFEST_FILE).write_text(json.dumps(manifest, indent=1))
    report = None
    if report_dir is not None:
        report_file = Path(report_dir) / "report.json"
        report = json.loads(report_file.read_text()) if report_file.is_file() else None
    (out / CARD_FILE).write_text(model_card(run_dir, model, manifest, report))
    return manifest


def model_card(run_dir: Path, model: DualEncoder, manifest: dict, report: dict | None) -> str:
    """README.md: what the model was started from, trained on and with, how to load it, and how it scored."""
    saved = json.loads((run_dir / CONFIG_FILE).read_text())
    train, model_config = saved["train"], saved["model"]
    metrics = read_jsonl(run_dir / "metrics.jsonl") if (run_dir / "metrics.jsonl").is_file() else []
    last = metrics[-1] if metrics else {}
    starts = [f"- whole dual encoder: `{model_config['init']}`"] if model_config.get("init") else [
        f"- image tower: `{model_config['vision']['model']}`", f"- text tower: `{model_config['text']['model']}`"]
    signature = (report or {}).get("signature", {})
    prepared = signature.get("data_report", {})
    data = (f"`{signature['data']}` ({prepared.get('accepted', '?')} accepted products, "
            f"{prepared.get('splits', {}).get('train', '?')} in the train split it was trained on)"
            if signature.get("data") else
            "the DATA_DIR of `eclip train --data` (a RUN_DIR does not record its path; pass `--report` to name it)")
    usage = ("```python\nfrom transformers import AutoModel\nmodel = AutoModel.from_pretrained(PATH)  # CLIPModel\n"
             "image = model.get_image_features(pixel_values=pixels)        # normalize each row\n"
             "text = model.get_text_features(input_ids=ids, attention_mask=mask)\n```"
             if manifest["layout"] == "CLIPModel" else
             "```python\nfrom transformers import AutoModel\ntext_tower = AutoModel.from_pretrained(PATH + "
             "'/text')  # pool as eclip.json's text_pooling,\n# then text_projection.weight of "
             "eclip_head.safetensors; or, with eclip installed:\nfrom eclip.models import load_model, "
             "embed_texts\nmodel, _, _ = load_model(PATH + '/eclip')\n```")
    lines = [
        "---", "library_name: transformers", "tags: [eclip, e-clip, clip, product-search, e-commerce]", "---", "",
        f"# {run_dir.name}: product embeddings trained with eclip (e-CLIP)", "",
        f"Image and title vectors in one {model_config['embed_dim']}-d space, for product search, matching and "
        f"classification, trained with [eclip](https://arxiv.org/abs/2207.00208) from `{run_dir}`.", "",
        "## Started from", "", *starts, "", "## Data", "", data, "",
        "## Objective and config", "",
        f"- objective `{train['objective']}` ({OBJECTIVES.get(train['objective'], '')}), "
        f"{last.get('step', train['steps'])} steps, final loss {last.get('loss', '-')}",
        f"- batch {train['batch_size']} (from {train['batch_size_start'] or train['batch_size']}, "
        f"{train['batch_schedule']} schedule), micro-batch {train['micro_batch_size'] or train['batch_size']} (gradient caching), "
        f"lr {train['lr']} ({train['lr_schedule']}, text tower x{train['text_lr_scale']}), {train['precision']}",
        f"- category batches {train['category_batches']}, group batches {train['group_batches']}",
        f"- temperature {math.exp(-float(model.logit_scale.detach())):.4f}, text pooling `{manifest['text_pooling']}`",
        "", "## Preprocessing", "",
        f"Pad the photo to a white square (centred), resize to {manifest['contract']['image']['size']} px "
        f"({manifest['contract']['image']['resample']}), normalize with mean {manifest['contract']['image']['mean']} "
        f"and std {manifest['contract']['image']['std']}. Titles: tokenizer.json, at most "
        f"{manifest['contract']['text']['max_length']} tokens.", "",
        "## Use", "", usage, "", "## Scores", "",
        headline_table(report) if report else "No `eclip eval` report was given (`eclip export --report REPORT_DIR`).",
        "", "The full config is `eclip/config.json`.", ""]
    return "\n".join(lines)
