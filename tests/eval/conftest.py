"""The applications tests' fixtures: rewritten copies of the shared `prepared_fashion` DATA_DIR (real fashion-dev
products with seller offers) and one fast `eclip eval` run of the shared `run_dir` model that every report test
reads."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pytest

from eclip.cli import main
from tests.train.train_helpers import rewritten_copy

# Light heads and one prompt per class: the tests check mechanics, not quality.
FAST_EVAL_TOML = """
category_templates = ["{}"]
attribute_templates = ["{}", "{name} {}"]
probe_max_iter = 100
pair_max_products = 200
"""
RESTRICTED_SUBCATEGORY = "Shoes"  # the 160 products hold no adult ones: shoes stand in for them


def with_column(table: pa.Table, name: str, values) -> pa.Table:
    return table.set_column(table.column_names.index(name), name, values)


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
