"""The light task heads `eclip eval` fits on the trained model (category, attributes, adult), saved in
RUN_DIR/heads/ so that `eclip predict` can label one product:

    heads.safetensors   <head>.weight (C, D) and <head>.bias (C,) of each logistic regression
    heads.json          per head: its classes; the view it reads (image, text or fused: each head's own, chosen
                        on val); the adult threshold (90% recall on val); where it was fit (data, report) and the
                        fingerprint of the model weights it was fit on

An eval replaces the heads of the tasks it fits heads for and keeps the others, so a task's heads always come from
one eval: `eval --tasks attributes` after a full eval leaves the category and adult heads in place.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from eclip.errors import EclipError
from eclip.runs.atomic import building_folder, publish_folder
from eclip.runs.provenance import same_weights

HEADS_DIR = "heads"
WEIGHTS_FILE = "heads.safetensors"
META_FILE = "heads.json"
PREDICT_TASKS = ("category", "attributes", "adult")


def head_task(name: str) -> str:
    """The task a saved head belongs to: attr_<name> heads are the attributes task's."""
    return "attributes" if name.startswith("attr_") else name


def save_heads(folder: Path, probes: dict, provenance: dict) -> list[str]:
    """Merge the heads in `probes` into `folder` -> their names. `probes`: {"category": (LogisticRegression, view),
    "attributes": {name: (..., view)}, "adult": (..., view), "adult_threshold": t}; the view is the vector the head
    reads. `provenance` (where and on which weights they were fit) is recorded with each. The tasks of `probes`
    replace all their earlier heads; the other tasks' heads stay."""
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
        heads[name] = {"classes": [c.item() if hasattr(c, "item") else c for c in probe.classes_], "view": view,
                       **provenance}
    if "adult" in heads:
        heads["adult"]["threshold"] = float(probes["adult_threshold"])
    new = list(heads)
    folder = Path(folder)
    if (folder / META_FILE).is_file():
        old_meta, old_tensors = load_heads(folder)
        replaced = {head_task(name) for name in new}
        for name, entry in old_meta["heads"].items():
            if head_task(name) not in replaced:  # heads.json files before per-head provenance kept it at the top
                heads[name] = {"data": old_meta.get("data"), "report": old_meta.get("report"), **entry,
                               "view": head_view(old_meta, name)}
                tensors.update({key: old_tensors[key] for key in (f"{name}.weight", f"{name}.bias")})
    building = building_folder(folder)
    save_file(tensors, str(building / WEIGHTS_FILE))
    (building / META_FILE).write_text(json.dumps({"heads": heads}, indent=1))
    publish_folder(building, folder)
    return new


def holds_heads_of(folder: Path, report_dir: Path, names: list[str]) -> bool:
    """Whether `folder` still holds the heads `names` that the eval writing `report_dir` saved (a later eval of
    those tasks, or a deleted folder, replaced them)."""
    if not names:
        return True
    if not (Path(folder) / META_FILE).is_file():
        return False
    saved = json.loads((Path(folder) / META_FILE).read_text())["heads"]
    return all(saved.get(name, {}).get("report") == str(Path(report_dir).resolve()) for name in names)


def load_heads(folder: Path) -> tuple[dict, dict[str, np.ndarray]]:
    from safetensors.numpy import load_file

    folder = Path(folder)
    if not (folder / META_FILE).is_file():
        raise EclipError(f"{folder} holds no task heads: run `eclip eval --model RUN_DIR --data DATA_DIR --out REPORT_DIR` "
                         f"first (it saves them in RUN_DIR/{HEADS_DIR})")
    return json.loads((folder / META_FILE).read_text()), load_file(str(folder / WEIGHTS_FILE))


def load_current_heads(folder: Path, run_dir: Path) -> tuple[dict | None, list[str]]:
    """-> ((meta, tensors) of the heads in `folder` fit on RUN_DIR's current weights, or None), names of the heads
    left out: a head fit on other weights would read vectors it never saw."""

    if not (Path(folder) / META_FILE).is_file():
        return None, []
    meta, tensors = load_heads(folder)
    current = {name: entry for name, entry in meta["heads"].items() if same_weights(entry.get("weights"), run_dir)}
    stale = sorted(set(meta["heads"]) - set(current))
    return ({**meta, "heads": current}, tensors) if current else None, stale


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
    from eclip.index.embed import fuse
    from eclip.models import embed_images, embed_texts, load_model

    if task not in PREDICT_TASKS:
        raise EclipError(f"unknown task {task!r}; choose from {', '.join(PREDICT_TASKS)}")
    if title is not None and not title.strip():
        raise EclipError("--title is blank: give the product's title, or leave --title out")
    folder = heads_dir or Path(run_dir) / HEADS_DIR
    meta, tensors = load_heads(folder)
    names = [name for name in meta["heads"] if head_task(name) == task]
    rerun = f"`eclip eval --model {run_dir} --data DATA_DIR --out REPORT_DIR --tasks {task}`"
    if not names:
        raise EclipError(f"{folder} has no {task} head: run {rerun} on data labelled for it")
    views = {head_view(meta, name) for name in names}
    needs_image, needs_title = bool(views & {"image", "fused"}), bool(views & {"text", "fused"})
    if needs_image and image is None or needs_title and not title:
        needs = " and ".join(flag for flag, needed in (("--image", needs_image), ("--title", needs_title)) if needed)
        raise EclipError(f"the {task} heads read the {' and '.join(sorted(views))} vector: give {needs}")
    if image is not None:
        _check_image(Path(image))
    model, _, _ = load_model(run_dir)
    # One eval fit all of a task's heads on the same weights: the first head's record stands for them all.
    if not same_weights(meta["heads"][names[0]].get("weights"), run_dir):
        raise EclipError(f"the {task} heads in {folder} were not fit on the current weights of {run_dir} (trained "
                         f"further or replaced since, or saved before eclip recorded them): re-run {rerun}")
    try:
        image_vector = embed_images(model, [Path(image)])[0] if needs_image else None
    except (OSError, SyntaxError) as error:
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


def _check_image(path: Path) -> None:
    """Refuse, from its header alone, a file that is no image or one above the pixel cap of `eclip prepare`: a
    decompression bomb (a few KB of PNG) would take gigabytes to decode."""
    from PIL import Image

    from eclip.data.config import PrepareConfig

    if not path.is_file():
        raise EclipError(f"{path}: no such image file")
    cap = PrepareConfig().max_pixels
    too_large = f"{path}: the image has more than {cap:,} pixels, the cap of `eclip prepare` (image_too_large): " \
                f"give a smaller image"
    try:
        with Image.open(path) as opened:
            width, height = opened.size
    except Image.DecompressionBombError:  # Pillow's own, higher cap, checked as it opens
        raise EclipError(too_large) from None
    except (OSError, SyntaxError, ValueError) as error:
        raise EclipError(f"{path}: cannot read the image ({error})") from None
    if width * height > cap:
        raise EclipError(too_large)
