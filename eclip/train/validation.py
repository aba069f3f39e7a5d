"""Validation during training: the model scored on (a seeded subset of) DATA_DIR's val split every `val_every`
steps, at the end, and before the first step (the untrained towers' reference line), with the metric functions
`eclip eval` uses; and the tracker that keeps the best weights by the val criterion for `train.select = best`.

The criterion (`score`) is the mean of four val numbers, each between 0 and 1: text->image R@10, image->text
R@10, and leaf-category zero-shot top-1 on the image view and on the text view. Retrieval and the image view
reward what the image tower learns; the text view catches the trainable text-side paths drifting away from the
pretrained tower's sense of the class names (the way small catalogues went below their untrained start).
"""

from __future__ import annotations

import time
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import torch

from eclip.data.store import read_products
from eclip.eval.classification import LEVEL_SEPARATOR
from eclip.eval.config import load_eval_config
from eclip.eval.data import whole_groups
from eclip.eval.probe import classification_scores
from eclip.eval.retrieval import retrieval_scores
from eclip.eval.zeroshot import prompt_classifier, zero_shot_predict
from eclip.models import embed_images, embed_texts
from eclip.models.inference import tokenize
from eclip.train.loss import Objective

CRITERION = ("t2i_r10", "i2t_r10", "zeroshot_image_top1", "zeroshot_text_top1")
CRITERION_TEXT = "mean of val t2i R@10, i2t R@10 and leaf zero-shot top-1 on the image and the text view"


@dataclass
class ValSet:
    titles: list[str]
    thumbnails: pa.Array
    groups: np.ndarray  # (N,) integer catalog-group codes
    leaves: np.ndarray  # (N,) leaf category paths; rows without one are left out of zero-shot
    classes: list[str]  # every leaf path of train and val, sorted: the zero-shot classes
    templates: list[str]  # `eclip eval`'s category prompts
    # A locked text tower's pooled features (W,) per title or prompt: computed at the first validation only, as
    # the training loop caches the train titles' (most of a validation's time otherwise).
    features: dict[str, torch.Tensor] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.titles)

    def encode_text(self, model, texts: list[str], batch_size: int) -> np.ndarray:
        """Texts -> (N, D) unit rows, as `embed_texts` gives them."""
        if not model.text.locked:
            return embed_texts(model, texts, batch_size)
        device = next(model.parameters()).device
        vectors = []
        for start in range(0, len(texts), batch_size):
            chunk = texts[start:start + batch_size]
            input_ids, attention_mask = (tensor.to(device) for tensor in tokenize(model, chunk))  # (B, L) each
            missing = [text for text in chunk if text not in self.features]
            if missing:
                rows = [chunk.index(text) for text in missing]
                pooled = model.text(input_ids[rows], attention_mask[rows]).float().cpu()  # (b, W)
                self.features.update(zip(missing, pooled))
            pooled = torch.stack([self.features[text] for text in chunk]).to(device)  # (B, W)
            vectors.append(model.project_text(pooled.to(input_ids.device), input_ids, attention_mask).float().cpu())
        return torch.cat(vectors).numpy() if vectors else np.zeros((0, model.config.embed_dim), np.float32)


def load_val_set(data_dir: Path, max_products: int, seed: int) -> ValSet | None:
    """At most `max_products` val products as whole catalog groups (seeded); None when the split is empty."""
    table = read_products(data_dir, split="val", columns=["title", "thumbnail", "group_id", "category"])
    if table.num_rows == 0:
        return None
    group_ids = np.asarray(table.column("group_id").to_pylist(), dtype=object)
    if table.num_rows > max_products:
        table = table.take(pa.array(whole_groups(group_ids, max_products, np.random.default_rng(seed))))
        group_ids = np.asarray(table.column("group_id").to_pylist(), dtype=object)
    leaves = np.asarray(table.column("category").to_pylist(), dtype=object)
    train_leaves = read_products(data_dir, split="train", columns=["category"]).column("category").to_pylist()
    classes = sorted({leaf for leaf in [*train_leaves, *leaves] if leaf})
    return ValSet([title or "" for title in table.column("title").to_pylist()],
                  table.column("thumbnail").combine_chunks(), np.unique(group_ids, return_inverse=True)[1],
                  leaves, classes, load_eval_config().category_templates)


@torch.no_grad()
def validate(model, val: ValSet, objective: Objective, autocast=None, batch_size: int = 256) -> dict:
    """Scores of `model` on `val` -> {loss, t2i_r10, i2t_r10, zeroshot_{image,text}_{top1,weighted_f1}, score,
    seconds}; the model is left in the mode it came in."""
    started = time.perf_counter()
    was_training = model.training
    model.eval()
    with autocast or nullcontext():
        image = embed_images(model, val.thumbnails.to_pylist(), batch_size)  # (N, D)
        text = val.encode_text(model, val.titles, batch_size)  # (N, D)
        names = [path.split(LEVEL_SEPARATOR)[-1] for path in val.classes]
        classifier = prompt_classifier(lambda prompts: val.encode_text(model, prompts, batch_size), names,
                                       val.templates)  # (C, D)
    model.train(was_training)
    scalars = [getattr(model, name).detach().float().cpu() for name in objective.scalar_names]
    loss = objective([torch.from_numpy(image), torch.from_numpy(text)], scalars, torch.from_numpy(val.groups))
    recall, _ = retrieval_scores(image, text, val.groups, [10], 10)
    scores = {"loss": float(loss), "t2i_r10": recall["t2i"]["r10"], "i2t_r10": recall["i2t"]["r10"]}
    labelled = np.flatnonzero([bool(leaf) for leaf in val.leaves])
    for view, vectors in (("image", image), ("text", text)):
        predicted = zero_shot_predict(vectors[labelled], classifier, val.classes)
        zero_shot = classification_scores(val.leaves[labelled].astype(str), predicted)
        scores[f"zeroshot_{view}_top1"] = zero_shot["top1"]
        scores[f"zeroshot_{view}_weighted_f1"] = zero_shot["weighted_f1"]
    scores["score"] = float(np.mean([scores[key] for key in CRITERION]))
    scores = {key: round(value, 5) for key, value in scores.items()}
    return {**scores, "seconds": round(time.perf_counter() - started, 2)}


def trainable_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """CPU copies of the parameters training changes: the rest of a best model is the frozen tower, as it is."""
    return {name: parameter.detach().cpu().clone() for name, parameter in model.named_parameters()
            if parameter.requires_grad}


class BestTracker:
    """The best val criterion so far, its step and weights, and how many validations since it improved
    (`stale`, for early stopping). Its state_dict goes into every checkpoint, so a resumed run selects and stops
    exactly as an uninterrupted one."""

    def __init__(self):
        self.step, self.score, self.stale, self.weights = None, None, 0, None

    def update(self, step: int, score: float, model: torch.nn.Module) -> bool:
        """Record the validation at `step`; -> whether it is the new best (ties keep the earlier step)."""
        if self.score is not None and score <= self.score:
            self.stale += 1
            return False
        self.step, self.score, self.stale, self.weights = step, score, 0, trainable_state(model)
        return True

    def state_dict(self) -> dict:
        return {"step": self.step, "score": self.score, "stale": self.stale, "weights": self.weights}

    def load_state_dict(self, state: dict) -> None:
        self.step, self.score, self.stale, self.weights = (state["step"], state["score"], state["stale"],
                                                           state["weights"])
