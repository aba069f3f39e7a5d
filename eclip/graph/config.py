"""Options of `eclip graph train` and `eclip graph eval`: one config with a `[train]` and an `[eval]` table, filled
from the shipped `eclip/configs/graph/default.toml` (or another file), then the command line. Every field is also
a flag of its subcommand (`walks_per_node` -> `--walks-per-node`; lists are comma-separated)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

from eclip.config import load, option, require, section
from eclip.configs import config_path

VARIANTS = ("metapath2vec", "metapath2vec++")


@dataclass
class GraphTrainConfig:
    variant: str = option("metapath2vec++", "metapath2vec (negatives from all nodes) or metapath2vec++ (negatives "
                                            "of the context's node type)", choices=VARIANTS)
    metapaths: tuple[str, ...] = option(
        ("product-brand-product-color-product", "product-brand-product-usage-product",
         "product-brand-product-gender-product", "product-usage-product-gender-product-season-product"),
        "meta-paths, each a '-'-joined cycle of node types starting and ending with the same type; walks repeat it")
    walks_per_node: int = option(2, "walks started from every start node, per meta-path", low=1)
    walk_length: int = option(21, "nodes per walk (the start node included)", low=2)
    window: int = option(2, "skip-gram context: nodes up to this many steps away on either side", low=1)
    dim: int = option(128, "embedding dimension", low=1)
    negatives: int = option(5, "negative samples per (node, context) pair", low=1)
    epochs: int = option(1, "passes over all (node, context) pairs", low=1)
    batch_size: int = option(4096, "(node, context) pairs per optimizer step", low=1)
    lr: float = option(0.05, "row-wise Adagrad learning rate", above=0)
    seed: int = option(0, "seed of the walks, the pair order, the negatives and the initial weights", low=0)
    brand_max_words: int = option(4, "longest brand read from a title's first words (when the brand column is "
                                     "null)", low=1)
    brand_min_count: int = option(2, "a title prefix becomes a known brand when at least this many titles start "
                                     "with it", low=1)

    def check(self) -> None:
        require(bool(self.metapaths), "give at least one meta-path, e.g. product-brand-product")

    def node_types(self) -> set[str]:
        return {node_type for metapath in self.metapaths for node_type in metapath.split("-")}


@dataclass
class GraphEvalConfig:
    label_level: int = option(2, "classify products by their category path cut at this level (1 = top level)",
                              low=1)
    train_fractions: tuple[float, ...] = option((0.05, 0.1, 0.5, 0.9), "fractions of labelled products the "
                                                "logistic regression trains on", above=0, below=1)
    repeats: int = option(3, "random splits per training fraction (and k-means runs for NMI), averaged", low=1)
    min_class_size: int = option(20, "drop categories with fewer products than this (they cannot be split at "
                                     "every fraction)", low=2)
    regularization: float = option(10.0, "inverse L2 strength C of the logistic regression on L2-normalized "
                                         "features", above=0)
    seed: int = option(0, "seed of the splits and of k-means", low=0)

    def check(self) -> None:
        require(bool(self.train_fractions), "give at least one of train_fractions")


@dataclass
class GraphConfig:
    LABEL: ClassVar[str] = "graph"
    train: GraphTrainConfig = section(GraphTrainConfig)
    eval: GraphEvalConfig = section(GraphEvalConfig)


def load_config(path: Path | None = None) -> GraphConfig:
    """The `[train]` and `[eval]` tables of a TOML file (default: the shipped graph defaults); missing keys keep
    the dataclass defaults."""
    return load(GraphConfig, config_path("graph", path))
