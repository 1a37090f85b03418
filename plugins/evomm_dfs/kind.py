"""The ``dfs`` search-space kind: its parameter declarations and its whole-model build.

Data-flow-space merging does not combine tensors, so it is not a merge operator: it is a
search-space kind (:class:`evomm.space.SpaceKind`) whose genes come from the
:class:`~evomm.params.ParamSpec` s declared here (there is no second table):

* ``include`` is expanded to one gene per slot (``T - 1`` of them; slot 0 is A's first layer,
  always on): the layer is on the path where the value is > 0.
* ``scale`` is expanded to one gene per transition (``scaling: matrix``), per destination layer
  (``destination``) or none (``none``); see :mod:`evomm_dfs.path`.
* ``repeats`` (``r``) and ``max_path_length`` are fixed settings, not genes.

Its :func:`build_from_recipe` is what ``evomm merge`` runs for a ``merge_method: dfs`` recipe
(the ``merge.yaml`` of an exported DFS child).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from evomm.params import ParamScope, ParamSpec
from evomm.space import SpaceKind

PAPER = "https://arxiv.org/abs/2403.13187"

#: The declarations the DFS genome is derived from.
PARAMS = (
    ParamSpec("include", ParamScope.GLOBAL, -1.0, 1.0, 0.0,
              "per slot: the layer is on the path where the value is > 0"),
    ParamSpec("scale", ParamScope.GLOBAL, 0.0, 2.0, 1.0,
              "per transition (W[i, j]): factor on the hidden state entering a layer"),
    ParamSpec("repeats", ParamScope.GLOBAL, 1, 8, 3,
              "r: how many times the M layers of A and B are laid out (T = M * r slots)",
              kind="int", evolvable=False),
    ParamSpec("max_path_length", ParamScope.GLOBAL, 2, 100_000, None,
              "most layers on a path, A's first and last included (bounds a candidate's cost)",
              kind="int", evolvable=False),
)


def build_from_recipe(
    recipe: Mapping[str, Any], out_dir: Path, plugins: Any, *, recipe_dir: Path, overwrite: bool = False
) -> Path:
    """``evomm merge`` of a DFS recipe (``merge_method: dfs`` with a ``path:``).

    Args:
        recipe: the parsed YAML.
        out_dir: output directory (new or empty; with ``overwrite`` an earlier evomm output is
            replaced once the new child is complete; see :mod:`evomm.outputs`).
        plugins: loaded plugins (the parents' adapters).
        recipe_dir: relative model paths resolve from here.
        overwrite: replace an earlier evomm output at ``out_dir``.
    """
    from evomm_dfs.recipe import merge_dfs_recipe, parse_dfs_recipe

    parsed = parse_dfs_recipe(dict(recipe), "dfs recipe", recipe_dir)
    return merge_dfs_recipe(parsed, Path(out_dir), plugins, overwrite=overwrite)


def _build_dfs_space(*args: Any, **kwargs: Any) -> Any:
    """The ``dfs`` space factory; imports :mod:`evomm_dfs.space` (and the model) when a stage is built."""
    from evomm_dfs.space import build_dfs_space

    return build_dfs_space(*args, **kwargs)


#: What the plugin registers (``evomm_register_search_spaces``).
DFS_KIND = SpaceKind(
    "dfs", _build_dfs_space,
    "data-flow space: an evolved path through the layers of A and B, with scalings (Sakana's DFS)",
    params=PARAMS, build=build_from_recipe,
)
