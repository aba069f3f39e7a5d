"""User-given files and folders opened with a one-line `EclipError` instead of a traceback when they cannot be."""

from __future__ import annotations

from collections.abc import Callable, Collection
from pathlib import Path

import pyarrow as pa

from eclip.errors import EclipError


def is_utf8(data: bytes | None) -> bool:
    """Whether `data` (None counts as text: a null) decodes as UTF-8."""
    if data is None:
        return True
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def read_parquet(path: Path, columns: list[str] | None = None) -> pa.Table:
    """The table (or `columns` of it) of one Parquet file."""
    import pyarrow.parquet as pq

    path = Path(path)
    if not path.is_file():
        raise EclipError(f"{path}: no such file; expected a Parquet file")
    try:
        return pq.read_table(path, columns=columns)
    except (pa.ArrowException, OSError) as error:
        raise EclipError(f"{path}: not a readable Parquet file ({error}); write it again") from None


def parquet_schema(path: Path) -> pa.Schema:
    """The column names and types of one Parquet file, without reading its rows."""
    import pyarrow.parquet as pq

    path = Path(path)
    if not path.is_file():
        raise EclipError(f"{path}: no such file; expected a Parquet file")
    try:
        return pq.read_schema(path)
    except (pa.ArrowException, OSError) as error:
        raise EclipError(f"{path}: not a readable Parquet file ({error}); write it again") from None


def output_folder(path: Path) -> Path:
    """`path`, created (with its parents) if missing, for an output option such as --out."""
    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        raise EclipError(f"{path}: exists and is not a folder; choose another --out") from None
    except OSError as error:
        raise EclipError(f"{path}: cannot create the output folder ({error.strerror}); choose another --out") from None
    return path


def check_out_folder(out: Path, owned: Collection[str], command: str,
                     finished: Callable[[Path], bool] | None = None, replaced_whole: bool = False) -> None:
    """Before any work: refuse an --out that is a file, lies under a file, or holds entries `eclip <command>` does
    not write (names outside `owned`), so a bad --out fails at once and nobody's files are written into or deleted.
    `finished(out)`: a non-empty folder must also be a finished output of the command to be replaced.
    `replaced_whole`: the command renames a new folder into place, so --out may not be the current folder or one
    above it (that would pull the folder away from under the shell)."""
    out = Path(out)
    existing = out if out.exists() else next((parent for parent in out.parents if parent.exists()), None)
    if existing is not None and not existing.is_dir():
        where = "is a file, not a folder" if existing == out else f"lies under {existing}, which is a file"
        raise EclipError(f"--out {out} {where}: choose a new or empty folder")
    if replaced_whole and Path.cwd().resolve().is_relative_to(out.resolve()):
        raise EclipError(f"--out {out} is the current folder or one above it, which `eclip {command}` would replace "
                         f"as a whole: name a folder, e.g. --out {command}-out")
    if existing != out:
        return
    entries = sorted(entry.name for entry in out.iterdir())
    foreign = [name for name in entries if name not in set(owned)]
    if foreign:
        shown = ", ".join(foreign[:3]) + (f" and {len(foreign) - 3} more" if len(foreign) > 3 else "")
        raise EclipError(f"{out} holds other files than `eclip {command}` writes ({shown}): choose an empty or new "
                         f"--out (nothing was deleted)")
    if entries and finished is not None and not finished(out):
        raise EclipError(f"{out} is not a finished `eclip {command}` output: choose an empty or new --out (nothing "
                         f"was deleted)")
