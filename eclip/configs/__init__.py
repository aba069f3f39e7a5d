"""The named configs shipped inside the package, one folder per kind:

    train/   training recipes (`eclip train --config tiny`): tiny, small, b32-bert, clip-b32, siglip-b16
    rec/     recommender recipes (`eclip rec train --config beauty`)
    eval/, serve/, graph/   each command's defaults, `default.toml`

`--config` takes a name of its kind or a path to a .toml/.json file.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from eclip.errors import EclipError

KINDS = ("train", "rec", "eval", "serve", "graph")
DEFAULT = "default"


def _folder(kind: str):
    if kind not in KINDS:
        raise ValueError(f"unknown config kind {kind!r}; one of {', '.join(KINDS)}")
    return resources.files(__name__) / kind


def list_configs(kind: str = "train") -> list[str]:
    """The names of the shipped configs of `kind`, sorted (a command's defaults are named "default")."""
    return sorted(entry.name.removesuffix(".toml") for entry in _folder(kind).iterdir()
                  if entry.name.endswith(".toml"))


def config_path(kind: str, name_or_path: str | Path | None = None) -> Path:
    """The file of a named config of `kind` (its default when None), or `name_or_path` itself when it is a file."""
    if name_or_path is not None and Path(name_or_path).is_file():
        return Path(name_or_path)
    name = DEFAULT if name_or_path is None else str(name_or_path)
    shipped = _folder(kind) / f"{name}.toml"
    if shipped.is_file():
        return Path(str(shipped))
    names = ", ".join(list_configs(kind)) or "none"
    raise EclipError(f"no {kind} config {name!r}: give a .toml/.json file or one of {names}")
