"""A merge plan: a frozen, hashable description of a merge, with no tensors in it.

Built from a recipe and the parents' layouts by :func:`build_plan`, printed by ``evomm plan``, executed by :mod:`evomm.execute`, and keyed on by the
evolution loop's cache (:meth:`MergePlan.digest`). Plans make dry runs and unit tests without
weights possible.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from evomm.adapters import Checkpoint, ModelRef
from evomm.errors import CheckpointError, ConfigError, IncompatibleModelsError
from evomm.layer_stack import LayerStack, stacked_checkpoints
from evomm.layout import DONOR_ONLY_KINDS, ModuleKind, TensorInfo
from evomm.params import ParamSpec, resolve_value
from evomm.vocab_map import VocabMap, vocab_views
from evomm.vocab_pad import (  # noqa: F401  (re-exported: adapters and tests import them from here)
    VOCAB_KINDS,
    _pad_or_check,
    check_shapes,
    check_shared_tokens,
    vocab_pad_rows,
)

if TYPE_CHECKING:
    from evomm.operators import MergeOperator
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
        pad: vocabulary alignment (recipe ``vocab: {mode: pad_from_donor}``): ``(alias, rows)``
            for each model whose tensor has only ``rows`` rows; before merging, its rows
            ``rows..`` are taken from the donor's tensor. Empty (the usual case) is left out of
            :meth:`MergePlan.to_dict`, so plans without padding keep their digests.
    """

    name: str
    kind: ModuleKind
    layer: int | None
    action: Literal["merge", "copy"]
    source: str | None = None
    global_params: Params = ()
    model_params: tuple[Params, ...] = ()
    pad: tuple[tuple[str, int], ...] = ()


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
        allow_nonfinite: let NaN/Inf in parents and in the output through (recipe
            ``allow_nonfinite``; :mod:`evomm.finite`). Part of the digest only when True, so
            plans made before it existed keep their digests.
        stack: for a ``slices:`` recipe, the lanes the models are (:mod:`evomm.layer_stack`:
            each model of the plan is a stack of layers of the recipe's models; the executor
            reads through :func:`~evomm.layer_stack.stacked_checkpoints`); ``None`` otherwise,
            and then left out of :meth:`to_dict`.
        vocab: the merged vocabulary (recipe ``tokenizer_source: union`` / ``tokenizer:``, see
            :mod:`evomm.vocab_map`) the models' embedding/head rows are laid out in; ``None``
            (left out of :meth:`to_dict`) when the parents share the output's vocabulary.
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
    allow_nonfinite: bool = False
    stack: LayerStack | None = None
    vocab: VocabMap | None = None

    def to_dict(self) -> dict[str, Any]:
        """The plan as plain data (``meta`` left out; ``pad`` and ``allow_nonfinite`` only when
        set), what :meth:`digest` hashes. Built field by field: ``dataclasses.asdict`` deep-copied
        every parameter tuple and was most of a candidate's decode time."""
        d: dict[str, Any] = {
            "operator": self.operator,
            "models": [asdict(m) for m in self.models],
            "base": None if self.base is None else asdict(self.base),
            "donor": self.donor,
            "dtype": self.dtype,
            "out_dtype": self.out_dtype,
            "seed": self.seed,
            "steps": [_step_dict(s) for s in self.steps],
        }
        if self.allow_nonfinite:
            d["allow_nonfinite"] = True
        if self.stack is not None:
            d["stack"] = self.stack.to_dict()
        if self.vocab is not None:
            d["vocab"] = self.vocab.to_dict()
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


def _step_dict(step: TensorStep) -> dict[str, Any]:
    d: dict[str, Any] = {
        "name": step.name,
        "kind": step.kind.value if isinstance(step.kind, ModuleKind) else step.kind,
        "layer": step.layer,
        "action": step.action,
        "source": step.source,
        "global_params": step.global_params,
        "model_params": step.model_params,
    }
    if step.pad:
        d["pad"] = step.pad
    return d


def plan_checkpoints(plan: MergePlan, checkpoints: Mapping[str, Checkpoint]) -> dict[str, Checkpoint]:
    """The checkpoints as ``plan`` reads them: each parent through the plan's vocabulary map,
    and the lanes of its layer stack (what the executor merges; idempotent)."""
    raw = stacked_checkpoints(None, checkpoints)
    return stacked_checkpoints(plan.stack, vocab_views(plan.vocab, raw))


def parents_checked_when_opened(recipe: MergeRecipe) -> bool:
    """Whether :func:`evomm.execute.open_models` checks the parents pairwise (equal depth and
    sizes): not for ``slices:`` (stacks of models of other depths) nor for merged vocabularies
    (``tokenizer_source: union``, ``tokenizer:``: other sizes, re-laid out by the plan);
    :func:`build_plan` checks those through its lanes and vocabulary map."""
    if recipe.vocab.mode != "strict":
        return True  # pad_from_donor: the adapters' vocab_mode check
    return recipe.slices is None and recipe.tokenizer is None and recipe.tokenizer_source != "union"


def step_aliases(plan: MergePlan, step: TensorStep) -> list[str]:
    """The models whose tensor ``step`` reads, each once: the copied model, or the source models
    in plan order and then the base.

    Example:
        >>> step_aliases(plan, plan.steps[0])        # doctest: +SKIP
        ['ja', 'math', 'base']
    """
    if step.action == "copy":
        return [step.source or plan.donor]
    aliases = [ref.name for ref in plan.models]
    if plan.base is not None:
        aliases.append(plan.base.name)
    return list(dict.fromkeys(aliases))


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


@dataclass(frozen=True)
class PlanFrame:
    """What a recipe's plan holds besides its parameter values: the operator, the models, the
    donor, and per output tensor its step (copy, or merge with the rows to pad). A search builds
    it once from a checked recipe (:func:`plan_frame`) and each candidate's plan from resolved
    values (:func:`plan_from_values`), without a recipe round trip.

    Attributes:
        operator: the operator class.
        models: the source models, in plan order; ``wheres``: their per-model key paths (errors).
        base, donor, dtype, out_dtype, seed, allow_nonfinite, meta: as in :class:`MergePlan`.
        num_layers: blocks in the donor's stack (gradients across layers).
        tensors: ``(info, pad)`` per output tensor in donor order; ``pad`` is ``None`` for a
            donor-only tensor copied from the donor.
    """

    operator: type[MergeOperator]
    models: tuple[ModelRef, ...]
    wheres: tuple[str, ...]
    base: ModelRef | None
    donor: str
    dtype: str
    out_dtype: str | None
    seed: int
    allow_nonfinite: bool
    meta: tuple[tuple[str, str], ...]
    num_layers: int
    tensors: tuple[tuple[TensorInfo, tuple[tuple[str, int], ...] | None], ...]


def plan_frame(recipe: MergeRecipe, checkpoints: Mapping[str, Checkpoint], plugins: Plugins) -> PlanFrame:
    """Check ``recipe`` (:func:`evomm.recipe.check_recipe`) and the parents' layouts (shapes,
    vocabulary padding, shared tokens) and return the value-independent part of its plan (what
    a search decodes candidates against; slices and merged vocabularies are ``evomm merge``'s).

    Raises:
        ConfigError, CheckpointError, IncompatibleModelsError: as :func:`build_plan`.
    """
    if recipe.slices is not None:
        raise ConfigError("slices: a `slices:` recipe is merged with `evomm merge` (build_plan); a search "
                          "template needs `models:`")
    if recipe.tokenizer is not None or recipe.tokenizer_source == "union":
        raise ConfigError("tokenizer: merging vocabularies is done by `evomm merge` (build_plan); a search "
                          "template needs parents that share a vocabulary (or `vocab: pad_from_donor`)")
    return _frame(recipe, checkpoints, plugins)


def _frame(recipe: MergeRecipe, checkpoints: Mapping[str, Checkpoint], plugins: Plugins) -> PlanFrame:
    from evomm.recipe import check_recipe

    op = check_recipe(recipe, plugins)
    sources, base_ref = recipe.sources(op)
    donor = recipe.donor()
    needed = [s.ref.name for s in sources] + ([base_ref.name] if base_ref else [])
    missing = [a for a in [*needed, donor] if a not in checkpoints]
    if missing:
        raise ConfigError(f"build_plan: no opened checkpoint for model(s) {missing}; open them with open_models")
    donor_ck = checkpoints[donor]
    pad_mode = recipe.vocab.mode == "pad_from_donor"
    tensors: list[tuple[TensorInfo, tuple[tuple[str, int], ...] | None]] = []
    for name, info in donor_ck.layout.items():
        if info.kind in DONOR_ONLY_KINDS and any(name not in checkpoints[a].layout for a in needed):
            tensors.append((info, None))
            continue
        pad: list[tuple[str, int]] = []
        for a in needed:
            if pad_mode and a != donor:
                rows = _pad_or_check(checkpoints[a], a, info, donor)
                if rows is not None:
                    pad.append((a, rows))
            else:
                _check_parent(checkpoints[a], a, info)
        tensors.append((info, tuple(pad)))
    for alias, rows in sorted({p for _, pad in tensors for p in pad or ()}):
        check_shared_tokens(donor_ck, checkpoints[alias], rows)
    return PlanFrame(
        operator=op, models=tuple(src.ref for src in sources), wheres=tuple(src.where for src in sources),
        base=base_ref, donor=donor, dtype=recipe.dtype, out_dtype=recipe.out_dtype, seed=recipe.seed,
        allow_nonfinite=recipe.allow_nonfinite, meta=(("recipe_name", recipe.name or ""),),
        num_layers=donor_ck.num_layers, tensors=tuple(tensors),
    )


def plan_from_values(
    frame: PlanFrame, parameters: Mapping[str, Any], model_parameters: Sequence[Mapping[str, Any]]
) -> MergePlan:
    """The plan of ``frame`` with parameter values resolved per tensor (gradients across layers,
    ``{filter, value}`` by module kind or name; a per-model value falls back to ``parameters``,
    then to the operator's default).

    Args:
        frame: from :func:`plan_frame`.
        parameters: the global ``parameters:`` values.
        model_parameters: per-model values, one mapping per ``frame.models`` entry.

    Raises:
        ConfigError: an out-of-range value, or no value of a required parameter for a tensor.
    """
    op, glob, n = frame.operator, parameters, frame.num_layers
    gspecs = sorted(op.global_params(), key=lambda s: s.name)
    mspecs = sorted(op.model_params(), key=lambda s: s.name)
    steps: list[TensorStep] = []
    for info, pad in frame.tensors:
        if pad is None:
            steps.append(TensorStep(info.name, info.kind, info.layer, "copy", source=frame.donor))
            continue
        g = tuple((s.name, _resolve(s, [(glob.get(s.name), f"parameters.{s.name}")], info, n, "")) for s in gspecs)
        mp = tuple(
            tuple(
                (s.name, _resolve(s, [(params.get(s.name), f"{where}.{s.name}"),
                                      (glob.get(s.name), f"parameters.{s.name}")],
                                  info, n, f" of model {ref.name!r}"))
                for s in mspecs
            )
            for ref, where, params in zip(frame.models, frame.wheres, model_parameters)
        )
        steps.append(TensorStep(info.name, info.kind, info.layer, "merge", None, g, mp, pad))
    return MergePlan(
        operator=op.name, models=frame.models, base=frame.base, donor=frame.donor, dtype=frame.dtype,
        out_dtype=frame.out_dtype, seed=frame.seed, steps=tuple(steps), meta=frame.meta,
        allow_nonfinite=frame.allow_nonfinite,
    )


def build_plan(recipe: MergeRecipe, checkpoints: Mapping[str, Checkpoint], plugins: Plugins) -> MergePlan:
    """Turn a recipe and the parents' layouts into a :class:`MergePlan` (reads no tensor).

    Every parameter is resolved per tensor (gradients across layers, ``{filter, value}`` by
    module kind or name; per-model values fall back to the top-level ``parameters:``, then to the
    operator's default, as in mergekit). The output has the donor's tensors, in its order.
    Tensors of :data:`~evomm.layout.DONOR_ONLY_KINDS` that some parent lacks (a VLM's vision
    tower) are copied from the donor. With ``vocab: {mode: pad_from_donor}``, embedding/head
    tensors with fewer rows than the donor's are recorded in :attr:`TensorStep.pad` (the
    executor extends them with the donor's rows), after checking that the tokenizers agree on
    the shared ids (:func:`check_shared_tokens`).

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
        IncompatibleModelsError: a parent's tensor has another shape (beyond what
            ``pad_from_donor`` aligns), or the tokenizers disagree on a shared id.

    Example:
        >>> recipe = load_recipe("merge.yaml")                            # doctest: +SKIP
        >>> plan = build_plan(recipe, open_models(recipe, plugins), plugins)  # doctest: +SKIP
    """
    from evomm.tokenizer_merge import build_vocab_map

    if recipe.slices is not None:
        from evomm.slices import build_slice_plan

        if recipe.tokenizer is not None or recipe.tokenizer_source == "union":
            raise ConfigError("slices: merging vocabularies (`tokenizer_source: union`, `tokenizer:`) in a "
                              "`slices:` recipe is not supported; merge models that share a tokenizer")
        return build_slice_plan(recipe, checkpoints, plugins)
    vocab = build_vocab_map(recipe, checkpoints)
    frame = _frame(recipe, vocab_views(vocab, checkpoints), plugins)
    sources, _ = recipe.sources(frame.operator)
    plan = plan_from_values(frame, recipe.parameters or {}, [src.parameters for src in sources])
    return plan if vocab is None else dataclasses.replace(plan, vocab=vocab)
