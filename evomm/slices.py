"""mergekit's ``slices:`` recipes: per-slice merges and passthrough frankenmerges.

::

    merge_method: slerp                      # or linear, ties, ... or passthrough
    base_model: ./a
    slices:
      - sources:
          - {model: ./a, layer_range: [0, 16]}
          - {model: ./b, layer_range: [0, 16]}
        parameters: {t: [0, 0.5, 1]}         # a gradient runs over the slice's layers
      - sources:
          - {model: ./a, layer_range: [16, 32], parameters: {weight: 0.3}}
          - {model: ./b, layer_range: [16, 32]}

Every source of a slice has the same number of layers; output layer ``offset + i`` of a slice
merges layer ``start_j + i`` of each source ``j`` (slices are stacked in order, so the output
has the sum of the slices' lengths as ``num_hidden_layers``). ``merge_method: passthrough``
with one source per slice stacks layers of different models into a deeper model. As in
mergekit 0.1.5 (``mergekit/plan.py``): tensors before the stack (embeddings) merge the first
slice's sources with its parameters, tensors after it (final norm, head) the last slice's; a
gradient's position is ``i / (n - 1)`` inside an ``n``-layer slice (1 for a one-layer slice, 0
outside the stack); a parameter is looked up in the source's ``parameters``, then the slice's,
then the recipe's.

The plan is an ordinary :class:`~evomm.plan.MergePlan` over *lanes* (``plan.stack``, see
:mod:`evomm.layer_stack`): lane ``j`` is the ``j``-th source of every slice.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from evomm.adapters import Checkpoint, ModelRef
from evomm.errors import CheckpointError, ConfigError, IncompatibleModelsError
from evomm.layer_stack import Lane, LayerStack, stacked_checkpoints
from evomm.layout import DONOR_ONLY_KINDS, TensorInfo

if TYPE_CHECKING:
    from evomm.operators import MergeOperator
    from evomm.plan import MergePlan, TensorStep
    from evomm.plugins import Plugins
    from evomm.recipe import MergeRecipe

#: mergekit slice keys evomm refuses, with the reason.
UNSUPPORTED_SLICE_KEYS = {
    "base_model": "a per-slice `base_model` is not supported; give one top-level `base_model`",
    "residual_weight": "`residual_weight` is not supported (mergekit does not use it either)",
}


class SliceSource(BaseModel):
    """One entry of a slice's ``sources:``."""

    model_config = ConfigDict(extra="forbid")

    model: str = Field(description="local directory or hub id, as in `models:`")
    layer_range: tuple[int, int] = Field(description="[start, end): the source's layers, end excluded")
    parameters: dict[str, Any] | None = Field(None, description="per-model operator parameters")

    @field_validator("layer_range")
    @classmethod
    def _range(cls, value: tuple[int, int]) -> tuple[int, int]:
        start, end = value
        if start < 0 or end <= start:
            raise ValueError("must be [start, end) with 0 <= start < end (end excluded)")
        return value


class SliceEntry(BaseModel):
    """One entry of ``slices:``."""

    model_config = ConfigDict(extra="forbid")

    sources: list[SliceSource] = Field(min_length=1)
    parameters: dict[str, Any] | None = None

    @model_validator(mode="before")
    @classmethod
    def _refuse(cls, data: Any) -> Any:
        if isinstance(data, Mapping):
            for key, why in UNSUPPORTED_SLICE_KEYS.items():
                if key in data:
                    raise ConfigError(f"slices: `{key}`: {why}")
        return data


def models_of_slices(data: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The ``models:`` entries a ``slices:`` recipe implies: each distinct source model once, in
    order of first appearance (what aliases, ``tokenizer_source`` and opening models use).

    Raises:
        ConfigError: ``slices`` is not a list of ``{sources: [{model, layer_range}]}``.
    """
    slices = data.get("slices")
    if not isinstance(slices, list) or not slices:
        raise ConfigError(f"slices: expected a non-empty list of {{sources: [...]}}, got {slices!r}")
    seen: dict[str, None] = {}
    for i, sl in enumerate(slices):
        sources = sl.get("sources") if isinstance(sl, Mapping) else None
        if not isinstance(sources, list) or not sources:
            raise ConfigError(f"slices[{i}].sources: expected a non-empty list of {{model, layer_range}}, got {sources!r}")
        for j, src in enumerate(sources):
            model = src.get("model") if isinstance(src, Mapping) else None
            if not isinstance(model, str):
                raise ConfigError(f"slices[{i}].sources[{j}].model: expected a model path or hub id, got {model!r}")
            seen[model] = None
    return [{"model": m} for m in seen]


def with_slice_models(data: Mapping[str, Any]) -> dict[str, Any]:
    """``data`` (a recipe mapping with ``slices``) with ``models`` set to :func:`models_of_slices`.

    Raises:
        ConfigError: ``models`` is given too and lists other models (mergekit takes one of them).
    """
    implied = models_of_slices(data)
    given = data.get("models")
    if given is not None and [m.get("model") if isinstance(m, Mapping) else m for m in given] != [
            m["model"] for m in implied]:
        raise ConfigError("give either `models:` or `slices:` (mergekit takes one), not both")
    return {**data, "models": given if given is not None else implied}


# ---------------------------------------------------------------------------------------------
# checking a slices recipe
# ---------------------------------------------------------------------------------------------


def _ordered(recipe: MergeRecipe, op: type[MergeOperator], sl: SliceEntry, i: int) -> tuple[list[int], int | None]:
    """Indices of slice ``i``'s sources in lane order, and the base source's index (task-vector
    operators) or None; as :meth:`MergeRecipe.sources`: the base first for other operators."""
    base, bi = recipe.base_model, recipe.base_index()
    bj = next((j for j, s in enumerate(sl.sources) if bi is not None and recipe._match(s.model, "") == bi), None)
    rest = [j for j in range(len(sl.sources)) if j != bj]
    if op.requires_base or (getattr(op, "optional_base", False) and base is not None):
        if bj is None:
            raise ConfigError(
                f"slices[{i}].sources: {op.name!r} subtracts the base model, so every slice must list "
                f"base_model {base!r} among its sources (with the layer_range to use)"
            )
        return rest, bj
    return ([bj] if bj is not None else []) + rest, None


def check_slices(recipe: MergeRecipe, plugins: Plugins) -> type[MergeOperator]:
    """Check a ``slices:`` recipe against its operator (what :func:`evomm.recipe.check_recipe`
    does for ``models:``): parameter names, scopes and ranges at every level, and the number of
    sources per slice (one for passthrough; the same in every slice otherwise).

    Raises:
        ConfigError: naming the key path, e.g. ``slices[1].sources[0].parameters.t``.
    """
    from evomm.recipe import _check_section, get_operator

    op = get_operator(recipe.merge_method, plugins)
    _check_section(recipe.parameters, op, "parameters", per_model=False)
    if op.requires_base and recipe.base_model is None:
        raise ConfigError(f"base_model: {op.name!r} needs a base model (task vectors are model - base); add one")
    counts = []
    for i, sl in enumerate(recipe.slices or ()):
        _check_section(sl.parameters, op, f"slices[{i}].parameters", per_model=False)
        for j, src in enumerate(sl.sources):
            _check_section(src.parameters, op, f"slices[{i}].sources[{j}].parameters", per_model=True)
        lanes, _ = _ordered(recipe, op, sl, i)
        n = len(lanes)
        if n < op.min_models or (op.max_models is not None and n > op.max_models):
            limit = f"{op.min_models}..{op.max_models if op.max_models is not None else 'any'}"
            raise ConfigError(
                f"slices[{i}].sources: {op.name!r} takes {limit} source models per slice (besides the "
                f"base), this slice gives {n}"
            )
        counts.append(n)
    if len(set(counts)) > 1:
        raise ConfigError(
            f"slices: every slice of a {op.name!r} merge needs the same number of sources (lanes), got "
            f"{counts}"
        )
    return op


# ---------------------------------------------------------------------------------------------
# planning
# ---------------------------------------------------------------------------------------------


def _lane_name(recipe: MergeRecipe, models: Sequence[str], j: int, taken: set[str]) -> str:
    uniform = models[0] if len(set(models)) == 1 else None
    name = uniform if uniform is not None and uniform not in taken else f"lane{j}"
    taken.add(name)
    return name


def _column(recipe: MergeRecipe, aliases: Sequence[str], src: SliceSource, n: int) -> list[tuple[str, int]]:
    """``(model alias, layer)`` of a source's ``n`` layers."""
    alias = aliases[recipe._match(src.model, "") or 0]
    return [(alias, src.layer_range[0] + k) for k in range(n)]


def _lanes(recipe: MergeRecipe, op: type[MergeOperator], cks: Mapping[str, Checkpoint]) -> tuple[
        list[Lane], Lane | None, list[tuple[int, int, list[int], int | None]]]:
    """The source lanes, the base lane, and per slice ``(offset, length, lane order, base index)``."""
    aliases = recipe.aliases()
    slices = recipe.slices or []
    per_slice, columns, base_col = [], [], []
    offset = 0
    for i, sl in enumerate(slices):
        order, bj = _ordered(recipe, op, sl, i)
        lengths = [s.layer_range[1] - s.layer_range[0] for s in sl.sources]
        for j, (src, n) in enumerate(zip(sl.sources, lengths)):
            alias = aliases[recipe._match(src.model, "") or 0]
            have = cks[alias].num_layers
            if src.layer_range[1] > have:
                raise ConfigError(
                    f"slices[{i}].sources[{j}].layer_range: {list(src.layer_range)} is out of bounds for "
                    f"model {alias!r} ({src.model}), which has {have} layers (valid: 0 <= start < end <= {have})"
                )
            if n != lengths[0]:
                raise ConfigError(
                    f"slices[{i}].sources[{j}].layer_range: {list(src.layer_range)} has {n} layers but "
                    f"slices[{i}].sources[0] has {lengths[0]}; every source of a slice needs the same number"
                )
        cols = [_column(recipe, aliases, sl.sources[j], lengths[0]) for j in range(len(sl.sources))]
        columns.append([cols[j] for j in order])
        base_col.append(cols[bj] if bj is not None else [])
        per_slice.append((offset, lengths[0], order, bj))
        offset += lengths[0]
    taken: set[str] = set()
    lanes = []
    for j in range(len(columns[0])):
        layers = tuple(p for cols in columns for p in cols[j])
        models = [columns[0][j][0][0], *(a for a, _ in layers), columns[-1][j][0][0]]
        lanes.append(Lane(_lane_name(recipe, models, j, taken), layers, columns[0][j][0][0], columns[-1][j][0][0]))
    base = None
    if any(base_col):
        layers = tuple(p for cols in base_col for p in cols)
        models = [base_col[0][0][0], *(a for a, _ in layers)]
        base = Lane(_lane_name(recipe, models, len(lanes), taken), layers, models[0], models[0])
    return lanes, base, per_slice


def _check_lanes(views: Mapping[str, Checkpoint], lanes: Sequence[Lane]) -> None:
    first = views[lanes[0].name]
    for lane in lanes[1:]:
        other = views[lane.name]
        for name, info in first.layout.items():
            theirs = other.layout.get(name)
            if theirs is None and info.kind in DONOR_ONLY_KINDS:
                continue
            if theirs is None:
                raise CheckpointError(f"tensor {name!r} of the merged stack is missing from lane {lane.name!r} "
                                      f"(models {lane.models()}); the slices' models do not share an architecture")
            if tuple(theirs.shape) != tuple(info.shape):
                raise IncompatibleModelsError(
                    f"tensor {name!r} has shape {tuple(theirs.shape)} in lane {lane.name!r} (models "
                    f"{lane.models()}) but {tuple(info.shape)} in lane {lanes[0].name!r}; the slices' models do "
                    "not share an architecture size")


def build_slice_plan(recipe: MergeRecipe, checkpoints: Mapping[str, Checkpoint], plugins: Plugins) -> MergePlan:
    """The plan of a ``slices:`` recipe (see module docstring); reads no tensor.

    Raises:
        ConfigError: bad parameters, a layer_range out of bounds or of another length than the
            slice's first source, a missing base source.
        CheckpointError, IncompatibleModelsError: the lanes' tensors do not line up.
    """
    from evomm.plan import MergePlan

    op = check_slices(recipe, plugins)
    lanes, base, per_slice = _lanes(recipe, op, checkpoints)
    stack = LayerStack((*lanes, *([base] if base else [])), recipe.donor())
    views = stacked_checkpoints(stack, checkpoints)
    _check_lanes(views, stack.lanes)
    steps = _steps(recipe, op, views, lanes, per_slice)
    def ref(lane: Lane) -> ModelRef:
        return views[lane.name].ref
    return MergePlan(
        operator=op.name, models=tuple(ref(ln) for ln in lanes), base=ref(base) if base else None,
        donor=lanes[0].name, dtype=recipe.dtype, out_dtype=recipe.out_dtype, seed=recipe.seed,
        steps=tuple(steps), meta=(("recipe_name", recipe.name or ""),), allow_nonfinite=recipe.allow_nonfinite,
        stack=stack,
    )


def _steps(recipe: MergeRecipe, op: type[MergeOperator], views: Mapping[str, Checkpoint], lanes: Sequence[Lane],
           per_slice: Sequence[tuple[int, int, list[int], int | None]]) -> list[TensorStep]:
    """One merge step per output tensor, its parameters resolved in the tensor's slice."""
    from evomm.plan import TensorStep, _resolve

    slices = recipe.slices or []
    glob = recipe.parameters or {}
    gspecs = sorted(op.global_params(), key=lambda s: s.name)
    mspecs = sorted(op.model_params(), key=lambda s: s.name)
    steps = []
    for name, info in views[lanes[0].name].layout.items():
        if info.layer is None:
            s = 0 if info.kind.value == "embedding" else len(slices) - 1
            pos, n = None, 1
        else:
            s = max(k for k, (off, _, _, _) in enumerate(per_slice) if off <= info.layer)
            pos, n = info.layer - per_slice[s][0], per_slice[s][1]
        sl, order = slices[s], per_slice[s][2]
        at = TensorInfo(name, info.stored_name, info.shape, info.dtype, info.kind, pos)
        sp = (sl.parameters or {})
        g = tuple((p.name, _resolve(p, [(sp.get(p.name), f"slices[{s}].parameters.{p.name}"),
                                        (glob.get(p.name), f"parameters.{p.name}")], at, n, "")) for p in gspecs)
        mp = []
        for lane, j in zip(lanes, order):
            src_name = views[lane.name].source(name)[1]  # type: ignore[attr-defined]
            own = sl.sources[j].parameters or {}
            src_at = TensorInfo(src_name, info.stored_name, info.shape, info.dtype, info.kind, pos)
            where = f"slices[{s}].sources[{j}].parameters"
            mp.append(tuple((p.name, _resolve(p, [(own.get(p.name), f"{where}.{p.name}"),
                                                  (sp.get(p.name), f"slices[{s}].parameters.{p.name}"),
                                                  (glob.get(p.name), f"parameters.{p.name}")],
                                              src_at, n, f" of model {lane.name!r}")) for p in mspecs))
        steps.append(TensorStep(name, info.kind, info.layer, "merge", None, g, tuple(mp)))
    return steps
