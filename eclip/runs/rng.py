"""torch's random state, captured and restored so that a replayed forward pass (gradient caching) or a resumed run
draws exactly the numbers the uninterrupted one would have."""

from __future__ import annotations

import torch


def capture_rng(device: torch.device) -> dict:
    """{"torch": CPU generator state, "cuda": the device's generator state (CUDA only)}: what a checkpoint keeps."""
    state = {"torch": torch.get_rng_state()}
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def restore_rng(state: dict, device: torch.device) -> None:
    torch.set_rng_state(state["torch"])
    if "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"], device)
