"""Options of `eclip graph train` and `eclip graph eval`: typed dataclasses filled from TOML, then the command line.

`configs/graph.toml` holds the same defaults as the dataclasses, with a `[train]` and an `[eval]` table.
Every field is also a command-line option (`walks_per_node` -> `--walks-per-node`); tuples are comma-separated.
"""

from __future__ import annotations

import argparse
import tomllib
from dataclasses import MISSING, asdict, dataclass, field, fields
from pathlib import Path

from eclip.errors import EclipError

VARIANTS = ("metapath2vec", "metapath2vec++")


def _option(default, help: str):
    if isinstance(default, tuple):
        return field(default_factory=lambda: default, metadata={"help": help})
    return field(default=default, metadata={"help": help})


@dataclass
class GraphTrainConfig:
    variant: str = _option("metapath2vec++", "metapath2vec (negatives from all nodes) or metapath2vec++ (negatives of the context's node type)")
    metapaths: tuple[str, ...] = _option(
        ("product-brand-product-color-product", "product-brand-product-usage-product",
         "product-brand-product-gender-product", "product-usage-product-gender-product-season-product"),
        "meta-paths, each a '-'-joined cycle of node types starting and ending with the same type; walks repeat it")
    walks_per_node: int = _option(2, "walks started from every start node, per meta-path")
    walk_length: int = _option(21, "nodes per walk (the start node included)")
    window: int = _option(2, "skip-gram context: nodes up to this many steps away on either side")
    dim: int = _option(128, "embedding dimension")
    negatives: int = _option(5, "negative samples per (node, context) pair")
    epochs: int = _option(1, "passes over all (node, context) pairs")
    batch_size: int = _option(4096, "(node, context) pairs per optimizer step")
    lr: float = _option(0.05, "row-wise Adagrad learning rate")
    seed: int = _option(0, "seed of the walks, the pair order, the negatives and the initial weights")
    brand_max_words: int = _option(4, "longest brand read from a title's first words (when the brand column is null)")
    brand_min_count: int = _option(2, "a title prefix becomes a known brand when at least this many titles start with it")

    def __post_init__(self):
        if self.variant not in VARIANTS:
            raise ValueError(f"unknown variant {self.variant!r}; choose from {', '.join(VARIANTS)}")
        if not self.metapaths:
            raise ValueError("give at least one meta-path, e.g. product-brand-product")
        for name in ("walks_per_node", "window", "dim", "negatives", "epochs", "batch_size", "brand_max_words", "brand_min_count"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.walk_length < 2:
            raise ValueError(f"walk_length must be at least 2, got {self.walk_length}")

    def node_types(self) -> set[str]:
        return {node_type for metapath in self.metapaths for node_type in metapath.split("-")}


@dataclass
class GraphEvalConfig:
    label_level: int = _option(2, "classify products by their category path cut at this level (1 = top level)")
    train_fractions: tuple[float, ...] = _option((0.05, 0.1, 0.5, 0.9), "fractions of labelled products the logistic regression trains on")
    repeats: int = _option(3, "random splits per training fraction (and k-means runs for NMI), averaged")
    min_class_size: int = _option(20, "drop categories with fewer products than this (they cannot be split at every fraction)")
    regularization: float = _option(10.0, "inverse L2 strength C of the logistic regression on L2-normalized features")
    seed: int = _option(0, "seed of the splits and of k-means")

    def __post_init__(self):
        if self.label_level < 1:
            raise ValueError(f"label_level must be at least 1, got {self.label_level}")
        if not self.train_fractions or not all(0 < f < 1 for f in self.train_fractions):
            raise ValueError(f"train_fractions must lie strictly between 0 and 1, got {self.train_fractions}")
        if self.repeats < 1 or self.min_class_size < 2:
            raise ValueError("repeats must be at least 1 and min_class_size at least 2")


def _parse(value, kind):
    """A TOML or command-line value as the field's type; tuples come as lists (TOML) or comma-separated text."""
    if kind.startswith("tuple"):
        items = value.split(",") if isinstance(value, str) else list(value)
        element = float if "float" in kind else str
        return tuple(element(item.strip() if isinstance(item, str) else item) for item in items if str(item).strip())
    return {"int": int, "float": float, "str": str}[kind](value)


def _build(cls, values: dict, source: str):
    known = {f.name: str(f.type) for f in fields(cls)}
    unknown = sorted(set(values) - set(known))
    if unknown:
        raise EclipError(f"{source}: unknown option(s) {', '.join(unknown)}; known: {', '.join(known)}")
    try:
        return cls(**{name: _parse(value, known[name]) for name, value in values.items()})
    except (TypeError, ValueError) as error:
        raise EclipError(f"{source}: {error}") from None


def load_config(path: Path | None) -> tuple[GraphTrainConfig, GraphEvalConfig]:
    """The `[train]` and `[eval]` tables of a TOML file; missing keys keep their defaults."""
    if path is None:
        return GraphTrainConfig(), GraphEvalConfig()
    try:
        document = tomllib.loads(Path(path).read_text())
    except FileNotFoundError:
        raise EclipError(f"{path}: config file not found") from None
    except tomllib.TOMLDecodeError as error:
        raise EclipError(f"{path}: not valid TOML ({error})") from None
    extra = sorted(set(document) - {"train", "eval"})
    if extra:
        raise EclipError(f"{path}: unknown table(s) {', '.join(extra)}; expected [train] and [eval]")
    return (_build(GraphTrainConfig, document.get("train", {}), f"{path} [train]"),
            _build(GraphEvalConfig, document.get("eval", {}), f"{path} [eval]"))


def add_arguments(parser: argparse.ArgumentParser, cls) -> None:
    """One option per field, default None so that only what the user typed overrides the TOML."""
    group = parser.add_argument_group("options (override --config; defaults in configs/graph.toml)")
    for f in fields(cls):
        default = f.default if f.default is not MISSING else f.default_factory()
        shown = ",".join(map(str, default)) if isinstance(default, tuple) else default
        group.add_argument("--" + f.name.replace("_", "-"), dest=f.name, default=None, metavar=f.name.upper(),
                           help=f"{f.metadata['help']} (default: {shown})")


def with_arguments(config, args: argparse.Namespace):
    """`config` with the fields given on the command line replaced."""
    given = {f.name: getattr(args, f.name) for f in fields(config) if getattr(args, f.name, None) is not None}
    return _build(type(config), {**asdict(config), **given}, "command line") if given else config
