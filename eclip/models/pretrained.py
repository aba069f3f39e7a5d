"""Towers started from Hugging Face checkpoints: CLIP, SigLIP and ViT image towers, CLIP and SigLIP text towers
(BERT-family text towers load through `AutoModel` in `text.py`), and a whole dual encoder from a `CLIPModel` or
`SiglipModel` (projections, temperature, SigLIP's bias).

A checkpoint is read once, when a run starts (`resolve_pretrained` records its preprocessing and shapes in the
config, `build_model` copies its weights); a RUN_DIR then holds the architectures (`vision_config.json`,
`text_config.json`) and its own weights, so it loads without the checkpoint."""

from __future__ import annotations

import json
import math
from contextlib import contextmanager
from pathlib import Path

import torch
from torch import nn

from eclip.errors import EclipError
from eclip.models.config import SCRATCH, ModelConfig, VisionConfig

# model_type in a checkpoint's config.json -> the transformers class of its image or text tower
VISION_CLASSES = {"clip": "CLIPVisionModel", "clip_vision_model": "CLIPVisionModel",
                  "siglip": "SiglipVisionModel", "siglip_vision_model": "SiglipVisionModel", "vit": "ViTModel"}
TEXT_CLASSES = {"clip": "CLIPTextModel", "clip_text_model": "CLIPTextModel",
                "siglip": "SiglipTextModel", "siglip_text_model": "SiglipTextModel"}
DUAL_TYPES = ("clip", "siglip")
WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin",
                "pytorch_model.bin.index.json")
RESAMPLE_NAMES = {2: "bilinear", 3: "bicubic"}  # PIL's filter codes, as processor configs store them
# transformers' own defaults where a checkpoint has no preprocessor_config.json
DEFAULT_STATISTICS = {"clip": ([0.48145466, 0.4578275, 0.40821073], [0.26862954, 0.26130258, 0.27577711], "bicubic"),
                      "siglip": ([0.5, 0.5, 0.5], [0.5, 0.5, 0.5], "bicubic"),
                      "vit": ([0.5, 0.5, 0.5], [0.5, 0.5, 0.5], "bilinear")}


@contextmanager
def quiet_transformers():
    """transformers reports every unused key of a checkpoint read for one tower: expected here, so kept quiet."""
    from transformers.utils import logging
    level, bars = logging.get_verbosity(), logging.is_progress_bar_enabled()
    logging.set_verbosity_error()
    logging.disable_progress_bar()
    try:
        yield
    finally:
        logging.set_verbosity(level)
        if bars:
            logging.enable_progress_bar()


def checkpoint_config(source: str, what: str) -> dict:
    """config.json of a local checkpoint folder (or a hub name where a network is), checked to hold weights."""
    folder = Path(source)
    if folder.is_dir():
        if not (folder / "config.json").is_file():
            raise EclipError(f"{what} {source}: no config.json, not a Hugging Face checkpoint folder")
        if not any((folder / name).is_file() for name in WEIGHT_FILES):
            raise EclipError(f"{what} {source}: no weights ({' or '.join(WEIGHT_FILES[::2])}): save the model with "
                             f"save_pretrained, or give another folder")
        return json.loads((folder / "config.json").read_text())
    from transformers import AutoConfig
    try:
        with quiet_transformers():
            return AutoConfig.from_pretrained(source).to_dict()
    except (OSError, ValueError) as error:
        raise EclipError(f"cannot read {what} {source!r} ({str(error).splitlines()[0]}): give a local checkpoint "
                         f"folder") from error


def _tower_class(source: str, classes: dict, what: str, config: dict | None = None):
    import transformers
    model_type = (config or checkpoint_config(source, what)).get("model_type")
    if model_type not in classes:
        raise EclipError(f"{what} {source}: unsupported architecture {model_type!r}; supported: "
                         f"{', '.join(sorted(set(classes)))}")
    return getattr(transformers, classes[model_type])


def load_tower(source: str, classes: dict, what: str) -> nn.Module:
    cls = _tower_class(source, classes, what)
    kwargs = {"add_pooling_layer": False} if cls.__name__ == "ViTModel" else {}  # ViT's tanh pooler is unused
    try:
        with quiet_transformers():
            return cls.from_pretrained(source, attn_implementation="sdpa", **kwargs)
    except (OSError, ValueError) as error:
        raise EclipError(f"cannot load {what} {source!r} ({str(error).splitlines()[0]})") from error


def tower_from_config(hf_config: dict, classes: dict) -> nn.Module:
    """A tower's architecture saved in a RUN_DIR -> the module with fresh weights (loaded afterwards)."""
    import transformers
    cls = getattr(transformers, classes[hf_config["model_type"]])
    config = transformers.AutoConfig.for_model(**hf_config)
    kwargs = {"add_pooling_layer": False} if cls.__name__ == "ViTModel" else {}
    return cls._from_config(config, attn_implementation="sdpa", **kwargs)


class PretrainedVisionTower(nn.Module):
    """A CLIPVisionModel, SiglipVisionModel or ViTModel: pixels (B, 3, S, S) -> features (B, width). CLIP and
    SigLIP give their own pooled output (CLIP: the post-normed class token; SigLIP: its attention-pooling head),
    so that projections copied from the checkpoint see what they were trained on; ViT its class token or the
    mean over patches (`[model.vision] pooling`)."""

    def __init__(self, model: nn.Module, pooling: str):
        super().__init__()
        self.model = model
        self.pooling = pooling
        self.mask_ratio = 0.0  # FLIP masking is the from-scratch ViT's; the loop sets it for either tower

    @property
    def width(self) -> int:
        return self.model.config.hidden_size

    @property
    def hf_config(self) -> dict:
        return self.model.config.to_dict()

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        output = self.model(pixel_values=pixels)
        if self.model.config.model_type != "vit":
            return output.pooler_output  # (B, W)
        hidden = output.last_hidden_state  # (B, 1+P, W)
        return hidden[:, 0] if self.pooling == "cls" else hidden[:, 1:].mean(dim=1)


def _processor_config(source: str) -> dict:
    path = Path(source) / "preprocessor_config.json"
    return json.loads(path.read_text()) if path.is_file() else {}


def resolve_pretrained(config: ModelConfig) -> None:
    """Fill `config` in place from its checkpoints, so that the RUN_DIR's config.json says what the run used:
    `init` sets both towers and the dual encoder's own fields; a pretrained image tower sets image_size and the
    preprocessing its processor config states (mean, std, resize filter)."""
    if config.init:
        dual = checkpoint_config(config.init, "model.init")
        if dual.get("model_type") not in DUAL_TYPES:
            raise EclipError(f"model.init {config.init}: unsupported architecture {dual.get('model_type')!r}; "
                             f"supported: a CLIPModel or SiglipModel checkpoint")
        config.vision.model = config.text.model = config.init
        config.vision.pooling = "cls"
        text = dual.get("text_config", {})
        if dual["model_type"] == "clip":
            config.text.pooling = "eos"
            config.embed_dim = dual.get("projection_dim", 512)
        else:
            config.text.pooling = "pooler"
            config.embed_dim = text.get("projection_size", text.get("hidden_size"))
        positions = text.get("max_position_embeddings", 77 if dual["model_type"] == "clip" else 64)
        # SigLIP was trained on text padded to its full length, and reads the last position
        config.text.max_length = min(config.text.max_length, positions) if dual["model_type"] == "clip" else positions
    if config.vision.model != SCRATCH:
        resolve_vision(config.vision)


def resolve_for_run(config: ModelConfig, run_dir: Path, resuming: bool) -> None:
    """`resolve_pretrained` for a run starting; a resumed run of a pretrained model keeps the [model] its
    config.json recorded when it began (the architecture its checkpoints hold), the checkpoint not read again."""
    from eclip.config import from_dict

    saved_file = Path(run_dir) / "config.json"
    if resuming and saved_file.is_file():
        saved = from_dict(ModelConfig, json.loads(saved_file.read_text())["model"], where=str(saved_file))
        if saved.init or saved.vision.model != SCRATCH:
            vars(config).update(vars(saved))
            return
    resolve_pretrained(config)


def resolve_vision(vision: VisionConfig) -> None:
    tower = checkpoint_config(vision.model, "model.vision.model")
    cls = _tower_class(vision.model, VISION_CLASSES, "model.vision.model", tower)
    family = {"CLIPVisionModel": "clip", "SiglipVisionModel": "siglip", "ViTModel": "vit"}[cls.__name__]
    shapes = tower.get("vision_config", tower)
    mean, std, resample = DEFAULT_STATISTICS[family]
    processor = _processor_config(vision.model)
    vision.image_size = int(shapes.get("image_size", 224))
    vision.patch_size = int(shapes.get("patch_size", vision.patch_size))
    vision.width, vision.depth = shapes.get("hidden_size", vision.width), shapes.get("num_hidden_layers", vision.depth)
    vision.heads = shapes.get("num_attention_heads", vision.heads)
    vision.image_mean = [float(value) for value in processor.get("image_mean", mean)]
    vision.image_std = [float(value) for value in processor.get("image_std", std)]
    vision.resample = RESAMPLE_NAMES.get(processor.get("resample"), resample)


def copy_dual_encoder_head(model: nn.Module, source: str) -> None:
    """Projections, temperature and bias of a CLIPModel / SiglipModel checkpoint into `model` (a DualEncoder
    whose towers were loaded from the same checkpoint), so that step 0 gives the checkpoint's own similarities.
    SigLIP has no projections: they start as the identity."""
    from safetensors.torch import load_file

    state = _dual_state(source, load_file)
    image_weight = state.get("visual_projection.weight")
    text_weight = state.get("text_projection.weight")
    image_shape, text_shape = tuple(model.image_projection.weight.shape), tuple(model.text_projection.weight.shape)
    with torch.no_grad():
        if image_weight is None:  # SigLIP
            if image_shape[0] != image_shape[1] or text_shape[0] != text_shape[1]:
                raise EclipError(f"model.init {source}: its image and text towers have no projections and widths "
                                 f"{image_shape[1]} and {text_shape[1]}: a SigLIP checkpoint needs both equal to "
                                 f"model.embed_dim ({image_shape[0]})")
            model.image_projection.weight.copy_(torch.eye(image_shape[0]))
            model.text_projection.weight.copy_(torch.eye(text_shape[0]))
        else:
            for name, weight, shape in (("visual", image_weight, image_shape), ("text", text_weight, text_shape)):
                if tuple(weight.shape) != shape:
                    raise EclipError(f"model.init {source}: its {name} projection is {tuple(weight.shape)}, the "
                                     f"model's is {shape}: model.embed_dim must be the checkpoint's projection_dim")
            model.image_projection.weight.copy_(image_weight)
            model.text_projection.weight.copy_(text_weight)
        logit_scale = state["logit_scale"].reshape(())
        model.logit_scale.copy_(logit_scale)
        if "logit_bias" in state:
            model.logit_bias.copy_(state["logit_bias"].reshape(()))
    # the checkpoint's temperature must survive the clamp of the first step
    model.config.max_logit_scale = max(model.config.max_logit_scale, math.exp(float(logit_scale)) * (1 + 1e-6))
    model.config.init_temperature = math.exp(-float(logit_scale))


def _dual_state(source: str, load_file) -> dict:
    """The dual encoder's own tensors (projections, logit scale and bias) from the checkpoint's weights."""
    wanted = ("visual_projection.weight", "text_projection.weight", "logit_scale", "logit_bias")
    folder = Path(source)
    if not folder.is_dir():
        from transformers import AutoModel
        with quiet_transformers():
            full = AutoModel.from_pretrained(source).state_dict()
        return {name: full[name] for name in wanted if name in full}
    if (folder / "model.safetensors").is_file():
        state = load_file(str(folder / "model.safetensors"))
    elif (folder / "pytorch_model.bin").is_file():
        state = torch.load(folder / "pytorch_model.bin", map_location="cpu", weights_only=True)
    else:
        index = json.loads(next(folder / name for name in WEIGHT_FILES if (folder / name).is_file()).read_text())
        shards = {index["weight_map"][name] for name in wanted if name in index["weight_map"]}
        state = {}
        for shard in shards:
            state.update(load_file(str(folder / shard)) if shard.endswith(".safetensors")
                         else torch.load(folder / shard, map_location="cpu", weights_only=True))
    return {name: state[name] for name in wanted if name in state}
