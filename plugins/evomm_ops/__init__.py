"""Merge operators: linear, SLERP, task arithmetic, TIES, DARE, breadcrumbs, DELLA, model stock,
passthrough. Parameter names, defaults and conventions follow mergekit 0.1.5 (docs/operators.md).
"""

from __future__ import annotations

from evomm import hookimpl
from evomm.operators import MergeOperator
from evomm.registry import Registry
from evomm_ops.linear import Linear
from evomm_ops.model_stock import ModelStock
from evomm_ops.passthrough import Passthrough
from evomm_ops.slerp import Slerp
from evomm_ops.task_arithmetic import OPERATORS as _TASK_VECTOR_OPERATORS

#: Every operator this plugin registers, in documentation order.
OPERATORS: tuple[type[MergeOperator], ...] = (
    Linear,
    Slerp,
    *_TASK_VECTOR_OPERATORS,
    ModelStock,
    Passthrough,
)


@hookimpl
def evomm_register_merge_operators(registry: Registry[type[MergeOperator]]) -> None:
    """Register the built-in merge operators."""
    for op in OPERATORS:
        registry.add(op, owner="evomm_ops")
