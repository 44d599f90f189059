"""No import cycles among the modules of a package, TYPE_CHECKING and lazy imports included.

Python tolerates many cycles at run time (and ``if TYPE_CHECKING:`` hides others
from it entirely), so importing the modules proves little: the graph is read
from every import statement of every module instead, wherever it sits.
"""

from __future__ import annotations

import ast
from pathlib import Path
from types import ModuleType

import pytest

import kvstore
import runtime
from runtime import AgentRuntime, errors, plugins
from runtime import http as runtime_http
from runtime import sessions as runtime_sessions
from runtime.plugins import PluginRuntime
from runtime.sessions import SessionsRuntime


def import_graph(root: Path, package: str) -> dict[str, set[str]]:
    """``{module: modules of the package it imports}`` for the package *package* at *root*."""
    modules: dict[str, tuple[Path, bool]] = {}
    for path in sorted(root.rglob("*.py")):
        parts = [package, *path.relative_to(root).with_suffix("").parts]
        is_package = parts[-1] == "__init__"
        modules[".".join(parts[:-1] if is_package else parts)] = (path, is_package)
    graph: dict[str, set[str]] = {}
    for name, (path, is_package) in modules.items():
        here = name.split(".") if is_package else name.split(".")[:-1]
        targets: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                targets.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = here[: len(here) - node.level + 1]
                    source = ".".join([*base, *([node.module] if node.module else [])])
                else:
                    source = node.module or ""
                for alias in node.names:
                    # `from pkg import sub` imports the submodule; `from mod import name` mod.
                    submodule = f"{source}.{alias.name}"
                    targets.add(submodule if submodule in modules else source)
        graph[name] = {target for target in targets if target in modules and target != name}
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Every cycle a depth-first walk meets, each as ``[a, b, ..., a]``."""
    found: list[list[str]] = []
    state: dict[str, str] = {}
    path: list[str] = []

    def visit(node: str) -> None:
        state[node] = "open"
        path.append(node)
        for target in sorted(graph[node]):
            if state.get(target) == "open":
                found.append([*path[path.index(target) :], target])
            elif target not in state:
                visit(target)
        path.pop()
        state[node] = "done"

    for node in sorted(graph):
        if node not in state:
            visit(node)
    return found


@pytest.mark.parametrize("package", [runtime, kvstore], ids=lambda p: p.__name__)
def test_no_import_cycles(package: ModuleType) -> None:
    graph = import_graph(Path(str(package.__file__)).parent, package.__name__)
    assert len(graph) > 5  # the walk found the modules
    assert cycles(graph) == []


def test_the_check_finds_a_cycle_hidden_behind_type_checking(tmp_path: Path) -> None:
    package = tmp_path / "cyclic"
    (package / "sub").mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "sub" / "__init__.py").write_text("from .b import B\n")
    (package / "a.py").write_text(
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from .sub.b import B\n"
    )
    (package / "sub" / "b.py").write_text("def f():\n    from ..a import A\nclass B: ...\n")
    (package / "c.py").write_text("import cyclic.a\n")
    graph = import_graph(package, "cyclic")
    assert graph["cyclic.c"] == {"cyclic.a"}
    assert graph["cyclic.sub"] == {"cyclic.sub.b"}
    assert cycles(graph) == [["cyclic.a", "cyclic.sub.b", "cyclic.a"]]


def test_errors_import_from_their_old_places_too() -> None:
    for name in errors.__all__:
        error = getattr(errors, name)
        assert error.__module__ == "runtime.errors"
    assert runtime.SessionNotFoundError is errors.SessionNotFoundError
    assert runtime_sessions.SessionExpiredError is errors.SessionExpiredError
    assert runtime_sessions.InvalidSessionInputError is errors.InvalidSessionInputError
    assert plugins.RuntimeStateError is errors.RuntimeStateError
    assert plugins.ProviderError is errors.ProviderError
    assert runtime_http.APIError is errors.APIError


def test_agent_runtime_is_what_plugins_and_sessions_expect() -> None:
    # Checked by mypy: AgentRuntime satisfies both protocols structurally.
    agent = AgentRuntime(agent_id="agent-p", environ={})
    as_plugin_runtime: PluginRuntime = agent
    as_sessions_runtime: SessionsRuntime = agent
    assert as_plugin_runtime.agent_id == as_sessions_runtime.agent_id == "agent-p"
    assert as_plugin_runtime.get_service("nothing") is None
