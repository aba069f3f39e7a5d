"""What an output was made from, so that a command can reuse an up-to-date output and refuse a stale one.

Weights are fingerprinted by size, modification time and sha256 (a copied run keeps the content, not the time);
a DATA_DIR by its report.json, which `eclip prepare` rewrites on every rebuild.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from eclip.errors import EclipError

WEIGHTS_FILE = "model.safetensors"  # a training RUN_DIR's weights
DATA_REPORT = "report.json"  # written last by `eclip prepare`: a DATA_DIR without it is unfinished


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def weights_sha256(run_dir) -> str:
    """sha256 of RUN_DIR's model weights."""
    return file_sha256(Path(run_dir) / WEIGHTS_FILE)


def tensors_sha256(tensors: dict) -> str:
    """sha256 of a state dict's names, dtypes, shapes and bytes: the fingerprint of weights held in memory (a
    pretrained tower loaded from wherever it came)."""
    digest = hashlib.sha256()
    for name in sorted(tensors):
        tensor = tensors[name].detach().cpu().contiguous()
        digest.update(f"{name}:{tensor.dtype}:{tuple(tensor.shape)};".encode())
        # numpy has no bfloat16: floats are hashed as float32, which holds every half-precision value exactly
        digest.update((tensor.float() if tensor.is_floating_point() else tensor).numpy().tobytes())
    return digest.hexdigest()


def weights_fingerprint(run_dir) -> dict:
    """Size, modification time and sha256 of RUN_DIR's weights, recorded with what they produce (EMB_DIR, task
    heads) so that `same_weights` can tell whether a model is the one that produced it."""
    stat = (Path(run_dir) / WEIGHTS_FILE).stat()
    return {"size": stat.st_size, "mtime_ns": stat.st_mtime_ns, "sha256": weights_sha256(run_dir)}


def same_weights(recorded: dict | None, run_dir) -> bool:
    """Whether RUN_DIR's weights are those of a `weights_fingerprint`: by size and time when both agree (nothing
    read), else by content."""
    weights = Path(run_dir) / WEIGHTS_FILE
    if not recorded or not weights.is_file():
        return False
    stat = weights.stat()
    if [stat.st_size, stat.st_mtime_ns] == [recorded.get("size"), recorded.get("mtime_ns")]:
        return True
    return stat.st_size == recorded.get("size") and weights_sha256(run_dir) == recorded.get("sha256")


def data_report(data_dir) -> dict:
    """The report of a finished DATA_DIR, or a clear error saying what to run."""
    data_dir = Path(data_dir)
    report = data_dir / DATA_REPORT
    if not report.is_file():
        what = "does not exist" if not data_dir.exists() else f"is not a finished prepared dataset (no {DATA_REPORT})"
        raise EclipError(f"{data_dir} {what}; run `eclip prepare CATALOG --out {data_dir}` first")
    return json.loads(report.read_text())


def file_version(path: Path) -> list[int]:
    """Size and modification time of a products file, or of a DATA_DIR's report.json: they change when the data
    does, and cost no read of it."""
    path = Path(path)
    stat = (path / DATA_REPORT if path.is_dir() else path).stat()
    return [stat.st_size, stat.st_mtime_ns]


def output_signature(run_dir, data_dir, options: dict) -> dict:
    """What an output made from RUN_DIR's weights and a DATA_DIR depends on: one whose recorded signature equals
    a fresh one is up to date (embeddings, eval reports, query encoders)."""
    weights = Path(run_dir) / WEIGHTS_FILE
    stat = weights.stat() if weights.is_file() else None
    return {"model": str(Path(run_dir).resolve()), "weights": [stat.st_size, stat.st_mtime_ns] if stat else None,
            "data": str(Path(data_dir).resolve()), "data_report": data_report(data_dir), "options": options}
