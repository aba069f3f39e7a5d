"""The service's limits and network settings: configs/serve.toml, overridden by `eclip serve` options."""

from __future__ import annotations

import dataclasses
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from eclip.errors import EclipError
from eclip.train.config import dataclass_from_dict

DEFAULT_CONFIG = Path(__file__).resolve().parents[2] / "configs" / "serve.toml"
QUERY_ENCODERS = ("auto", "distilled", "full")


def _option(meaning: str, **extra) -> dict:
    return {"help": meaning, **extra}


@dataclass
class ServeConfig:
    host: str = field(default="127.0.0.1", metadata=_option("address to bind; 127.0.0.1 keeps the service on "
                                                             "this machine"))
    port: int = field(default=8000, metadata=_option("TCP port"))
    workers: int = field(default=1, metadata=_option("processes, each with the model and the index"))
    max_upload_bytes: int = field(default=8_000_000, metadata=_option("request body cap (413 above)"))
    max_pixels: int = field(default=25_000_000, metadata=_option("uploaded image cap, width x height, checked "
                                                                 "before decoding"))
    max_k: int = field(default=100, metadata=_option("most results a query may ask for"))
    max_query_chars: int = field(default=512, metadata=_option("longest query or title text"))
    request_timeout_s: float = field(default=10.0, metadata=_option("seconds before a request is answered 503"))
    max_batch: int = field(default=32, metadata=_option("concurrent queries embedded and searched together"))
    # 0 leaves the process's setting alone; configs/serve.toml says 1
    threads: int = field(default=0, metadata=_option("torch and FAISS threads per worker"))
    query_encoder: str = field(default="auto", metadata=_option(
        "what embeds search queries: distilled (`eclip distill`'s encoder, about 25x cheaper), full (the text "
        "tower), or auto (distilled when RUN_DIR has one)", choices=QUERY_ENCODERS))

    def validate(self) -> None:
        for name in ("workers", "max_upload_bytes", "max_pixels", "max_k", "max_query_chars", "max_batch"):
            if getattr(self, name) < 1:
                raise EclipError(f"{name} (--{name.replace('_', '-')}) must be positive, got {getattr(self, name)}")
        if not 0 < self.port < 65536 or self.request_timeout_s <= 0:
            raise EclipError(f"port must be in 1..65535 and request_timeout_s above 0, got {self.port} and "
                             f"{self.request_timeout_s}")
        if self.query_encoder not in QUERY_ENCODERS:
            raise EclipError(f"query_encoder must be one of {', '.join(QUERY_ENCODERS)}, got {self.query_encoder!r}")

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
    config = dataclass_from_dict(ServeConfig, tomllib.loads(path.read_text()).get("serve", {}), where=str(path))
    config.validate()
    return config
