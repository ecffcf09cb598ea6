"""The package's shape, read from its source with ``ast`` (nothing is imported but in the last test):
no import cycle between the modules of ``snnconv``, and Ray / MLflow / Optuna only in the glue
modules, only lazily (inside functions, or under ``if TYPE_CHECKING:``); a module whose job is a subclass
of their classes (:data:`EAGER_GLUE`) is itself imported only inside a function."""

from __future__ import annotations

import ast
import graphlib
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LIBRARY = ROOT / "library"
PACKAGE = "snnconv"
#: third-party packages only the glue may import: Ray Tune in the sweep's modules, MLflow in the tracking package
GLUE_ONLY = ("ray", "mlflow", "optuna")
#: the tracking package's ``__init__`` and ``contract`` import no MLflow, so they are not glue; nor do the
#: sweep's command line and summary (``sweep_command``, ``sweep_summary``)
GLUE = {"snnconv.sweep", "snnconv.sweep_progress", "snnconv.sweep_search", "snnconv.sweep_stage1",
        "snnconv.sweep_trial", "snnconv.tracking.reading", "snnconv.tracking.models", "snnconv.tracking.writing",
        "snnconv.tracking.uri", "snnconv.optuna_sampler", "snnconv.tracking_retry", "snnconv.trial_record"}
#: glue that must import its package when it is imported (its job is a subclass of one of that package's
#: classes, which pickle finds by name) -> the module that may import it, only inside a function
EAGER_GLUE = {"snnconv.optuna_sampler": "snnconv.sweep_search"}


def module_name(path: Path) -> str:
    """``library/snnconv/models/vgg.py`` -> ``snnconv.models.vgg``; a package's ``__init__.py`` -> the package."""
    parts = list(path.relative_to(LIBRARY).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(path): path for path in sorted((LIBRARY / PACKAGE).rglob("*.py"))}
TREES = {name: ast.parse(path.read_text(), filename=str(path)) for name, path in MODULES.items()}


def is_package(name: str) -> bool:
    return MODULES[name].name == "__init__.py"


def ancestors(name: str) -> list[str]:
    parts = name.split(".")
    return [".".join(parts[:i]) for i in range(1, len(parts))]


def imported_names(module: str, node: ast.Import | ast.ImportFrom) -> list[str]:
    """The absolute dotted names an import statement of ``module`` asks for (``from a import b``: both
    ``a`` and ``a.b``, since ``b`` may be a module)."""
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    if node.level:
        package = module if is_package(module) else module.rpartition(".")[0]
        base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1])
        target = f"{base}.{node.module}" if node.module else base
    else:
        target = node.module or ""
    return [target] + [f"{target}.{alias.name}" for alias in node.names if alias.name != "*"]


def internal_target(name: str) -> str | None:
    """The package module that importing ``name`` runs: the longest known prefix of it."""
    while name and name not in MODULES:
        name = name.rpartition(".")[0]
    return name or None


def import_graph() -> dict[str, set[str]]:
    """module -> the package modules it imports, at any level (module, class, function, TYPE_CHECKING).
    Importing ``a.b.c`` runs ``a.b``'s ``__init__`` too, unless the importer is in ``a.b`` (or is it)."""
    graph: dict[str, set[str]] = {name: set() for name in MODULES}
    for module, tree in TREES.items():
        for node in ast.walk(tree):
            if not isinstance(node, (ast.Import, ast.ImportFrom)):
                continue
            for name in imported_names(module, node):
                target = internal_target(name)
                if target is None:
                    continue
                if target != module:
                    graph[module].add(target)
                inside = {*ancestors(module), module}
                graph[module].update(parent for parent in ancestors(target) if parent not in inside)
    return graph


def third_party_imports(tree: ast.AST, *, eager_only: bool) -> list[tuple[int, str]]:
    """(line, top-level package) of every import of a :data:`GLUE_ONLY` package in ``tree``;
    ``eager_only``: only those that run when the module is imported (not in a function, not under
    ``if TYPE_CHECKING:``)."""
    found: list[tuple[int, str]] = []

    def visit(node: ast.AST) -> None:
        if eager_only and isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
            return
        if eager_only and isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, ast.Import):
            found.extend((node.lineno, alias.name.split(".")[0]) for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.append((node.lineno, node.module.split(".")[0]))
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(tree)
    return [(line, top) for line, top in found if top in GLUE_ONLY]


def test_every_module_is_parsed():
    assert {"snnconv.config", "snnconv.levels", "snnconv.pipeline", "snnconv.train", "snnconv.train.__main__",
            "snnconv.sweep", "snnconv.sweep_spec", "snnconv.tracking", "snnconv.models.vgg"} <= set(MODULES)


def test_the_graph_sees_relative_absolute_and_function_level_imports():
    graph = import_graph()
    assert "snnconv.layers" in graph["snnconv.models.vgg"]  # from ..layers import (module level)
    assert "snnconv.pipeline" in graph["snnconv.sweep_trial"]  # from .pipeline import run_trial (in a function)
    assert "snnconv.tracking" in graph["snnconv.pareto_command"]  # from . import paired, tracking
    assert "snnconv.levels" in graph["snnconv.methods.qcfs"]
    assert "snnconv.config" not in graph["snnconv.levels"]
    # the config reads the method registry; the methods import the config, never the other way round
    assert "snnconv.method_registry" in graph["snnconv.config"] and "snnconv.config" in graph["snnconv.methods.rnl"]
    assert not {name for name in graph["snnconv.config"] if name.startswith("snnconv.methods")}
    assert "snnconv.pipeline" not in graph["snnconv.train"]


def test_no_import_cycle_inside_the_package():
    graph = import_graph()
    try:
        order = list(graphlib.TopologicalSorter(graph).static_order())
    except graphlib.CycleError as error:
        cycle = error.args[1]
        pytest.fail("import cycle: " + " -> ".join(cycle))
    assert set(order) == set(MODULES)


@pytest.mark.parametrize("module", sorted(set(MODULES) - GLUE))
def test_ray_mlflow_and_optuna_only_in_the_glue(module):
    found = third_party_imports(TREES[module], eager_only=False)
    assert not found, f"{MODULES[module].relative_to(ROOT)} imports " + ", ".join(
        f"{top} (line {line})" for line, top in found) + f"; only {', '.join(sorted(GLUE))} may"


@pytest.mark.parametrize("module", sorted(GLUE))
def test_the_glue_imports_them_lazily(module):
    assert third_party_imports(TREES[module], eager_only=False), f"{module} is no longer glue: update GLUE"
    if module in EAGER_GLUE:
        return  # checked by test_eager_glue_is_imported_only_inside_a_function_of_its_importer
    eager = third_party_imports(TREES[module], eager_only=True)
    assert not eager, f"{module} imports " + ", ".join(f"{top} at line {line}" for line, top in eager) + \
        " when it is imported; import it inside the function that needs it"


@pytest.mark.parametrize("module", sorted(EAGER_GLUE))
def test_eager_glue_is_imported_only_inside_a_function_of_its_importer(module):
    importers = {importer for importer, targets in import_graph().items() if module in targets}
    assert importers == {EAGER_GLUE[module]}, f"{module} is imported by {sorted(importers)}"
    tree = TREES[EAGER_GLUE[module]]
    functions = [node for node in ast.walk(tree) if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))]
    inside = {id(child) for function in functions for child in ast.walk(function)}
    imports = [node for node in ast.walk(tree) if isinstance(node, (ast.Import, ast.ImportFrom))
               and module in {internal_target(name) for name in imported_names(EAGER_GLUE[module], node)}]
    assert imports and all(id(node) in inside for node in imports), f"{EAGER_GLUE[module]} imports {module} eagerly"


def test_importing_the_whole_package_loads_no_ray_mlflow_or_optuna():
    """The same rule at run time, for what the ast cannot see (a dependency importing them); the eager glue
    is left out (it is imported only inside a function, checked above)."""
    names = sorted(name for name in MODULES if not name.endswith("__main__") and name not in EAGER_GLUE)
    code = (f"import importlib, sys\nfor name in {names!r}:\n    importlib.import_module(name)\n"
            f"print(sorted({{m.split('.')[0] for m in sys.modules}} & {set(GLUE_ONLY)!r}))")
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "PYTHONPATH": f"{LIBRARY}{os.pathsep}{ROOT}"})
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "[]", done.stdout


#: the most lines a library module may have: past it, a module holds more than one job
MAX_MODULE_LINES = 600


def test_no_library_module_is_over_600_lines():
    long = {name: len(path.read_text().splitlines()) for name, path in MODULES.items()}
    assert not {name: count for name, count in long.items() if count > MAX_MODULE_LINES}


def test_every_conversion_method_is_one_module_of_the_methods_package():
    from snnconv.method_registry import registered

    methods = {name.rpartition(".")[2] for name in MODULES if name.startswith("snnconv.methods.")}
    assert {method.name for method in registered()} <= methods == {"rnl", "qcfs", "datanorm"}
    for method in registered():  # each registered from its own module, with its settings and runner there
        assert method.run.__module__ == method.settings.__module__ == f"snnconv.methods.{method.name}"
