"""The import graph of benchmark/ and methods/ (DESIGN.md "Layers"): imports point down, never in a circle."""

from __future__ import annotations

import ast
from fnmatch import fnmatch
from pathlib import Path

from benchmark import paths

ROOTS = ("benchmark", "methods")
# Modules a method package must never import: the evaluation runner, the command line, the demo.
ABOVE_METHODS = ("benchmark.runner", "benchmark.cli*", "benchmark.demo")
# Faces: they know methods only through the interface and the registry.
FACES = ("benchmark.cli*", "benchmark.demo", "benchmark.bench", "benchmark.reproduce", "benchmark.leaderboard",
         "benchmark.formats", "benchmark.visualize", "benchmark.protocol_diff", "benchmark.sweep*", "benchmark.matrix")


def module_name(path: Path) -> str:
    parts = list(path.relative_to(paths.REPO_ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def imported_modules(path: Path, name: str, known: set[str]) -> set[str]:
    """Every module of `known` that the file imports (at any depth, TYPE_CHECKING blocks included)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                parts = parts[: len(parts) - node.level + 1]
                base = ".".join(parts + ([base] if base else []))
            targets = [base, *(f"{base}.{alias.name}" for alias in node.names)]
        else:
            continue
        for target in targets:
            while target and target not in known:
                target = target.rpartition(".")[0]
            if target and target != name:
                found.add(target)
    return found


def import_graph(roots: tuple[str, ...] = ROOTS, base: Path = paths.REPO_ROOT) -> dict[str, set[str]]:
    files = {module_name(file): file for root in roots for file in sorted((base / root).rglob("*.py"))}
    return {name: imported_modules(file, name, set(files)) for name, file in files.items()}


def circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for other in sorted(graph[node]):
            if other not in index:
                visit(other)
                low[node] = min(low[node], low[other])
            elif other in on_stack:
                low[node] = min(low[node], index[other])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def within(module: str, patterns: tuple[str, ...]) -> bool:
    """The module is one of the patterns (fnmatch) or inside one of them."""
    return any(fnmatch(module, pattern) or module.startswith(pattern.rstrip("*") + ".") for pattern in patterns)


def test_no_import_circle():
    assert circles(import_graph()) == []


def test_methods_never_import_the_runner_the_cli_or_the_demo():
    upward = sorted(f"{name} -> {target}" for name, targets in import_graph().items() if name.startswith("methods")
                    for target in targets if within(target, ABOVE_METHODS))
    assert upward == []


def test_no_face_names_a_method_package():
    named = sorted(f"{name} -> {target}" for name, targets in import_graph().items() if within(name, FACES)
                   for target in targets if target.startswith("methods.") and target != "methods.base")
    assert named == []


def test_the_checks_catch_a_circle_and_an_upward_import(tmp_path):
    """The same functions on a made-up tree: a two-module circle and a method that imports the CLI."""
    (tmp_path / "benchmark").mkdir()
    (tmp_path / "methods").mkdir()
    (tmp_path / "benchmark" / "__init__.py").write_text("")
    (tmp_path / "methods" / "__init__.py").write_text("")
    (tmp_path / "benchmark" / "a.py").write_text("from benchmark import b\n")
    (tmp_path / "benchmark" / "b.py").write_text("import benchmark.a\n")
    (tmp_path / "benchmark" / "cli_extra.py").write_text("")
    (tmp_path / "methods" / "m.py").write_text("if True:\n    from benchmark.cli_extra import x\n")
    files = {}
    for root in ROOTS:
        for file in sorted((tmp_path / root).rglob("*.py")):
            parts = list(file.relative_to(tmp_path).with_suffix("").parts)
            files[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = file
    graph = {name: imported_modules(file, name, set(files)) for name, file in files.items()}
    assert circles(graph) == [["benchmark.a", "benchmark.b"]]
    assert "benchmark.cli_extra" in graph["methods.m"] and within("benchmark.cli_extra", ABOVE_METHODS)
    assert within("benchmark.demo", ABOVE_METHODS) and not within("benchmark.demo_assets", ABOVE_METHODS)
