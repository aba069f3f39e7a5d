"""The light task heads `eclip eval` fits on the trained model (category, attributes, adult), saved in
RUN_DIR/heads/ so that `eclip predict` can label one product:

    heads.safetensors   <head>.weight (C, D) and <head>.bias (C,) of each logistic regression
    heads.json          per head: its classes; the view it reads (image, text or fused: each head's own, chosen
                        on val); the adult threshold (90% recall on val); where the heads were fit
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np

from eclip.errors import EclipError

HEADS_DIR = "heads"
WEIGHTS_FILE = "heads.safetensors"
META_FILE = "heads.json"
PREDICT_TASKS = ("category", "attributes", "adult")


def save_heads(folder: Path, probes: dict, info: dict) -> None:
    """`probes`: {"category": (LogisticRegression, view), "attributes": {name: (..., view)}, "adult": (..., view),
    "adult_threshold": t}; the view is the vector the head reads."""
    from safetensors.numpy import save_file

    named = {"category": probes.get("category"), "adult": probes.get("adult"),
             **{f"attr_{name}": head for name, head in probes.get("attributes", {}).items()}}
    tensors, heads = {}, {}
    for name, head in named.items():
        if head is None:
            continue
        probe, view = head
        tensors[f"{name}.weight"] = np.ascontiguousarray(probe.coef_, dtype=np.float32)
        tensors[f"{name}.bias"] = np.ascontiguousarray(probe.intercept_, dtype=np.float32)
        heads[name] = {"classes": [c.item() if hasattr(c, "item") else c for c in probe.classes_], "view": view}
    if "adult" in heads:
        heads["adult"]["threshold"] = float(probes["adult_threshold"])
    folder = Path(folder)
    building = folder.with_name(f".{folder.name}.building")
    shutil.rmtree(building, ignore_errors=True)
    building.mkdir(parents=True)
    save_file(tensors, str(building / WEIGHTS_FILE))
    (building / META_FILE).write_text(json.dumps({"heads": heads, **info}, indent=1))
    shutil.rmtree(folder, ignore_errors=True)
    building.rename(folder)


def load_heads(folder: Path) -> tuple[dict, dict[str, np.ndarray]]:
    from safetensors.numpy import load_file

    folder = Path(folder)
    if not (folder / META_FILE).is_file():
        raise EclipError(f"{folder} holds no task heads: run `eclip eval --model RUN_DIR --data DATA_DIR --out REPORT_DIR` "
                         f"first (it saves them in RUN_DIR/{HEADS_DIR})")
    return json.loads((folder / META_FILE).read_text()), load_file(str(folder / WEIGHTS_FILE))


def head_view(meta: dict, name: str) -> str:
    """The vector a saved head reads; heads saved before each head had its own view share the top-level one."""
    return meta["heads"][name].get("view") or meta["view"]


def apply_head(meta: dict, tensors: dict[str, np.ndarray], name: str, features: np.ndarray) -> list[tuple[str, float]]:
    """(D,) features -> [(class, probability)], most probable first (scikit-learn's binary and softmax rules)."""
    logits = tensors[f"{name}.weight"] @ features + tensors[f"{name}.bias"]  # (C,) or (1,) when binary
    classes = meta["heads"][name]["classes"]
    if len(logits) == 1:
        positive = float(1 / (1 + np.exp(-logits[0])))
        probabilities = np.array([1 - positive, positive])
    else:
        shifted = np.exp(logits - logits.max())
        probabilities = shifted / shifted.sum()
    order = np.argsort(-probabilities, kind="stable")
    return [(classes[i], float(probabilities[i])) for i in order]


def predict(run_dir: Path, task: str, image: Path | None, title: str | None, heads_dir: Path | None = None,
            top: int = 3) -> dict:
    """Label one product with the saved heads -> {head: [(class, probability), ...]} (adult adds a decision)."""
    from eclip.models import embed_images, embed_texts, load_model
    from eclip.tasks.embeddings import fuse

    if task not in PREDICT_TASKS:
        raise EclipError(f"unknown task {task!r}; choose from {', '.join(PREDICT_TASKS)}")
    meta, tensors = load_heads(heads_dir or Path(run_dir) / HEADS_DIR)
    names = [name for name in meta["heads"] if name == task or (task == "attributes" and name.startswith("attr_"))]
    if not names:
        raise EclipError(f"the saved heads have no {task} head (the evaluated data had no labels for it)")
    views = {head_view(meta, name) for name in names}
    needs_image, needs_title = bool(views & {"image", "fused"}), bool(views & {"text", "fused"})
    if needs_image and image is None or needs_title and not title:
        needs = " and ".join(flag for flag, needed in (("--image", needs_image), ("--title", needs_title)) if needed)
        raise EclipError(f"the {task} heads read the {' and '.join(sorted(views))} vector: give {needs}")
    if image is not None and not Path(image).is_file():
        raise EclipError(f"{image}: no such image file")
    model, _, _ = load_model(run_dir)
    try:
        image_vector = embed_images(model, [Path(image)])[0] if needs_image else None
    except OSError as error:
        raise EclipError(f"{image}: cannot read the image ({error})") from error
    text_vector = embed_texts(model, [title])[0] if needs_title else None
    features = {"image": image_vector, "text": text_vector,
                "fused": fuse(image_vector[None], text_vector[None])[0] if "fused" in views else None}
    result = {name: apply_head(meta, tensors, name, features[head_view(meta, name)])[:top] for name in names}
    if task == "adult":
        probability = dict(apply_head(meta, tensors, "adult", features[head_view(meta, "adult")]))[True]
        result["adult_decision"] = {"probability": probability, "threshold": meta["heads"]["adult"]["threshold"],
                                    "restricted": probability >= meta["heads"]["adult"]["threshold"]}
    return result
