"""The core's layering: which modules may import which (read from the sources, imports inside
functions included, ``if TYPE_CHECKING:`` blocks excluded) and what importing the core loads."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import yaml

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


# -------------------------------------------------------------------------------------------------
# what a fresh interpreter loads: the interfaces import torch for annotations only, the built-in
# plugins inside the functions that compute, so loading them all (every command's start) and
# commands that never touch a tensor load no torch
# -------------------------------------------------------------------------------------------------


def _fresh(code: str, *args: str) -> list[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("EVOMM_DISABLE_PLUGINS", "EVOMM_DISABLE_PLUGIN_AUTOLOAD")}
    proc = subprocess.run([sys.executable, "-c", textwrap.dedent(code), *args], capture_output=True, text=True,
                          timeout=300, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout.split()


def test_loading_every_builtin_plugin_imports_no_torch() -> None:
    out = _fresh("""
        import importlib.metadata, sys
        import evomm.plugins
        print("IMPORT", "torch" in sys.modules)
        plugins = evomm.plugins.load_plugins()
        eps = {ep.name for ep in importlib.metadata.entry_points(group="evomm")}
        print("LOAD", "torch" in sys.modules, "numba" in sys.modules, "ALL", eps <= {p.name for p in plugins.loaded})
        print("OPS", len(plugins.operators), "ADAPTERS", len(plugins.adapters), "TASKS", len(plugins.tasks))
    """)
    assert out[:9] == ["IMPORT", "False", "LOAD", "False", "False", "ALL", "True", "OPS", out[8]]
    assert int(out[8]) >= 10 and int(out[10]) >= 3 and int(out[12]) >= 5  # the plugins did register


_CLI = """
import sys
from evomm.cli import main
try:
    rc = main(sys.argv[1:])
except SystemExit as exc:  # --help
    rc = exc.code
print("RC", rc, "TORCH", "torch" in sys.modules, "NUMBA", "numba" in sys.modules)
"""


def _recipe(tmp_path: Path) -> Path:
    from tests.tiny_models import make_tiny_model, perturb_model

    base = make_tiny_model(tmp_path / "base", "llama", seed=30)
    a = perturb_model(base, tmp_path / "a", seed=31)
    b = perturb_model(base, tmp_path / "b", seed=32)
    recipe = {
        "merge_method": "della",
        "base_model": str(base),
        "models": [
            {"model": str(a), "parameters": {"weight": 0.6, "density": 0.5}},
            {"model": str(b), "parameters": {"weight": 0.4, "density": 0.3}},
        ],
        "dtype": "bfloat16",
    }
    path = tmp_path / "della.yaml"
    path.write_text(yaml.safe_dump(recipe))
    return path


def test_help_plan_and_plugins_never_load_torch_but_merge_does_and_writes_the_same_bytes(tmp_path: Path) -> None:
    """DELLA has no torch-free form: the merge loads torch where it needs it, and a merge in a
    fresh interpreter writes the bytes of one in this process (where torch is already loaded)."""
    from evomm.execute import merge_to_dir, open_models
    from evomm.plan import build_plan
    from evomm.plugins import get_plugins
    from evomm.recipe import MergeRecipe

    recipe = _recipe(tmp_path)
    clean = ["RC", "0", "TORCH", "False", "NUMBA", "False"]
    assert _fresh(_CLI, "--help")[-6:] == clean
    assert _fresh(_CLI, "plan", str(recipe))[-6:] == clean
    assert _fresh(_CLI, "plugins")[-6:] == clean
    out = _fresh(_CLI, "merge", str(recipe), "--out", str(tmp_path / "cli"), "--no-progress")
    assert out[-6:-2] == ["RC", "0", "TORCH", "True"]

    plugins = get_plugins()
    r = MergeRecipe.from_dict(yaml.safe_load(recipe.read_text()))
    cks = open_models(r, plugins)
    merge_to_dir(build_plan(r, cks, plugins), cks, tmp_path / "here", plugins, progress=False)
    cli_bytes = (tmp_path / "cli" / "model.safetensors").read_bytes()
    assert cli_bytes == (tmp_path / "here" / "model.safetensors").read_bytes()
