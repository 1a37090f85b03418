"""Spherical interpolation of task vectors or models: NuSLERP (two models) and Multi-SLERP (any
number), mergekit 0.1.5's ``nuslerp`` and ``multislerp``.

Both take an optional base model: with one (``base_model:`` in the recipe) they interpolate the
task vectors ``model_i - base`` and add the base back; without, the models themselves. Unlike
``slerp``, the base is never one of the interpolated points.

* **NuSLERP**: SLERP between two models with ``t = weight_1 / (weight_0 + weight_1)`` (0.5 when
  the weights sum to less than 1e-6 in magnitude). ``nuslerp_flatten`` (default on) treats the
  tensor as one vector; off, each row along the last dimension, or along the first with
  ``nuslerp_row_wise``, is interpolated on its own. Vectors with ``1 - cos^2 <= 1e-16`` fall back
  to linear interpolation; norms below 1e-7 count as 1e-7.
* **Multi-SLERP** (https://goddard.blog/posts/multislerp-wow-what-a-cool-idea): barycentric
  interpolation on the hypersphere: the unit vectors are averaged with the (normalised) weights,
  projected to the tangent space at that mean, averaged there, mapped back by the exponential
  map and scaled by the weighted mean norm. One model returns that model; two models whose
  weighted unit mean vanishes fall back to the weighted sum; more raise a MergeError.

The arithmetic is mergekit's, operation for operation, so float32 results are bit-identical
(tests/test_mergekit_golden_methods.py). Difference: bf16/fp16 inputs are computed in float32 and
rounded once (mergekit computes in the input dtype).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

from evomm.errors import MergeError
from evomm.operators import MergeOperator, TensorContext
from evomm.params import ParamSpec
from evomm_ops._common import G, bool_spec, check_inputs, weight_spec, work_dtype

if TYPE_CHECKING:
    import torch

#: mergekit's thresholds: colinearity (``1 - cos^2 <= EPS^2``), zero norms, vanishing weights.
EPS = 1e-8
NORM_EPS = 1e-7
WEIGHT_EPS = 1e-6


def nuslerp(t: float, v0: torch.Tensor, v1: torch.Tensor, dim: int = -1, flatten: bool = False) -> torch.Tensor:
    """SLERP from ``v0`` (t=0) to ``v1`` (t=1), per vector along ``dim`` or of the flattened tensors.

    Example:
        >>> import torch
        >>> nuslerp(0.5, torch.tensor([1.0, 0.0]), torch.tensor([0.0, 1.0]))
        tensor([0.7071, 0.7071])
    """
    import torch
    out_shape = v0.shape
    if flatten:
        v0, v1 = v0.reshape(-1), v1.reshape(-1)
    elif dim != -1:
        v0, v1 = v0.transpose(dim, -1), v1.transpose(dim, -1)
    u0 = v0 / torch.norm(v0, dim=-1, keepdim=True).clamp(min=NORM_EPS)
    u1 = v1 / torch.norm(v1, dim=-1, keepdim=True).clamp(min=NORM_EPS)
    cos = torch.sum(u0 * u1, dim=-1, keepdim=True).clamp(-1, 1)
    colinear = (1 - cos.square()) <= EPS**2
    theta = torch.acos(torch.where(colinear, 0, cos))
    result = (torch.sin((1 - t) * theta) * v0 + torch.sin(t * theta) * v1) / torch.sin(theta)
    result = torch.where(colinear, (1 - t) * v0 + t * v1, result)
    if dim != -1 and not flatten:
        result = result.transpose(dim, -1)
    return result.reshape(out_shape)


class NuSlerp(MergeOperator):
    """NuSLERP: SLERP of two models (or of their task vectors) with weights instead of ``t``."""

    name = "nuslerp"
    mergekit_name = "nuslerp"
    description = "SLERP of two models or task vectors, t from their weights"
    paper = "https://doi.org/10.1145/325165.325242"
    optional_base = True
    min_models = 2
    max_models = 2
    params = (
        weight_spec(),
        bool_spec("nuslerp_row_wise", False, "interpolate each column vector (dim 0) when not flattened"),
        bool_spec("nuslerp_flatten", True, "treat the whole tensor as one vector"),
    )

    def merge(
        self,
        tensors: Sequence[torch.Tensor],
        base: torch.Tensor | None,
        global_params: Mapping[str, float],
        model_params: Sequence[Mapping[str, float]],
        ctx: TensorContext,
    ) -> torch.Tensor:
        """NuSLERP of the two models around ``base`` (or the origin).

        Example:
            >>> import torch
            >>> from evomm.layout import ModuleKind
            >>> ctx = TensorContext("w", ModuleKind.OTHER, None, 0)
            >>> NuSlerp().merge([torch.tensor([1.0, 0.0]), torch.tensor([0.0, 1.0])], None, {},
            ...                 [{"weight": 1.0}, {"weight": 1.0}], ctx)
            tensor([0.7071, 0.7071])
        """
        g, per = check_inputs(type(self), tensors, base, global_params, model_params, ctx)
        w0, w1 = per[0]["weight"], per[1]["weight"]
        total = w0 + w1
        t = 0.5 if abs(total) < WEIGHT_EPS else w1 / total
        wd = work_dtype(tensors[0].dtype)
        a, b = tensors[0].to(wd), tensors[1].to(wd)
        dim = 0 if g["nuslerp_row_wise"] else -1
        flatten = bool(g["nuslerp_flatten"])
        if base is None:
            out = nuslerp(t, a, b, dim=dim, flatten=flatten)
        else:
            b0 = base.to(wd)
            out = b0 + nuslerp(t, a - b0, b - b0, dim=dim, flatten=flatten)
        return out.to(tensors[0].dtype)


class MultiSlerp(MergeOperator):
    """Multi-SLERP: weighted barycentric interpolation of any number of models on the hypersphere."""

    name = "multislerp"
    mergekit_name = "multislerp"
    description = "barycentric SLERP of several models or task vectors"
    paper = "https://goddard.blog/posts/multislerp-wow-what-a-cool-idea"
    optional_base = True
    min_models = 1
    params = (
        weight_spec(),
        bool_spec("normalize_weights", True, "divide the weights by their sum"),
        ParamSpec("eps", G, 0.0, 1e-3, EPS, "numerical floor of norms", evolvable=False),
    )

    def merge(
        self,
        tensors: Sequence[torch.Tensor],
        base: torch.Tensor | None,
        global_params: Mapping[str, float],
        model_params: Sequence[Mapping[str, float]],
        ctx: TensorContext,
    ) -> torch.Tensor:
        """Multi-SLERP of the models around ``base`` (or the origin).

        Example:
            >>> import torch
            >>> from evomm.layout import ModuleKind
            >>> ctx = TensorContext("w", ModuleKind.OTHER, None, 0)
            >>> MultiSlerp().merge([torch.tensor([2.0, 0.0]), torch.tensor([0.0, 2.0])], None, {},
            ...                    [{"weight": 1.0}, {"weight": 1.0}], ctx)
            tensor([1.4142, 1.4142])
        """
        import torch
        g, per = check_inputs(type(self), tensors, base, global_params, model_params, ctx)
        dtype = tensors[0].dtype
        if len(tensors) == 1:  # mergekit: nothing to interpolate, the model itself (base ignored)
            return tensors[0]
        wd = work_dtype(dtype)
        eps = g["eps"]
        stack = torch.stack([t.to(wd) for t in tensors])
        b0 = base.to(wd) if base is not None else None
        if b0 is not None:
            stack -= b0
        flat = stack.view(stack.shape[0], -1)
        weights = torch.tensor([p["weight"] for p in per], dtype=wd)
        if g["normalize_weights"]:
            weights = weights / weights.sum()
        norms = torch.norm(flat, dim=-1, keepdim=True)
        units = flat / (norms + eps)
        mean = (units * weights.view(-1, 1)).sum(0)
        mean_norm = torch.norm(mean)
        if mean_norm < eps:
            if len(tensors) != 2:
                raise MergeError(
                    f"operator 'multislerp', tensor {ctx.name!r}: the weighted mean of the unit "
                    "vectors is zero (antipodal models whose weights cancel); change the weights"
                )
            res = (stack[0] * weights[0] + stack[1] * weights[1]).view(stack.shape[1:])
            return (res if b0 is None else res + b0).to(dtype)
        mean = mean / mean_norm
        dots = (units * mean).sum(-1, keepdim=True)
        tangent = ((units - dots * mean) * weights.view(-1, 1)).sum(0)
        tangent_norm = torch.norm(tangent) + eps
        result = mean * torch.cos(tangent_norm) + tangent * (torch.sin(tangent_norm) / tangent_norm)
        result = (result * (norms.squeeze(-1) * weights).sum()).view(stack.shape[1:])
        return (result if b0 is None else result + b0).to(dtype)
