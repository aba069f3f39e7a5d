"""A fast query encoder for text search: a student of the dual encoder's text tower (`eclip distill`).

Search queries are a few words, and a transformer costs milliseconds per query on a CPU core. The student reads
the same word pieces as the text tower, averages their embeddings (a bag: no attention, no positions) and maps
the mean through a residual MLP to the shared space; it is trained to reproduce the teacher's unit vectors, so it
searches the index the full model built. Saved beside the model in RUN_DIR:

    encoder = load_query_encoder("runs/tiny")               # None when `eclip distill` has not run
    vectors = embed_queries(encoder, ["red running shoes"])  # (N, D) float32 unit rows
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from eclip.errors import EclipError
from eclip.runs.atomic import atomic_write, write_text
from eclip.runs.provenance import weights_sha256
from eclip.models.text import TextProcessor

WEIGHTS_FILE = "query_encoder.safetensors"
META_FILE = "query_encoder.json"


@dataclass(frozen=True)
class QueryEncoderShape:
    vocab_size: int
    width: int  # word-piece embedding size (the teacher's, so its embeddings can start the student)
    hidden: int
    embed_dim: int


class QueryEncoder(nn.Module):
    """Word pieces of B queries, flattened (T,) with each query's start offset (B,) -> unit vectors (B, D)."""

    def __init__(self, shape: QueryEncoderShape, processor: TextProcessor):
        super().__init__()
        self.shape = shape
        self.processor = processor
        self.pieces = nn.EmbeddingBag(shape.vocab_size, shape.width, mode="mean")
        self.norm = nn.LayerNorm(shape.width)
        self.mlp = nn.Sequential(nn.Linear(shape.width, shape.hidden), nn.GELU(), nn.Linear(shape.hidden, shape.width))
        self.projection = nn.Linear(shape.width, shape.embed_dim, bias=False)
        self.unknown_id = processor.tokenizer.token_to_id("[UNK]") or 0

    def forward(self, piece_ids: torch.Tensor, offsets: torch.Tensor) -> torch.Tensor:
        x = self.norm(self.pieces(piece_ids, offsets))  # (B, W)
        x = x + self.mlp(x)
        return F.normalize(self.projection(x), dim=-1)  # (B, D)

    def inputs(self, texts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """Texts -> (piece ids (T,), offsets (B,)); special tokens are left out, and a text with no word piece
        at all (only characters the vocabulary lacks) reads as [UNK]."""
        encodings = self.processor.tokenizer.encode_batch(list(texts), add_special_tokens=False)
        rows = [encoding.ids[:self.processor.max_length] or [self.unknown_id] for encoding in encodings]
        offsets = np.cumsum([0] + [len(row) for row in rows[:-1]])
        return torch.tensor([i for row in rows for i in row], dtype=torch.long), torch.from_numpy(offsets)


@torch.no_grad()
def embed_queries(encoder: QueryEncoder, texts, batch_size: int = 1024) -> np.ndarray:
    texts = [str(text) for text in texts]
    encoder.eval()
    chunks = [encoder(*encoder.inputs(texts[i:i + batch_size])).numpy() for i in range(0, len(texts), batch_size)]
    return np.concatenate(chunks) if chunks else np.zeros((0, encoder.shape.embed_dim), np.float32)


def save_query_encoder(encoder: QueryEncoder, run_dir: Path, report: dict) -> None:
    """Weights, then a JSON of the shape, the teacher's digest and the distillation report, each atomically: a
    meta file means both are complete."""
    from safetensors.torch import save_file

    weights, meta = Path(run_dir) / WEIGHTS_FILE, Path(run_dir) / META_FILE
    state = {name: tensor.contiguous() for name, tensor in encoder.state_dict().items()}
    atomic_write(weights, lambda temporary: save_file(state, str(temporary)))
    write_text(meta, json.dumps({"shape": asdict(encoder.shape), "teacher_sha256": weights_sha256(run_dir),
                                 **report}, indent=1))


def query_encoder_report(run_dir) -> dict | None:
    meta = Path(run_dir) / META_FILE
    return json.loads(meta.read_text()) if meta.is_file() and (Path(run_dir) / WEIGHTS_FILE).is_file() else None


def load_query_encoder(run_dir, processor: TextProcessor) -> QueryEncoder | None:
    """The distilled query encoder of RUN_DIR (in eval mode), or None when there is none. One distilled from
    other weights (the run was trained further since) would embed queries beside the index, so it is refused."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    report = query_encoder_report(run_dir)
    if report is None:
        return None
    if report.get("teacher_sha256") != weights_sha256(run_dir):
        raise EclipError(f"{Path(run_dir) / WEIGHTS_FILE} was distilled from other weights than {run_dir}'s model "
                         f"(trained since?): run `eclip distill --model {run_dir} ...` again")
    try:
        encoder = QueryEncoder(QueryEncoderShape(**report["shape"]), processor)
        encoder.load_state_dict(load_file(str(Path(run_dir) / WEIGHTS_FILE)))
    except (KeyError, TypeError, RuntimeError, OSError, SafetensorError) as error:
        raise EclipError(f"{Path(run_dir) / WEIGHTS_FILE} does not load ({str(error).splitlines()[0]}): "
                         f"run `eclip distill --model {run_dir} ...` again") from error
    return encoder.eval()
