"""The --out folder of a command that writes a known set of files, checked before any work: a bad --out fails at
once in one line, and a folder of someone else's files is never written into or deleted."""

from __future__ import annotations

from collections.abc import Collection
from pathlib import Path

from eclip.errors import EclipError


def check_out_folder(out: Path, owned: Collection[str], command: str, replaced_whole: bool = False) -> None:
    """Refuse an --out that is a file, lies under a file, or holds entries `eclip <command>` does not write (names
    outside `owned`). `replaced_whole`: the command builds a new folder and renames it into place, so --out may not
    be the current folder or one above it (that would pull the folder away from under the shell)."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise EclipError(f"--out {out} is a file, not a folder: choose a new or empty folder")
    blocking = next((parent for parent in out.parents if parent.exists() and not parent.is_dir()), None)
    if blocking is not None:
        raise EclipError(f"--out {out} lies under {blocking}, which is a file: choose a new or empty folder")
    if replaced_whole and Path.cwd().resolve().is_relative_to(out.resolve()):
        raise EclipError(f"--out {out} is the current folder or one above it, which `eclip {command}` would replace "
                         f"as a whole: name a folder, e.g. --out emb")
    foreign = sorted(entry.name for entry in out.iterdir() if entry.name not in owned) if out.is_dir() else []
    if foreign:
        shown = ", ".join(foreign[:3]) + (f" and {len(foreign) - 3} more" if len(foreign) > 3 else "")
        raise EclipError(f"{out} holds other files than `eclip {command}` writes ({shown}): choose an empty or new "
                         f"--out")
