"""The layout's rules, read from the source: which subpackage may import which, and no cycles between them.

Every import counts, at module level or inside a function (a lazy import is still a dependency).
"""

from __future__ import annotations

import ast
import shutil
from collections import defaultdict
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "eclip"
# Modules at the package root that every subsystem may use; they import no subsystem.
ROOT = {"eclip", "eclip.errors", "eclip.config", "eclip.configs", "eclip.files", "eclip.progress", "eclip.runs"}
# The one data module that may load a model: the pluggable image embedder for near-duplicates.
DATA_MODEL_PLUGIN = "eclip.data.descriptors"
FILE_LIMIT = 400


def module_name(path: Path, package: Path) -> str:
    parts = path.relative_to(package.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(package: Path) -> dict[str, set[str]]:
    """module -> the eclip modules it imports (from X import Y counts as X, and as X.Y when that is a module)."""
    modules = {module_name(path, package) for path in package.rglob("*.py")}
    found: dict[str, set[str]] = defaultdict(set)
    for path in package.rglob("*.py"):
        name = module_name(path, package)
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                found[name].update(alias.name for alias in node.names if alias.name.startswith("eclip"))
            elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("eclip"):
                found[name].add(node.module)
                found[name].update(f"{node.module}.{alias.name}" for alias in node.names
                                   if f"{node.module}.{alias.name}" in modules)
    return found


def group(module: str) -> str:
    """The unit the rules speak of: a subpackage (eclip.models), a root module (eclip.config) or the runs
    toolkit as a whole."""
    parts = module.split(".")
    if len(parts) == 1:
        return module
    if parts[1] == "runs":
        return "eclip.runs"
    return ".".join(parts[:2])


def is_root(module: str) -> bool:
    return group(module) in ROOT


def violations(package: Path) -> list[str]:
    """Every import that breaks a rule, as "importer -> imported: rule"."""
    problems = []
    graph: dict[str, set[str]] = defaultdict(set)
    for importer, targets in imports(package).items():
        for target in targets:
            source, destination = group(importer), group(target)
            if source != destination:
                graph[source].add(destination)
            edge = f"{importer} -> {target}"
            if target == "eclip.cli" or (target.endswith(".cli") and importer != "eclip.cli"):
                problems.append(f"{edge}: only eclip.cli imports a command-line module, and nothing imports it")
            elif is_root(importer) and not is_root(target):
                problems.append(f"{edge}: the root toolkit imports no subsystem")
            elif source == "eclip.models" and not (is_root(target) or destination == "eclip.models"):
                problems.append(f"{edge}: eclip.models is a leaf library (no training, data, eval, serving, CLI)")
            elif source == "eclip.data" and destination == "eclip.models" and importer != DATA_MODEL_PLUGIN:
                problems.append(f"{edge}: data reaches model code only through {DATA_MODEL_PLUGIN}")
            elif source == "eclip.data" and destination not in ROOT | {"eclip.data", "eclip.models"}:
                problems.append(f"{edge}: data depends on nothing but the root toolkit")
    problems += [f"import cycle between {' -> '.join(cycle)}" for cycle in cycles(graph)]
    return problems


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected groups of more than one node (Tarjan), each as a closed path of its members."""
    index, low, stack, on_stack, found = {}, {}, [], set(), []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(graph.get(node, ())):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component) + [sorted(component)[0]])

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_the_package_keeps_its_import_rules():
    assert violations(PACKAGE) == []


@pytest.mark.parametrize("module, line, broken", [
    ("models/vit.py", "from eclip.train.loss import Objective", "eclip.models is a leaf library"),
    ("models/text.py", "    from eclip.data.store import read_products", "eclip.models is a leaf library"),
    ("data/prepare.py", "from eclip.models import load_model", "data reaches model code only through"),
    ("data/store.py", "from eclip.index.vectors import read_vectors", "data depends on nothing but"),
    ("runs/atomic.py", "from eclip.data.store import SHARDS", "the root toolkit imports no subsystem"),
    ("eval/report.py", "from eclip.cli import main", "nothing imports it"),
    ("serve/app.py", "from eclip.train.cli import COMMANDS", "only eclip.cli imports a command-line module"),
    ("index/vectors.py", "from eclip.serve.engine import SearchEngine", "import cycle between"),
])
def test_a_forbidden_import_is_caught(tmp_path, module, line, broken):
    """The rules bite: the same tree with one forbidden import added fails, naming the rule."""
    copy = tmp_path / "eclip"
    shutil.copytree(PACKAGE, copy, ignore=shutil.ignore_patterns("__pycache__"))
    path = copy / module
    path.write_text(path.read_text() + f"\n\ndef _added():\n    {line.strip()}\n")
    found = violations(copy)
    assert any(broken in problem for problem in found), found


def test_files_stay_small_or_say_why():
    """Files over ~400 lines are split by concern, unless their docstring says why not."""
    long = [f"{path.relative_to(PACKAGE.parent)}: {count} lines" for path in sorted(PACKAGE.rglob("*.py"))
            if (count := len(path.read_text().splitlines())) > FILE_LIMIT
            and "longer than 400 lines because" not in (ast.get_docstring(ast.parse(path.read_text())) or "")]
    assert long == []
