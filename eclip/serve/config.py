"""The service's limits and network settings: the shipped `eclip/configs/serve/default.toml` (or a file with a
[serve] table), overridden by `eclip serve` options."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

from eclip.config import load, option, to_dict
from eclip.configs import config_path

QUERY_ENCODERS = ("auto", "distilled", "full")


@dataclass
class ServeConfig:
    LABEL: ClassVar[str] = "serve"
    host: str = option("127.0.0.1", "address to bind; 127.0.0.1 keeps the service on this machine")
    port: int = option(8000, "TCP port", low=1, high=65535)
    workers: int = option(1, "processes, each with the model and the index", above=0)
    max_upload_bytes: int = option(8_000_000, "request body cap (413 above)", above=0)
    max_pixels: int = option(25_000_000, "uploaded image cap, width x height, checked before decoding", above=0)
    max_k: int = option(100, "most results a query may ask for", above=0)
    max_query_chars: int = option(512, "longest query or title text", above=0)
    request_timeout_s: float = option(10.0, "seconds before a request is answered 503", above=0)
    max_batch: int = option(32, "concurrent queries embedded and searched together", above=0)
    # The shipped default.toml says 1: the event loop needs a core too.
    threads: int = option(0, "torch and FAISS threads per worker; 0 leaves the process's setting alone", low=0)
    query_encoder: str = option("auto", "what embeds search queries: distilled (`eclip distill`'s encoder, about "
                                        "25x cheaper), full (the text tower), or auto (distilled when RUN_DIR has "
                                        "one)", choices=QUERY_ENCODERS)

    def to_dict(self) -> dict:
        return to_dict(self)


def load_serve_config(path: Path | None = None) -> ServeConfig:
    """The [serve] table of `path` (default: the shipped serve defaults)."""
    return load(ServeConfig, config_path("serve", path), table="serve")
