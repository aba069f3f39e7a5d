"""The service's limits and network settings: configs/serve.toml, overridden by `eclip serve` options."""

from __future__ import annotations

import dataclasses
import tomllib
from dataclasses import dataclass
from pathlib import Path

from eclip.errors import EclipError
from eclip.train.config import dataclass_from_dict

DEFAULT_CONFIG = Path(__file__).resolve().parents[2] / "configs" / "serve.toml"
QUERY_ENCODERS = ("auto", "distilled", "full")


@dataclass
class ServeConfig:
    host: str = "127.0.0.1"
    port: int = 8000
    workers: int = 1
    max_upload_bytes: int = 8_000_000
    max_pixels: int = 25_000_000
    max_k: int = 100
    max_query_chars: int = 512
    request_timeout_s: float = 10.0
    max_batch: int = 32
    threads: int = 0  # torch and FAISS threads; 0 leaves the process's setting alone (configs/serve.toml says 1)
    query_encoder: str = "auto"  # search queries: "distilled" (RUN_DIR's `eclip distill` output), "full", or
    # "auto" (distilled when RUN_DIR has one)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def load_serve_config(path: Path | None = None) -> ServeConfig:
    """The [serve] table of `path` (default configs/serve.toml; dataclass defaults when that file is absent)."""
    if path is None:
        if not DEFAULT_CONFIG.is_file():
            return ServeConfig()
        path = DEFAULT_CONFIG
    path = Path(path)
    if not path.is_file():
        raise EclipError(f"{path}: no such serve config file")
    return dataclass_from_dict(ServeConfig, tomllib.loads(path.read_text()).get("serve", {}), where=str(path))
