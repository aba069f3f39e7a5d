"""User-given files and folders opened with a one-line `EclipError` instead of a traceback when they cannot be."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa

from eclip.errors import EclipError


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
