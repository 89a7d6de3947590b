"""The layout's rules, checked on the code itself: the import-linter contracts of pyproject.toml, no import cycle among
hierlmm's modules (imports inside functions included), no hierlmm import inside a function, a reason beside every
lazy third-party import, and runtime dependencies that are what the package imports."""

from __future__ import annotations

import ast
import subprocess
import sys
import tomllib
from pathlib import Path

import grimp
import pytest
from paths import ROOT

PACKAGE = ROOT / "hierlmm"
# third-party packages that may be imported inside a function (heavy to import, needed only for one action)
LAZY_ALLOWED = {"nutpie", "arviz_plots", "matplotlib"}
# distribution names of the packages hierlmm imports (where they differ from the import name)
DISTRIBUTIONS = {"arviz_base": "arviz", "arviz_stats": "arviz", "arviz_plots": "arviz"}


def _imports(path: Path) -> list[tuple[ast.AST, str, bool]]:
    """Every import statement of a module: (node, imported module, inside a function)."""
    tree = ast.parse(path.read_text())
    inside: set[int] = set()
    for fn in ast.walk(tree):
        if isinstance(fn, ast.FunctionDef | ast.AsyncFunctionDef):
            inside.update(id(n) for n in ast.walk(fn) if isinstance(n, ast.Import | ast.ImportFrom))
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out.extend((node, alias.name, id(node) in inside) for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            out.append((node, node.module, id(node) in inside))
    return out


def _find_cycle(graph: grimp.ImportGraph) -> list[str] | None:
    """A cycle of direct imports among the package's modules, or None (depth-first search)."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(module: str) -> list[str] | None:
        state[module] = 1
        stack.append(module)
        for target in sorted(graph.find_modules_directly_imported_by(module)):
            if target == "hierlmm":  # `from hierlmm import datasets` names a submodule, not the package's __init__
                continue
            if state.get(target) == 1:
                return stack[stack.index(target):] + [target]
            if target not in state and (found := visit(target)):
                return found
        stack.pop()
        state[module] = 2
        return None

    for module in sorted(graph.modules):
        if module != "hierlmm" and module not in state and (found := visit(module)):
            return found
    return None


def test_import_linter_contracts_are_kept() -> None:
    """pyproject.toml's layers contracts (the pipeline's stages; bayes above reml) hold."""
    command = [sys.executable, "-c", "import sys; from importlinter.cli import lint_imports_command; "
               "sys.exit(lint_imports_command())", "--config", str(ROOT / "pyproject.toml"), "--no-cache",
               "--no-logo"]
    run = subprocess.run(command, capture_output=True, text=True, cwd=ROOT)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-2000:]
    assert "2 kept, 0 broken" in run.stdout


def test_no_import_cycle_among_modules() -> None:
    """grimp reads every import statement, those inside functions too: the module graph has no cycle."""
    graph = grimp.build_graph("hierlmm", cache_dir=None)
    cycle = _find_cycle(graph)
    assert cycle is None, " -> ".join(cycle)


def test_cycle_finder_finds_a_cycle() -> None:
    """The cycle search itself, on a graph with one planted cycle (a check that cannot fail proves nothing)."""
    graph = grimp.ImportGraph()
    for name in ("hierlmm", "hierlmm.a", "hierlmm.b", "hierlmm.c"):
        graph.add_module(name)
    graph.add_import(importer="hierlmm.a", imported="hierlmm.b")
    graph.add_import(importer="hierlmm.b", imported="hierlmm.c")
    assert _find_cycle(graph) is None
    graph.add_import(importer="hierlmm.c", imported="hierlmm.a")
    assert _find_cycle(graph) == ["hierlmm.a", "hierlmm.b", "hierlmm.c", "hierlmm.a"]


@pytest.mark.parametrize("path", sorted(PACKAGE.rglob("*.py")), ids=lambda p: str(p.relative_to(ROOT)))
def test_imports_inside_functions(path: Path) -> None:
    """No hierlmm module is imported inside a function (that would hide a cycle); a lazy third-party import is one
    of the heavy ones, with its reason on the line."""
    lines = path.read_text().split("\n")
    for node, module, inside in _imports(path):
        if not inside:
            continue
        where = f"{path.relative_to(ROOT)}:{node.lineno}"
        assert module.split(".")[0] != "hierlmm", f"{where}: hierlmm imported inside a function"
        assert module.split(".")[0] in LAZY_ALLOWED, f"{where}: {module} imported inside a function"
        assert "# lazy:" in lines[node.lineno - 1], f"{where}: a lazy import without its reason (# lazy: ...)"


def test_runtime_dependencies_are_what_the_package_imports() -> None:
    """pyproject.toml's dependencies cover every third-party import of the package, and declare nothing else but the
    file formats xarray loads by name (h5netcdf with h5py, zarr)."""
    declared = {d.split(">")[0].split("=")[0].split("<")[0].strip().lower().replace("_", "-")
                for d in tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]}
    imported = set()
    for path in PACKAGE.rglob("*.py"):
        for _, module, _ in _imports(path):
            root = module.split(".")[0]
            if root != "hierlmm" and root not in sys.stdlib_module_names and root != "__future__":
                imported.add(DISTRIBUTIONS.get(root, root).lower().replace("_", "-"))
    assert imported - declared == set(), f"imported but not declared: {sorted(imported - declared)}"
    formats = {"h5netcdf", "h5py", "zarr"}
    assert declared - imported == formats, f"declared but not imported: {sorted(declared - imported - formats)}"
