"""The text tower: a BERT-family encoder from a local or hub checkpoint, or from scratch with a WordPiece
tokenizer trained on the catalogue's titles; pooled by the mean over real tokens (e-CLIP) or [CLS] (ALIGN)."""

from __future__ import annotations

import importlib
import json
from pathlib import Path

import numpy as np
import torch
from torch import nn

from eclip.errors import EclipError
from eclip.train.config import TextConfig

SCRATCH = "scratch"
SPECIAL_TOKENS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]


class TextProcessor:
    """Titles -> padded token tensors with one `tokenizers.Tokenizer` (saved as tokenizer.json in a RUN_DIR)."""

    def __init__(self, tokenizer, max_length: int):
        self.tokenizer = tokenizer
        self.max_length = max_length
        self.pad_id = tokenizer.token_to_id("[PAD]") or 0
        tokenizer.no_padding()
        tokenizer.enable_truncation(max_length)

    @classmethod
    def load(cls, path: Path, max_length: int) -> TextProcessor:
        from tokenizers import Tokenizer
        return cls(Tokenizer.from_file(str(path)), max_length)

    def save(self, path: Path) -> None:
        self.tokenizer.save(str(path))

    def token_ids(self, titles: list[str]) -> list[list[int]]:
        return [encoding.ids for encoding in self.tokenizer.encode_batch(list(titles))]

    def pad(self, ids: list[list[int]]) -> tuple[torch.Tensor, torch.Tensor]:
        """-> input_ids (B, L), attention_mask (B, L) with L the longest row."""
        length = max(len(row) for row in ids)
        input_ids = np.full((len(ids), length), self.pad_id, dtype=np.int64)
        mask = np.zeros((len(ids), length), dtype=np.int64)
        for i, row in enumerate(ids):
            input_ids[i, :len(row)] = row
            mask[i, :len(row)] = 1
        return torch.from_numpy(input_ids), torch.from_numpy(mask)

    def __call__(self, titles: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        return self.pad(self.token_ids(titles))


def train_wordpiece(titles, vocab_size: int):
    """A lower-casing WordPiece tokenizer trained on `titles`. Accents are kept: BERT's accent stripping
    decomposes Hangul syllables into jamo (NFD), which would shred Korean titles."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers

    tokenizer = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tokenizer.normalizer = normalizers.Sequence([
        normalizers.NFKC(),
        normalizers.BertNormalizer(clean_text=True, handle_chinese_chars=True, strip_accents=False, lowercase=True)])
    tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tokenizer.decoder = decoders.WordPiece()
    trainer = trainers.WordPieceTrainer(vocab_size=vocab_size, special_tokens=SPECIAL_TOKENS, limit_alphabet=4000)
    tokenizer.train_from_iterator(titles, trainer)
    # The trainer numbers tokens in hash-map order, which changes from run to run: renumber them so that the
    # same titles always give the same ids (and so the same initial embedding rows).
    ordered = SPECIAL_TOKENS + sorted(set(tokenizer.get_vocab()) - set(SPECIAL_TOKENS))
    tokenizer.model = models.WordPiece({token: i for i, token in enumerate(ordered)}, unk_token="[UNK]")
    cls_id, sep_id = tokenizer.token_to_id("[CLS]"), tokenizer.token_to_id("[SEP]")
    tokenizer.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", special_tokens=[("[CLS]", cls_id), ("[SEP]", sep_id)])
    return tokenizer


def resolve_checkpoint(name: str) -> str:
    """A local folder as is; an installed model package (dashes or underscores) -> its bundled `model/`
    folder; anything else is returned unchanged as a hub name."""
    if Path(name).is_dir():
        return str(Path(name))
    try:
        package = importlib.import_module(name.replace("-", "_"))
    except ImportError:
        return name
    folder = Path(package.__file__).parent / "model"
    if not (folder / "config.json").is_file():
        raise EclipError(f"package {name!r} has no model/config.json: give a checkpoint folder or hub name instead")
    return str(folder)


class TextEncoder(nn.Module):
    """Token ids (B, L) and attention mask (B, L) -> pooled features (B, width)."""

    def __init__(self, bert: nn.Module, pooling: str):
        super().__init__()
        if pooling not in ("mean", "cls"):
            raise ValueError(f"text pooling must be 'mean' or 'cls', got {pooling!r}")
        self.bert = bert
        self.pooling = pooling
        if getattr(bert, "pooler", None) is not None:
            bert.pooler = None  # unused: a pooler without gradients would stall DDP

    @property
    def width(self) -> int:
        return self.bert.config.hidden_size

    @property
    def locked(self) -> bool:
        """Entirely frozen (LiT): its features are a fixed function of the title, computable once."""
        return not any(parameter.requires_grad for parameter in self.parameters())

    def freeze_lower(self, layers: int) -> None:
        """Freeze the embeddings and the lowest `layers` layers; -1 or at least the depth locks the tower."""
        if layers == 0:
            return
        self.bert.embeddings.requires_grad_(False)
        for layer in self.bert.encoder.layer[:layers if layers >= 0 else None]:
            layer.requires_grad_(False)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        hidden = self.bert(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state  # (B, L, W)
        if self.pooling == "cls":
            return hidden[:, 0]
        mask = attention_mask.unsqueeze(-1).to(hidden.dtype)  # (B, L, 1)
        return (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1)


def bert_from_config(hf_config: dict) -> nn.Module:
    from transformers import AutoConfig, AutoModel
    config = AutoConfig.for_model(**hf_config)
    return AutoModel.from_config(config, attn_implementation="sdpa")


def build_text_tower(config: TextConfig, titles=None) -> tuple[TextEncoder, TextProcessor, dict]:
    """-> (encoder, processor, hf_config); `titles` trains the tokenizer when `config.model` is "scratch"."""
    if config.model == SCRATCH:
        if titles is None:
            raise ValueError("a from-scratch text tower needs titles to train its tokenizer on")
        tokenizer = train_wordpiece(titles, config.vocab_size)
        hf_config = dict(model_type="bert", vocab_size=tokenizer.get_vocab_size(), hidden_size=config.width,
                         num_hidden_layers=config.depth, num_attention_heads=config.heads,
                         intermediate_size=4 * config.width, max_position_embeddings=max(64, config.max_length),
                         hidden_dropout_prob=config.dropout, attention_probs_dropout_prob=config.dropout,
                         pad_token_id=tokenizer.token_to_id("[PAD]"))
        bert = bert_from_config(hf_config)
    else:
        from transformers import AutoModel, AutoTokenizer
        source = resolve_checkpoint(config.model)
        try:
            bert = AutoModel.from_pretrained(source, attn_implementation="sdpa")
            tokenizer_file = Path(source) / "tokenizer.json"
            tokenizer = (TextProcessor.load(tokenizer_file, config.max_length).tokenizer if tokenizer_file.is_file()
                         else AutoTokenizer.from_pretrained(source).backend_tokenizer)
        except OSError as error:
            raise EclipError(f"cannot load text model {config.model!r} ({str(error).splitlines()[0]}): give a local "
                             f"checkpoint folder, an installed model package, or 'scratch'") from error
        hf_config = bert.config.to_dict()
    encoder = TextEncoder(bert, config.pooling)
    encoder.freeze_lower(config.frozen_layers)
    return encoder, TextProcessor(tokenizer, config.max_length), hf_config


def text_tower_from_saved(config: TextConfig, hf_config_file: Path, tokenizer_file: Path):
    """Rebuild the architecture saved in a RUN_DIR (weights are loaded afterwards)."""
    encoder = TextEncoder(bert_from_config(json.loads(hf_config_file.read_text())), config.pooling)
    return encoder, TextProcessor.load(tokenizer_file, config.max_length)
