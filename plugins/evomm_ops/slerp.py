"""Spherical linear interpolation (SLERP, Shoemake 1985) between two models, per tensor.

Follows mergekit 0.1.5's ``slerp``: the tensors are flattened and treated as single vectors;
``t`` (required) goes from model A (``t = 0``) to model B (``t = 1``); the angle comes from the
normalised vectors (norms below 1e-8 count as 1); when ``|cos| > 0.9995`` (nearly collinear or
antipodal) it falls back to linear interpolation; arithmetic is float32 (float64 for float64).
Model A is the base model when the recipe has one (mergekit requires a base), otherwise the
first of exactly two source models. mergekit accumulates norms and the dot product in chunks;
we use one reduction, so results agree to float32 rounding, not bit for bit.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

from evomm.errors import MergeError
from evomm.operators import MergeOperator, TensorContext
from evomm.params import ParamSpec
from evomm_ops._common import G, check_inputs, work_dtype

if TYPE_CHECKING:
    import torch

DOT_THRESHOLD = 0.9995
EPS = 1e-8


def slerp(t: float, v0: torch.Tensor, v1: torch.Tensor) -> torch.Tensor:
    """Interpolate from ``v0`` (t=0) to ``v1`` (t=1) along the great circle, in float32.

    Example:
        >>> import torch
        >>> slerp(0.5, torch.tensor([1.0, 0.0]), torch.tensor([0.0, 1.0]))
        tensor([0.7071, 0.7071])
    """
    import torch
    wd = work_dtype(v0.dtype)
    a = v0.reshape(-1).to(wd)
    b = v1.reshape(-1).to(wd)
    if a.numel() == 0:
        return v0.clone()
    na = float(torch.linalg.vector_norm(a))
    nb = float(torch.linalg.vector_norm(b))
    na = na if na > EPS else 1.0
    nb = nb if nb > EPS else 1.0
    dot = max(-1.0, min(1.0, float(torch.dot(a, b)) / (na * nb)))
    if abs(dot) > DOT_THRESHOLD:
        ca, cb = 1.0 - t, t
    else:
        theta = math.acos(dot)
        s = math.sin(theta)
        ca, cb = math.sin((1.0 - t) * theta) / s, math.sin(t * theta) / s
    out = torch.mul(a, ca)
    out.add_(b, alpha=cb)
    return out.view(v0.shape).to(v0.dtype)


class Slerp(MergeOperator):
    """SLERP between the base and one model, or between two models when there is no base."""

    name = "slerp"
    mergekit_name = "slerp"
    description = "spherical interpolation between two models"
    paper = "https://doi.org/10.1145/325165.325242"
    requires_base = False
    min_models = 1
    max_models = 2
    params = (ParamSpec("t", G, 0.0, 1.0, None, "position from model A (0) to model B (1)"),)

    def merge(
        self,
        tensors: Sequence[torch.Tensor],
        base: torch.Tensor | None,
        global_params: Mapping[str, float],
        model_params: Sequence[Mapping[str, float]],
        ctx: TensorContext,
    ) -> torch.Tensor:
        """SLERP of (base, model) or (model 0, model 1).

        Example:
            >>> import torch
            >>> from evomm.layout import ModuleKind
            >>> ctx = TensorContext("w", ModuleKind.OTHER, None, 0)
            >>> Slerp().merge([torch.ones(2)], torch.zeros(2), {"t": 1.0}, [{}], ctx)
            tensor([1., 1.])
        """
        g, _ = check_inputs(type(self), tensors, base, global_params, model_params, ctx)
        pair = ([base, *tensors]) if base is not None else list(tensors)
        if len(pair) != 2:
            raise MergeError(
                f"operator 'slerp', tensor {ctx.name!r}: needs exactly two models, a base and one "
                f"other or two models without a base; got {len(tensors)} model(s) and "
                f"{'a' if base is not None else 'no'} base"
            )
        return slerp(g["t"], pair[0], pair[1])
