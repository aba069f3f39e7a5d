"""The text tower: a BERT-family encoder (BERT, XLM-RoBERTa, MiniLM) or CLIP's or SigLIP's text model from a local
or hub checkpoint, or a BERT from scratch with a WordPiece tokenizer trained on the catalogue's titles; pooled by the
mean over real tokens (e-CLIP), [CLS] (ALIGN), CLIP's end-of-text token or SigLIP's pooler head."""

from __future__ import annotations

import heapq
import importlib
import json
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np
import torch
from torch import nn

from eclip.errors import EclipError
from eclip.models.config import SCRATCH, TextConfig
from eclip.models.pretrained import TEXT_CLASSES, checkpoint_config, load_tower, quiet_transformers, tower_from_config

SPECIAL_TOKENS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
MIN_BUCKET_ROWS = 32  # length buckets of the text tower's forward pass (TextEncoder.forward)
MAX_BUCKETS = 8


class TextProcessor:
    """Titles -> padded token tensors with one `tokenizers.Tokenizer` (saved as tokenizer.json in a RUN_DIR).

    The tokenizer's padding settings, saved with it, say the pad id (a pretrained tokenizer's own) and whether
    every row is padded to max_length (SigLIP's text tower was trained so, and reads its last position)."""

    def __init__(self, tokenizer, max_length: int):
        self.tokenizer = tokenizer
        self.max_length = max_length
        padding = tokenizer.padding
        self.pad_id = padding["pad_id"] if padding else tokenizer.token_to_id("[PAD]") or 0
        self.pad_token = padding["pad_token"] if padding else "[PAD]"
        self.fixed_length = bool(padding and padding["length"])
        tokenizer.no_padding()
        tokenizer.enable_truncation(max_length)

    @classmethod
    def load(cls, path: Path, max_length: int) -> TextProcessor:
        from tokenizers import Tokenizer
        return cls(Tokenizer.from_file(str(path)), max_length)

    def save(self, path: Path) -> None:
        self.tokenizer.enable_padding(pad_id=self.pad_id, pad_token=self.pad_token,
                                      length=self.max_length if self.fixed_length else None)
        self.tokenizer.save(str(path))
        self.tokenizer.no_padding()

    def token_ids(self, titles: list[str]) -> list[list[int]]:
        return [encoding.ids for encoding in self.tokenizer.encode_batch(list(titles))]

    def pad(self, ids: list[list[int]]) -> tuple[torch.Tensor, torch.Tensor]:
        """-> input_ids (B, L), attention_mask (B, L) with L the longest row (max_length for a fixed length)."""
        length = self.max_length if self.fixed_length else max(len(row) for row in ids)
        input_ids = np.full((len(ids), length), self.pad_id, dtype=np.int64)
        mask = np.zeros((len(ids), length), dtype=np.int64)
        for i, row in enumerate(ids):
            input_ids[i, :len(row)] = row
            mask[i, :len(row)] = 1
        return torch.from_numpy(input_ids), torch.from_numpy(mask)

    def __call__(self, titles: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        return self.pad(self.token_ids(titles))


def train_wordpiece(titles, vocab_size: int, max_alphabet: int = 4000):
    """A lower-casing WordPiece tokenizer learned from `titles`, the same vocabulary and ids on every run.

    The vocabulary is grown by BPE merges over the titles' words, as Hugging Face's WordPieceTrainer does, but
    ties are broken by the symbols themselves: that trainer breaks them in hash-map order, so its vocabulary
    changes from run to run and a seeded run cannot be repeated. Accents are kept: BERT's accent stripping
    decomposes Hangul syllables into jamo (NFD), which would shred Korean titles."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors

    normalizer = normalizers.Sequence([
        normalizers.NFKC(),
        normalizers.BertNormalizer(clean_text=True, handle_chinese_chars=True, strip_accents=False, lowercase=True)])
    pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    word_counts = Counter(word for title in titles
                          for word, _ in pre_tokenizer.pre_tokenize_str(normalizer.normalize_str(title)))
    vocab = wordpiece_vocab(word_counts, vocab_size, max_alphabet)

    tokenizer = Tokenizer(models.WordPiece({token: i for i, token in enumerate(vocab)}, unk_token="[UNK]"))
    tokenizer.normalizer = normalizer
    tokenizer.pre_tokenizer = pre_tokenizer
    tokenizer.decoder = decoders.WordPiece()
    tokenizer.add_special_tokens(SPECIAL_TOKENS)  # skipped when decoding
    tokenizer.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", special_tokens=[("[CLS]", vocab.index("[CLS]")), ("[SEP]", vocab.index("[SEP]"))])
    return tokenizer


def wordpiece_vocab(word_counts: Counter, vocab_size: int, max_alphabet: int) -> list[str]:
    """Special tokens, the `max_alphabet` most frequent characters (each also as a `##` continuation, so that
    any word spelled with them can be tokenized), then merged pieces, most frequent pair first."""
    char_counts = Counter()
    for word, count in word_counts.items():
        for char in word:
            char_counts[char] += count
    alphabet = sorted(sorted(char_counts), key=lambda char: -char_counts[char])[:max_alphabet]
    known = set(alphabet)
    vocab = SPECIAL_TOKENS + sorted(alphabet) + sorted("##" + char for char in alphabet)
    words = [([word[0]] + ["##" + char for char in word[1:]], count) for word, count in sorted(word_counts.items())
             if set(word) <= known]  # (symbols, count); words with a rare character stay [UNK]

    pair_counts, pair_words, touched = Counter(), defaultdict(set), set()

    def count_pairs(index: int, sign: int) -> None:
        symbols, count = words[index]
        for pair in zip(symbols, symbols[1:]):
            pair_counts[pair] += sign * count
            touched.add(pair)
            if sign > 0:
                pair_words[pair].add(index)

    for index in range(len(words)):
        count_pairs(index, +1)
    touched.clear()
    # Max-heap on (count, then the smaller pair first); stale entries are skipped when popped.
    heap = [(-count, pair) for pair, count in pair_counts.items()]
    heapq.heapify(heap)
    seen = set(vocab)
    while len(vocab) < vocab_size and heap:
        negative_count, pair = heapq.heappop(heap)
        if -negative_count != pair_counts[pair] or pair_counts[pair] <= 0:
            continue
        merged = pair[0] + pair[1].removeprefix("##")
        if merged not in seen:
            vocab.append(merged)
            seen.add(merged)
        for index in sorted(pair_words.pop(pair)):
            symbols, count = words[index]
            count_pairs(index, -1)
            merged_symbols, i = [], 0
            while i < len(symbols):
                if i + 1 < len(symbols) and (symbols[i], symbols[i + 1]) == pair:
                    merged_symbols.append(merged)
                    i += 2
                else:
                    merged_symbols.append(symbols[i])
                    i += 1
            words[index] = (merged_symbols, count)
            count_pairs(index, +1)
        del pair_counts[pair]
        touched.discard(pair)
        for changed in touched:  # counts that went up or down need a fresh entry
            if pair_counts[changed] > 0:
                heapq.heappush(heap, (-pair_counts[changed], changed))
        touched.clear()
    return vocab


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


# pooling -> the text models that have it; mean and cls work on any encoder
POOLING_MODELS = {"eos": ("clip_text_model",), "pooler": ("siglip_text_model",)}


class TextEncoder(nn.Module):
    """Token ids (B, L) and attention mask (B, L) -> pooled features (B, width). `bert` is any of the text models
    (the name stays for the weights' keys in saved runs)."""

    def __init__(self, bert: nn.Module, pooling: str):
        super().__init__()
        model_type = bert.config.model_type
        if pooling in POOLING_MODELS and model_type not in POOLING_MODELS[pooling]:
            raise EclipError(f"text.pooling {pooling!r} needs a {' or '.join(POOLING_MODELS[pooling])} tower, the "
                             f"text model is {model_type!r}: use mean or cls")
        self.bert = bert
        self.pooling = pooling
        # SigLIP reads the last position of a row padded to its full length, attending to the padding, as trained
        self.unmasked = model_type == "siglip_text_model"
        if getattr(bert, "pooler", None) is not None:
            bert.pooler = None  # unused: a pooler without gradients would stall DDP

    @property
    def width(self) -> int:
        config = self.bert.config
        if self.pooling == "pooler":  # SigLIP's head projects to its own size
            return getattr(config, "projection_size", config.hidden_size)
        return config.hidden_size

    @property
    def locked(self) -> bool:
        """Entirely frozen (LiT): its features are a fixed function of the title, computable once."""
        return not any(parameter.requires_grad for parameter in self.parameters())

    def freeze_lower(self, layers: int) -> None:
        """Freeze the embeddings and the lowest `layers` layers; -1 or at least the depth locks the tower."""
        if layers == 0:
            return
        self.bert.embeddings.requires_grad_(False)
        stack = getattr(self.bert.encoder, "layer", None) or self.bert.encoder.layers  # BERT-family or CLIP/SigLIP
        for layer in stack[:layers if layers >= 0 else None]:
            layer.requires_grad_(False)
        if layers < 0 or layers >= len(stack):  # the parts above the layers too, so the tower is locked
            self.bert.requires_grad_(False)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Rows are encoded in length buckets, each cut to its own longest title: catalogue titles are short
        (fashion-dev: 10 tokens on average, 30 at most), so a batch padded to its longest title is mostly
        padding, and a token the tower never sees costs nothing. Up to MAX_BUCKETS buckets of at least
        MIN_BUCKET_ROWS rows, so that matrix products stay large enough to run at full speed (a small batch is
        one bucket). Right padding only; any other mask goes through in one uncut pass."""
        rows = input_ids.shape[0]
        if self.unmasked:
            return self._encode(input_ids, attention_mask)
        if not rows or not bool((attention_mask[:, 1:] <= attention_mask[:, :-1]).all()):
            return self._encode(input_ids, attention_mask)
        lengths = attention_mask.sum(dim=1)  # (B,)
        order = torch.argsort(lengths, stable=True)  # (B,)
        pooled = []
        for bucket in order.tensor_split(max(1, min(MAX_BUCKETS, rows // MIN_BUCKET_ROWS))):
            longest = max(int(lengths[bucket].max()), 1)
            pooled.append(self._encode(input_ids[bucket, :longest], attention_mask[bucket, :longest]))
        return torch.cat(pooled)[torch.argsort(order)]  # (B, W) back in the input order

    def _encode(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        output = self.bert(input_ids=input_ids, attention_mask=None if self.unmasked else attention_mask)
        if self.pooling in POOLING_MODELS:
            return output.pooler_output  # (B, W)
        hidden = output.last_hidden_state  # (B, L, W)
        if self.pooling == "cls":
            return hidden[:, 0]
        mask = attention_mask.unsqueeze(-1).to(hidden.dtype)  # (B, L, 1)
        return (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1)


def bert_from_config(hf_config: dict) -> nn.Module:
    if hf_config.get("model_type") in TEXT_CLASSES:
        return tower_from_config(hf_config, TEXT_CLASSES)
    from transformers import AutoConfig, AutoModel
    config = AutoConfig.for_model(**hf_config)
    return AutoModel.from_config(config, attn_implementation="sdpa")


def _pretrained_text_model(source: str) -> nn.Module:
    """CLIP's and SigLIP's text towers (from their own or a whole CLIPModel / SiglipModel checkpoint) through
    their classes; any other encoder through AutoModel, as BERT, XLM-RoBERTa and MiniLM load."""
    if Path(source).is_dir() and checkpoint_config(source, "text.model").get("model_type") in TEXT_CLASSES:
        return load_tower(source, TEXT_CLASSES, "text.model")
    from transformers import AutoModel
    with quiet_transformers():
        model = AutoModel.from_pretrained(source, attn_implementation="sdpa")
    if model.config.model_type in ("clip", "siglip"):
        return load_tower(source, TEXT_CLASSES, "text.model")
    return model


def _pretrained_tokenizer(source: str, config: TextConfig, model_type: str):
    """The checkpoint's fast tokenizer with its pad id recorded (and SigLIP's padding to the full length)."""
    tokenizer_file = Path(source) / "tokenizer.json"
    if tokenizer_file.is_file():
        from tokenizers import Tokenizer
        tokenizer = Tokenizer.from_file(str(tokenizer_file))
        settings_file = Path(source) / "tokenizer_config.json"
        pad_token = json.loads(settings_file.read_text()).get("pad_token") if settings_file.is_file() else None
        pad_token = pad_token.get("content") if isinstance(pad_token, dict) else pad_token
        pad_id = tokenizer.token_to_id(pad_token) if pad_token else None
    else:
        from transformers import AutoTokenizer
        wrapper = AutoTokenizer.from_pretrained(source)
        tokenizer, pad_id = wrapper.backend_tokenizer, wrapper.pad_token_id
    if pad_id is None:
        pad_id = tokenizer.token_to_id("[PAD]") or 0
    tokenizer.enable_padding(pad_id=pad_id, pad_token=tokenizer.id_to_token(pad_id) or "[PAD]",
                             length=config.max_length if model_type == "siglip_text_model" else None)
    return tokenizer


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
        source = resolve_checkpoint(config.model)
        try:
            bert = _pretrained_text_model(source)
            tokenizer = _pretrained_tokenizer(source, config, bert.config.model_type)
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
