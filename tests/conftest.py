"""Shared fixtures: paths to the real data in ../shared/data and a small prepared dataset built from it."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"
FASHION = SHARED_DATA / "fashion-dev"
BEAUTY = SHARED_DATA / "amazon-beauty"


def require(path: Path) -> Path:
    if not path.exists():
        pytest.skip(f"shared data absent: {path}")
    return path


@pytest.fixture(scope="session")
def fashion_dir() -> Path:
    return require(FASHION / "catalog.csv").parent


@pytest.fixture(scope="session")
def prepared_fashion(tmp_path_factory, fashion_dir) -> Path:
    """A prepared DATA_DIR: the first 160 real fashion-dev products, 3 seller offers each (shared catalog_id)."""
    from eclip.data.config import PrepareConfig
    from eclip.data.offers import make_offers
    from eclip.data.prepare import prepare

    root = tmp_path_factory.mktemp("prepared_fashion")
    make_offers(fashion_dir / "catalog.csv", root / "offers", per_product=3, seed=0, limit=160, workers=1)
    prepare(root / "offers" / "catalog.csv", root / "data", config=PrepareConfig(workers=1))
    return root / "data"
