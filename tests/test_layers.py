"""The package's imports point one way: checked against the layer table of README.md ("Layout")."""

from __future__ import annotations

import ast
import importlib
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "lam_fast"


def _layer_table() -> dict[str, tuple[int, str]]:
    """package prefix -> (layer number, layer name), from README.md's Layout table."""
    text = (ROOT / "README.md").read_text()
    section = text.split("## Layout", 1)[1].split("\n## ", 1)[0]
    table = {}
    for number, name, packages in re.findall(r"^\| (\d+) (\w+) \| ([^|]+) \|", section, re.M):
        for package in re.findall(r"`([\w.]+)`", packages):
            table[package] = (int(number), name)
    return table


LAYERS = _layer_table()


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _modules() -> dict[str, Path]:
    return {_module_name(path): path for path in sorted(PACKAGE.rglob("*.py"))}


def _package_of(module: str) -> str | None:
    """The longest prefix of ``module`` in the layer table."""
    best = None
    for package in LAYERS:
        if (module == package or module.startswith(package + ".")) and (best is None or len(package) > len(best)):
            best = package
    return best


def _imports(module: str, path: Path) -> set[str]:
    """Every lam_fast module imported anywhere in ``path`` (top level, functions, TYPE_CHECKING)."""
    tree = ast.parse(path.read_text(), filename=str(path))
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: resolve against this module's package
                base = module.split(".")
                base = base[: len(base) - node.level + (path.name == "__init__.py")]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            found.add(target)
            # ``from lam_fast import ops`` imports the module lam_fast.ops
            found.update(f"{target}.{alias.name}" for alias in node.names if f"{target}.{alias.name}" in MODULES)
    return {name for name in found if name == "lam_fast" or name.startswith("lam_fast.")}


MODULES = _modules()
GRAPH = {module: _imports(module, path) for module, path in MODULES.items()}


def test_the_table_is_read_and_covers_every_module():
    assert len({number for number, _ in LAYERS.values()}) >= 10, LAYERS
    unplaced = [module for module in MODULES if module != "lam_fast" and _package_of(module) is None]
    assert not unplaced, f"modules in no layer of README.md's Layout table: {unplaced}"


def _layer(module: str) -> tuple[int, str] | None:
    package = _package_of(module)
    return LAYERS[package] if package is not None else None


def test_no_import_points_up_or_sideways():
    wrong = []
    for module, imported in GRAPH.items():
        if module == "lam_fast":
            continue
        mine = _layer(module)
        for target in imported:
            theirs = _layer(target)
            if target == "lam_fast" or theirs is None:
                continue
            if theirs[0] > mine[0] or (theirs[0] == mine[0] and theirs[1] != mine[1]):
                wrong.append(f"{module} ({mine[1]}) imports {target} ({theirs[1]})")
    assert not wrong, "imports against the layer table:\n" + "\n".join(sorted(wrong))


def test_no_import_cycles():
    edges = {module: {target for target in imported if target in MODULES and target != module}
             for module, imported in GRAPH.items()}
    # a package imports its own submodules to re-export them; a submodule importing its package's
    # __init__ is the usual ``from lam_fast.data import X`` and is not a cycle of code
    for module in edges:
        edges[module] = {t for t in edges[module] if not module.startswith(t + ".") and not t.startswith(module + ".")}
    cycles, state = [], {}

    def visit(node: str, stack: list[str]) -> None:
        state[node] = "open"
        for target in sorted(edges[node]):
            if state.get(target) == "open":
                cycles.append(" -> ".join(stack[stack.index(target):] + [target]))
            elif target not in state:
                visit(target, stack + [target])
        state[node] = "done"

    for module in sorted(edges):
        if module not in state:
            visit(module, [module])
    assert not cycles, "import cycles:\n" + "\n".join(cycles)


def _moved_tables() -> dict[str, dict[str, str]]:
    tables = {}
    for module, path in MODULES.items():
        for node in ast.walk(ast.parse(path.read_text())):
            if (isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "moved"
                    and len(node.args) == 2 and isinstance(node.args[1], ast.Dict)):
                tables[module] = {ast.literal_eval(k): ast.literal_eval(v)
                                  for k, v in zip(node.args[1].keys, node.args[1].values)}
    return tables


MOVED = _moved_tables()


def _is_removed_module(path: Path) -> bool:
    """A module that is only its moved table (docstring, ``from lam_fast._moved import moved``,
    ``__getattr__ = moved(...)``): a removed module whose old path still answers."""
    body = ast.parse(path.read_text()).body
    if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
        body = body[1:]
    return (len(body) == 2 and isinstance(body[0], ast.ImportFrom) and body[0].module == "lam_fast._moved"
            and isinstance(body[1], ast.Assign) and isinstance(body[1].value, ast.Call))


@pytest.mark.parametrize("module", sorted(MOVED) or [None])
def test_moved_names_resolve_to_a_higher_or_equal_layer(module):
    """A name that moved up is forwarded lazily (an import would point upwards). A removed module
    may forward to any layer: it holds nothing else, and nothing of the package imports it."""
    if module is None:
        pytest.skip("no moved names")
    old = importlib.import_module(module)
    removed = _is_removed_module(MODULES[module])
    for name, target in MOVED[module].items():
        assert target in MODULES, f"{module}.{name} points at {target}, which is not a module"
        assert removed or _layer(target)[0] >= _layer(module)[0], f"{module}.{name}: {target} is not above {module}"
        with pytest.warns(DeprecationWarning, match=f"{target}.{name}"):
            assert getattr(old, name) is getattr(importlib.import_module(target), name)


def test_the_package_never_uses_an_old_path():
    users = []
    for module, path in MODULES.items():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module in MOVED:
                names = {alias.name for alias in node.names} & set(MOVED[node.module])
                users += [f"{module}: from {node.module} import {name}" for name in names]
            if isinstance(node, ast.ImportFrom) and node.module:  # from lam_fast.data import sim
                users += [f"{module}: from {node.module} import {alias.name}" for alias in node.names
                          if f"{node.module}.{alias.name}" in MOVED and _is_removed_module(MODULES[f"{node.module}.{alias.name}"])]
            if isinstance(node, ast.Import):
                users += [f"{module}: import {alias.name}" for alias in node.names
                          if alias.name in MOVED and _is_removed_module(MODULES[alias.name])]
    assert not users, users
