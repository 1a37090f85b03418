"""A merge plan: a frozen, hashable description of a merge, with no tensors in it.

Built from a recipe and the parents' layouts (see :func:`build_plan`, added by the merge
pipeline), printed by ``evomm plan``, executed by :mod:`evomm.execute`, and keyed on by the
evolution loop's cache (:meth:`MergePlan.digest`). Plans make dry runs and unit tests without
weights possible.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from evomm.adapters import ModelRef
from evomm.layout import ModuleKind

Params = tuple[tuple[str, float], ...]


@dataclass(frozen=True)
class TensorStep:
    """How one output tensor is made.

    Attributes:
        name: canonical name of the output tensor.
        kind, layer: its module kind and block index (from the donor's layout).
        action: ``"merge"`` runs the operator over every source model (and the base);
            ``"copy"`` takes the tensor from model ``source`` unchanged (e.g. a VLM's vision
            tower, present in the donor only, or passthrough).
        source: for ``copy``: the alias of the model copied from.
        global_params: resolved global parameters, sorted by name.
        model_params: resolved per-model parameters, one tuple per source model (plan order).
    """

    name: str
    kind: ModuleKind
    layer: int | None
    action: Literal["merge", "copy"]
    source: str | None = None
    global_params: Params = ()
    model_params: tuple[Params, ...] = ()


@dataclass(frozen=True)
class MergePlan:
    """Everything needed to reproduce a merge, bit for bit.

    Attributes:
        operator: registry name of the merge operator.
        models: the source models, in order (per-model parameters follow this order).
        base: the base model for task-vector methods, or ``None``.
        donor: alias of the model whose architecture, config and tokenizer the output takes.
        dtype: compute dtype (torch dtype name); operators see tensors in this dtype.
        out_dtype: output dtype; ``None`` keeps the donor's stored dtype.
        seed: merge seed; per-tensor seeds derive from it (DARE/DELLA randomness).
        steps: one :class:`TensorStep` per output tensor, in output order.
        meta: free-form provenance (recipe path, evomm version); *not* part of the digest.
    """

    operator: str
    models: tuple[ModelRef, ...]
    base: ModelRef | None
    donor: str
    dtype: str
    out_dtype: str | None
    seed: int
    steps: tuple[TensorStep, ...]
    meta: tuple[tuple[str, str], ...] = field(default=(), compare=False)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        for step in d["steps"]:
            step["kind"] = step["kind"].value if isinstance(step["kind"], ModuleKind) else step["kind"]
        d.pop("meta")
        return d

    def digest(self) -> str:
        """SHA-256 of the canonical JSON of the plan (``meta`` excluded): the cache key."""
        blob = json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"), default=str)
        return hashlib.sha256(blob.encode()).hexdigest()

    def model(self, alias: str) -> ModelRef:
        for ref in (*self.models, *([self.base] if self.base else [])):
            if ref.name == alias:
                return ref
        raise KeyError(alias)


def tensor_seed(plan_seed: int, name: str) -> int:
    """Per-tensor seed: a stable hash of the plan seed and the canonical name (63 bits)."""
    h = hashlib.sha256(f"{plan_seed}:{name}".encode()).digest()
    return int.from_bytes(h[:8], "little") & ((1 << 63) - 1)
