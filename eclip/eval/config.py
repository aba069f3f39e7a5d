"""Options of `eclip eval`: one typed dataclass, filled from the shipped `eclip/configs/eval/default.toml` (or any
TOML file), then from the command line (--tasks, --baselines, --set)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

from eclip.config import assign, load, require, validate
from eclip.configs import config_path
from eclip.eval.tasks import TASK_NAMES

BASELINES = ("tfidf", "image_hash", "untrained")
VIEWS = ("image", "text", "fused")


@dataclass
class EvalConfig:
    LABEL: ClassVar[str] = "eval"
    tasks: list[str] = field(default_factory=lambda: list(TASK_NAMES))
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

    def check(self) -> None:
        checks = [
            (set(self.tasks) <= set(TASK_NAMES),
             f"unknown task(s) {', '.join(sorted(set(self.tasks) - set(TASK_NAMES)))}; "
             f"choose from {', '.join(TASK_NAMES)}"),
            (bool(self.tasks), f"give at least one task: {', '.join(TASK_NAMES)}"),
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
            require(ok, message)


def load_eval_config(path: Path | None = None, tasks: list[str] | None = None,
                     baselines: list[str] | None = None, assignments: list[str] = ()) -> EvalConfig:
    """The TOML file (default: the shipped eval defaults), then `assignments` (`--set NAME=VALUE`), then the task
    and baseline lists."""
    config = assign(load(EvalConfig, config_path("eval", path)), list(assignments))
    if tasks is not None:
        config.tasks = tasks
    if baselines is not None:
        config.baselines = baselines
    validate(config)
    return config
