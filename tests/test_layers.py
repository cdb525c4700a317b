"""Imports go one way: each module imports only from its own layer or the layers before it, and no two modules
import each other in a circle (function-level imports included). Read from the source with `ast`, nothing imported.

    actions/config -> runs -> env and features -> policy -> agent -> rl -> plots -> app, bench, cli
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
LAYERS = (  # (module-name prefix, layer); the longest matching prefix wins
    ("esper_lab", 0), ("esper_lab.actions", 0), ("esper_lab.config", 0), ("esper_lab.malloc", 0),
    ("esper_lab.progress", 0),
    ("esper_lab.runs", 1),
    ("esper_lab.env", 2), ("esper_lab.features", 2),
    ("esper_lab.policy", 3),
    ("esper_lab.agent", 4), ("esper_lab.evaluate", 4),
    ("esper_lab.rl", 5),
    ("esper_lab.plots", 6),
    ("esper_lab.bench", 7), ("esper_lab.cli", 7), ("app", 7),
)
LAYER_NAMES = ("actions/config", "runs", "env and features", "policy", "agent", "rl", "plots", "app/bench/cli")


def module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def layer_of(module: str) -> int:
    matches = [(len(prefix), layer) for prefix, layer in LAYERS if module == prefix or module.startswith(prefix + ".")]
    if not matches:
        raise AssertionError(f"{module} has no layer: add it to LAYERS in {Path(__file__).name}")
    return max(matches)[1]


def imports_of(path: Path, modules: set[str]) -> set[str]:
    """The project modules `path` imports anywhere in its body (relative imports resolved)."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join(anchor + ([base] if base else []))
            targets = [base] + [f"{base}.{alias.name}" for alias in node.names]
        else:
            continue
        for target in targets:
            while target and target not in modules:  # `from x import y`: y may be a name, not a module
                target = target.rpartition(".")[0]
            if target and target != name:
                found.add(target)
    return found


def project_graph() -> dict[str, set[str]]:
    files = [*REPO.joinpath("esper_lab").rglob("*.py"), *REPO.joinpath("app").rglob("*.py")]
    modules = {module_name(f): f for f in files}
    return {name: imports_of(path, set(modules)) for name, path in modules.items()}


GRAPH = project_graph()


def test_every_module_has_a_layer():
    for module in GRAPH:
        layer_of(module)


@pytest.mark.parametrize("module", sorted(GRAPH))
def test_no_module_imports_a_higher_layer(module):
    upward = [f"{target} ({LAYER_NAMES[layer_of(target)]})" for target in sorted(GRAPH[module])
              if layer_of(target) > layer_of(module)]
    assert not upward, f"{module} ({LAYER_NAMES[layer_of(module)]}) imports from a higher layer: {upward}"


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle as [a, b, ..., a], or None (depth-first search with colours)."""
    state: dict[str, int] = {}  # 1 = on the current path, 2 = done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        path.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_no_import_cycle():
    cycle = find_cycle(GRAPH)
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_the_checks_can_fail():
    """The walker sees function-level and relative imports, and the cycle finder finds a planted cycle."""
    assert "esper_lab.agent" in GRAPH["esper_lab.cli"]  # imported inside a function
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None
    assert layer_of("esper_lab.rl.trainer") > layer_of("esper_lab.agent") > layer_of("esper_lab.policy.network")
