"""The core's layering: which modules may import which (read from the sources, imports inside
functions included, ``if TYPE_CHECKING:`` blocks excluded) and what importing the core loads."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

CORE = Path(__file__).resolve().parent.parent / "evomm"


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(CORE.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _runtime_nodes(tree: ast.AST) -> list[ast.AST]:
    """Every node of ``tree`` outside ``if TYPE_CHECKING:`` blocks."""
    out: list[ast.AST] = []
    stack = [tree]
    while stack:
        node = stack.pop()
        out.append(node)
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and "TYPE_CHECKING" in ast.unparse(child.test):
                stack.extend(child.orelse)
            else:
                stack.append(child)
    return out


def import_graph() -> dict[str, set[str]]:
    """evomm module -> the evomm modules it imports when it runs."""
    modules = {_module_name(p): p for p in CORE.rglob("*.py")}
    graph: dict[str, set[str]] = {m: set() for m in modules}
    for name, path in modules.items():
        for node in _runtime_nodes(ast.parse(path.read_text(encoding="utf-8"))):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                targets = [node.module, *(f"{node.module}.{a.name}" for a in node.names)]
            graph[name] |= {t for t in targets if t in modules and t != name}
    return graph


def reaches(graph: dict[str, set[str]], start: str, goal: str) -> bool:
    seen, stack = set(), list(graph[start])
    while stack:
        m = stack.pop()
        if m == goal:
            return True
        if m not in seen:
            seen.add(m)
            stack.extend(graph[m])
    return False


@pytest.mark.parametrize("module", ["evomm.runner", "evomm.report", "evomm.rundir", "evomm.export"])
def test_the_run_modules_are_in_no_import_cycle(module: str) -> None:
    """runner writes a run, report and export read it, rundir names its files: report and
    export never import the runner back (they read a run through evomm.rundir)."""
    graph = import_graph()
    assert not any(reaches(graph, m, module) for m in graph[module]), f"{module} is in an import cycle"
