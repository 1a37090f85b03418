"""NearSwap: keep the base model except where a second model is very close to it, mergekit 0.1.5's
``nearswap`` (https://huggingface.co/alchemonaut/QuartetAnemoi-70B-t0.0001).

Per entry, with ``a`` the base and ``b`` the other model, the weight of ``b`` is
``clamp(t / max(|a - b|, 1e-6), 0, 1)``: entries within ``t`` of each other take ``b``; farther
ones lean to ``a`` in proportion to the distance. Exactly one model besides the base.

The arithmetic is mergekit's, operation for operation: float32 results are bit-identical
(tests/test_mergekit_golden_methods.py). Difference: bf16/fp16 inputs are computed in float32
and rounded once (mergekit computes in the input dtype). ``t``'s search range is [0, 1]
(mergekit accepts any float; useful values are of the order of the parameters' differences).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

from evomm.operators import MergeOperator, TensorContext
from evomm.params import ParamSpec
from evomm_ops._common import G, check_inputs, work_dtype

if TYPE_CHECKING:
    import torch

#: mergekit's floor of ``|a - b|`` (no division by zero where the models agree).
DIFF_EPS = 1e-6


class NearSwap(MergeOperator):
    """NearSwap of the base and one model."""

    name = "nearswap"
    mergekit_name = "nearswap"
    description = "base model, swapped for the other model where they are within t"
    paper = "https://huggingface.co/alchemonaut/QuartetAnemoi-70B-t0.0001"
    requires_base = True
    min_models = 1
    max_models = 1
    params = (ParamSpec("t", G, 0.0, 1.0, None, "distance below which the other model's value is taken"),)

    def merge(
        self,
        tensors: Sequence[torch.Tensor],
        base: torch.Tensor | None,
        global_params: Mapping[str, float],
        model_params: Sequence[Mapping[str, float]],
        ctx: TensorContext,
    ) -> torch.Tensor:
        """NearSwap of ``base`` towards the one model.

        Example:
            >>> import torch
            >>> from evomm.layout import ModuleKind
            >>> ctx = TensorContext("w", ModuleKind.OTHER, None, 0)
            >>> NearSwap().merge([torch.tensor([0.05, 1.0])], torch.zeros(2), {"t": 0.1}, [{}], ctx)
            tensor([0.0500, 0.1000])
        """
        import torch
        g, _ = check_inputs(type(self), tensors, base, global_params, model_params, ctx)
        assert base is not None  # requires_base: check_inputs raised otherwise
        wd = work_dtype(base.dtype)
        a, b = base.to(wd), tensors[0].to(wd)
        weight = (g["t"] / torch.abs(a - b).clamp(min=DIFF_EPS)).clamp(min=0, max=1)
        return (weight * b + (1 - weight) * a).to(base.dtype)
