"""Shared fixtures: paths to the real data in ../shared/data, a small prepared dataset built from it, and a dual
encoder trained on that dataset for a few steps."""

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


def tiny_config():
    """Seconds on CPU: a 16 px ViT and a from-scratch one-layer BERT on a WordPiece vocabulary of the titles."""
    from eclip.train.config import Config, TrainConfig
    from eclip.models.config import ModelConfig, TextConfig, VisionConfig

    return Config(
        model=ModelConfig(embed_dim=16,
                          vision=VisionConfig(image_size=16, patch_size=8, width=32, depth=1, heads=2),
                          text=TextConfig(model="scratch", vocab_size=300, width=32, depth=1, heads=2, max_length=16)),
        # No validation: the weights are the last step's, so a run trained further has other weights.
        train=TrainConfig(steps=4, batch_size=32, batch_size_start=32, micro_batch_size=32, warmup_steps=1,
                          checkpoint_every=4, threads=1, val_every=0))


@pytest.fixture(scope="session")
def run_dir(prepared_fashion, tmp_path_factory) -> Path:
    """A RUN_DIR of `tiny_config` trained on `prepared_fashion`; `eclip eval` adds its task heads, so tests that
    write other files into a RUN_DIR work on a copy."""
    from eclip.train.loop import train

    run = tmp_path_factory.mktemp("tiny_model") / "run"
    train(prepared_fashion, run, tiny_config())
    return run


def trained_further(run_dir: Path, data_dir: Path, copy: Path) -> Path:
    """A copy of RUN_DIR trained one step more on DATA_DIR (`eclip train --resume`): the same model, other weights;
    whatever was fit on RUN_DIR's weights (heads, an EMB_DIR) is stale for it."""
    import shutil

    from eclip.train.config import load_config
    from eclip.train.loop import train

    shutil.copytree(run_dir, copy)
    config = load_config(copy / "config.json")
    config.train.steps += 1
    train(data_dir, copy, config, resume=True)
    return copy


@pytest.fixture(scope="session")
def spark():
    """The one Spark session (local[2]) of every test that runs on Spark: it takes seconds to start."""
    pytest.importorskip("pyspark")
    from eclip.data.spark.session import spark_session

    session, started = spark_session(None, [("spark.ui.enabled", "false"),
                                            ("spark.ui.showConsoleProgress", "false")], 2)
    yield session
    if started:
        session.stop()
