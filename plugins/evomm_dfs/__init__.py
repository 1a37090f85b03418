"""Data-flow-space merging: evolved layer paths with scaling (Sakana's DFS, and PS+DFS).

Importing this package registers the ``evomm_dfs`` model type with transformers' Auto classes
(so an exported DFS child loads with ``AutoModelForCausalLM.from_pretrained``). As a plugin it
registers the ``dfs`` search-space kind (:data:`evomm_dfs.kind.DFS_KIND`), with the parameter
declarations its genome is derived from and the builder ``evomm merge`` runs on a
``merge_method: dfs`` recipe.
whose parameter declarations the DFS genome is derived from. See docs/dfs.md.

Imports stay cheap (every ``evomm`` command loads the plugins) and do not import transformers
at all: :func:`register_when_transformers_loads` registers the config with
``AutoConfig`` at once if transformers is already imported, otherwise as soon as it is; the model
class (transformers' modelling code, seconds to import) is registered with
``AutoModelForCausalLM`` when the first :class:`DFSConfig` is created, which ``from_pretrained``
does before it looks the class up (see :mod:`evomm_dfs.config`). ``DFSConfig``,
``DFSForCausalLM`` and the search space are imported on first use.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.util
import sys
import warnings
from collections.abc import Sequence
from importlib.machinery import ModuleSpec
from types import ModuleType
from typing import Any

from evomm import hookimpl
from evomm_dfs.kind import DFS_KIND
from evomm_dfs.path import DFSLayout, DFSPath, PathStep

__all__ = ["DFSConfig", "DFSForCausalLM", "DFSLayout", "DFS_KIND", "DFSPath", "PathStep"]



def _register_config() -> None:
    """Import :mod:`evomm_dfs.config`, which registers ``DFSConfig`` with ``AutoConfig``."""
    try:
        importlib.import_module("evomm_dfs.config")
    except Exception as err:  # never break `import transformers` for code that does not use DFS
        warnings.warn(f"evomm_dfs: could not register the 'evomm_dfs' model type with transformers' "
                      f"AutoConfig ({err!r}); exported DFS children will not load with Auto classes",
                      stacklevel=2)


class _RegisterAfterTransformers(importlib.abc.MetaPathFinder):
    """One-shot import hook: runs :func:`_register_config` right after ``transformers`` executes.

    It finds ``transformers``' ordinary spec (with itself removed from ``sys.meta_path``) and only
    wraps that loader's ``exec_module`` on the instance, so the module, its spec and its loader are
    the ones a plain import gives. (No library offers a post-import hook; hence this code.)
    """

    def find_spec(self, fullname: str, path: Sequence[str] | None, target: ModuleType | None = None,
                  ) -> ModuleSpec | None:
        if fullname != "transformers":
            return None
        if self in sys.meta_path:
            sys.meta_path.remove(self)
        spec = importlib.util.find_spec(fullname)
        loader = spec.loader if spec is not None else None
        if loader is None or not hasattr(loader, "exec_module"):
            return spec
        exec_module = loader.exec_module

        def exec_then_register(module: ModuleType) -> None:
            try:
                exec_module(module)
            finally:
                del loader.exec_module  # type: ignore[attr-defined]  # back to the class's method
            _register_config()

        loader.exec_module = exec_then_register  # type: ignore[method-assign]
        return spec


def register_when_transformers_loads() -> None:
    """Register ``DFSConfig`` with ``AutoConfig`` now if transformers is imported, else when it is.

    Keeps ``import evomm_dfs`` free of transformers (about 0.7 s) while ``import evomm_dfs`` still
    suffices for ``AutoModelForCausalLM.from_pretrained`` on an exported DFS child. Idempotent.

    Example:
        >>> register_when_transformers_loads()
    """
    if "transformers" in sys.modules:
        _register_config()
    elif not any(isinstance(f, _RegisterAfterTransformers) for f in sys.meta_path):
        sys.meta_path.insert(0, _RegisterAfterTransformers())


register_when_transformers_loads()


def __getattr__(name: str) -> Any:
    """Lazy attributes: ``DFSConfig`` and ``DFSForCausalLM`` import transformers on first access."""
    if name == "DFSConfig":
        return importlib.import_module("evomm_dfs.config").DFSConfig
    if name == "DFSForCausalLM":
        return importlib.import_module("evomm_dfs.model").DFSForCausalLM
    raise AttributeError(f"module 'evomm_dfs' has no attribute {name!r}")


@hookimpl
def evomm_register_search_spaces(registry):  # type: ignore[no-untyped-def]
    registry.add(DFS_KIND)
