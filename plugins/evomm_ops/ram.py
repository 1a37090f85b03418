"""Reinforced Agent Merging (RAM, https://arxiv.org/abs/2601.13572), mergekit 0.1.5's ``ram`` and
``ramplus_tl``.

With task vectors ``d_i = model_i - base``, an entry *contributes* for model ``i`` when
``|d_i| > epsilon``; ``c`` is the number of models contributing to it. Entries with one
contributor (``c == 1``, *unique*) are taken whole; entries with several (*shared*) are averaged
over their contributors (RAM's "distribution-aware" merge: no dilution of parameters only one
agent changed). ``ramplus_tl`` (RAM+, tensor-local) also boosts each model's unique entries by
``lambda_i = 1 + r * clamp(rho_i, 0, alpha)``, with ``rho_i`` the ratio of model ``i``'s
contributing shared to contributing unique entries in this tensor (unique count floored at
``epsilon``). Result: ``base + merged``.

mergekit computes ``rho`` per tensor (hence "TL"); the paper's RAM+ counts over the whole model.
evomm follows mergekit (one tensor at a time, in the streaming executor). The arithmetic is
mergekit's, operation for operation: float32 results are bit-identical
(tests/test_mergekit_golden_methods.py). Difference: bf16/fp16 inputs are computed in float32 and
rounded once. The thresholds and boosts are evolvable; their search ranges bound what mergekit
accepts as any float.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

from evomm.operators import MergeOperator, TensorContext
from evomm.params import ParamSpec
from evomm_ops._common import G, check_inputs, work_dtype

if TYPE_CHECKING:
    import torch

_EPSILON = ParamSpec("epsilon", G, 0.0, 1e-2, 1e-5, "|task vector| above which a model contributes")


class RamBase(MergeOperator):
    """Shared machinery of RAM and RAM+ (tensor-local)."""

    requires_base = True
    min_models = 1
    paper = "https://arxiv.org/abs/2601.13572"

    @staticmethod
    def prepare(tensors: Sequence[torch.Tensor], base: torch.Tensor, epsilon: float) -> tuple[torch.Tensor, ...]:
        """``(tvs, contributes, counts, shared, unique)`` as mergekit's ``_prepare_ram_vectors``.

        Example:
            >>> import torch
            >>> tvs, c, n, shared, unique = RamBase.prepare(
            ...     [torch.tensor([1.0, 0.0, 2.0]), torch.tensor([3.0, 0.0, 0.0])], torch.zeros(3), 1e-5)
            >>> n.tolist(), shared.tolist(), unique.tolist()
            ([[2, 0, 1]], [[True, False, False]], [[False, False, True]])
        """
        import torch
        tvs = torch.stack([t - base for t in tensors], dim=0).view(len(tensors), -1)
        contributes = tvs.abs() > epsilon
        counts = contributes.sum(dim=0, keepdim=True)
        return tvs, contributes, counts, counts > 1, counts == 1

    def merge(
        self,
        tensors: Sequence[torch.Tensor],
        base: torch.Tensor | None,
        global_params: Mapping[str, float],
        model_params: Sequence[Mapping[str, float]],
        ctx: TensorContext,
    ) -> torch.Tensor:
        """``base`` plus the merged task vectors (:meth:`combine`)."""
        g, _ = check_inputs(type(self), tensors, base, global_params, model_params, ctx)
        assert base is not None  # requires_base: check_inputs raised otherwise
        wd = work_dtype(base.dtype)
        b0 = base.to(wd)
        tvs, contributes, counts, shared, unique = self.prepare([t.to(wd) for t in tensors], b0, g["epsilon"])
        tvs_z = tvs * contributes
        merged = (self.unique_part(tvs_z, contributes, shared, unique, g) + tvs_z * shared / counts.clamp(min=1)).sum(
            dim=0, keepdim=True
        )
        return (b0 + merged.reshape_as(b0)).to(base.dtype)

    def unique_part(
        self, tvs_z: torch.Tensor, contributes: torch.Tensor, shared: torch.Tensor, unique: torch.Tensor,
        g: Mapping[str, float],
    ) -> torch.Tensor:
        """Each model's contribution on its unique entries (RAM: unchanged)."""
        return tvs_z * unique


class Ram(RamBase):
    """RAM: unique task-vector entries kept whole, shared ones averaged over their contributors.

    Example:
        >>> import torch
        >>> from evomm.layout import ModuleKind
        >>> ctx = TensorContext("w", ModuleKind.OTHER, None, 0)
        >>> Ram().merge([torch.tensor([1.0, 0.0, 2.0]), torch.tensor([3.0, 0.0, 0.0])],
        ...             torch.zeros(3), {}, [{}, {}], ctx)
        tensor([2., 0., 2.])
    """

    name = "ram"
    mergekit_name = "ram"
    description = "RAM: unique task-vector entries kept, shared ones averaged"
    params = (_EPSILON,)


class RamPlusTL(RamBase):
    """RAM+ (tensor-local): RAM with each model's unique entries boosted by its overlap ratio.

    Example:
        >>> import torch
        >>> from evomm.layout import ModuleKind
        >>> ctx = TensorContext("w", ModuleKind.OTHER, None, 0)
        >>> RamPlusTL().merge([torch.tensor([1.0, 0.0, 2.0]), torch.tensor([3.0, 0.0, 0.0])],
        ...                   torch.zeros(3), {"r": 0.5, "alpha": 1.0}, [{}, {}], ctx)
        tensor([2., 0., 3.])
    """

    name = "ramplus_tl"
    mergekit_name = "ramplus_tl"
    description = "RAM+ (tensor-local): RAM with unique entries boosted by overlap"
    params = (
        ParamSpec("r", G, 0.0, 2.0, 0.1, "boost of unique entries per unit of overlap ratio"),
        ParamSpec("alpha", G, 0.0, 1.0, 0.2, "cap of the overlap ratio"),
        _EPSILON,
    )

    def unique_part(
        self, tvs_z: torch.Tensor, contributes: torch.Tensor, shared: torch.Tensor, unique: torch.Tensor,
        g: Mapping[str, float],
    ) -> torch.Tensor:
        """Unique entries times ``1 + r * clamp(shared_i / max(unique_i, epsilon), 0, alpha)``."""
        shared_counts = (contributes & shared).sum(dim=1)
        unique_counts = (contributes & unique).sum(dim=1)
        rho = shared_counts / unique_counts.clamp(min=g["epsilon"])
        boost = 1 + g["r"] * rho.clamp(min=0, max=g["alpha"])
        return tvs_z * unique * boost.unsqueeze(-1)
