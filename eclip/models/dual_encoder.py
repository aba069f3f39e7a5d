"""The e-CLIP dual encoder: image and text towers, linear projections to a shared space, L2-normalized,
and a learnable temperature (stored as log(1/T), clamped) plus a logit bias used by the SigLIP objective."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from eclip.models.char_ngrams import CharNgrams
from eclip.models.text import TextEncoder, TextProcessor
from eclip.models.vit import VisionTransformer
from eclip.models.config import ModelConfig


class DualEncoder(nn.Module):
    def __init__(self, config: ModelConfig, text_encoder: TextEncoder, processor: TextProcessor,
                 visual: nn.Module | None = None):
        """`visual`: a pretrained image tower (`PretrainedVisionTower`); by default the from-scratch ViT."""
        super().__init__()
        self.config = config
        self.visual = visual if visual is not None else VisionTransformer(config.vision)
        self.text = text_encoder
        self.processor = processor  # titles -> token tensors, so callers need only the model
        self.image_projection = nn.Linear(self.visual.width, config.embed_dim, bias=False)
        self.text_projection = nn.Linear(text_encoder.width, config.embed_dim, bias=False)
        nn.init.normal_(self.image_projection.weight, std=self.visual.width ** -0.5)
        nn.init.normal_(self.text_projection.weight, std=text_encoder.width ** -0.5)
        self.lexical = None
        if config.text.lexical:  # starts at zero: the text vector begins as the tower's alone
            self.lexical = nn.Embedding(text_encoder.bert.config.vocab_size, config.embed_dim)
            nn.init.zeros_(self.lexical.weight)
        self.char_ngrams = (CharNgrams(processor.tokenizer, config.text.char_ngram_buckets, config.embed_dim)
                            if config.text.char_ngram_buckets else None)
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1 / config.init_temperature)))
        self.logit_bias = nn.Parameter(torch.tensor(config.init_logit_bias))

    @property
    def temperature(self) -> float:
        return math.exp(-self.logit_scale.item())

    def clamp_logit_scale(self) -> None:
        with torch.no_grad():
            self.logit_scale.clamp_(0, math.log(self.config.max_logit_scale))

    def encode_image(self, pixels: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.image_projection(self.visual(pixels)), dim=-1)  # (B, D)

    def encode_text(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return self.project_text(self.text(input_ids, attention_mask), input_ids, attention_mask)  # (B, D)

    def project_text(self, text_features: torch.Tensor, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                     ngram_vectors: torch.Tensor | None = None) -> torch.Tensor:
        """Pooled text-tower features (B, W) and the title's tokens (B, L) -> (B, D): all that trains when the
        text tower is locked. `ngram_vectors` (B, D): the n-gram path's output when computed elsewhere (an
        exported graph, which cannot hash strings)."""
        text = self.text_projection(text_features)  # (B, D)
        if self.lexical is not None:
            mask = attention_mask.unsqueeze(-1).to(text.dtype)  # (B, L, 1)
            text = text + (self.lexical(input_ids) * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1)
        if self.char_ngrams is not None:
            if ngram_vectors is None:
                ngram_vectors = self.char_ngrams(input_ids, attention_mask)
            text = text + ngram_vectors.to(text.dtype)
        return F.normalize(text, dim=-1)

    def forward(self, pixels: torch.Tensor, input_ids: torch.Tensor | None = None,
                attention_mask: torch.Tensor | None = None, text_features: torch.Tensor | None = None,
                second_view: torch.Tensor | None = None) -> tuple[torch.Tensor, ...]:
        """-> (image (B, D), text (B, D)) and, given a second augmented view, its image embedding (B, D).
        The text comes as token ids and mask, with the cached features of a locked text tower when it has them."""
        text = (self.project_text(text_features, input_ids, attention_mask) if text_features is not None
                else self.encode_text(input_ids, attention_mask))
        if second_view is None:
            return self.encode_image(pixels), text
        images = self.encode_image(torch.cat([pixels, second_view]))  # one pass for both views
        return images[:len(pixels)], text, images[len(pixels):]
