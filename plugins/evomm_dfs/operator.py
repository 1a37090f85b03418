"""The ``dfs`` merge operator: the declarations the DFS genome is derived from.

Data-flow-space merging does not combine tensors, so :meth:`DFSOperator.merge` refuses to run
per tensor; the operator is registered so that ``evomm plugins`` lists it with its parameters and
so that the DFS search space (:mod:`evomm_dfs.space`) takes its gene ranges from *these*
:class:`~evomm.params.ParamSpec` s (there is no second table):

* ``include`` is expanded to one gene per slot (``T - 1`` of them; slot 0 is A's first layer,
  always on): the layer is on the path where the value is > 0.
* ``scale`` is expanded to one gene per transition (``scaling: matrix``), per destination layer
  (``destination``) or none (``none``); see :mod:`evomm_dfs.path`.
* ``repeats`` (``r``) and ``max_path_length`` are fixed settings, not genes.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from evomm.errors import MergeError
from evomm.operators import MergeOperator, TensorContext
from evomm.params import ParamScope, ParamSpec


class DFSOperator(MergeOperator):
    """Data-flow-space layer routing over two parents (Sakana's DFS; A first, then B)."""

    name = "dfs"
    description = (
        "data-flow-space merge: an evolved path through the layers of A and B with scalings "
        "(stage kind `dfs`; not a per-tensor merge)"
    )
    paper = "https://arxiv.org/abs/2403.13187"
    params = (
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
    min_models = 2
    max_models = 2
    tensorwise = False

    @classmethod
    def build_from_recipe(
        cls, recipe: Mapping[str, Any], out_dir: Path, plugins: Any, *, recipe_dir: Path, overwrite: bool = False
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

    def merge(
        self,
        tensors: Sequence[torch.Tensor],
        base: torch.Tensor | None,
        global_params: Mapping[str, float],
        model_params: Sequence[Mapping[str, float]],
        ctx: TensorContext,
    ) -> torch.Tensor:
        raise MergeError(
            f"the 'dfs' operator does not merge tensors (asked for {ctx.name!r}); a data-flow-space "
            "child is a layer path: use a `merge_method: dfs` recipe with a `path:` for "
            "`evomm merge`, or a `kind: dfs` stage in an evolve recipe (see docs/dfs.md)"
        )
