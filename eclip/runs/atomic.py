"""Files and folders that appear whole or not at all: a reader (or a killed run's successor) sees the old version or
the new one, never half of one."""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from pathlib import Path


def fsync_folder(folder: Path) -> None:
    """Make a rename inside `folder` durable."""
    handle = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(handle)
    finally:
        os.close(handle)


def atomic_write(path: Path, write: Callable[[Path], object], durable: bool = False) -> Path:
    """`write(temporary)` writes the content to a temporary name beside `path`, which then replaces `path` in one
    rename. `durable`: also fsync the file and its folder, so the new content survives a power cut (served
    updates need it; checkpoints, which a rerun can redo, do not)."""
    path = Path(path)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        write(temporary)
        if durable:
            with open(temporary, "rb") as handle:
                os.fsync(handle.fileno())
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)
    if durable:
        fsync_folder(path.parent)
    return path


def write_text(path: Path, text: str) -> Path:
    return atomic_write(path, lambda temporary: temporary.write_text(text))


def building_folder(target: Path, resume: bool = False) -> Path:
    """A new, empty sibling of `target` to build its next version in (a leftover of a killed run is removed, or,
    with `resume`, kept for a command that checks and reuses the pieces it finished, e.g. `eclip embed`'s parts)."""
    target = Path(target)
    building = target.with_name(f".{target.name}.building")
    if not resume:
        shutil.rmtree(building, ignore_errors=True)
    building.mkdir(parents=True, exist_ok=resume)
    return building


def publish_folder(building: Path, target: Path) -> None:
    """Replace `target` by the finished `building` folder in as few steps as the filesystem allows: the old folder
    is renamed away first and deleted last, so at every moment `target` is either the old version or the new."""
    building, target = Path(building), Path(target)
    retired = target.with_name(f".{target.name}.old-{os.getpid()}")
    shutil.rmtree(retired, ignore_errors=True)
    if target.exists():
        target.rename(retired)
    building.rename(target)
    shutil.rmtree(retired, ignore_errors=True)
