"""Passthrough: copy one model's tensor, optionally scaled (mergekit 0.1.5's ``passthrough``).

mergekit's ``scale`` is optional (``None`` = unchanged); here it defaults to 1.0, which returns
the tensor unchanged as well. Layer stacking ("frankenmerges") is a data-flow-space operation
handled by the plan, not by this tensor operator.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

from evomm.operators import MergeOperator, TensorContext
from evomm.params import ParamSpec
from evomm_ops._common import M, check_inputs

if TYPE_CHECKING:
    import torch


class Passthrough(MergeOperator):
    """The single source model's tensor, times ``scale``."""

    name = "passthrough"
    mergekit_name = "passthrough"
    description = "copy one model's tensor (optionally scaled)"
    paper = ""
    requires_base = False
    max_models = 1
    params = (ParamSpec("scale", M, -2.0, 2.0, 1.0, "factor applied to the tensor"),)

    def merge(
        self,
        tensors: Sequence[torch.Tensor],
        base: torch.Tensor | None,
        global_params: Mapping[str, float],
        model_params: Sequence[Mapping[str, float]],
        ctx: TensorContext,
    ) -> torch.Tensor:
        """Return ``scale * tensor`` (the tensor itself when ``scale == 1``).

        Example:
            >>> import torch
            >>> from evomm.layout import ModuleKind
            >>> ctx = TensorContext("w", ModuleKind.OTHER, None, 0)
            >>> Passthrough().merge([torch.ones(2)], None, {}, [{"scale": 2.0}], ctx)
            tensor([2., 2.])
        """
        _, per = check_inputs(type(self), tensors, base, global_params, model_params, ctx)
        scale = per[0]["scale"]
        return tensors[0] if scale == 1 else tensors[0] * scale
