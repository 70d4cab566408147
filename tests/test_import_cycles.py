"""No import cycle in the package: the module import graph, read from the source.

Every module of ``trio_bridge`` is parsed (not imported) and each ``import``/``from ... import``
of a ``trio_bridge`` module becomes an edge, wherever it is written: at the top, inside a
function (a lazy import is still a dependency). Imports under ``if TYPE_CHECKING:`` never run
and are left out. ``from .pkg import name`` is an edge to ``pkg.name`` when that is a module,
else to ``pkg``. A cycle is any strongly connected group of modules; each is named with one
path around it.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import trio_bridge

PACKAGE = Path(trio_bridge.__file__).parent


def _modules() -> dict[str, tuple[Path, bool]]:
    """Module name -> (file, is a package)."""
    found = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        is_package = parts[-1] == "__init__"
        if is_package:
            parts.pop()
        found[".".join(parts)] = (path, is_package)
    return found


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _runtime_imports(node: ast.AST) -> Iterator[ast.Import | ast.ImportFrom]:
    """Every import statement below ``node`` but those under ``if TYPE_CHECKING:``."""
    for child in ast.iter_child_nodes(node):
        if isinstance(child, ast.If) and _is_type_checking(child.test):
            for other in child.orelse:
                yield from _runtime_imports(other)
            continue
        if isinstance(child, ast.Import | ast.ImportFrom):
            yield child
        yield from _runtime_imports(child)


def _owner(name: str, modules: dict[str, tuple[Path, bool]]) -> str:
    """The module that ``name`` (a module, or a name inside one) lives in."""
    while name not in modules:
        name = name.rpartition(".")[0]
    return name


def import_graph() -> dict[str, set[str]]:
    """Module -> the package's modules it imports."""
    modules = _modules()
    graph: dict[str, set[str]] = {}
    for name, (path, is_package) in modules.items():
        here = name.split(".") if is_package else name.split(".")[:-1]
        targets: set[str] = set()
        for statement in _runtime_imports(ast.parse(path.read_text(), str(path))):
            if isinstance(statement, ast.Import):
                targets.update(
                    _owner(alias.name, modules)
                    for alias in statement.names
                    if alias.name.split(".")[0] == "trio_bridge"
                )
                continue
            if statement.level:
                base = here[: len(here) - statement.level + 1]
                source = ".".join(base + ([statement.module] if statement.module else []))
            else:
                source = statement.module or ""
            if source.split(".")[0] != "trio_bridge":
                continue
            for alias in statement.names:
                inner = f"{source}.{alias.name}"
                targets.add(inner if inner in modules else _owner(source, modules))
        targets.discard(name)
        graph[name] = targets
    return graph


def cycles(graph: dict[str, set[str]]) -> list[frozenset[str]]:
    """The graph's strongly connected groups of more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    groups: list[frozenset[str]] = []
    for root in sorted(graph):
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, edges = work[-1]
            for target in edges:
                if target not in index:
                    index[target] = low[target] = len(index)
                    stack.append(target)
                    on_stack.add(target)
                    work.append((target, iter(sorted(graph[target]))))
                    break
                if target in on_stack:
                    low[node] = min(low[node], index[target])
            else:
                work.pop()
                if work:
                    parent = work[-1][0]
                    low[parent] = min(low[parent], low[node])
                if low[node] == index[node]:
                    group = set()
                    while True:
                        member = stack.pop()
                        on_stack.discard(member)
                        group.add(member)
                        if member == node:
                            break
                    if len(group) > 1:
                        groups.append(frozenset(group))
    return groups


def path_around(graph: dict[str, set[str]], group: frozenset[str]) -> str:
    """One cycle through the group's first module, as ``a -> b -> a``."""
    start = min(group)
    paths = {start: [start]}
    queue = [start]
    while queue:  # breadth first: the shortest way back to the start
        node = queue.pop(0)
        for target in sorted(graph[node] & group):
            if target == start:
                return " -> ".join([*paths[node], start])
            if target not in paths:
                paths[target] = [*paths[node], target]
                queue.append(target)
    raise AssertionError(f"no cycle in {sorted(group)}")


def test_the_graph_sees_lazy_imports_and_skips_type_checking_ones() -> None:
    graph = import_graph()
    # cli/_complete.py imports the client only inside its completers (start-up time)
    assert "trio_bridge.cli._connect" in graph["trio_bridge.cli._complete"]
    # telegram/commands.py imports the bot only for its annotations
    assert "trio_bridge.telegram.bot" not in graph["trio_bridge.telegram.commands"]
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [frozenset({"a", "b", "c"})]
    assert path_around({"a": {"b"}, "b": {"a", "c"}, "c": {"b"}}, frozenset({"a", "b", "c"})) == "a -> b -> a"


def test_no_import_cycle() -> None:
    graph = import_graph()
    found = cycles(graph)
    assert not found, "import cycles:\n" + "\n".join(path_around(graph, group) for group in found)
