"""The training tests' data: the shared `prepared_fashion` DATA_DIR (real fashion-dev products with seller
offers sharing a catalog_id)."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def fashion_data_dir(prepared_fashion) -> Path:
    return prepared_fashion
