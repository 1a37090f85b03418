"""Merge operators: linear, SLERP, NuSLERP, Multi-SLERP, Karcher mean, task arithmetic, TIES, DARE,
breadcrumbs, DELLA, SCE, RAM, RAM+, model stock, NearSwap, Arcee Fusion, passthrough: mergekit
0.1.5's twenty methods. Parameter names, defaults and conventions follow mergekit 0.1.5
(docs/operators.md).
"""

from __future__ import annotations

from evomm import hookimpl
from evomm.operators import MergeOperator
from evomm.registry import Registry
from evomm_ops.arcee_fusion import ArceeFusion
from evomm_ops.karcher import Karcher
from evomm_ops.linear import Linear
from evomm_ops.model_stock import ModelStock
from evomm_ops.nearswap import NearSwap
from evomm_ops.passthrough import Passthrough
from evomm_ops.ram import Ram, RamPlusTL
from evomm_ops.sce import Sce
from evomm_ops.slerp import Slerp
from evomm_ops.spherical import MultiSlerp, NuSlerp
from evomm_ops.task_arithmetic import OPERATORS as _TASK_VECTOR_OPERATORS

#: Every operator this plugin registers, in documentation order.
OPERATORS: tuple[type[MergeOperator], ...] = (
    Linear,
    Slerp,
    NuSlerp,
    MultiSlerp,
    Karcher,
    *_TASK_VECTOR_OPERATORS,
    Sce,
    Ram,
    RamPlusTL,
    ModelStock,
    NearSwap,
    ArceeFusion,
    Passthrough,
)


@hookimpl
def evomm_register_merge_operators(registry: Registry[type[MergeOperator]]) -> None:
    """Register the built-in merge operators."""
    for op in OPERATORS:
        registry.add(op, owner="evomm_ops")
