"""The serving tests' model and index: a one-step e-CLIP run on the shared `prepared_fashion` products, embedded
once per session; tests that change the index work on their own copy."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from eclip.errors import EclipError
from eclip.serve.app import wait_until_ready
from eclip.train.config import Config, TrainConfig
from eclip.models.config import ModelConfig, TextConfig, VisionConfig

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def served(prepared_fashion, tmp_path_factory) -> tuple[Path, Path, Path]:
    """-> (RUN_DIR, EMB_DIR, DATA_DIR): a 16 px ViT and a from-scratch BERT trained for one step (seconds)."""
    from eclip.index.embed import embed_command
    from eclip.train.loop import train

    root = tmp_path_factory.mktemp("served")
    config = Config(
        model=ModelConfig(embed_dim=16, vision=VisionConfig(image_size=16, patch_size=8, width=32, depth=1, heads=2),
                          text=TextConfig(model="scratch", vocab_size=300, width=32, depth=1, heads=2, max_length=16)),
        train=TrainConfig(steps=1, batch_size=16, batch_size_start=16, micro_batch_size=16, warmup_steps=1,
                          checkpoint_every=1, threads=1, val_every=0))
    train(prepared_fashion, root / "run", config)
    embed_command(root / "run", prepared_fashion, root / "emb", batch_size=64)
    return root / "run", root / "emb", prepared_fashion


@pytest.fixture
def emb_copy(served, tmp_path) -> Path:
    """A private EMB_DIR for a test that adds or removes products."""
    return Path(shutil.copytree(served[1], tmp_path / "emb"))


def start_server(run_dir: Path, emb_dir: Path, data_dir: Path, port: int, *extra: str) -> subprocess.Popen:
    """`eclip serve` in a child process; returns once /readyz answers 200."""
    process = subprocess.Popen([sys.executable, "-m", "eclip.cli", "serve", "--model", str(run_dir), "--index", str(emb_dir),
                                "--data", str(data_dir), "--port", str(port), *extra],
                               cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        wait_until_ready(port, process, timeout_s=60)
    except EclipError as error:
        process.kill()
        raise AssertionError(f"{error}: {process.communicate()[0].decode()}") from error
    return process
