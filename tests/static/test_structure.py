"""The shape of the code, read from its imports (static: nothing is imported).

docs/architecture.md draws the layers; these tests keep the imports to it:

- every import points down the layers (:data:`LAYERS`) or stays in its package;
- no import circle between modules, neither among the imports that run when a
  module is imported nor counting the ones inside functions;
- nothing outside bench/ imports bench/ (operator tools live in tools/);
- every import of ours names a module that exists (an old path after a move).

An import under ``if TYPE_CHECKING:`` never runs, so it makes no circle, but it
is still an arrow a reader follows: the layers count it.
"""

from __future__ import annotations

import ast
import collections
import pathlib
from dataclasses import dataclass

ROOT = pathlib.Path(__file__).resolve().parents[2]

#: Each top-level package (and run.py) and its layer: a module may import its own
#: package and packages of a lower layer, nothing else. Layer 0 imports nothing of ours.
LAYERS = {
    "domain": 0,     # sans-IO decisions
    "config": 0,     # settings and roles
    "telemetry": 0,  # logs, traces, metrics: usable from every layer
    "pg": 0,         # the PostgreSQL process side and the schema
    "storage": 1,    # the database runtime, units of work and their SQL
    "gateways": 1,   # connectors
    "actors": 2,
    "components": 3,
    "app": 4,        # the HTTP edge
    "processes": 5,  # run.py serve --workers
    "tools": 6,      # operator tools: check, simulate, chaos
    "run": 7,
}
#: Not part of the program: they may import anything of it, and nothing of it imports them.
OUTSIDE = ("bench", "tests")


@dataclass(frozen=True)
class Import:
    importer: str  # dotted module name
    imported: str  # the project module it reaches
    line: int
    lazy: bool  # inside a function: runs when called, not on import
    type_only: bool  # under ``if TYPE_CHECKING:``: never runs

    def __str__(self) -> str:
        path = MODULES[self.importer].relative_to(ROOT)
        kind = " (type only)" if self.type_only else " (in a function)" if self.lazy else ""
        return f"{path}:{self.line} {self.importer} -> {self.imported}{kind}"


def _modules() -> dict[str, pathlib.Path]:
    found = {"run": ROOT / "run.py"}
    for top in (*LAYERS, *OUTSIDE):
        if top == "run":
            continue
        for path in sorted((ROOT / top).rglob("*.py")):
            parts = list(path.relative_to(ROOT).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            found[".".join(parts)] = path
    return found


MODULES = _modules()


def _project_module(name: str) -> str | None:
    """The project module an import of ``name`` executes (its longest known prefix)."""
    while name and name not in MODULES:
        name = name.rpartition(".")[0]
    return name or None


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _imports_of(module: str, path: pathlib.Path) -> list[Import]:
    package = module.split(".") if path.name == "__init__.py" else module.split(".")[:-1]
    found: list[Import] = []

    def add(name: str, node: ast.stmt, lazy: bool, type_only: bool) -> None:
        target = _project_module(name)
        if target is not None and target != module:
            found.append(Import(module, target, node.lineno, lazy, type_only))

    def visit(node: ast.AST, lazy: bool, type_only: bool) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.Import):
                for alias in child.names:
                    add(alias.name, child, lazy, type_only)
            elif isinstance(child, ast.ImportFrom):
                base = child.module or ""
                if child.level:  # relative: from the package, up level - 1
                    up = package[:len(package) - (child.level - 1)]
                    base = ".".join([*up, *([child.module] if child.module else [])])
                for alias in child.names:
                    # ``from pkg import mod`` imports the module pkg.mod; ``from mod import name`` the module mod.
                    add(f"{base}.{alias.name}" if f"{base}.{alias.name}" in MODULES else base, child, lazy, type_only)
            elif isinstance(child, ast.If) and _is_type_checking(child):
                for stmt in child.body:
                    visit(ast.Module(body=[stmt], type_ignores=[]), lazy, True)
                for stmt in child.orelse:
                    visit(ast.Module(body=[stmt], type_ignores=[]), lazy, type_only)
            elif isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
                visit(child, True, type_only)
            else:
                visit(child, lazy, type_only)

    visit(ast.parse(path.read_text(encoding="utf-8"), str(path)), False, False)
    return list(dict.fromkeys(found))  # ``from m import a, b`` is one import of m


IMPORTS = [imp for module, path in MODULES.items() for imp in _imports_of(module, path)]


def _top(module: str) -> str:
    return module.split(".")[0]


def _circles(edges: list[Import]) -> list[list[str]]:
    """The import circles (strongly connected components of more than one module), each sorted."""
    graph: dict[str, set[str]] = collections.defaultdict(set)
    for imp in edges:
        graph[imp.importer].add(imp.imported)
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    circles: list[list[str]] = []

    def connect(v: str) -> None:  # Tarjan; the graph is a few hundred modules deep at most
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                connect(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                circles.append(sorted(component))

    for module in sorted(MODULES):
        if module not in index:
            connect(module)
    return circles


def _describe(circles: list[list[str]], edges: list[Import]) -> str:
    lines = []
    for circle in circles:
        members = set(circle)
        lines.append("circle: " + ", ".join(circle))
        lines += [f"    {imp}" for imp in edges if imp.importer in members and imp.imported in members]
    return "\n".join(lines)


def test_the_scan_sees_the_program():
    # A scan that found nothing would pass every test below.
    assert len(MODULES) > 100, sorted(MODULES)
    assert any(imp.importer == "run" and _top(imp.imported) == "tools" for imp in IMPORTS)
    assert any(imp.lazy for imp in IMPORTS)


def test_every_package_has_a_layer():
    packages = {path.parent.name for path in ROOT.glob("*/__init__.py")}
    unplaced = packages - set(LAYERS) - set(OUTSIDE)
    assert not unplaced, f"new top-level packages need a layer in LAYERS (docs/architecture.md): {sorted(unplaced)}"


def test_no_import_circle_on_import():
    edges = [imp for imp in IMPORTS if not imp.lazy and not imp.type_only]
    circles = _circles(edges)
    assert not circles, "modules that import each other when imported:\n" + _describe(circles, edges)


def test_no_import_circle_counting_imports_in_functions():
    edges = [imp for imp in IMPORTS if not imp.type_only]
    circles = _circles(edges)
    assert not circles, ("modules that import each other (an import inside a function hides the circle, "
                         "it does not remove it):\n" + _describe(circles, edges))


def _names_of_package(module: str) -> set[str]:
    """What ``from <package> import x`` can find without a submodule: the names its __init__ binds."""
    names: set[str] = set()
    for node in ast.parse(MODULES[module].read_text(encoding="utf-8")).body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            names.update((alias.asname or alias.name).split(".")[0] for alias in node.names)
        elif isinstance(node, (ast.Assign, ast.AnnAssign)):
            for target in node.targets if isinstance(node, ast.Assign) else [node.target]:
                names.update(n.id for n in ast.walk(target) if isinstance(n, ast.Name))
    return names


def test_every_import_of_ours_finds_its_module():
    # After a move, an import of the old path would only fail when it runs (many are in functions).
    wrong = []
    for module, path in MODULES.items():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
            if isinstance(node, ast.Import):
                wanted = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and not node.level and node.module:
                wanted = [node.module]
                if node.module in MODULES and MODULES[node.module].name == "__init__.py":
                    names = _names_of_package(node.module)
                    wanted += [f"{node.module}.{alias.name}" for alias in node.names
                               if alias.name != "*" and alias.name not in names]
            else:
                continue
            for name in wanted:
                if _top(name) in (*LAYERS, *OUTSIDE) and name not in MODULES:
                    wrong.append(f"{path.relative_to(ROOT)}:{node.lineno} imports {name}, which does not exist")
    assert not wrong, "\n".join(wrong)


def test_nothing_outside_bench_imports_bench():
    wrong = [str(imp) for imp in IMPORTS if _top(imp.imported) == "bench" and _top(imp.importer) != "bench"]
    assert not wrong, "bench/ holds benchmarks; operator tools belong in tools/:\n" + "\n".join(wrong)


def test_program_never_imports_bench_or_tests():
    wrong = [str(imp) for imp in IMPORTS
             if _top(imp.imported) in OUTSIDE and _top(imp.importer) not in OUTSIDE]
    assert not wrong, "\n".join(wrong)


def test_imports_point_down_the_layers():
    wrong = []
    for imp in IMPORTS:
        source, target = _top(imp.importer), _top(imp.imported)
        if source in OUTSIDE or target in OUTSIDE or source == target:
            continue
        if LAYERS[target] >= LAYERS[source]:
            wrong.append(f"{imp}  ({source} is layer {LAYERS[source]}, {target} layer {LAYERS[target]})")
    assert not wrong, "imports that point up or across the layers (LAYERS, docs/architecture.md):\n" + "\n".join(wrong)
