"""The shape of the core: no import cycles, small files, small classes (docs/architecture.md).

The layers themselves (each sub-package imports only the ones below it) are held by the
``core-layers`` import-linter contract in pyproject.toml; these tests hold what a layers
contract cannot see: cycles between modules of one layer, and size.
"""

from __future__ import annotations

import ast
import pathlib

import grimp

import runtime.core

CORE = pathlib.Path(runtime.core.__file__).parent
MAX_FILE_LINES = 600
MAX_CLASS_METHODS = 30


def _cycles(graph: grimp.ImportGraph, modules: set[str]) -> list[list[str]]:
    """The strongly connected groups of two or more modules (Tarjan), each a cycle or more."""
    edges = {m: graph.find_modules_directly_imported_by(m) & modules for m in modules}
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    groups: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in edges[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                group.append(w)
                if w == v:
                    break
            if len(group) > 1 or v in edges[v]:
                groups.append(sorted(group))

    for v in sorted(modules):
        if v not in index:
            visit(v)
    return groups


def test_no_two_core_modules_import_each_other_even_for_types_or_inside_functions() -> None:
    graph = grimp.build_graph("runtime", include_external_packages=False)
    core = {m for m in graph.modules if m.startswith("runtime.core.")}
    assert len(core) > 30  # the graph did see the core
    assert _cycles(graph, core) == []


def test_the_cycle_finder_finds_a_cycle() -> None:
    graph = grimp.ImportGraph()
    for m in ("a", "b", "c", "d"):
        graph.add_module(m)
    graph.add_import(importer="a", imported="b")
    graph.add_import(importer="b", imported="c")
    graph.add_import(importer="c", imported="a")
    graph.add_import(importer="c", imported="d")
    assert _cycles(graph, {"a", "b", "c", "d"}) == [["a", "b", "c"]]


def _files() -> list[pathlib.Path]:
    return sorted(CORE.rglob("*.py"))


def _name(path: pathlib.Path) -> str:
    return path.relative_to(CORE).as_posix()


def test_no_core_file_is_over_600_lines() -> None:
    too_long = {_name(f) for f in _files() if len(f.read_text().splitlines()) > MAX_FILE_LINES}
    assert too_long == set()


def test_no_core_class_has_over_30_methods() -> None:
    too_big = set()
    for f in _files():
        for node in ast.walk(ast.parse(f.read_text())):
            if isinstance(node, ast.ClassDef):
                methods = [
                    b for b in node.body if isinstance(b, ast.FunctionDef | ast.AsyncFunctionDef)
                ]
                name = f"{_name(f)}:{node.name}"
                if len(methods) > MAX_CLASS_METHODS:
                    too_big.add(name)
    assert too_big == set()


def _classes() -> dict[str, tuple[str, int, list[str]]]:
    """Every core class by name: (file, number of methods, names of its bases)."""
    found = {}
    for f in _files():
        for node in ast.walk(ast.parse(f.read_text())):
            if isinstance(node, ast.ClassDef):
                methods = sum(
                    isinstance(b, ast.FunctionDef | ast.AsyncFunctionDef) for b in node.body
                )
                bases = [ast.unparse(b).split("[")[0].split(".")[-1] for b in node.bases]
                found[node.name] = (_name(f), methods, bases)
    return found


def test_no_core_class_is_built_from_big_core_classes_by_inheritance() -> None:
    classes = _classes()
    assert "Worker" in classes and "ObjectPlane" in classes
    inherited = {
        f"{name} ({file}) < {base}"
        for name, (file, _, bases) in classes.items()
        for base in bases
        if base in classes and classes[base][1] > 5
    }
    assert inherited == set()
