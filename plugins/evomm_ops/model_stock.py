"""Model Stock (Jang et al. 2024): interpolate between the base and the average of the
fine-tuned models, with a ratio set by the angle between their task vectors.

With ``N`` models, task vectors ``d_i = w_i - w_0`` and ``cos`` the mean pairwise cosine
similarity of the ``d_i``, the result is ``t * mean(w_i) + (1 - t) * w_0`` with
``t = N cos / (1 + (N - 1) cos)`` (paper eq. 6). Follows mergekit 0.1.5's ``model_stock``:
cosines use ``max(|d_i||d_j|, 1e-6)`` and are clamped to [-1, 1]; ``filter_wise`` computes one
``t`` per row (last dimension) instead of per tensor; where ``|1 + (N-1) cos| < 1e-6`` the base
is kept. At least two models besides the base. Arithmetic is float32 (float64 for float64).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

from evomm.operators import MergeOperator, TensorContext
from evomm_ops._common import bool_spec, check_inputs, work_dtype

if TYPE_CHECKING:
    import torch


class ModelStock(MergeOperator):
    """Model Stock merge of two or more fine-tunes of one base."""

    name = "model_stock"
    mergekit_name = "model_stock"
    description = "interpolate base and model average by task-vector angle"
    paper = "https://arxiv.org/abs/2403.19522"
    requires_base = True
    min_models = 2
    params = (bool_spec("filter_wise", False, "one ratio per row instead of per tensor"),)

    def merge(
        self,
        tensors: Sequence[torch.Tensor],
        base: torch.Tensor | None,
        global_params: Mapping[str, float],
        model_params: Sequence[Mapping[str, float]],
        ctx: TensorContext,
    ) -> torch.Tensor:
        """Model Stock of the models around ``base``.

        Example:
            >>> import torch
            >>> from evomm.layout import ModuleKind
            >>> ctx = TensorContext("w", ModuleKind.OTHER, None, 0)
            >>> ModelStock().merge([torch.tensor([1.0, 0.0]), torch.tensor([0.0, 1.0])],
            ...                    torch.zeros(2), {}, [{}, {}], ctx)
            tensor([0., 0.])
        """
        import torch
        g, _ = check_inputs(type(self), tensors, base, global_params, model_params, ctx)
        assert base is not None  # requires_base: check_inputs raised otherwise
        wd = work_dtype(base.dtype)
        w0 = base.to(wd)
        if g["filter_wise"]:
            w0 = w0.unsqueeze(0) if w0.dim() < 2 else w0
        else:
            w0 = w0.reshape(-1)
        offsets = [t.to(wd).reshape(w0.shape) - w0 for t in tensors]
        norms = [torch.linalg.vector_norm(d, dim=-1) for d in offsets]
        cosines = []
        for i in range(len(offsets)):
            for j in range(i + 1, len(offsets)):
                dot = (offsets[i] * offsets[j]).sum(dim=-1)
                cosines.append((dot / (norms[i] * norms[j]).clamp(min=1e-6)).clamp(-1, 1))
        cos = torch.stack(cosines).mean(dim=0).unsqueeze(-1)
        n = len(offsets)
        denom = 1 + (n - 1) * cos
        singular = denom.abs() < 1e-6
        ratio = torch.where(singular, torch.zeros_like(cos), n * cos / torch.where(singular, 1, denom))
        mean_offset = offsets[0]
        for d in offsets[1:]:
            mean_offset.add_(d)
        mean_offset.div_(n)
        # t * mean(w) + (1 - t) * w0  ==  w0 + t * mean(d)
        return mean_offset.mul_(ratio).add_(w0).reshape(base.shape).to(base.dtype)
