"""The `eclip eval` tasks, registered once, in the order a user reads them: what each embeds and which runner
scores it. The option checks, the command line and the run all read this list.

Each runner lives beside its metrics (`retrieval.py`, `classification.py`, `matching.py`, `clustering.py`,
`adult.py`) and is named by its import path: importing it here would load scikit-learn into `eclip --help`."""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable

if TYPE_CHECKING:
    from eclip.eval.data import TaskOutput


@dataclass(frozen=True)
class Task:
    name: str
    splits: frozenset[str]  # the splits embedded for it: val for the tasks that choose something on it
    runner_path: str  # "module:function", the function taking (representation, EvalData, EvalConfig)

    @property
    def runner(self) -> Callable[..., TaskOutput]:
        module, function = self.runner_path.split(":")
        return getattr(importlib.import_module(module), function)


TASKS = {task.name: task for task in [
    Task("retrieval", frozenset({"test"}), "eclip.eval.retrieval:run_retrieval"),
    Task("category", frozenset({"train", "val", "test"}), "eclip.eval.classification:run_category"),
    Task("attributes", frozenset({"train", "val", "test"}), "eclip.eval.classification:run_attributes"),
    Task("matching", frozenset({"val", "test"}), "eclip.eval.matching:run_matching"),
    Task("clustering", frozenset({"test"}), "eclip.eval.clustering:run_clustering"),
    Task("adult", frozenset({"train", "val", "test"}), "eclip.eval.adult:run_adult"),
]}
TASK_NAMES = tuple(TASKS)
