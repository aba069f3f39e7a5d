"""Which --out folder a data command may replace: never one that holds anything it did not write itself."""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Iterable

from eclip.errors import EclipError


def check_replaceable(out: Path, command: str, own_entries: Iterable[str], finished: Callable[[Path], bool]) -> None:
    """Raise EclipError unless `eclip <command>` may build `out` and replace whatever is there.

    Allowed: no such path, an empty folder, or a finished output of the command itself: only entries it writes
    (`own_entries`, top level) and `finished(out)` true. Anything else would delete someone's files, or cannot
    become a folder at all."""
    existing = out if out.exists() else next((p for p in out.parents if p.exists()), None)
    if existing is not None and not existing.is_dir():
        where = "exists and is not a folder" if existing == out else f"cannot be made: {existing} is a file"
        raise EclipError(f"{out}: {where}; choose another --out")
    if existing != out:
        return
    entries = sorted(p.name for p in out.iterdir())
    if not entries:
        return
    others = [name for name in entries if name not in set(own_entries)]
    if others:
        listed = ", ".join(others[:3]) + (f" and {len(others) - 3} more" if len(others) > 3 else "")
        raise EclipError(f"{out}: holds {listed}, which `eclip {command}` did not write; choose an empty or new "
                         f"--out (nothing was deleted)")
    if not finished(out):
        raise EclipError(f"{out}: not a finished `eclip {command}` output; choose an empty or new --out "
                         f"(nothing was deleted)")
