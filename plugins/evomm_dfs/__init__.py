"""Data-flow-space merging: evolved layer paths with scaling (Sakana's DFS, and PS+DFS).

Importing this package registers the ``evomm_dfs`` model type with transformers' Auto classes
(so an exported DFS child loads with ``AutoModelForCausalLM.from_pretrained``) and the ``dfs``
search-space kind with :mod:`evomm.space`. As a plugin it registers the ``dfs`` merge operator,
whose parameter declarations the DFS genome is derived from. See docs/dfs.md.
"""

from __future__ import annotations

from evomm import hookimpl
from evomm_dfs.model import DFSConfig, DFSForCausalLM, register_auto_classes
from evomm_dfs.operator import DFSOperator
from evomm_dfs.path import DFSLayout, DFSPath, PathStep

__all__ = ["DFSConfig", "DFSForCausalLM", "DFSLayout", "DFSOperator", "DFSPath", "PathStep"]

register_auto_classes()


def _register_space_kind() -> None:
    from evomm.space import register_space_kind
    from evomm_dfs.space import build_dfs_space

    register_space_kind("dfs", build_dfs_space)


_register_space_kind()


@hookimpl
def evomm_register_merge_operators(registry):  # type: ignore[no-untyped-def]
    registry.add(DFSOperator)
