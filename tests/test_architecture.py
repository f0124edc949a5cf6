"""The shape of splitlib: imports run one way (no circle, counting imports inside functions too), and no module
grows past what one reader holds in mind."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "splitlib"
MAX_MODULE_LINES = 400


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def _imported(node: ast.AST, module: str, is_package: bool) -> list[str]:
    """Dotted names an import statement asks for (``from a import b`` gives ``a`` and ``a.b``)."""
    if isinstance(node, ast.Import):
        return [a.name for a in node.names]
    if not isinstance(node, ast.ImportFrom):
        return []
    if node.level:
        base = module.split(".") if is_package else module.split(".")[:-1]
        base = base[: len(base) - (node.level - 1)]
        target = ".".join(base + ([node.module] if node.module else []))
    else:
        target = node.module or ""
    return [target] + [f"{target}.{a.name}" for a in node.names]


def import_graph() -> dict[str, set[str]]:
    """Module -> the splitlib modules importing it runs, inside functions included.

    Importing ``a.b.c`` runs the package ``a.b`` first, so that is an edge too, unless the importer lives inside
    ``a.b`` itself (its package is already being imported). The root package ``splitlib`` is left out: its
    ``__init__`` imports nothing.
    """
    modules = _modules()
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        is_package = path.name == "__init__.py"
        edges: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            for target in _imported(node, name, is_package):
                if target not in modules or target == "splitlib":
                    continue
                edges.add(target)
                parent = target.rsplit(".", 1)[0]
                while parent != "splitlib" and not (name == parent or name.startswith(parent + ".")):
                    edges.add(parent)
                    parent = parent.rsplit(".", 1)[0]
        edges.discard(name)
        graph[name] = edges
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import circle as a path ``[a, b, ..., a]``, or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: finished
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        path.pop()
        state[node] = 2
        return None

    for start in sorted(graph):
        if start not in state and (found := visit(start)):
            return found
    return None


def test_splitlib_has_no_import_circle_even_through_imports_inside_functions():
    cycle = find_cycle(import_graph())
    assert cycle is None, "import circle: " + " -> ".join(cycle)


def test_the_cycle_finder_finds_a_circle_and_accepts_a_chain():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": set()}) is None


def test_the_graph_sees_imports_inside_functions_and_parent_packages():
    graph = import_graph()
    assert "splitlib.params" in graph["splitlib.notebook_params"]
    # the pipeline imports papermill lazily and notebook_params at module level; either way it is an edge
    assert "splitlib.notebook_params" in graph["splitlib.pipeline"]


@pytest.mark.parametrize("leaf", ["splitlib.params", "splitlib.registry", "splitlib.tags", "splitlib.runs"])
def test_leaf_modules_import_nothing_from_splitlib(leaf):
    assert import_graph()[leaf] == set(), f"{leaf} is a leaf of the layers: it imports no splitlib module"


def test_no_splitlib_module_is_longer_than_a_reader_holds_in_mind():
    long = {name: n for name, p in _modules().items() if (n := len(p.read_text().splitlines())) > MAX_MODULE_LINES}
    assert not long, f"modules over {MAX_MODULE_LINES} lines (split them by concern): {long}"
