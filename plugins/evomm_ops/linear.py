"""Linear merge ("model soups", Wortsman et al. 2022): a weighted average of the models.

Follows mergekit 0.1.5's ``linear`` exactly: ``weight`` is required per model, ``normalize``
(default True) divides by the sum of the weights, arithmetic is float32 (float64 for float64
inputs) in the same order as mergekit (``0 + w_0 x_0 + w_1 x_1 + ...``, then the division), so
float32 results are bit-identical. Differences: when exactly one weight is non-zero and the
result is that model (normalised, or its weight is 1), the model's tensor is returned as is
(bit for bit, ``-0.0`` included, where mergekit would give ``+0.0``); weights summing to zero
with ``normalize`` raise :class:`~evomm.errors.MergeError` (mergekit returns inf/NaN).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

from evomm.errors import MergeError
from evomm.operators import MergeOperator, TensorContext
from evomm_ops._common import CHUNK, bool_spec, check_inputs, weight_spec, work_dtype

if TYPE_CHECKING:
    import torch


class Linear(MergeOperator):
    """Weighted average of the source models (a base, if any, is not used)."""

    name = "linear"
    mergekit_name = "linear"
    description = "weighted average of the models (model soup)"
    paper = "https://arxiv.org/abs/2203.05482"
    requires_base = False
    params = (
        weight_spec(),
        bool_spec("normalize", True, "divide by the sum of the weights"),
    )

    def merge(
        self,
        tensors: Sequence[torch.Tensor],
        base: torch.Tensor | None,
        global_params: Mapping[str, float],
        model_params: Sequence[Mapping[str, float]],
        ctx: TensorContext,
    ) -> torch.Tensor:
        """Weighted sum, optionally normalised.

        Example:
            >>> import torch
            >>> from evomm.layout import ModuleKind
            >>> ctx = TensorContext("w", ModuleKind.OTHER, None, 0)
            >>> Linear().merge([torch.zeros(2), torch.ones(2)], None, {},
            ...                [{"weight": 0.5}, {"weight": 1.5}], ctx)
            tensor([0.7500, 0.7500])
        """
        import torch
        g, per = check_inputs(type(self), tensors, base, global_params, model_params, ctx)
        ws = [p["weight"] for p in per]
        first = tensors[0]
        wd = work_dtype(first.dtype)
        weights = torch.tensor(ws, dtype=wd)
        total = weights.sum()
        nonzero = [i for i, w in enumerate(ws) if w != 0]
        if len(nonzero) == 1 and (g["normalize"] or ws[nonzero[0]] == 1):
            return tensors[nonzero[0]]
        if g["normalize"] and total == 0:
            raise _zero_total(ws, ctx)
        # chunk by chunk into the output, as the task-vector methods (same operations per entry)
        out = torch.empty(first.shape, dtype=first.dtype, device=first.device)
        flat_out, flats = out.view(-1), [t.reshape(-1) for t in tensors]
        n = flat_out.numel()
        size = max(1, min(n, CHUNK))
        acc = torch.empty(size, dtype=wd, device=first.device)
        total = total.to(first.device)
        coef = weights.to(first.device)
        for start in range(0, n, size):
            stop = min(n, start + size)
            chunk = acc[: stop - start].copy_(flats[0][start:stop]).mul_(coef[0])
            for t, c in zip(flats[1:], coef[1:]):
                chunk.addcmul_(t[start:stop], c)
            if g["normalize"]:
                chunk.div_(total)
            flat_out[start:stop].copy_(chunk)
        return out


def _zero_total(ws: Sequence[float], ctx: TensorContext) -> MergeError:
    return MergeError(
        f"operator 'linear', tensor {ctx.name!r}: weights {list(ws)} sum to 0 and normalize "
        "is on; change a weight or set normalize: false"
    )
