"""Data-flow-space merging: evolved layer paths with scaling (Sakana's DFS, and PS+DFS).

As a plugin it registers the ``dfs`` search-space kind (:data:`evomm_dfs.kind.DFS_KIND`): the
parameter declarations its genome is derived from and the builder ``evomm merge`` runs on a
``merge_method: dfs`` recipe. See docs/dfs.md.

Imports stay cheap (every ``evomm`` command loads the plugins) and do not import transformers:
:func:`register` makes transformers' Auto classes know ``model_type: evomm_dfs`` (so an exported
DFS child loads with ``AutoModelForCausalLM.from_pretrained``). ``import evomm_dfs`` calls it
when transformers is already imported; evomm registers it whenever it builds or merges a DFS
child; a fresh process that only loads a child calls it first. The model class (transformers'
modelling code, seconds to import) is registered when the first :class:`DFSConfig` is created,
which ``from_pretrained`` does before it looks the class up (see :mod:`evomm_dfs.config`).
``DFSConfig``, ``DFSForCausalLM`` and the search space are imported on first use.
"""

from __future__ import annotations

import importlib
import sys
from typing import Any

from evomm import hookimpl
from evomm_dfs.kind import DFS_KIND
from evomm_dfs.path import DFSLayout, DFSPath, PathStep

__all__ = ["register", "DFSConfig", "DFSForCausalLM", "DFSLayout", "DFS_KIND", "DFSPath", "PathStep"]


def register() -> None:
    """Register ``model_type: evomm_dfs`` (:class:`DFSConfig`, and :class:`DFSForCausalLM` when
    a config is first built) with transformers' Auto classes, so that an exported DFS child loads
    with ``AutoModelForCausalLM.from_pretrained``. Idempotent.

    ``import evomm_dfs`` calls it when transformers is already imported; otherwise call it
    yourself before loading a child (it imports transformers' configuration code, ~0.7 s, which
    is why plugin loading does not). evomm registers it whenever it builds or merges a DFS child.

    Example:
        >>> import evomm_dfs
        >>> evomm_dfs.register()
    """
    importlib.import_module("evomm_dfs.config")


if "transformers" in sys.modules:  # cheap then: the configuration code is mostly loaded
    register()


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
