"""No import cycle among the modules of kvstore (a structural test).

The graph is read from the source with :mod:`ast`: every ``import`` and ``from
... import`` of a module of the package counts, wherever it stands — at the top,
under ``if TYPE_CHECKING:`` or inside a function — since a cycle hidden in a
lazy import is still two modules that each need the other. ``from . import x``
counts as importing submodule ``x`` when there is one, else the package itself.
Importing ``a.b`` also runs ``a/__init__.py``, but that implicit edge is left
out, as import linters do: otherwise every module would sit in a cycle with a
package ``__init__`` that re-exports it.
"""

from __future__ import annotations

import ast
from collections.abc import Mapping, Set
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

PACKAGES = ["kvstore"]


def _modules(package: str) -> dict[str, tuple[Path, bool]]:
    """``{dotted name: (file, is a package __init__)}`` for every module of *package*."""
    found: dict[str, tuple[Path, bool]] = {}
    for path in sorted((ROOT / package).rglob("*.py")):
        parts = list(path.relative_to(ROOT).with_suffix("").parts)
        is_package = parts[-1] == "__init__"
        if is_package:
            parts.pop()
        found[".".join(parts)] = (path, is_package)
    return found


def import_graph(package: str) -> dict[str, set[str]]:
    """``{module: modules of *package* it imports}``, from the source files."""
    modules = _modules(package)
    graph: dict[str, set[str]] = {}
    for name, (path, is_package) in modules.items():
        # What a relative import is relative to: the package itself for an
        # __init__, the containing package for a plain module.
        here = name.split(".") if is_package else name.split(".")[:-1]
        targets: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if isinstance(node, ast.Import):
                targets.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = here[: len(here) - node.level + 1]
                    target = ".".join([*base, *([node.module] if node.module else [])])
                else:
                    target = node.module or ""
                targets.add(target)
                targets.update(f"{target}.{alias.name}" for alias in node.names)
        graph[name] = {target for target in targets if target in modules and target != name}
    return graph


def find_cycle(graph: Mapping[str, Set[str]]) -> list[str] | None:
    """One cycle of *graph* as ``[a, b, …, a]``, or None when it is acyclic."""
    done: set[str] = set()
    path: list[str] = []
    on_path: set[str] = set()

    def visit(node: str) -> list[str] | None:
        path.append(node)
        on_path.add(node)
        for successor in sorted(graph.get(node, ())):
            if successor in on_path:
                return [*path[path.index(successor) :], successor]
            if successor not in done:
                cycle = visit(successor)
                if cycle is not None:
                    return cycle
        path.pop()
        on_path.discard(node)
        done.add(node)
        return None

    for start in sorted(graph):
        if start not in done:
            cycle = visit(start)
            if cycle is not None:
                return cycle
    return None


@pytest.mark.parametrize("package", PACKAGES)
def test_no_import_cycle(package: str) -> None:
    graph = import_graph(package)
    assert len(graph) > 10, sorted(graph)  # the walk found the package's modules
    cycle = find_cycle(graph)
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])


def test_the_graph_sees_every_kind_of_import() -> None:
    graph = import_graph("kvstore")
    assert "kvstore.errors" in graph["kvstore.codec"]  # from .errors import ...
    assert "kvstore.wrapper" in graph["kvstore.metrics"]
    assert "kvstore.metrics" in graph["kvstore.service"]  # TYPE_CHECKING and a lazy import
    assert "kvstore.testing.contract" in graph["kvstore.testing"]  # TYPE_CHECKING only
    assert "kvstore.options" in graph["kvstore.testing.redis_server"]  # from ..options


def test_find_cycle() -> None:
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": set()}) is None
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"a2"}, "a2": set(), "b": {"c"}, "c": {"b"}}) == ["b", "c", "b"]
