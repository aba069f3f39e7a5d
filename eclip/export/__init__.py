"""`eclip export`: a trained RUN_DIR for use outside eclip, as ONNX graphs with their preprocessing contract
(`onnx.py`, and `OnnxDualEncoder` to run them) or as a folder that transformers loads, with a model card (`hf.py`).
An export is built in a hidden sibling folder and renamed into place whole."""

from __future__ import annotations

import shutil
from pathlib import Path

from eclip.files import check_out_folder
from eclip.runs.atomic import building_folder, publish_folder

FORMATS = ("onnx", "hf")
# every name an export writes at its top level, of either format: a folder holding only these may be replaced
OWNED = ("image_encoder.onnx", "text_encoder.onnx", "tokenizer.json", "contract.json", "config.json",
         "model.safetensors", "text", "vision", "eclip", "eclip_head.safetensors", "eclip.json",
         "tokenizer_config.json", "preprocessor_config.json", "README.md")


def export(run_dir: Path, out: Path, fmt: str, report_dir: Path | None = None) -> dict:
    """RUN_DIR -> `out` in `fmt` (onnx or hf); returns the contract (onnx) or the manifest (hf)."""
    out = Path(out)
    check_out_folder(out, OWNED, "export", replaced_whole=True)
    building = building_folder(out)
    try:
        if fmt == "onnx":
            from eclip.export.onnx import export_onnx
            result = export_onnx(run_dir, building)
        else:
            from eclip.export.hf import export_hf
            result = export_hf(run_dir, building, report_dir)
    except BaseException:
        shutil.rmtree(building, ignore_errors=True)  # nothing of a failed export is left behind
        raise
    publish_folder(building, out)
    return result
