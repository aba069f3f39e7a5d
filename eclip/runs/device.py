"""The torch device a command asks for, refused in one line when this machine lacks it."""

from __future__ import annotations

import os

import torch

from eclip.errors import EclipError


def resolve_device(name: str, option: str = "--device") -> torch.device:
    """cpu, cuda, cuda:N or mps -> the device. A bare `cuda` under torchrun is this process's GPU (LOCAL_RANK)."""
    try:
        device = torch.device(name)
    except RuntimeError:
        device = None
    if device is None or device.type not in ("cpu", "cuda", "mps"):
        raise EclipError(f"{option} {name!r}: not a device; use cpu, cuda, cuda:N or mps")
    if device.type == "cuda":
        if device.index is None:
            device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        if device.index >= torch.cuda.device_count():
            raise EclipError(f"{option} {name}: this machine has {torch.cuda.device_count()} CUDA GPU(s); use "
                             f"{option} cpu")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise EclipError(f"{option} {name}: MPS is not available on this machine; use {option} cpu")
    return device
