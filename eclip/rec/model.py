"""BERT4Rec (Sun et al., CIKM 2019) and its SASRec-style causal twin: one Transformer, two attention masks.

Item representation: a learned ID embedding, plus (with content features) a linear projection of the item's
e-CLIP embedding. Items never seen in training have no usable ID embedding, so they are represented by their
content alone: with features the model can recommend them (inductive), without features it cannot (score -inf).
The output layer is tied to the same item representations.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from eclip.config import option, require
from eclip.rec.data import PAD, Batch, pad_left


@dataclass
class ModelConfig:
    dim: int = option(64, "item and hidden dimension", low=1)
    layers: int = option(2, "Transformer blocks", low=1)
    heads: int = option(2, "attention heads; each takes dim / heads", low=1)
    max_len: int = option(50, "last-N truncation; the [mask] appended at inference counts as one of the N", low=1)
    dropout: float = option(0.3, "dropout of the blocks and the embeddings", low=0, below=1)
    attention_dropout: float = option(0.3, "dropout of the attention weights", low=0, below=1)
    causal: bool = option(False, "false: BERT4Rec (bidirectional, Cloze); true: SASRec-style (causal, next item)")
    id_dropout: float = option(0.0, "with content features: share of items whose ID part is dropped per training "
                                    "step", low=0, below=1)
    # A large gain on Amazon Beauty (the shipped `beauty` recipe), a loss in short runs on small data
    # (docs/recommendation.md).
    embedding_norm: bool = option(False, "BERT's LayerNorm over item + position embeddings")

    def check(self) -> None:
        require(self.dim % self.heads == 0, f"dim {self.dim} is not divisible by heads {self.heads}; each head takes "
                                            "dim / heads")


class Block(nn.Module):
    """Pre-LayerNorm Transformer block with GELU feed-forward."""

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.heads = config.heads
        self.attention_dropout = config.attention_dropout
        self.norm1 = nn.LayerNorm(config.dim)
        self.qkv = nn.Linear(config.dim, 3 * config.dim)
        self.proj = nn.Linear(config.dim, config.dim)
        self.norm2 = nn.LayerNorm(config.dim)
        self.mlp = nn.Sequential(nn.Linear(config.dim, 4 * config.dim), nn.GELU(), nn.Linear(4 * config.dim, config.dim))
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        B, L, D = x.shape
        q, k, v = self.qkv(self.norm1(x)).view(B, L, 3, self.heads, D // self.heads).permute(2, 0, 3, 1, 4)  # (B, H, L, D/H)
        attended = F.scaled_dot_product_attention(q, k, v, attn_mask=mask,
                                                  dropout_p=self.attention_dropout if self.training else 0.0)
        x = x + self.dropout(self.proj(attended.transpose(1, 2).reshape(B, L, D)))
        return x + self.dropout(self.mlp(self.norm2(x)))


class SequenceRecommender(nn.Module):
    def __init__(self, config: ModelConfig, n_items: int, trained: np.ndarray, content: np.ndarray | None = None,
                 sparse_items: bool = False):
        """`trained`: (n_items + 1,) bool, items seen in training (index 0 unused); `content`: (n_items + 1, C)
        float32 content embeddings (zero rows for items without content) or None for an ID-only model;
        `sparse_items`: the sampled softmax's item-table gradients are sparse (only the batch's rows), for an
        optimizer that updates only those rows."""
        super().__init__()
        self.config = config
        self.n_items = n_items
        self.item_embedding = nn.Embedding(n_items + 2, config.dim, padding_idx=PAD,  # pad, items, [mask]
                                           sparse=sparse_items)
        self.position_embedding = nn.Embedding(config.max_len, config.dim)
        self.embedding_dropout = nn.Dropout(config.dropout)
        self.embedding_norm = nn.LayerNorm(config.dim) if config.embedding_norm else nn.Identity()
        self.blocks = nn.ModuleList(Block(config) for _ in range(config.layers))
        self.final_norm = nn.LayerNorm(config.dim)
        # BERT4Rec's output transform before the tied item embeddings.
        self.head = nn.Sequential(nn.Linear(config.dim, config.dim), nn.GELU(), nn.LayerNorm(config.dim))
        self.output_bias = nn.Parameter(torch.zeros(n_items + 2))
        id_usable = np.zeros(n_items + 2, dtype=np.float32)
        id_usable[:n_items + 1] = trained
        id_usable[n_items + 1] = 1.0  # the [mask] token is always trained
        self.register_buffer("id_usable", torch.from_numpy(id_usable))
        # Training targets and negatives: the items seen in training (new items do not exist yet at that time).
        self.register_buffer("trained_items", torch.from_numpy(np.flatnonzero(trained[1:]) + 1), persistent=False)
        trained_column = np.full(n_items + 2, -1, dtype=np.int64)
        trained_column[self.trained_items.numpy()] = np.arange(len(self.trained_items))
        self.register_buffer("trained_column", torch.from_numpy(trained_column), persistent=False)
        if content is not None:
            padded = np.zeros((n_items + 2, content.shape[1]), dtype=np.float32)
            padded[:n_items + 1] = content
            self.register_buffer("content", torch.from_numpy(padded))
            self.content_projection = nn.Linear(content.shape[1], config.dim, bias=False)
            self.content_bias = nn.Linear(content.shape[1], 1, bias=False)
            scorable = id_usable + (np.abs(padded).sum(1) > 0)
        else:
            self.register_buffer("content", None)
            scorable = id_usable
        scorable[n_items + 1] = 0.0
        self.register_buffer("scorable", torch.from_numpy(scorable > 0))
        self.apply(self._init_weights)

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.trunc_normal_(module.weight, std=0.02, a=-0.04, b=0.04)
        if isinstance(module, nn.Linear) and module.bias is not None:
            nn.init.zeros_(module.bias)

    def item_table(self, id_keep: torch.Tensor, rows: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """(R, D) item vectors and (R,) output biases of the items `rows` (default: all n_items + 2); `id_keep`
        (n_items + 2,) gates the ID part."""
        every = rows is None
        keep = id_keep if every else id_keep[rows]
        vectors = (self.item_embedding.weight if every else self.item_embedding(rows)) * keep[:, None]
        bias = (self.output_bias if every else self.output_bias[rows]) * keep
        if self.content is not None:
            content = self.content if every else self.content[rows]
            vectors = vectors + self.content_projection(content)
            bias = bias + self.content_bias(content).squeeze(1)
        return vectors, bias

    def attention_mask(self, tokens: torch.Tensor, causal: bool) -> torch.Tensor:
        """(B, 1, L, L) bool, True where a query may attend a key: real keys (and, causal, not later ones).
        Every position also sees itself, so padding rows stay finite (their outputs are never used)."""
        L = tokens.shape[1]
        mask = (tokens != PAD)[:, None, None, :]
        if causal:
            mask = mask & torch.ones(L, L, dtype=torch.bool, device=tokens.device).tril()
        return mask | torch.eye(L, dtype=torch.bool, device=tokens.device)

    def encode(self, tokens: torch.Tensor, vectors: torch.Tensor, causal: bool | None = None) -> torch.Tensor:
        """(B, L) right-aligned tokens -> (B, L, D). Positions count back from the last one, so the last item
        (or the appended [mask]) always has position max_len - 1 whatever the batch's padded length.
        `causal`: the attention (default the model's own)."""
        L = tokens.shape[1]
        positions = torch.arange(self.config.max_len - L, self.config.max_len, device=tokens.device)
        x = self.embedding_dropout(self.embedding_norm(vectors[tokens] + self.position_embedding(positions)))
        mask = self.attention_mask(tokens, self.config.causal if causal is None else causal)
        for block in self.blocks:
            x = block(x, mask)
        return self.final_norm(x)

    def logits(self, hidden: torch.Tensor, vectors: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        """(M, D) -> (M, n_items) scores of items 1..n_items (column j is item j + 1)."""
        return self.head(hidden) @ vectors[1:self.n_items + 1].T + bias[1:self.n_items + 1]

    def loss(self, batch: Batch, negatives: torch.Tensor | None = None, causal: bool | None = None) -> torch.Tensor:
        """Softmax cross-entropy at every labelled position (labels are always items seen in training): over
        every item seen in training, or with `negatives` ((N,) items seen in training, shared by the batch) a
        sampled softmax over the target and those N, whose logits do not grow with the catalogue.
        A negative equal to a position's target is left out of that position's softmax. `causal`: the attention
        (default the model's own; a next-item batch needs the causal one)."""
        id_keep = self.id_usable
        if self.training and self.content is not None and self.config.id_dropout > 0:
            id_keep = id_keep * (torch.rand_like(id_keep) >= self.config.id_dropout)
            id_keep[-1] = 1.0  # never drop the [mask] token
        at = batch.labels != PAD
        if negatives is None:
            vectors, bias = self.item_table(id_keep)
            hidden = self.encode(batch.tokens, vectors, causal)
            logits = self.head(hidden[at]) @ vectors[self.trained_items].T + bias[self.trained_items]  # (M, n_trained)
            return F.cross_entropy(logits, self.trained_column[batch.labels[at]])
        # Only the rows this batch touches: PAD (so it stays index 0), its inputs, its targets and the negatives.
        rows, local = torch.unique(torch.cat([torch.zeros(1, dtype=torch.long, device=negatives.device),
                                              batch.tokens.flatten(), batch.labels[at], negatives]),
                                   return_inverse=True)
        vectors, bias = self.item_table(id_keep, rows)  # (R, D), (R,)
        tokens_at = local[1:1 + batch.tokens.numel()].view(batch.tokens.shape)
        targets = local[1 + batch.tokens.numel():-len(negatives)]  # (M,)
        sampled = local[-len(negatives):]  # (N,)
        hidden = self.head(self.encode(tokens_at, vectors, causal)[at])  # (M, D)
        positive = (hidden * vectors[targets]).sum(1) + bias[targets]  # (M,)
        negative = hidden @ vectors[sampled].T + bias[sampled]  # (M, N)
        negative = negative.masked_fill(sampled[None, :] == targets[:, None], float("-inf"))
        logits = torch.cat([positive[:, None], negative], 1)  # (M, 1 + N), the target in column 0
        return F.cross_entropy(logits, torch.zeros(len(targets), dtype=torch.long, device=logits.device))

    @torch.no_grad()
    def score(self, histories: list[np.ndarray]) -> torch.Tensor:
        """(B, n_items) next-item scores; -inf for items the model cannot represent."""
        keep = self.config.max_len if self.config.causal else self.config.max_len - 1
        rows = [h[len(h) - keep:] if len(h) > keep else h for h in histories]
        if not self.config.causal:
            rows = [np.append(r, self.n_items + 1) for r in rows]  # BERT4Rec: predict the appended [mask]
        vectors, bias = self.item_table(self.id_usable)
        hidden = self.encode(pad_left(rows).to(vectors.device), vectors)[:, -1]
        scores = self.logits(hidden, vectors, bias)
        return scores.masked_fill(~self.scorable[1:self.n_items + 1], float("-inf"))
