"""`eclip export --format onnx`: both towers as ONNX graphs (dynamic batch and sequence axes) and the contract
a caller needs to feed them (`contract.json`: image size, channel statistics, resize filter and padding; the
tokenizer, its pad id and length; the n-gram hashing where the model has that path), plus `OnnxDualEncoder`,
which embeds images and titles from such a folder with onnxruntime.

EXPORT_DIR (onnx):
    image_encoder.onnx    pixels (B, 3, S, S) float32 -> image (B, D), L2-normalized
    text_encoder.onnx     input_ids (B, L), attention_mask (B, L) int64 [, ngram_ids (B, K), ngram_mask (B, K)]
                          -> text (B, D), L2-normalized
    tokenizer.json        the run's tokenizer (Hugging Face `tokenizers` format)
    contract.json         the preprocessing contract (below)
"""

from __future__ import annotations

import json
import math
import shutil
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn

from eclip.errors import EclipError
from eclip.models import TOKENIZER_FILE, DualEncoder, ImagePreprocessing, TextProcessor, load_model
from eclip.models.char_ngrams import CharNgrams
from eclip.models.image_processing import eval_pixels

IMAGE_FILE = "image_encoder.onnx"
TEXT_FILE = "text_encoder.onnx"
CONTRACT_FILE = "contract.json"
ONNX_FILES = (IMAGE_FILE, TEXT_FILE, TOKENIZER_FILE, CONTRACT_FILE)
FORMAT = "eclip-onnx-1"
OPSET = 17


class ImageGraph(nn.Module):
    def __init__(self, model: DualEncoder):
        super().__init__()
        self.model = model

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.model.encode_image(pixels)  # (B, D)


class TextGraph(nn.Module):
    """The text side in one pass: no length buckets (their Python control flow does not trace) and the n-gram
    path as a masked mean over bucket ids computed outside (hashing strings is no graph operation)."""

    def __init__(self, model: DualEncoder):
        super().__init__()
        self.model = model

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, ngram_ids: torch.Tensor | None = None,
                ngram_mask: torch.Tensor | None = None) -> torch.Tensor:
        features = self.model.text._encode(input_ids, attention_mask)  # (B, W)
        ngram_vectors = None
        if ngram_ids is not None:
            mask = ngram_mask.unsqueeze(-1).to(features.dtype)  # (B, K, 1)
            vectors = self.model.char_ngrams.table.weight[ngram_ids]  # (B, K, D)
            ngram_vectors = (vectors * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1)  # (B, D)
        return self.model.project_text(features, input_ids, attention_mask, ngram_vectors)  # (B, D)


def ngram_inputs(char_ngrams: CharNgrams, input_ids: torch.Tensor, attention_mask: torch.Tensor):
    """-> ngram_ids (B, K), ngram_mask (B, K) int64, K the most buckets of a title (at least 1)."""
    rows = char_ngrams.bucket_rows(input_ids, attention_mask)
    width = max([len(row) for row in rows] + [1])
    ids = np.zeros((len(rows), width), np.int64)
    mask = np.zeros((len(rows), width), np.int64)
    for i, row in enumerate(rows):
        ids[i, :len(row)] = row
        mask[i, :len(row)] = 1
    return torch.from_numpy(ids), torch.from_numpy(mask)


def contract(model: DualEncoder, run_dir: Path) -> dict:
    preprocessing = ImagePreprocessing.of(model.config.vision)
    processor = model.processor
    ngrams = model.char_ngrams
    return {
        "format": FORMAT, "source": str(run_dir), "embed_dim": model.config.embed_dim,
        "logit_scale": math.exp(float(model.logit_scale.detach())), "logit_bias": float(model.logit_bias.detach()),
        "image": {"file": IMAGE_FILE, "input": "pixels", "output": "image",
                  "layout": "(batch, 3, size, size) float32, RGB",
                  "size": preprocessing.size, "mean": list(preprocessing.mean), "std": list(preprocessing.std),
                  "resample": preprocessing.resample,
                  "steps": ["decode to RGB, EXIF orientation applied",
                            "pad to a square with white (255, 255, 255), the photo centred",
                            f"resize to size x size ({preprocessing.resample})", "divide by 255",
                            "subtract mean, divide by std, per channel"]},
        "text": {"file": TEXT_FILE, "tokenizer": TOKENIZER_FILE, "output": "text",
                 "inputs": ["input_ids", "attention_mask"] + (["ngram_ids", "ngram_mask"] if ngrams else []),
                 "max_length": processor.max_length, "pad_id": processor.pad_id,
                 "pad_to_max_length": processor.fixed_length,
                 "steps": ["tokenize with tokenizer.json (its post-processor adds the special tokens), truncated to "
                           "max_length", "pad on the right with pad_id to the longest title (to max_length when "
                           "pad_to_max_length); attention_mask 1 on real tokens"],
                 "char_ngrams": None if ngrams is None else {
                     "buckets": ngrams.buckets, "n_min": ngrams.n_min, "n_max": ngrams.n_max,
                     "steps": ["rebuild the words from the real, non-special tokens: a piece starting with ## "
                               "continues the word before it",
                               "per word: '<word>' itself, then its character n-grams of n_min..n_max letters",
                               "bucket = zlib.crc32(gram as UTF-8) % buckets",
                               "ngram_ids: a title's buckets, padded with 0; ngram_mask 1 on real buckets; at "
                               "least one column"]}},
        "similarity": "logit_scale * cosine (+ logit_bias for the siglip objective)",
    }


def export_onnx(run_dir: Path, out: Path) -> dict:
    """Write RUN_DIR's towers into `out` (a new or empty folder, filled in place) -> the contract."""
    run_dir, out = Path(run_dir), Path(out)
    model, processor, config = load_model(run_dir)
    out.mkdir(parents=True, exist_ok=True)
    input_ids, attention_mask = processor(["a red cotton shirt", "black leather shoes for men"])
    pixels = torch.zeros(2, 3, config.vision.image_size, config.vision.image_size)
    text_inputs = (input_ids, attention_mask)
    names = ["input_ids", "attention_mask"]
    axes = {"input_ids": {0: "batch", 1: "length"}, "attention_mask": {0: "batch", 1: "length"},
            "text": {0: "batch"}}
    if model.char_ngrams is not None:
        text_inputs += ngram_inputs(model.char_ngrams, input_ids, attention_mask)
        names += ["ngram_ids", "ngram_mask"]
        axes.update(ngram_ids={0: "batch", 1: "ngrams"}, ngram_mask={0: "batch", 1: "ngrams"})
    with warnings.catch_warnings(), torch.no_grad():
        # The TorchScript exporter: seconds where torch.export takes half a minute on the same towers, and it
        # needs no onnxscript. Its warnings (advanced indexing, deprecation) are about its choice of ops.
        warnings.simplefilter("ignore")
        torch.onnx.export(ImageGraph(model), (pixels,), str(out / IMAGE_FILE), input_names=["pixels"],
                          output_names=["image"], dynamic_axes={"pixels": {0: "batch"}, "image": {0: "batch"}},
                          opset_version=OPSET, dynamo=False)
        torch.onnx.export(TextGraph(model), text_inputs, str(out / TEXT_FILE), input_names=names,
                          output_names=["text"], dynamic_axes=axes, opset_version=OPSET, dynamo=False)
    shutil.copyfile(run_dir / TOKENIZER_FILE, out / TOKENIZER_FILE)
    terms = contract(model, run_dir)
    (out / CONTRACT_FILE).write_text(json.dumps(terms, indent=1))
    return terms


class OnnxDualEncoder:
    """An ONNX export folder under onnxruntime: images and titles -> (N, D) float32 unit rows, as
    `eclip.models.embed_images` / `embed_texts` give them from the RUN_DIR."""

    def __init__(self, export_dir: Path, threads: int = 0):
        try:
            import onnxruntime
        except ImportError as error:
            raise EclipError("onnxruntime is not installed: pip install 'eclip[onnx]'") from error
        export_dir = Path(export_dir)
        if not (export_dir / CONTRACT_FILE).is_file():
            raise EclipError(f"{export_dir / CONTRACT_FILE} is missing: {export_dir} is not an `eclip export "
                             f"--format onnx` folder")
        self.contract = json.loads((export_dir / CONTRACT_FILE).read_text())
        options = onnxruntime.SessionOptions()
        if threads:
            options.intra_op_num_threads = threads
        self.image_session = onnxruntime.InferenceSession(str(export_dir / IMAGE_FILE), options)
        self.text_session = onnxruntime.InferenceSession(str(export_dir / TEXT_FILE), options)
        text = self.contract["text"]
        self.processor = TextProcessor.load(export_dir / text["tokenizer"], text["max_length"])
        image = self.contract["image"]
        self.preprocessing = ImagePreprocessing(image["size"], tuple(image["mean"]), tuple(image["std"]),
                                                image["resample"])
        ngrams = text["char_ngrams"]
        self.char_ngrams = (CharNgrams(self.processor.tokenizer, ngrams["buckets"], 1, ngrams["n_min"],
                                       ngrams["n_max"]) if ngrams else None)
        self.text_inputs = {node.name for node in self.text_session.get_inputs()}  # unused inputs are pruned

    def embed_images(self, images) -> np.ndarray:
        images = list(images)
        if not images:
            return np.zeros((0, self.contract["embed_dim"]), np.float32)
        pixels = eval_pixels(images, self.preprocessing).numpy()
        return self.image_session.run(["image"], {"pixels": pixels})[0]

    def embed_texts(self, titles) -> np.ndarray:
        titles = [str(title) for title in titles]
        if not titles:
            return np.zeros((0, self.contract["embed_dim"]), np.float32)
        input_ids, attention_mask = self.processor(titles)
        feeds = {"input_ids": input_ids, "attention_mask": attention_mask}
        if self.char_ngrams is not None:
            feeds["ngram_ids"], feeds["ngram_mask"] = ngram_inputs(self.char_ngrams, input_ids, attention_mask)
        return self.text_session.run(["text"], {name: value.numpy() for name, value in feeds.items()
                                                if name in self.text_inputs})[0]
