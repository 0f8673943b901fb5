"""The floor plan of docs/architecture.md, drawn from the imports: no circle, nothing imports
upward, each piece of infrastructure lives in one module, and imports inside functions are
only the heavy, optional ones the docs name."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import networkx as nx
import pytest

ROOT = Path(__file__).resolve().parent.parent
TOP = {"stages", "cli"}
CLI_MODULES = {"foley_core.cli", "orchestration.cli"}


def _modules() -> dict[str, ast.Module]:
    found = {}
    for package in ("foley_core", "orchestration"):
        for path in sorted((ROOT / package).rglob("*.py")):
            name = ".".join(path.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")
            found[name] = ast.parse(path.read_text())
    return found


MODULES = _modules()


def _imports(tree: ast.AST) -> list[tuple[ast.stmt, str]]:
    """(statement, module of ours it imports) for every import of ``foley_core``."""
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module and node.module.startswith("foley_core"):
            for alias in node.names:
                sub = f"{node.module}.{alias.name}"
                found.append((node, sub if sub in MODULES else node.module))
        elif isinstance(node, ast.Import):
            found += [(node, a.name) for a in node.names if a.name.startswith("foley_core")]
    return found


def _floor(module: str) -> int:
    parts = module.split(".")
    if parts[0] != "foley_core" or len(parts) == 1:
        return 0
    return 0 if parts[1] == "core" else 2 if parts[1] in TOP else 1


def _local_imports(tree: ast.Module) -> list[ast.stmt]:
    """Imports inside a function (a module-level ``try: import ...`` is still a module-level import)."""
    functions = [n for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))]
    found = {id(i): i for f in functions for i in ast.walk(f) if isinstance(i, (ast.Import, ast.ImportFrom))}
    return list(found.values())


def test_the_imports_draw_no_circle():
    graph = nx.DiGraph()
    for name, tree in MODULES.items():
        graph.add_node(name)
        graph.add_edges_from((name, target) for _, target in _imports(tree) if target != name and target in MODULES)
    assert list(nx.simple_cycles(graph)) == []


def test_the_floors_are_folders():
    """Loose in foley_core/ are only the top floor and the stage modules too small to be packages."""
    loose = {p.stem for p in (ROOT / "foley_core").glob("*.py") if p.stem != "__init__"}
    assert loose <= TOP | {"evaluation", "export", "registry", "transfer", "report", "run_outputs"}, loose


def test_no_module_imports_a_floor_above_its_own():
    upward = [f"{name} -> {target}" for name, tree in MODULES.items() if name.startswith("foley_core")
              for _, target in _imports(tree) if _floor(target) > _floor(name)]
    assert upward == []


@pytest.mark.parametrize("pattern, home", [
    (r"^\s*import hashlib|^\s*from hashlib", {"foley_core.core.hashing"}),
    (r"os\.replace\(", {"foley_core.core.fsutil"}),
    (r"mkstemp\(", {"foley_core.core.fsutil"}),
    (r"\bfcntl\b", set()),
    (r"\bTrainer\(", {"foley_core.core.training"}),
])
def test_each_piece_of_infrastructure_lives_in_one_core_module(pattern, home):
    where = {name for name in MODULES
             if re.search(pattern, (ROOT / (name.replace(".", "/") + ".py")).read_text()
                          if (ROOT / (name.replace(".", "/") + ".py")).is_file()
                          else (ROOT / name.replace(".", "/") / "__init__.py").read_text(), re.M)}
    assert where <= home


def test_imports_inside_functions_are_only_the_heavy_optional_ones_the_docs_name():
    documented = set(re.findall(r"^\| `([\w.]+)` \|", (ROOT / "docs/architecture.md").read_text(), re.M))
    assert {"librosa", "matplotlib"} <= documented
    stray = []
    for name, tree in MODULES.items():
        if name in CLI_MODULES:
            continue  # each command imports its own machinery: `foley --help` answers at once
        for node in _local_imports(tree):
            module = node.module if isinstance(node, ast.ImportFrom) else node.names[0].name
            if isinstance(node, ast.ImportFrom) and f"{module}.{node.names[0].name}" in MODULES:
                module = f"{module}.{node.names[0].name}"  # from foley_core.core import hardware
            named = module if module.startswith("foley_core") else module.split(".")[0]
            if named not in documented:
                stray.append(f"{name}:{node.lineno} {ast.unparse(node)}")
    assert stray == []
