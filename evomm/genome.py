"""The parameter-space genome: derived from an operator's declared parameters and a layout.

Nothing here lists operator parameters by hand. For each parameter a merge template marks
``evolve``, the operator's :class:`~evomm.params.ParamSpec` says whether it is global or per
model and its valid range; the parents' layout (block count, tensor names and module kinds)
says how many values a granularity needs. The result, a :class:`Genome`, is a list of
:class:`~evomm.space.Gene` plus, for each evolved parameter, the *slots* its genes fill; decoding
a point writes concrete values (numbers, gradients, ``{filter, value}`` lists) into an ordinary
merge recipe, so the child's ``merge.yaml`` is exactly what ``evomm merge`` reproduces.

For example, a per-layer ``weight`` of two parents over 2 blocks and an embedding is
2 * (2 + 1) genes; tests/test_genome.py counts such cases by hand.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from evomm.errors import ConfigError
from evomm.evolve_recipe import Evolved, MergeTemplate
from evomm.layout import DONOR_ONLY_KINDS, ModuleKind, TensorInfo
from evomm.operators import MergeOperator
from evomm.params import ParamScope, ParamSpec
from evomm.space import Gene

REST = "rest"


@dataclass(frozen=True)
class Slot:
    """One value of an evolved parameter: a label and the filters it applies to.

    ``filters`` is ``None`` for the catch-all entry (tensors no earlier filter matched).
    """

    label: str
    filters: tuple[str, ...] | None


@dataclass(frozen=True)
class EvolvedParam:
    """An evolved parameter for one owner (a parent alias, or ``None`` for global/shared)."""

    param: str
    owner: str | None
    scope: ParamScope
    mode: str  # "number", "filters" or "gradient"
    slots: tuple[Slot, ...]
    first_gene: int


@dataclass(frozen=True)
class Genome:
    """Genes and how they decode into a merge template's parameters."""

    genes: tuple[Gene, ...]
    params: tuple[EvolvedParam, ...]

    def values(self, x: Sequence[float] | np.ndarray) -> list[float]:
        """Native gene values for unit point ``x``."""
        x = np.asarray(x, dtype=float)
        if x.shape != (len(self.genes),):
            raise ConfigError(f"a genome of {len(self.genes)} genes got a point of shape {x.shape}")
        return [g.value(u) for g, u in zip(self.genes, x)]

    def decode_parameters(
        self, x: Sequence[float] | np.ndarray
    ) -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
        """The evolved values of point ``x``: (global parameters, {alias: per-model parameters}).

        Values are rounded to 6 significant digits so the written recipe is short and reloads to
        the same floats (the plan, hence the digest, is built from these rounded values).
        """
        vals = self.values(x)
        glob: dict[str, Any] = {}
        per: dict[str, dict[str, Any]] = {}
        for ep in self.params:
            v = [_round(vals[ep.first_gene + i]) for i in range(len(ep.slots))]
            if ep.mode == "number":
                value: Any = v[0]
            elif ep.mode == "gradient":
                value = v
            else:
                value = []
                for slot, sv in zip(ep.slots, v):
                    if slot.filters is None:
                        value.append({"value": sv})
                    else:
                        value.extend({"filter": f, "value": sv} for f in slot.filters)
            if ep.scope is ParamScope.GLOBAL:
                glob[ep.param] = value
            elif ep.owner is None:  # shared per-model parameter: same value for every parent
                per.setdefault("*", {})[ep.param] = value
            else:
                per.setdefault(ep.owner, {})[ep.param] = value
        return glob, per

    def describe(self) -> str:
        """A table of the genes with their bounds (what ``evomm evolve --dry-run`` prints)."""
        lines = [f"{len(self.genes)} genes (the optimiser sees [0, 1]; values map to [low, high]):"]
        width = max((len(g.name) for g in self.genes), default=4)
        lines.append(f"  {'gene':<{width}}  {'low':>8}  {'high':>8}  {'init':>8}  description")
        for g in self.genes:
            init = "" if g.init is None else f"{g.init:8.4g}"
            lines.append(f"  {g.name:<{width}}  {g.low:8.4g}  {g.high:8.4g}  {init:>8}  {g.description}")
        return "\n".join(lines)


def _round(v: float) -> float:
    return float(f"{v:.6g}")


def _bounds(entry: Evolved, spec: ParamSpec, where: str) -> tuple[float, float]:
    if entry.evolve is True:
        return spec.low, spec.high
    low, high = entry.evolve.low, entry.evolve.high
    if low < spec.low or high > spec.high:
        raise ConfigError(
            f"{where}.evolve: bounds [{low}, {high}] leave the operator's valid range "
            f"[{spec.low}, {spec.high}] for {spec.name!r}; narrow them"
        )
    return low, high


def _merged_kinds(layout: Mapping[str, TensorInfo]) -> list[TensorInfo]:
    return [t for t in layout.values() if t.kind not in DONOR_ONLY_KINDS]


def _prefix_filters(names: list[str], tensors: list[TensorInfo], keep: set[str]) -> tuple[str, ...]:
    """Shortest substring filters matching exactly ``names`` among ``tensors`` not yet matched.

    Filters are substrings of canonical names (see :mod:`evomm.params`); we try the common
    prefix of the group (cut at a dot) and fall back to one prefix per module.
    """
    import os.path

    lcp = os.path.commonprefix(names)
    lcp = lcp[: lcp.rfind(".") + 1] if "." in lcp else lcp
    if lcp and all((lcp not in t.name) or (t.name in keep) for t in tensors):
        return (lcp,)
    modules = sorted({n.rsplit(".", 1)[0] + "." for n in names})
    return tuple(modules)


def layer_slots(
    granularity: Any,
    kinds: Sequence[str] | None,
    layout: Mapping[str, TensorInfo],
    num_layers: int,
    where: str,
) -> tuple[str, tuple[Slot, ...]]:
    """The slots (values) a granularity needs on this layout, and the decode mode.

    Returns:
        (mode, slots): mode ``number`` (one value), ``gradient`` (control points) or
        ``filters`` (``{filter, value}`` entries, first match wins, last one is a catch-all).
    """
    tensors = _merged_kinds(layout)
    valid_kinds = {k.value for k in ModuleKind}
    for k in kinds or ():
        if k not in valid_kinds:
            raise ConfigError(f"{where}.kinds: {k!r} is not a module kind; use one of {sorted(valid_kinds)}")
    if isinstance(granularity, dict) and "gradient" in granularity:
        if kinds:
            raise ConfigError(f"{where}: `kinds` cannot be combined with a gradient granularity")
        k = granularity["gradient"]
        return "gradient", tuple(Slot(f"g{i}", None) for i in range(k))
    if granularity in ("global", "per_model"):
        if not kinds:
            return "number", (Slot("", None),)
        slots = [Slot(k, (k,)) for k in kinds if any(t.kind.value == k for t in tensors)]
        if any(t.kind.value not in kinds for t in tensors):
            slots.append(Slot(REST, None))
        return "filters", tuple(slots)
    group = 1 if granularity == "per_layer" else int(granularity["per_layer_group"])
    if num_layers < 1:
        raise ConfigError(f"{where}: granularity {granularity!r} needs a block stack, the layout has none")
    slots = []
    for start in range(0, num_layers, group):
        layers = list(range(start, min(num_layers, start + group)))
        label = f"layers.{layers[0]}" + (f"-{layers[-1]}" if len(layers) > 1 else "")
        in_group = [t for t in tensors if t.layer in layers]
        if not kinds:
            slots.append(Slot(label, tuple(f"layers.{i}." for i in layers)))
            continue
        remaining = set(t.name for t in in_group)
        for k in kinds:
            names = [t.name for t in in_group if t.kind.value == k]
            if names:
                filts: list[str] = []
                for i in layers:
                    ni = [n for n in names if f"layers.{i}." in n]
                    if ni:
                        filts.extend(_prefix_filters(ni, tensors, set(ni)))
                slots.append(Slot(f"{label}.{k}", tuple(filts)))
                remaining -= set(names)
        if remaining:
            filts = [f"layers.{i}." for i in layers]  # rest of the block: earlier entries won
            slots.append(Slot(f"{label}.other", tuple(filts)))
    if any(t.layer is None for t in tensors):
        slots.append(Slot(REST, None))
    return "filters", tuple(slots)


def derive_genome(
    template: MergeTemplate,
    operator: type[MergeOperator],
    parents: Sequence[str],
    layout: Mapping[str, TensorInfo],
    num_layers: int,
) -> Genome:
    """Derive the genes of ``template`` from ``operator.params`` and the layout.

    Args:
        template: the recipe's operator template (fixed and evolved parameters).
        operator: the registered operator class (its ``params`` are the only parameter table).
        parents: aliases of the source models, in recipe order (per-model genes follow it).
        layout: the donor's layout (canonical name -> TensorInfo).
        num_layers: blocks in the stack.

    Raises:
        ConfigError: an unknown or non-evolvable parameter, bounds outside the declared range,
            a bad granularity; the message names ``merge.parameters.<name>``.
    """
    genes: list[Gene] = []
    params: list[EvolvedParam] = []
    declared = {p.name: p for p in operator.params}
    for name, entry in template.parameters.items():
        where = f"merge.parameters.{name}"
        spec = declared.get(name)
        if spec is None:
            raise ConfigError(
                f"{where}: operator {operator.name!r} has no parameter {name!r}; "
                f"it declares {sorted(declared) or 'none'} (see `evomm plugins`)"
            )
        if not isinstance(entry, Evolved):
            continue
        if not spec.evolvable or spec.kind == "bool":
            raise ConfigError(f"{where}: {name!r} of {operator.name!r} cannot be evolved; give a fixed value")
        if spec.scope is ParamScope.GLOBAL and entry.shared:
            raise ConfigError(f"{where}: `shared` applies to per-model parameters; {name!r} is global")
        low, high = _bounds(entry, spec, where)
        mode, slots = layer_slots(entry.granularity, entry.kinds, layout, num_layers, where)
        init = entry.init if entry.init is not None else spec.default
        if init is not None and not (low <= init <= high):
            init = None
        if spec.scope is ParamScope.GLOBAL or entry.shared:
            owners: list[str | None] = [None]
        else:
            owners = [p for p in parents if name not in template.models.get(p, {})]
        for owner in owners:
            params.append(EvolvedParam(name, owner, spec.scope, mode, slots, len(genes)))
            group = name if owner is None else f"{name}[{owner}]"
            for slot in slots:
                label = group + (f".{slot.label}" if slot.label else "")
                genes.append(Gene(label, low, high, spec.description, init, group))
    if not genes:
        raise ConfigError(
            "merge.parameters: nothing to evolve; mark at least one parameter as "
            "`{evolve: {low: ..., high: ...}}`"
        )
    return Genome(tuple(genes), tuple(params))


def apply_genome(
    template: MergeTemplate,
    operator: type[MergeOperator],
    genome: Genome,
    x: Sequence[float] | np.ndarray,
    parents: Sequence[str],
) -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
    """Fixed plus evolved parameters of point ``x``: (global params, {alias: model params}).

    Fixed values of the template are copied unchanged (a fixed per-model parameter applies to
    every parent); ``template.models`` gives fixed per-parent values (excluded from the genome).

    Raises:
        ConfigError: ``merge.models`` names an alias that is not a parent.
    """
    glob_ev, per_ev = genome.decode_parameters(x)
    glob: dict[str, Any] = {}
    per: dict[str, dict[str, Any]] = {p: {} for p in parents}
    for name, entry in template.parameters.items():
        if isinstance(entry, Evolved):
            continue
        spec = operator.param(name)
        if spec is not None and spec.scope is ParamScope.GLOBAL:
            glob[name] = copy.deepcopy(entry)
        else:
            for p in parents:
                per[p][name] = copy.deepcopy(entry)
    for alias, fixed in template.models.items():
        if alias not in per:
            raise ConfigError(
                f"merge.models.{alias}: not a parent of this stage; parents are {list(parents)}"
            )
        per[alias].update(copy.deepcopy(fixed))
    glob.update(glob_ev)
    shared = per_ev.pop("*", {})
    for p in parents:
        per[p].update(shared)
        per[p].update(per_ev.get(p, {}))
    return glob, per
