"""Code versions derived from the source, never from hand-typed module lists.

A stage's code version must change whenever any code it runs changes. Typed lists of modules
went stale the moment someone added an import (``generated_candidates`` once missed four of the
modules it runs), so the version is derived from the code itself:

- ``modules_run_by(function)``: the ``foley_core`` modules the function names or imports (at
  module level or inside the body), and everything those modules import, transitively;
- ``profile_sections_read_by(function)``: the profile sections that code reads
  (``profile.ldm``, ``profile.class_config(...)``, ``profile.fingerprint("clap", ...)``);
- ``source_version(function)``: a hash of the function's own source, the helpers of its module
  that it calls, and the source of every module it runs.

It is a static reading of the source (``ast``), nothing is executed. It over-approximates on
purpose: a module imported anywhere in a module that runs counts, even if the function that
imports it never runs. A stage that is re-run for nothing costs minutes; one that stays "fresh"
after its code changed serves clips from the old code.
"""

from __future__ import annotations

import ast
import importlib.util
import inspect
from functools import lru_cache
from pathlib import Path
from typing import Callable

from foley_core.core.hashing import new_digest

PACKAGE = "foley_core"
# Profile fields that say where things go or how runs are logged, not what is made.
NOT_CONTENT = frozenset({"name", "paths", "wandb", "precision_resolved"})


@lru_cache(maxsize=None)
def _source_file(module: str) -> Path | None:
    spec = importlib.util.find_spec(module)
    return Path(spec.origin) if spec is not None and spec.origin and spec.origin.endswith(".py") else None


def read_source(path: Path) -> str:
    """The text a version is computed from (one place, so a test can stand in an edited module)."""
    return path.read_text()


@lru_cache(maxsize=None)
def _parse(module: str) -> ast.Module:
    path = _source_file(module)
    return ast.parse(read_source(path)) if path is not None else ast.Module(body=[], type_ignores=[])


def _is_ours(name: str | None) -> bool:
    return bool(name) and (name == PACKAGE or name.startswith(PACKAGE + "."))


def _is_module(name: str) -> bool:
    try:
        return _source_file(name) is not None
    except (ImportError, ValueError):  # ``from pkg import name`` where name is not a module
        return False


def _with_parents(module: str) -> list[str]:
    parts = module.split(".")
    return [".".join(parts[:i]) for i in range(1, len(parts) + 1)]


@lru_cache(maxsize=None)
def _top_level(module: str) -> tuple[dict[str, ast.stmt], tuple[ast.stmt, ...]]:
    """A module's top-level names -> the statement that binds each (def, class, import, assignment),
    and its statements that run on import for their effect (calls, ifs, loops; not docstrings)."""
    defined: dict[str, ast.stmt] = {}
    effects: list[ast.stmt] = []
    for node in _parse(module).body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            defined[node.name] = node
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            for alias in node.names:
                defined[(alias.asname or alias.name).split(".")[0]] = node
        elif isinstance(node, (ast.Assign, ast.AnnAssign, ast.AugAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            for target in targets:
                for name in ast.walk(target):
                    if isinstance(name, ast.Name):
                        defined[name.id] = node
        elif not (isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant)):
            effects.append(node)
    return defined, tuple(effects)


Symbol = tuple[str, str]  # (module, top-level name); name "*" is the whole module


def _import_targets(node: ast.Import | ast.ImportFrom, only: str | None = None) -> list[Symbol]:
    """What an import statement binds, as symbols of ours: ``from a.b import c`` is ``(a.b, c)``, or
    the whole module ``a.b.c`` when ``c`` is a module; ``import a.b`` is the whole of ``a.b``.
    ``only``: just the alias bound to that name."""
    targets: list[Symbol] = []
    for alias in node.names:
        if only is not None and (alias.asname or alias.name).split(".")[0] != only:
            continue
        if isinstance(node, ast.Import):
            if _is_ours(alias.name):
                targets.append((alias.name, "*"))
        elif node.level == 0 and _is_ours(node.module):
            submodule = f"{node.module}.{alias.name}"
            targets.append((submodule, "*") if _is_module(submodule) else (node.module, alias.name))
    return targets


def _reached(function: Callable) -> dict[tuple[str, int], ast.stmt]:
    """Every top-level statement of ours that the function may run, keyed by (module, line): the
    function itself, the names it uses (in its module, or imported from ours, at the top of a
    module or inside a function), what those use in turn, and the import-time statements of
    every module touched (and of its parent packages, whose ``__init__`` runs first)."""
    reached: dict[tuple[str, int], ast.stmt] = {}
    modules: set[str] = set()
    seen: set[Symbol] = set()
    todo: list[Symbol] = [(function.__module__, function.__name__)]
    if function.__name__ not in _top_level(function.__module__)[0]:
        raise ValueError(f"{describe(function)} is not defined at the top level of its module")

    def follow(module: str, statement: ast.stmt) -> None:
        key = (module, statement.lineno)
        if key in reached:
            return
        reached[key] = statement
        if isinstance(statement, (ast.Import, ast.ImportFrom)):
            return  # followed name by name, in visit
        for node in ast.walk(statement):
            if isinstance(node, ast.Name):
                todo.append((module, node.id))
            elif isinstance(node, (ast.Import, ast.ImportFrom)):  # function-local imports
                todo.extend(_import_targets(node))

    while todo:
        symbol = todo.pop()
        if symbol in seen:
            continue
        seen.add(symbol)
        module, name = symbol
        if _source_file(module) is None:
            continue
        for package in _with_parents(module):
            if package not in modules:
                modules.add(package)
                for statement in _top_level(package)[1]:
                    follow(package, statement)
        defined = _top_level(module)[0]
        if name == "*":
            todo.extend((module, n) for n in defined)
            continue
        statement = defined.get(name)
        if statement is None:
            continue  # a builtin, a local variable or a parameter
        if isinstance(statement, (ast.Import, ast.ImportFrom)):
            todo.extend(_import_targets(statement, only=name))
        else:
            follow(module, statement)
    return reached


def modules_run_by(function: Callable) -> list[str]:
    """The ``foley_core`` modules some of whose code the function may run (sorted)."""
    return sorted({module for module, _ in _reached(function)})


def source_version(function: Callable) -> str:
    """Hash of the code the function may run: any edit to it changes the version; an edit to code
    it never reaches (another stage's function in the same module, say) does not. Formatting and
    comments do not count (the hash is of the syntax tree)."""
    digest = new_digest()
    for (module, line), statement in sorted(_reached(function).items()):
        digest.update(module.encode() + b"\0" + ast.dump(statement, include_attributes=False).encode())
    return digest.hexdigest()[:16]


def package_version(package: str) -> str:
    """Hash of every module of a package (what a model folder records as the code that made it)."""
    digest = new_digest()
    for path in sorted(_source_file(package).parent.glob("*.py")):
        digest.update(path.name.encode() + b"\0" + ast.dump(ast.parse(read_source(path))).encode())
    return digest.hexdigest()[:16]


def profile_sections_read_by(function: Callable, sections: frozenset[str]) -> list[str]:
    """The profile ``sections`` that the code a function may run reads: ``profile.<section>`` (or
    ``prof.``) and the sections read by the ``Profile`` methods it calls. ``profile.fingerprint(...)``
    with literal names reads those; with anything else, every section. ``model_dump`` reads every
    section. Fields that say where things go (``NOT_CONTENT``) never count."""
    methods = _profile_method_sections(sections)
    read: set[str] = set()
    for (module, _), statement in _reached(function).items():
        if module == f"{PACKAGE}.core.config":  # where the sections are defined, not read by a stage
            continue
        for node in ast.walk(statement):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) \
                    and node.func.attr in ("fingerprint", "model_dump") and _names_a_profile(node.func.value):
                read |= _sections_named_in_call(node, sections)
            elif isinstance(node, ast.Attribute) and _names_a_profile(node.value):
                if node.attr in sections:
                    read.add(node.attr)
                if node.attr not in ("fingerprint", "model_dump"):  # their calls are read above
                    read |= methods.get(node.attr, set())
    return sorted(read - NOT_CONTENT)


def _sections_named_in_call(call: ast.Call, sections: frozenset[str]) -> set[str]:
    """``profile.fingerprint("clap", "audio")`` or ``profile.model_dump(include={"seed", "clap"})``:
    the sections named; every section when they are not all literal names."""
    if call.func.attr == "fingerprint":
        names = call.args
    else:
        include = next((k.value for k in call.keywords if k.arg == "include"), None)
        names = include.elts if isinstance(include, (ast.Set, ast.List, ast.Tuple)) else \
            include.keys if isinstance(include, ast.Dict) else []
    literal = [n.value for n in names if isinstance(n, ast.Constant) and isinstance(n.value, str)]
    return set(literal) & sections if literal and len(literal) == len(names) else set(sections)


def _names_a_profile(node: ast.expr) -> bool:
    """``profile``, ``prof``, ``base_profile``, ``self.profile``: the names this code gives a Profile."""
    name = node.attr if isinstance(node, ast.Attribute) else node.id if isinstance(node, ast.Name) else ""
    return name in ("profile", "prof") or name.endswith("_profile")


@lru_cache(maxsize=None)
def _profile_method_sections(sections: frozenset[str]) -> dict[str, set[str]]:
    """Profile method or property -> the sections it reads (``self.<section>``, through the other
    methods it calls)."""
    tree = _parse(f"{PACKAGE}.core.config")
    profile = next(n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == "Profile")
    bodies = {n.name: n for n in profile.body if isinstance(n, ast.FunctionDef)}
    direct = {name: {a.attr for a in ast.walk(body) if isinstance(a, ast.Attribute)
                     and isinstance(a.value, ast.Name) and a.value.id == "self"} for name, body in bodies.items()}
    resolved: dict[str, set[str]] = {}
    for name in bodies:
        seen, todo, read = set(), [name], set()
        while todo:
            current = todo.pop()
            if current in seen:
                continue
            seen.add(current)
            read |= direct[current] & sections
            todo.extend(direct[current] & bodies.keys())
        resolved[name] = read
    if "model_dump" not in resolved:  # the whole profile, dumped
        resolved["model_dump"] = set(sections)
    return resolved


def describe(function: Callable) -> str:
    """``module.function`` as the docs and errors name it."""
    return f"{function.__module__}.{function.__name__}" if inspect.isfunction(function) else repr(function)


def forget() -> None:
    """Drop the parsed sources (after the source changed within one process, as in tests)."""
    for cached in (_source_file, _parse, _top_level, _profile_method_sections):
        cached.cache_clear()
