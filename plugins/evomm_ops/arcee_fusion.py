"""Arcee Fusion: take a model's changes to the base only where they matter most, mergekit 0.1.5's
``arcee_fusion`` (https://arcee.ai).

With ``b`` the base and ``p`` the other model, each entry's importance is
``|p - b| * KL(softmax(p) || softmax(b))``, the KL divergence taken per row (last dimension;
softmaxes offset by 1e-8). The threshold is ``median + 1.5 * (q3 - q1)`` of the importances
(quartiles as ``sorted[int(q * (n - 1))]``); entries at or above it take ``p``, the others keep
``b``. Exactly one model besides the base; no parameters, so nothing to evolve.

mergekit's arithmetic, operation for operation, so float32 results are bit-identical
(tests/test_mergekit_golden_methods.py) for tensors up to 1M entries. Differences: above 1M
entries mergekit estimates the quartiles from 1M entries drawn with torch's global random
generator (results vary from run to run); evomm takes the exact quartiles with its rank
selection (:func:`evomm_ops.sparsify.kth_smallest`, no sort), so a merge is reproducible and
matches mergekit's up to its sampling error. bf16/fp16 inputs are computed in float32 and
rounded once (mergekit computes in the input dtype).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

from evomm.operators import MergeOperator, TensorContext
from evomm_ops import sparsify
from evomm_ops._common import check_inputs, work_dtype

if TYPE_CHECKING:
    import torch

#: mergekit's offset of the softmax probabilities (no log of zero).
PROB_EPS = 1e-8
#: Quartiles and the interquartile-range multiplier of the threshold (Tukey's outlier fence).
QUARTILES = (0.25, 0.5, 0.75)
IQR_SCALE = 1.5


def importance(params: torch.Tensor, base: torch.Tensor) -> torch.Tensor:
    """``|params - base|`` times the per-row KL divergence of their softmaxes.

    Example:
        >>> import torch
        >>> importance(torch.tensor([[1.0, 0.0]]), torch.zeros(1, 2))
        tensor([[0.1109, 0.0000]])
    """
    import torch
    diff = (params - base).abs()
    p = torch.softmax(params, dim=-1) + PROB_EPS
    q = torch.softmax(base, dim=-1) + PROB_EPS
    return diff * torch.sum(p * torch.log(p / q), dim=-1, keepdim=True)


def fusion_threshold(scores: torch.Tensor) -> torch.Tensor:
    """``median + 1.5 * (q3 - q1)`` of ``scores``, each quartile the ``int(q * (n - 1))``-th
    smallest (0-based), as mergekit indexes its sorted sample.

    Example:
        >>> import torch
        >>> float(fusion_threshold(torch.arange(9.0)))  # 4 + 1.5 * (6 - 2)
        10.0
    """
    flat = scores.reshape(-1)
    q1, median, q3 = (sparsify.kth_smallest(flat, int(q * (flat.numel() - 1)) + 1) for q in QUARTILES)
    return median + IQR_SCALE * (q3 - q1)


class ArceeFusion(MergeOperator):
    """Arcee Fusion of the base and one model."""

    name = "arcee_fusion"
    mergekit_name = "arcee_fusion"
    description = "base model, taking the other model's most important changes"
    paper = "https://arcee.ai"
    requires_base = True
    min_models = 1
    max_models = 1
    params = ()

    def merge(
        self,
        tensors: Sequence[torch.Tensor],
        base: torch.Tensor | None,
        global_params: Mapping[str, float],
        model_params: Sequence[Mapping[str, float]],
        ctx: TensorContext,
    ) -> torch.Tensor:
        """``base`` with the model's entries where their importance passes the threshold.

        Example:
            >>> import torch
            >>> from evomm.layout import ModuleKind
            >>> ctx = TensorContext("w", ModuleKind.OTHER, None, 0)
            >>> base = torch.zeros(1, 8)
            >>> model = torch.tensor([[4.0, 0.1, 0.2, 0.3, 0.1, 0.2, 0.3, 0.2]])
            >>> ArceeFusion().merge([model], base, {}, [{}], ctx)
            tensor([[4., 0., 0., 0., 0., 0., 0., 0.]])
        """
        g, _ = check_inputs(type(self), tensors, base, global_params, model_params, ctx)
        assert base is not None  # requires_base: check_inputs raised otherwise
        wd = work_dtype(base.dtype)
        b, p = base.to(wd), tensors[0].to(wd)
        scores = importance(p, b)
        mask = (scores >= fusion_threshold(scores)).to(wd)
        return (b + (p - b) * mask).to(base.dtype)
