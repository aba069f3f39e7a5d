"""The applications tests' fixtures: a dual encoder trained for a few steps on the shared `prepared_fashion`
DATA_DIR (real fashion-dev products with seller offers), rewritten copies of that DATA_DIR, and one fast
`eclip eval` run that every report test reads."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pytest

from eclip.cli import main
from eclip.train.config import Config, ModelConfig, TextConfig, TrainConfig, VisionConfig
from tests.train.train_helpers import rewritten_copy

# Light heads and one prompt per class: the tests check mechanics, not quality.
FAST_EVAL_TOML = """
category_templates = ["{}"]
attribute_templates = ["{}", "{name} {}"]
probe_max_iter = 100
pair_max_products = 200
"""
RESTRICTED_SUBCATEGORY = "Shoes"  # the 160 products hold no adult ones: shoes stand in for them


def tiny_config() -> Config:
    """Seconds on CPU: a 16 px ViT and a from-scratch one-layer BERT on a WordPiece vocabulary of the titles."""
    return Config(
        model=ModelConfig(embed_dim=16,
                          vision=VisionConfig(image_size=16, patch_size=8, width=32, depth=1, heads=2),
                          text=TextConfig(model="scratch", vocab_size=300, width=32, depth=1, heads=2, max_length=16)),
        train=TrainConfig(steps=4, batch_size=32, batch_size_start=32, micro_batch_size=32, warmup_steps=1,
                          checkpoint_every=4, threads=1))


def with_column(table: pa.Table, name: str, values) -> pa.Table:
    return table.set_column(table.column_names.index(name), name, values)


@pytest.fixture(scope="session")
def run_dir(prepared_fashion, tmp_path_factory) -> Path:
    from eclip.train.loop import train

    run = tmp_path_factory.mktemp("tasks_model") / "run"
    train(prepared_fashion, run, tiny_config())
    return run


@pytest.fixture(scope="session")
def labelled_data(prepared_fashion, tmp_path_factory) -> Path:
    """prepared_fashion with the adult column set for every product (true for one sub-category)."""
    def mark_adult(table: pa.Table) -> pa.Table:
        restricted = pc.match_substring(table.column("category"), f" > {RESTRICTED_SUBCATEGORY} > ")
        return with_column(table, "adult", restricted)

    return rewritten_copy(prepared_fashion, tmp_path_factory.mktemp("labelled") / "data", mark_adult)


@pytest.fixture(scope="session")
def fast_config(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("eval_config") / "eval.toml"
    path.write_text(FAST_EVAL_TOML)
    return path


@pytest.fixture(scope="session")
def eval_run(run_dir, labelled_data, fast_config, tmp_path_factory) -> tuple[Path, str]:
    """`eclip eval` over every task and baseline -> (REPORT_DIR, what it printed)."""
    import contextlib
    import io

    out = tmp_path_factory.mktemp("eval") / "report"
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        code = main(["eval", "--model", str(run_dir), "--data", str(labelled_data), "--out", str(out),
                     "--config", str(fast_config)])
    assert code == 0
    return out, printed.getvalue()
