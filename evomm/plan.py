"""A merge plan: a frozen, hashable description of a merge, with no tensors in it.

Built from a recipe and the parents' layouts by :func:`build_plan`, printed by ``evomm plan``, executed by :mod:`evomm.execute`, and keyed on by the
evolution loop's cache (:meth:`MergePlan.digest`). Plans make dry runs and unit tests without
weights possible.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from evomm.adapters import Checkpoint, ModelRef
from evomm.errors import CheckpointError, ConfigError, IncompatibleModelsError
from evomm.layout import DONOR_ONLY_KINDS, ModuleKind, TensorInfo
from evomm.params import ParamSpec, resolve_value

if TYPE_CHECKING:
    from evomm.plugins import Plugins
    from evomm.recipe import MergeRecipe

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


# ---------------------------------------------------------------------------------------------
# building a plan from a recipe
# ---------------------------------------------------------------------------------------------


def _resolve(
    spec: ParamSpec, candidates: Sequence[tuple[Any, str]], info: TensorInfo, num_layers: int, who: str
) -> float:
    """First non-None resolution among ``candidates`` (value, key path), else the default."""
    for value, where in candidates:
        if value is None:
            continue
        v = resolve_value(value, info, num_layers, where)
        if v is not None:
            return spec.check(v, where)
    if spec.default is None:
        keys = " or ".join(w for _, w in candidates)
        raise ConfigError(
            f"{keys}: no value of the required parameter {spec.name!r} applies to tensor "
            f"{info.name!r}{who}; add an entry without `filter` (or `filter: '*'`) as a fallback"
        )
    return float(spec.default)


def _check_parent(ck: Checkpoint, alias: str, info: TensorInfo) -> None:
    theirs = ck.layout.get(info.name)
    if theirs is None:
        raise CheckpointError(
            f"tensor {info.name!r} is missing from model {alias!r} ({ck.ref.path}) but the donor has "
            f"it; the models do not share an architecture (model {alias!r} has {len(ck.layout)} "
            f"tensors, e.g. {list(ck.layout)[:3]})"
        )
    if tuple(theirs.shape) != tuple(info.shape):
        raise IncompatibleModelsError(
            f"tensor {info.name!r} has shape {tuple(theirs.shape)} in model {alias!r} "
            f"({ck.ref.path}) but {tuple(info.shape)} in the donor; the models do not share an "
            "architecture size"
        )


def build_plan(recipe: MergeRecipe, checkpoints: Mapping[str, Checkpoint], plugins: Plugins) -> MergePlan:
    """Turn a recipe and the parents' layouts into a :class:`MergePlan` (reads no tensor).

    Every parameter is resolved per tensor (gradients across layers, ``{filter, value}`` by
    module kind or name; per-model values fall back to the top-level ``parameters:``, then to the
    operator's default, as in mergekit). The output has the donor's tensors, in its order.
    Tensors of :data:`~evomm.layout.DONOR_ONLY_KINDS` that some parent lacks (a VLM's vision
    tower) are copied from the donor.

    Args:
        recipe: a validated recipe.
        checkpoints: alias -> opened checkpoint, for every model of the recipe (see
            :func:`evomm.execute.open_models`).
        plugins: registries (for the operator's parameter declarations).

    Returns:
        The frozen plan.

    Raises:
        ConfigError: unknown operator or parameter, out-of-range value, missing required value.
        CheckpointError: a parent lacks a tensor the donor has (names model and tensor).
        IncompatibleModelsError: a parent's tensor has another shape.

    Example:
        >>> recipe = load_recipe("merge.yaml")                            # doctest: +SKIP
        >>> plan = build_plan(recipe, open_models(recipe, plugins), plugins)  # doctest: +SKIP
    """
    from evomm.recipe import check_recipe

    op = check_recipe(recipe, plugins)
    sources, base_ref = recipe.sources(op)
    donor = recipe.donor()
    needed = [s.ref.name for s in sources] + ([base_ref.name] if base_ref else [])
    missing = [a for a in [*needed, donor] if a not in checkpoints]
    if missing:
        raise ConfigError(f"build_plan: no opened checkpoint for model(s) {missing}; open them with open_models")
    donor_ck = checkpoints[donor]
    num_layers = donor_ck.num_layers
    glob = recipe.parameters or {}
    steps: list[TensorStep] = []
    for name, info in donor_ck.layout.items():
        if info.kind in DONOR_ONLY_KINDS and any(name not in checkpoints[a].layout for a in needed):
            steps.append(TensorStep(name, info.kind, info.layer, "copy", source=donor))
            continue
        for a in needed:
            _check_parent(checkpoints[a], a, info)
        g = tuple(
            (s.name, _resolve(s, [(glob.get(s.name), f"parameters.{s.name}")], info, num_layers, ""))
            for s in sorted(op.global_params(), key=lambda s: s.name)
        )
        mp = tuple(
            tuple(
                (
                    s.name,
                    _resolve(
                        s,
                        [(src.parameters.get(s.name), f"{src.where}.{s.name}"),
                         (glob.get(s.name), f"parameters.{s.name}")],
                        info, num_layers, f" of model {src.ref.name!r}",
                    ),
                )
                for s in sorted(op.model_params(), key=lambda s: s.name)
            )
            for src in sources
        )
        steps.append(TensorStep(name, info.kind, info.layer, "merge", None, g, mp))
    return MergePlan(
        operator=op.name,
        models=tuple(src.ref for src in sources),
        base=base_ref,
        donor=donor,
        dtype=recipe.dtype,
        out_dtype=recipe.out_dtype,
        seed=recipe.seed,
        steps=tuple(steps),
        meta=(("recipe_name", recipe.name or ""),),
    )
