"""Operator parameters: their declarations (:class:`ParamSpec`) and per-tensor resolution.

An operator declares each parameter once (name, scope, range, default). Everything else is
derived from that declaration: recipe validation, per-layer resolution, and the evolutionary
genome (a later issue). There is no second table of parameters anywhere.

A value in a recipe may be
  * a number: the same for every tensor;
  * a list of numbers (a *gradient*): interpolated across the block stack, as mergekit does
    (``t = layer / (num_layers - 1)``; tensors outside the block stack use ``t = 0``);
  * a list of ``{filter: ..., value: ...}``: the first entry whose filter matches wins. A filter
    matches when it is a :class:`~evomm.layout.ModuleKind` name (``attention``, ``mlp``, ``norm``,
    ``embedding``, ``head``, ...) equal to the tensor's kind, or a substring of the canonical
    tensor name (``self_attn``, ``layers.3.``), or is missing / ``"*"``. A value may itself be a
    gradient.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import Enum
from typing import Any, Union

from evomm.errors import ConfigError
from evomm.layout import ModuleKind, TensorInfo


class ParamScope(str, Enum):
    """Whether a parameter has one value per merge (``global``) or one per source model."""

    GLOBAL = "global"
    PER_MODEL = "per_model"


@dataclass(frozen=True)
class ParamSpec:
    """The declaration of one operator parameter.

    Attributes:
        name: the key in recipes (``weight``, ``density``, ``t``, ``lambda``...).
        scope: global or per source model.
        low, high: valid range (inclusive); also the default search bounds.
        default: value used when the recipe omits it; ``None`` means required.
        description: one line for ``evomm plugins`` and docs.
        kind: ``"float"``, ``"bool"`` (values 0/1, not evolved) or ``"int"``.
        evolvable: whether the genome may search this parameter.

    Example:
        >>> ParamSpec("density", ParamScope.PER_MODEL, 0.0, 1.0, 1.0, "fraction kept")
        ParamSpec(name='density', ...)
    """

    name: str
    scope: ParamScope
    low: float
    high: float
    default: float | None
    description: str = ""
    kind: str = "float"
    evolvable: bool = True

    def __repr__(self) -> str:  # short, so doctest and error messages stay readable
        return f"ParamSpec(name={self.name!r}, ...)"

    def check(self, value: float, where: str) -> float:
        """Return ``value`` as float, or raise ConfigError naming ``where`` when out of range."""
        if isinstance(value, bool):
            value = float(value)
        if not isinstance(value, (int, float)) or math.isnan(float(value)):
            raise ConfigError(f"{where}: {self.name} must be a number, got {value!r}")
        v = float(value)
        if not (self.low <= v <= self.high):
            raise ConfigError(
                f"{where}: {self.name}={v} is outside its valid range [{self.low}, {self.high}]"
                f" ({self.description or 'see `evomm plugins`'})"
            )
        return v


#: What a recipe may hold for one parameter (see module docstring).
ParamValue = Union[float, int, bool, Sequence[float], Sequence[Mapping[str, Any]]]


def layer_position(info: TensorInfo, num_layers: int) -> float:
    """mergekit's interpolation position ``t`` of a tensor: ``layer/(num_layers-1)``, 0 outside."""
    if info.layer is None:
        return 0.0
    if num_layers <= 1:
        return 1.0
    return info.layer / (num_layers - 1)


def _filter_matches(filt: Any, info: TensorInfo) -> bool:
    if filt is None or filt == "*":
        return True
    if not isinstance(filt, str):
        raise ConfigError(f"a parameter filter must be a string, got {filt!r}")
    kinds = {k.value for k in ModuleKind}
    if filt in kinds:
        return info.kind.value == filt
    return filt in info.name


def resolve_value(value: Any, info: TensorInfo, num_layers: int, where: str) -> float | None:
    """Resolve a recipe value for one tensor; ``None`` when no filter entry matches.

    Example:
        >>> from evomm.layout import TensorInfo, ModuleKind
        >>> ti = TensorInfo("model.layers.2.mlp.up_proj.weight", "x", (4, 4), "float32",
        ...                 ModuleKind.MLP, 2)
        >>> resolve_value([0.0, 1.0], ti, num_layers=5, where="w")
        0.5
        >>> resolve_value([{"filter": "attention", "value": 9}, {"value": 1}], ti, 5, "w")
        1.0
    """
    if isinstance(value, bool):
        return float(value)
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, Mapping):
        value = [value]
    if isinstance(value, Sequence) and not isinstance(value, str):
        if not value:
            raise ConfigError(f"{where}: an empty list is not a parameter value")
        if all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value):
            t = layer_position(info, num_layers)
            scaled = t * (len(value) - 1)
            i0 = int(scaled)
            i1 = min(len(value) - 1, i0 + 1)
            frac = scaled - i0
            return (1 - frac) * float(value[i0]) + frac * float(value[i1])
        for entry in value:
            if not isinstance(entry, Mapping) or "value" not in entry:
                raise ConfigError(
                    f"{where}: a parameter list must hold only numbers (a gradient) or only "
                    f"{{filter, value}} entries; got {entry!r}"
                )
            unknown = set(entry) - {"filter", "value"}
            if unknown:
                raise ConfigError(f"{where}: unknown key(s) {sorted(unknown)} in {dict(entry)!r}")
            if _filter_matches(entry.get("filter"), info):
                return resolve_value(entry["value"], info, num_layers, where)
        return None
    raise ConfigError(
        f"{where}: expected a number, a list of numbers or a list of {{filter, value}}, got {value!r}"
    )
