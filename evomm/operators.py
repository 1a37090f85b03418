"""The merge-operator interface. Operators themselves are plugins (``plugins/evomm_ops``).

A *tensor operator* combines, for one output tensor, the same tensor from each source model
(and from the base model when it needs one). It declares its parameters as
:class:`~evomm.params.ParamSpec` s; the executor resolves them per tensor (per-layer gradients,
module-kind filters) and passes plain floats. Operators are stateless; randomness (DARE, DELLA)
must come only from ``ctx.seed`` so that a merge is reproducible bit for bit.

Example (a one-file plugin)::

    import torch
    from evomm import hookimpl
    from evomm.operators import MergeOperator, TensorContext
    from evomm.params import ParamScope, ParamSpec

    class Mean(MergeOperator):
        name = "mean"
        description = "unweighted mean"
        params = ()

        def merge(self, tensors, base, global_params, model_params, ctx):
            return torch.stack(list(tensors)).mean(0)

    @hookimpl
    def evomm_register_merge_operators(registry):
        registry.add(Mean)

``merge`` (torch) is the one implementation an operator has: ``evomm merge`` and the evolution
loop both call it. (Until issue 18 an operator could add a torch-free ``merge_arrays`` for a
NumPy/numba CPU engine; that engine is gone and the optional method with it. An operator that
still defines ``merge_arrays`` keeps working: nothing calls it.)
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar

from evomm.layout import ModuleKind
from evomm.params import ParamScope, ParamSpec

if TYPE_CHECKING:  # annotations only: importing the interface loads no torch
    import torch


@dataclass(frozen=True)
class TensorContext:
    """What an operator may know about the tensor it merges.

    Attributes:
        name: canonical tensor name.
        kind: module kind of the tensor.
        layer: block index or ``None``.
        seed: per-tensor seed (derived from the plan seed and ``name``); the only source of
            randomness an operator may use, e.g. ``torch.Generator().manual_seed(ctx.seed)``.
    """

    name: str
    kind: ModuleKind
    layer: int | None
    seed: int


class MergeOperator(ABC):
    """Base class of tensor merge operators.

    Class attributes:
        name: registry name used in recipes (``merge_method`` / ``operator``).
        description: one line for ``evomm plugins``.
        paper: link to the method's paper ("" when none).
        requires_base: whether ``base`` is always given (task-vector methods).
        optional_base: whether the base model, when the recipe names one, is given as ``base``
            (not as the first source) without being required: mergekit's optional-base methods
            (``nuslerp``, ``multislerp``) interpolate around it.
        params: the declared parameters; the genome is derived from these.
        min_models, max_models: how many source models (excluding the base) it accepts.
        mergekit_name: the operator's ``merge_method`` in mergekit when mergekit has it with
            the same parameters, else ``None``: ``evomm export`` writes a ``mergekit.yaml``
            beside ``merge.yaml`` only for such an operator.

    A child that is not a tensor merge (a data-flow-space layer path) is built by a search-space
    kind's ``build`` (:class:`evomm.space.SpaceKind`), not by an operator.
    """

    name: ClassVar[str]
    description: ClassVar[str] = ""
    paper: ClassVar[str] = ""
    requires_base: ClassVar[bool] = False
    optional_base: ClassVar[bool] = False
    params: ClassVar[tuple[ParamSpec, ...]] = ()
    min_models: ClassVar[int] = 1
    max_models: ClassVar[int | None] = None
    mergekit_name: ClassVar[str | None] = None

    @classmethod
    def param(cls, name: str) -> ParamSpec | None:
        for p in cls.params:
            if p.name == name:
                return p
        return None

    @classmethod
    def global_params(cls) -> tuple[ParamSpec, ...]:
        return tuple(p for p in cls.params if p.scope is ParamScope.GLOBAL)

    @classmethod
    def model_params(cls) -> tuple[ParamSpec, ...]:
        return tuple(p for p in cls.params if p.scope is ParamScope.PER_MODEL)

    @abstractmethod
    def merge(
        self,
        tensors: Sequence[torch.Tensor],
        base: torch.Tensor | None,
        global_params: Mapping[str, float],
        model_params: Sequence[Mapping[str, float]],
        ctx: TensorContext,
    ) -> torch.Tensor:
        """Combine one tensor.

        Args:
            tensors: the tensor from each source model, same shape and dtype (the compute dtype).
            base: the base model's tensor, or ``None`` when the recipe has no base.
            global_params: resolved global parameters (every declared one is present).
            model_params: resolved per-model parameters, one mapping per source model.
            ctx: tensor identity and seed.

        Returns:
            The merged tensor, same shape as the inputs (dtype is cast by the executor).
        """
