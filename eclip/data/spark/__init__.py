"""`eclip prepare --engine spark`: the same three stages as `eclip.data.prepare`, run on Spark.

The per-row and per-file work runs the local engine's own functions inside Spark tasks (`catalog.open_catalog`
and `canonical_batch` to read, `inspection.inspect_batch` under `mapInArrow`, `prepare.product_table` and
`store.ShardWriter` to write), so both engines give the same DATA_DIR; Spark adds the partitioning, the
group-bys and the connected components of stage 2 (`decisions.py`, `components.py`).

pyspark is imported only inside this subpackage's modules, never here: the rest of eclip runs without it, and
`require_pyspark` turns its absence into one line.
"""

from __future__ import annotations

import glob
from pathlib import Path

from eclip.data.catalog import FORMATS, detect_format
from eclip.errors import EclipError

INSTALL = "pip install 'eclip[spark]'"


def require_pyspark() -> None:
    try:
        import pyspark  # noqa: F401
    except ImportError:
        raise EclipError(f"--engine spark needs pyspark, which is not installed: {INSTALL}") from None


def parse_conf(pairs: list[str]) -> list[tuple[str, str]]:
    """`--spark-conf K=V` values as (key, value); a pair without '=' is refused in one line."""
    out = []
    for text in pairs:
        key, sep, value = text.partition("=")
        if not sep or not key.strip():
            raise EclipError(f"--spark-conf {text!r}: expected KEY=VALUE, e.g. --spark-conf spark.executor.memory=4g")
        out.append((key.strip(), value.strip()))
    return out


def catalog_files(source: Path) -> tuple[list[Path], Path]:
    """The catalogue files a source names, in the order their rows are numbered (by path), and the folder image
    paths are relative to: a file (its folder); a folder of part files (the folder; the files with a catalogue
    extension at any depth, but not under names starting with '.' or '_', such as _temporary or .crc, so that
    images, _SUCCESS markers and checksums beside the parts are not read); or a glob (the folder before its first
    wildcard; every match must be a catalogue file)."""
    source = Path(source)
    if source.is_file():
        files, root = [source], source.parent
    elif source.is_dir():
        files = [p for p in sorted(source.rglob("*")) if p.is_file() and p.suffix.lower() in FORMATS
                 and not any(part.startswith((".", "_")) for part in p.relative_to(source).parts)]
        root = source
        if not files:
            raise EclipError(f"{source}: the folder holds no catalogue files (.csv, .tsv, .jsonl or .parquet)")
    elif glob.has_magic(str(source)):
        files = [Path(p) for p in sorted(glob.glob(str(source), recursive=True)) if Path(p).is_file()]
        root = Path(*_until_magic(source.parts))
        if not files:
            raise EclipError(f"{source}: no file matches the pattern; check the path")
    else:
        raise EclipError(f"{source}: no such catalogue file or folder")
    for path in files:
        detect_format(path)
    return [p.resolve() for p in files], root.resolve()


def _until_magic(parts: tuple[str, ...]):
    for part in parts:
        if glob.has_magic(part):
            return
        yield part


def build_on_spark(files: list[Path], root: Path, building: Path, mapping, config, master: str | None,
                   conf: list[tuple[str, str]]):
    """`prepare`'s three stages on Spark, into `building`; the same result tuple as `prepare._build_locally`."""
    from eclip.data.spark.run import build

    return build(files, root, building, mapping, config, master, conf)
