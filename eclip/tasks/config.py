"""Options of `eclip eval`: one typed dataclass, filled from `configs/eval.toml` (or any TOML file), then from the
command line (--tasks, --baselines)."""

from __future__ import annotations

import dataclasses
import tomllib
import typing
from dataclasses import dataclass, field
from pathlib import Path

from eclip.errors import EclipError

DEFAULT_CONFIG = Path(__file__).resolve().parents[2] / "configs" / "eval.toml"
TASKS = ("retrieval", "category", "attributes", "matching", "clustering", "adult")
BASELINES = ("tfidf", "image_hash", "untrained")
VIEWS = ("image", "text", "fused")


@dataclass
class EvalConfig:
    tasks: list[str] = field(default_factory=lambda: list(TASKS))
    baselines: list[str] = field(default_factory=lambda: list(BASELINES))
    batch_size: int = 256
    category_templates: list[str] = field(default_factory=lambda: ["{}"])
    attribute_templates: list[str] = field(default_factory=lambda: ["{}"])
    zeroshot_view: str = "auto"
    probe_cs: list[float] = field(default_factory=lambda: [1.0, 10.0, 100.0, 1000.0])
    probe_max_iter: int = 150
    probe_max_train: int = 6000
    probe_view: str = "auto"
    recall_ks: list[int] = field(default_factory=lambda: [1, 5, 10])
    curve_max_k: int = 50
    matching_neighbours: int = 50
    matching_expansion_neighbours: list[int] = field(default_factory=lambda: [0, 1, 2, 3, 5])
    matching_expansion_alphas: list[float] = field(default_factory=lambda: [1.0, 3.0])
    pair_max_products: int = 6000
    confusion_classes: int = 20
    max_unknown_token_share: float = 0.5
    tfidf_max_features: int = 50000
    seed: int = 0

    def matching_expansions(self) -> list[tuple[int, float]]:
        """The (k, alpha) grid matching chooses from on val; k = 0 (no expansion) once, whatever alpha."""
        grid = [(k, alpha) for k in self.matching_expansion_neighbours for alpha in self.matching_expansion_alphas]
        return list(dict.fromkeys((k, alpha if k else 1.0) for k, alpha in grid))

    def validate(self) -> None:
        checks = [
            (set(self.tasks) <= set(TASKS), f"unknown task(s) {', '.join(sorted(set(self.tasks) - set(TASKS)))}; "
                                            f"choose from {', '.join(TASKS)}"),
            (bool(self.tasks), f"give at least one task: {', '.join(TASKS)}"),
            (set(self.baselines) <= set(BASELINES), f"unknown baseline(s) {', '.join(sorted(set(self.baselines) - set(BASELINES)))}; "
                                                    f"choose from {', '.join(BASELINES)}"),
            (self.zeroshot_view in VIEWS + ("auto",), f"zeroshot_view must be auto or one of {', '.join(VIEWS)}"),
            (self.probe_view in VIEWS + ("auto",), f"probe_view must be auto or one of {', '.join(VIEWS)}"),
            (all(t.count("{}") == 1 for t in self.category_templates + self.attribute_templates) and
             bool(self.category_templates) and bool(self.attribute_templates), "every prompt template needs exactly one {}"),
            (bool(self.recall_ks) and min(self.recall_ks) >= 1 and self.curve_max_k >= max(self.recall_ks),
             "recall_ks must be positive and at most curve_max_k"),
            (self.batch_size > 0 and self.probe_max_iter > 0 and self.probe_max_train > 1
             and min(self.probe_cs, default=0) > 0,
             "batch_size, probe_max_iter, probe_max_train and every probe_cs value must be positive (probe_cs not empty)"),
            (self.matching_neighbours >= 1 and self.pair_max_products >= 2, "matching_neighbours >= 1, pair_max_products >= 2"),
            (self.tfidf_max_features >= 1 and self.confusion_classes >= 1,
             "tfidf_max_features and confusion_classes must be at least 1"),
            (self.seed >= 0, "seed must be 0 or more"),
            (bool(self.matching_expansion_neighbours) and min(self.matching_expansion_neighbours) >= 0 and
             bool(self.matching_expansion_alphas) and min(self.matching_expansion_alphas) > 0,
             "matching_expansion_neighbours must be >= 0 (0: no expansion) and matching_expansion_alphas > 0, "
             "neither empty"),
        ]
        for ok, message in checks:
            if not ok:
                raise EclipError(f"bad eval config: {message}")


def _coerce(value, kind, where: str):
    origin = typing.get_origin(kind)
    if origin is list:
        (item,) = typing.get_args(kind)
        if not isinstance(value, list):
            raise EclipError(f"{where} must be a list, got {value!r}")
        return [_coerce(v, item, where) for v in value]
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise EclipError(f"{where} must be {kind.__name__}, got {value!r}")
    return value


def load_eval_config(path: Path | None = None, tasks: list[str] | None = None,
                     baselines: list[str] | None = None) -> EvalConfig:
    """The TOML file (default configs/eval.toml; dataclass defaults if that is absent), then the overrides."""
    path = Path(path) if path else DEFAULT_CONFIG
    data = {}
    if path.is_file():
        try:
            data = tomllib.loads(path.read_text())
        except tomllib.TOMLDecodeError as error:
            raise EclipError(f"{path}: cannot parse ({error})") from error
    elif path != DEFAULT_CONFIG:
        raise EclipError(f"{path}: no such eval config file")
    hints = typing.get_type_hints(EvalConfig)
    unknown = set(data) - set(hints)
    if unknown:
        raise EclipError(f"{path}: unknown eval option(s) {', '.join(sorted(unknown))}; known: {', '.join(sorted(hints))}")
    config = EvalConfig(**{name: _coerce(value, hints[name], f"{path}: {name}") for name, value in data.items()})
    if tasks is not None:
        config.tasks = tasks
    if baselines is not None:
        config.baselines = baselines
    config.validate()
    return config


def to_dict(config: EvalConfig) -> dict:
    return dataclasses.asdict(config)
