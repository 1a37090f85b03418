"""Karcher mean (Riemannian barycentre) of the models on the unit hypersphere, mergekit 0.1.5's
``karcher`` (https://arxiv.org/abs/2603.04972).

Each tensor is flattened and split into norm and direction. The weighted Karcher mean of the
directions is found by fixed-point iteration (start: the normalised weighted Euclidean mean;
step: the exponential map of the weighted mean of the log maps ``theta / sin(theta) (u - cos mu)``;
at most ``max_iter`` steps, stopping when the tangent norm falls below ``tol``) and scaled by
the weighted mean norm. Directions of tensors with norm ``<= tol`` are left out of the mean;
all of them so small gives zeros.

As in mergekit, a base model is an ordinary input (placed first), not an origin. The arithmetic
is mergekit's, operation for operation: float32 results are bit-identical
(tests/test_mergekit_golden_methods.py). Differences:

* a per-model ``weight`` (default 1, so the default is mergekit's equal weights bit for bit):
  mergekit's kernel takes weights but its method fixes them equal; evomm exposes them so that
  evolution can search them (hence no ``mergekit.yaml`` on export: mergekit rejects them);
* bf16/fp16 inputs are computed in float32 and rounded once (mergekit keeps the unit vectors
  and the iterate in the input dtype).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

from evomm.errors import MergeError
from evomm.operators import MergeOperator, TensorContext
from evomm.params import ParamSpec
from evomm_ops._common import G, M, check_inputs, work_dtype

if TYPE_CHECKING:
    import torch


def karcher_mean(tensors: Sequence[torch.Tensor], alphas: Sequence[float], max_iter: int, tol: float) -> torch.Tensor:
    """Weighted Karcher mean of ``tensors`` (weights ``alphas`` summing to 1), as mergekit's
    ``karcher_merge_tensors``.

    Example:
        >>> import torch
        >>> karcher_mean([torch.tensor([2.0, 0.0]), torch.tensor([0.0, 2.0])], [0.5, 0.5], 10, 1e-5)
        tensor([1.4142, 1.4142])
    """
    import torch
    if len(tensors) == 1:
        return tensors[0]
    norms = [torch.linalg.vector_norm(t) for t in tensors]
    units = [torch.zeros_like(t) if n.item() == 0.0 else t / n for t, n in zip(tensors, norms)]
    valid = [i for i, n in enumerate(norms) if n.item() > tol]
    if not valid:
        return sum(t * 0 for t in tensors)  # type: ignore[return-value]
    alpha_sum = sum(alphas[i] for i in valid)
    weights = [alphas[i] / alpha_sum for i in valid]
    dirs = [units[i] for i in valid]
    mean = torch.zeros_like(dirs[0])
    for a, u in zip(weights, dirs):
        mean += a * u
    mean_norm = torch.linalg.vector_norm(mean)
    mean = dirs[0].clone() if mean_norm.item() < tol else mean / mean_norm
    for _ in range(max_iter):
        tangent = torch.zeros_like(mean)
        for a, u in zip(weights, dirs):
            dot = torch.clamp(torch.dot(mean.flatten(), u.flatten()), -1.0, 1.0)
            theta = torch.arccos(dot)
            if theta.item() < tol:
                continue
            tangent += a * (theta / torch.sin(theta)) * (u - dot * mean)
        tangent_norm = torch.linalg.vector_norm(tangent)
        if tangent_norm.item() < tol:
            break
        mean = torch.cos(tangent_norm) * mean + torch.sin(tangent_norm) * (tangent / tangent_norm)
        unit_norm = torch.linalg.vector_norm(mean)
        if unit_norm.item() > tol:
            mean = mean / unit_norm
    scale = sum(a * n for a, n in zip(alphas, norms))
    return scale * mean  # type: ignore[no-any-return]


class Karcher(MergeOperator):
    """Weighted Karcher mean of the models on the hypersphere."""

    name = "karcher"
    mergekit_name = None  # evomm's per-model weight is not a parameter of mergekit's karcher
    description = "Riemannian (Karcher) mean of the models' directions, mean norm"
    paper = "https://arxiv.org/abs/2603.04972"
    min_models = 1
    params = (
        ParamSpec("weight", M, 0.0, 2.0, 1.0, "relative weight of this model in the mean"),
        ParamSpec("max_iter", G, 1, 1000, 10, "most fixed-point iterations", kind="int", evolvable=False),
        ParamSpec("tol", G, 0.0, 1e-1, 1e-5, "convergence and zero-norm threshold", evolvable=False),
    )

    def merge(
        self,
        tensors: Sequence[torch.Tensor],
        base: torch.Tensor | None,
        global_params: Mapping[str, float],
        model_params: Sequence[Mapping[str, float]],
        ctx: TensorContext,
    ) -> torch.Tensor:
        """Karcher mean of the models (the base model, if any, is the first of them).

        Example:
            >>> import torch
            >>> from evomm.layout import ModuleKind
            >>> ctx = TensorContext("w", ModuleKind.OTHER, None, 0)
            >>> Karcher().merge([torch.tensor([3.0, 0.0]), torch.tensor([0.0, 1.0])], None, {},
            ...                 [{}, {}], ctx)
            tensor([1.4142, 1.4142])
        """
        g, per = check_inputs(type(self), tensors, base, global_params, model_params, ctx)
        weights = [p["weight"] for p in per]
        total = sum(weights)
        if total <= 0:
            raise MergeError(
                f"operator 'karcher', tensor {ctx.name!r}: the model weights {weights} sum to "
                f"{total}; give at least one model a positive weight"
            )
        wd = work_dtype(tensors[0].dtype)
        alphas = [w / total for w in weights]
        out = karcher_mean([t.to(wd) for t in tensors], alphas, int(g["max_iter"]), g["tol"])
        return out.to(tensors[0].dtype)
