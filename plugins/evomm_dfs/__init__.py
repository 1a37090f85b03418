"""Data-flow-space merging: evolved layer paths with scaling (Sakana's DFS, and PS+DFS).

Importing this package registers the ``evomm_dfs`` model type with transformers' Auto classes
(so an exported DFS child loads with ``AutoModelForCausalLM.from_pretrained``) and the ``dfs``
search-space kind with :mod:`evomm.space`. As a plugin it registers the ``dfs`` merge operator,
whose parameter declarations the DFS genome is derived from. See docs/dfs.md.

Imports stay cheap (every ``evomm`` command loads the plugins): only the config is registered
with ``AutoConfig`` here; the model class (transformers' modelling code, seconds to import) is
registered with ``AutoModelForCausalLM`` when the first :class:`DFSConfig` is created, which
``from_pretrained`` does before it looks the class up (see :mod:`evomm_dfs.config`).
``DFSForCausalLM`` and the search space are imported on first use.
"""

from __future__ import annotations

import importlib
from typing import Any

from evomm import hookimpl
from evomm_dfs.config import DFSConfig, register_config
from evomm_dfs.operator import DFSOperator
from evomm_dfs.path import DFSLayout, DFSPath, PathStep

__all__ = ["DFSConfig", "DFSForCausalLM", "DFSLayout", "DFSOperator", "DFSPath", "PathStep"]

register_config()


def __getattr__(name: str) -> Any:
    """Lazy attributes: ``DFSForCausalLM`` (and the submodules) import on first access."""
    if name == "DFSForCausalLM":
        return importlib.import_module("evomm_dfs.model").DFSForCausalLM
    raise AttributeError(f"module 'evomm_dfs' has no attribute {name!r}")


def _build_dfs_space(*args: Any, **kwargs: Any) -> Any:
    """The ``dfs`` space factory; imports :mod:`evomm_dfs.space` (and the model) when a stage is built."""
    from evomm_dfs.space import build_dfs_space

    return build_dfs_space(*args, **kwargs)


def _register_space_kind() -> None:
    from evomm.space import register_space_kind

    register_space_kind("dfs", _build_dfs_space)


_register_space_kind()


@hookimpl
def evomm_register_merge_operators(registry):  # type: ignore[no-untyped-def]
    registry.add(DFSOperator)
