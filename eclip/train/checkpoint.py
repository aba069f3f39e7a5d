"""Atomic checkpoints of the whole training state, loadable with `torch.load(weights_only=True)`, and the
final weights as safetensors."""

from __future__ import annotations

import re
from pathlib import Path

import torch
from safetensors.torch import save_file

from eclip.runs.atomic import atomic_write

CHECKPOINT_DIR = "checkpoints"
_NAME = re.compile(r"step-(\d+)\.pt")


def save_checkpoint(run_dir: Path, step: int, state: dict, keep: int) -> Path:
    folder = Path(run_dir) / CHECKPOINT_DIR
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"step-{step:07d}.pt"
    atomic_write(path, lambda target: torch.save(state, target))
    for old in checkpoints(run_dir)[:-keep] if keep > 0 else []:
        old.unlink()
    return path


def checkpoint_step(path: Path) -> int:
    return int(_NAME.fullmatch(Path(path).name).group(1))


def checkpoints(run_dir: Path) -> list[Path]:
    """Finished checkpoints, oldest first."""
    folder = Path(run_dir) / CHECKPOINT_DIR
    found = [path for path in folder.glob("step-*.pt") if _NAME.fullmatch(path.name)] if folder.is_dir() else []
    return sorted(found, key=checkpoint_step)


def load_checkpoint(path: Path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=True)


def save_weights(model: torch.nn.Module, path: Path) -> None:
    state = {name: tensor.detach().cpu().contiguous() for name, tensor in model.state_dict().items()}
    atomic_write(Path(path), lambda target: save_file(state, str(target)))
