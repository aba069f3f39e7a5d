"""Schedules over training steps: the effective batch size (e-CLIP grows it instead of decaying the learning
rate) and the learning rate (linear warmup, then constant or cosine)."""

from __future__ import annotations

import math


def batch_size_at(step: int, steps: int, start: int, end: int, schedule: str, granularity: int) -> int:
    """Effective batch at `step` in [0, steps): constant `end`, or a half-cosine from `start` to `end`.
    Rounded to a multiple of `granularity` (`train.batch_size_multiple`), which is also the minimum."""
    if schedule == "constant" or steps <= 1 or start in (0, end):
        size = end
    elif schedule == "cosine":
        progress = step / (steps - 1)
        size = start + (end - start) * (1 - math.cos(math.pi * progress)) / 2
    else:
        raise ValueError(f"unknown batch schedule {schedule!r}")
    return max(1, round(size / granularity)) * granularity


def lr_at(step: int, steps: int, base_lr: float, warmup_steps: int, schedule: str) -> float:
    if step < warmup_steps:
        return base_lr * (step + 1) / warmup_steps
    if schedule == "constant":
        return base_lr
    if schedule == "cosine":
        progress = (step - warmup_steps) / max(1, steps - warmup_steps)
        return base_lr * (1 + math.cos(math.pi * progress)) / 2
    raise ValueError(f"unknown lr schedule {schedule!r}")


def steps_for_epochs(epochs: float, pairs: int, start: int, end: int, schedule: str, granularity: int) -> int:
    """The fewest steps whose batch schedule draws at least `epochs` x `pairs` pairs (`train.epochs`)."""
    wanted = epochs * pairs
    steps = max(1, math.ceil(wanted / end))  # a lower bound: no batch is larger than `end`
    while sum(batch_size_at(step, steps, start, end, schedule, granularity) for step in range(steps)) < wanted:
        steps += 1
    return steps
