"""Deferred imports (:mod:`evomm.deferred`) and the command line's deferred torch.

* a deferred module stays unloaded through later ``import`` statements of it (the reason for not
  using :class:`importlib.util.LazyLoader`), loads into the same object at its first attribute
  use, and a submodule import loads the package first;
* ``evomm plan`` and ``evomm plugins`` (every built-in plugin loaded) never load torch, nor
  numba (the CPU engine's kernels), in a fresh interpreter, as nothing on their path uses them;
* ``evomm merge`` in a fresh interpreter (torch deferred, then loaded where the merge needs it:
  DELLA has no torch-free form) writes the same bytes as a merge in this process, where torch
  was imported the plain way.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import yaml

from evomm.execute import merge_to_dir, open_models
from evomm.plan import build_plan
from evomm.plugins import get_plugins
from evomm.recipe import MergeRecipe
from tests.tiny_models import make_tiny_model, perturb_model


def _run(code: str, *args: str) -> list[str]:
    proc = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code), *args], capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout.split()


def test_a_deferred_module_survives_import_statements_and_loads_into_the_same_object(tmp_path: Path) -> None:
    (tmp_path / "pkg_deferred").mkdir()
    (tmp_path / "pkg_deferred" / "__init__.py").write_text("import sys\nLOADED = True\nsys.stdout.write('RAN ')\n")
    (tmp_path / "pkg_deferred" / "sub.py").write_text("VALUE = 7\n")
    (tmp_path / "user_mod.py").write_text("import pkg_deferred\n")
    out = _run(
        """
        import sys
        sys.path.insert(0, sys.argv[1])
        from evomm.deferred import defer, is_deferred, loaded
        mod = defer("pkg_deferred")
        import pkg_deferred            # an import statement: still not loaded
        import user_mod                # another module's top-level import: still not loaded
        print(is_deferred(mod), loaded("pkg_deferred"), pkg_deferred is mod, user_mod.pkg_deferred is mod)
        print(mod.LOADED, is_deferred(mod), loaded("pkg_deferred"), sys.modules["pkg_deferred"] is mod)
        print(defer("pkg_deferred") is mod)
        """,
        str(tmp_path),
    )
    # the package's code ran once, at the first attribute use (its "RAN" comes before LOADED)
    assert out == ["True", "False", "True", "True", "RAN", "True", "False", "True", "True", "True"]


def test_a_submodule_import_loads_the_deferred_package_first(tmp_path: Path) -> None:
    (tmp_path / "pkg_deferred2").mkdir()
    (tmp_path / "pkg_deferred2" / "__init__.py").write_text("ORDER = ['package']\n")
    (tmp_path / "pkg_deferred2" / "sub.py").write_text("from pkg_deferred2 import ORDER\nORDER.append('sub')\n")
    out = _run(
        """
        import sys
        sys.path.insert(0, sys.argv[1])
        from evomm.deferred import defer, loaded
        mod = defer("pkg_deferred2")
        import pkg_deferred2.sub
        print(loaded("pkg_deferred2"), ",".join(mod.ORDER), mod.sub.__name__)
        """,
        str(tmp_path),
    )
    assert out == ["True", "package,sub", "pkg_deferred2.sub"]


def test_defer_refuses_a_missing_module_and_a_dotted_name() -> None:
    out = _run(
        """
        from evomm.deferred import defer
        for name in ("no_such_module_xyz", "os.path"):
            try:
                defer(name)
            except (ModuleNotFoundError, ValueError) as exc:
                print(type(exc).__name__)
        """
    )
    assert out == ["ModuleNotFoundError", "ValueError"]


_CLI = """
import sys
from evomm.cli import main
rc = main(sys.argv[1:])
from evomm.deferred import loaded
print("RC", rc, "TORCH", loaded("torch"), "NUMBA", "numba" in sys.modules)
"""


def _recipe(tmp_path: Path) -> Path:
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


def test_plan_and_plugins_never_load_torch_but_merge_does_and_writes_the_same_bytes(tmp_path: Path) -> None:
    recipe = _recipe(tmp_path)
    assert _run(_CLI, "plan", str(recipe))[-6:] == ["RC", "0", "TORCH", "False", "NUMBA", "False"]
    assert _run(_CLI, "plugins")[-6:] == ["RC", "0", "TORCH", "False", "NUMBA", "False"]
    out = _run(_CLI, "merge", str(recipe), "--out", str(tmp_path / "cli"), "--no-progress")
    assert out[-6:-2] == ["RC", "0", "TORCH", "True"]

    plugins = get_plugins()
    r = MergeRecipe.from_dict(yaml.safe_load(recipe.read_text()))
    cks = open_models(r, plugins)
    merge_to_dir(build_plan(r, cks, plugins), cks, tmp_path / "here", plugins, progress=False)
    cli_bytes = (tmp_path / "cli" / "model.safetensors").read_bytes()
    assert cli_bytes == (tmp_path / "here" / "model.safetensors").read_bytes()
