"""The layers hold: dependencies point one way (ARCHITECTURE's table: the core imports neither the ways it
runs nor the evaluation lab, nothing imports the ways it runs, the agent reaches the core only through its
ports, with no SQLAlchemy in `agent/`), and no import circles among the project's modules. Read from the
source with `ast`, so a function-level import counts as much as a top-level one; imports under `if
TYPE_CHECKING:` are left out of the circles (they never run) but not out of the one-way rules."""

from __future__ import annotations

import ast
from collections.abc import Collection, Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("gpuops", "entrypoints", "evaluation", "agent", "runbooks", "detectors", "connectors", "domain",
            "simulator")
AGENT_MAY_NOT_IMPORT = ("gpuops", "simulator", "sqlalchemy")
OURS = set(PACKAGES)
# What each package may not import (the agent's rule is its own test, below).
MAY_NOT_IMPORT = {
    "gpuops": {"entrypoints", "evaluation", "simulator"},
    "evaluation": {"entrypoints"},
    "agent": {"entrypoints", "evaluation"},
    "detectors": OURS - {"detectors", "domain"},
    "domain": OURS - {"domain"},
    "runbooks": OURS - {"runbooks", "connectors", "domain"},
    "connectors": OURS - {"connectors", "detectors", "domain"},
    "simulator": {"gpuops", "entrypoints", "evaluation", "agent", "runbooks"},
}


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for pkg in PACKAGES for p in sorted((ROOT / pkg).rglob("*.py"))}


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _imported(path: Path, name: str, modules: Collection[str], *, typing_only: bool) -> Iterator[str]:
    """Every module `path` imports, relative imports resolved: `from a import b` is `a.b` when that is one of
    `modules`, else `a` (a package its submodule's import runs on the way is no edge: a package re-exporting
    its submodules is no circle). With `typing_only` False, imports under `if TYPE_CHECKING:` are skipped."""
    package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]

    def visit(node: ast.AST) -> Iterator[str]:
        if isinstance(node, ast.If) and _is_type_checking(node.test) and not typing_only:
            for statement in node.orelse:
                yield from visit(statement)
            return
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package[:len(package) - node.level + 1] + ([base] if base else []))
            for alias in node.names:
                yield f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base
        for child in ast.iter_child_nodes(node):
            yield from visit(child)

    return visit(ast.parse(path.read_text(), filename=str(path)))


def import_graph() -> dict[str, set[str]]:
    """Module -> the project modules it imports at run time."""
    modules = _modules()
    return {name: {m for m in _imported(path, name, modules, typing_only=False) if m in modules}
            for name, path in modules.items()}


def cycles(graph: dict[str, set[str]]) -> list[tuple[str, ...]]:
    """The graph's import circles: its strongly connected components of more than one module, or of one module
    importing itself (Tarjan's algorithm, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[tuple[str, ...]] = []
    for root in sorted(graph):
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, successors = work[-1]
            child = next(successors, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph[child]))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1 or node in graph[node]:
                    found.append(tuple(sorted(component)))
    return sorted(found)


def test_the_agent_imports_neither_the_core_nor_the_store() -> None:
    offences = [f"{name} imports {imported}"
                for name, path in _modules().items() if name.split(".")[0] == "agent"
                for imported in sorted(set(_imported(path, name, (), typing_only=True)))
                if imported.split(".")[0] in AGENT_MAY_NOT_IMPORT]
    assert offences == [], "agent/ reaches the core only through agent.ports:\n" + "\n".join(offences)


def test_dependencies_point_one_way() -> None:
    offences = [f"{name} imports {imported}"
                for name, path in _modules().items()
                for imported in sorted(set(_imported(path, name, (), typing_only=True)))
                if imported.split(".")[0] in MAY_NOT_IMPORT.get(name.split(".")[0], set())]
    assert offences == [], "\n".join(offences)


def test_the_agent_is_in_no_import_cycle() -> None:
    agent_cycles = [c for c in cycles(import_graph()) if any(m.split(".")[0] == "agent" for m in c)]
    assert agent_cycles == []


def test_the_project_has_no_import_cycle() -> None:
    assert cycles(import_graph()) == []


def test_the_cycle_finder_finds_circles_and_only_them() -> None:
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a", "d"}, "e": {"d"}, "f": set()}
    assert cycles(graph) == [("a", "b", "c"), ("d",)]
