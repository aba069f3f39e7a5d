"""Helpers for the training tests: small deterministic dual encoders and batches (no shared data, no pretrained
weights), and rewritten copies of a DATA_DIR."""

from __future__ import annotations

import shutil
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import torch

from eclip.data.store import FEATURES
from eclip.models import DualEncoder
from eclip.models.text import TextEncoder, TextProcessor, bert_from_config, train_wordpiece
from eclip.models.config import ModelConfig, TextConfig, VisionConfig
from eclip.train.config import Config, TrainConfig

VOCAB = 64
WORDPIECE_TITLES = ["Reebok Men Black Sports Shoes", "Baggit Women Brown Handbag", "Ray-Ban Unisex Sunglasses"] * 5


def tiny_model(seed: int = 0, dropout: float = 0.1, stem: str = "patch", mask_ratio: float = 0.0,
               lexical: bool = False, char_ngram_buckets: int = 0) -> DualEncoder:
    """A 16 px ViT and a 2-layer BERT over a fixed 64-token vocabulary: the same weights in every process."""
    torch.manual_seed(seed)
    config = ModelConfig(embed_dim=16, vision=VisionConfig(image_size=16, patch_size=4, stem=stem, width=32, depth=2,
                                                           heads=2, dropout=dropout, mask_ratio=mask_ratio),
                         text=TextConfig(lexical=lexical, char_ngram_buckets=char_ngram_buckets))
    bert = bert_from_config(dict(model_type="bert", vocab_size=VOCAB, hidden_size=32, num_hidden_layers=2,
                                 num_attention_heads=2, intermediate_size=64, max_position_embeddings=32,
                                 hidden_dropout_prob=dropout, attention_probs_dropout_prob=dropout))
    # The character n-gram path reads words from the vocabulary; the other paths need no tokenizer.
    processor = TextProcessor(train_wordpiece(WORDPIECE_TITLES, VOCAB), 10) if char_ngram_buckets else None
    return DualEncoder(config, TextEncoder(bert, "mean"), processor=processor)


def small_config(**train) -> Config:
    """Seconds per step on CPU: a 16 px ViT and a from-scratch BERT on a WordPiece vocabulary of the titles."""
    return Config(
        model=ModelConfig(embed_dim=16,
                          vision=VisionConfig(image_size=16, patch_size=8, width=32, depth=1, heads=2, dropout=0.1),
                          text=TextConfig(model="scratch", vocab_size=300, width=32, depth=1, heads=2, max_length=16)),
        train=TrainConfig(**{"steps": 4, "batch_size": 32, "batch_size_start": 16, "batch_schedule": "cosine",
                             "micro_batch_size": 8, "warmup_steps": 1, "checkpoint_every": 1, "keep_checkpoints": 5,
                             "threads": 1, **train}))


def tiny_batch(size: int, seed: int = 1, groups: list[int] | None = None) -> dict[str, torch.Tensor]:
    """Random pixels and token ids, titles of 3 to 10 tokens padded to 10."""
    generator = torch.Generator().manual_seed(seed)
    lengths = torch.randint(3, 11, (size,), generator=generator)
    attention_mask = (torch.arange(10)[None, :] < lengths[:, None]).long()
    input_ids = torch.randint(5, VOCAB, (size, 10), generator=generator) * attention_mask
    return {"pixels": torch.randn(size, 3, 16, 16, generator=generator), "input_ids": input_ids,
            "attention_mask": attention_mask,
            "groups": torch.tensor(groups if groups is not None else list(range(size)))}


def split(batch: dict[str, torch.Tensor], size: int) -> list[dict[str, torch.Tensor]]:
    return [{key: value[start:start + size] for key, value in batch.items() if key != "groups"}
            for start in range(0, len(batch["pixels"]), size)]


def gradients(model) -> dict[str, torch.Tensor]:
    return {name: p.grad.detach().clone() for name, p in model.named_parameters() if p.grad is not None}


def max_relative_error(got: dict[str, torch.Tensor], expected: dict[str, torch.Tensor]) -> float:
    """Largest ||got - expected|| / ||expected|| over parameters. The floor of 1e-5 on the norm covers gradients
    that are zero in exact arithmetic (attention key biases: softmax ignores them) but ~1e-11 in float32."""
    assert got.keys() == expected.keys()
    return max(float((got[n] - expected[n]).norm() / expected[n].norm().clamp(min=1e-5)) for n in expected)


def rewritten_copy(data_dir: Path, out: Path, change) -> Path:
    """A copy of DATA_DIR whose shards hold `change(table)`."""
    shutil.copytree(data_dir, out, ignore=shutil.ignore_patterns(FEATURES))  # derived from the old shards
    shards = sorted((out / "shards").glob("*.parquet"))
    table = pa.concat_tables(pq.read_table(path) for path in shards)
    for path in shards:
        path.unlink()
    pq.write_table(change(table), out / "shards" / "part-00000.parquet")
    return out


def resharded_copy(data_dir: Path, out: Path, shards: int, row_group_rows: int) -> Path:
    """A copy of DATA_DIR with its products in `shards` shards of row groups of `row_group_rows` rows (a big
    catalogue's layout in miniature, for the stream's windows and process shares)."""
    shutil.copytree(data_dir, out, ignore=shutil.ignore_patterns(FEATURES))  # derived from the old shards
    paths = sorted((out / "shards").glob("*.parquet"))
    table = pa.concat_tables(pq.read_table(path) for path in paths)
    for path in paths:
        path.unlink()
    per_shard = -(-table.num_rows // shards)
    for index in range(shards):
        pq.write_table(table.slice(index * per_shard, per_shard), out / "shards" / f"part-{index:05d}.parquet",
                       row_group_size=row_group_rows)
    return out
