"""What every `eclip eval` task runner reads and returns: the products of each split (`load_eval_data`), the
runner's output (`TaskOutput`), the exception that skips a task the data has no labels for (`SkipTask`), and the
helpers more than one task shares."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from eclip.data.store import read_products
from eclip.errors import EclipError
from eclip.index.embed import SPLITS
from eclip.runs.provenance import data_report

if TYPE_CHECKING:
    from eclip.eval.config import EvalConfig
    from eclip.eval.representation import Representation

METADATA_COLUMNS = ["product_id", "title", "title_norm", "category", "group_id", "adult", "image_hash", "split"]


class SkipTask(Exception):
    """The data has no labels for this task: it is skipped with this note, the others run."""


@dataclass
class EvalData:
    """Labels, metadata and thumbnails of the products each split contributes (train capped at
    `probe_max_train`), plus the products matching and clustering use."""
    splits: dict[str, pa.Table]
    attributes: list[str]
    sizes: dict[str, int]  # products per split in DATA_DIR, before any cap
    pair_rows: dict[str, np.ndarray] = field(default_factory=dict)  # split -> rows: whole groups, capped

    def column(self, split: str, name: str) -> np.ndarray:
        return np.asarray(self.splits[split].column(name).to_pylist(), dtype=object)

    def thumbnails(self, split: str) -> pa.Array:
        return self.splits[split].column("thumbnail").combine_chunks()


@dataclass
class TaskOutput:
    scores: dict
    curves: dict = field(default_factory=dict)  # for the plots
    probes: dict = field(default_factory=dict)  # fitted heads, kept for the trained model only


def whole_groups(groups: np.ndarray, cap: int, rng: np.random.Generator) -> np.ndarray:
    """Rows of randomly ordered whole groups, as many groups as fit in `cap` rows (offers stay together)."""
    unique, counts = np.unique(groups, return_counts=True)
    order = rng.permutation(len(unique))
    kept = unique[order][np.cumsum(counts[order]) <= cap]
    return np.flatnonzero(np.isin(groups, kept))


def load_eval_data(data_dir: Path, config: EvalConfig) -> EvalData:
    report = data_report(data_dir)
    table = read_products(data_dir)
    attributes = [name for name in table.column_names if name.startswith("attr_")]
    table = table.select(METADATA_COLUMNS + attributes + ["thumbnail"])
    splits = {split: table.filter(pc.equal(table.column("split"), split)) for split in SPLITS}
    if splits["test"].num_rows == 0:
        raise EclipError(f"{data_dir}: the test split is empty ({table.num_rows} products, "
                         f"{report.get('splits', {})}): prepare more products or a larger --test-fraction")
    if splits["train"].num_rows == 0:
        raise EclipError(f"{data_dir}: the train split is empty: the task heads have nothing to learn from")
    data = EvalData(splits, attributes, {split: t.num_rows for split, t in splits.items()})
    rng = np.random.default_rng(config.seed)
    # Heads learn from at most probe_max_train products: embedding the rest of a large train split buys little.
    if splits["train"].num_rows > config.probe_max_train:
        keep = whole_groups(data.column("train", "group_id"), config.probe_max_train, rng)
        data.splits["train"] = splits["train"].take(pa.array(keep))
    for split in ("val", "test"):
        data.pair_rows[split] = whole_groups(data.column(split, "group_id"), config.pair_max_products, rng)
    return data


def is_labelled(values: np.ndarray) -> np.ndarray:
    """True where a product has a label: an unlabelled product holds None or ""."""
    return np.array([v is not None and v != "" for v in values], dtype=bool)


def pair_similarity(rep: Representation, data: EvalData, split: str, view: str | None = None) -> np.ndarray:
    """(N, N) similarities of the split's matching and clustering products (`pair_rows`), in `view` (default:
    the representation's primary one)."""
    vectors = rep.views[split][view or rep.primary][data.pair_rows[split]]
    return rep.similarity(vectors, vectors)


def has_pairs(groups: np.ndarray) -> bool:
    """Whether some catalog group holds two products: matching and group clustering need such offers."""
    return len(groups) > len(set(groups))
