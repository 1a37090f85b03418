"""Shared input checks and parameter declarations of the built-in merge operators.

Every operator calls :func:`check_inputs` first: it turns a malformed call (shape mismatch,
missing base, wrong number of models, a parameter outside its declared range) into an
:class:`~evomm.errors.EvommError` that names the operator, the tensor and the culprit, before
any arithmetic runs.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

from evomm.errors import ConfigError, MergeError
from evomm.operators import MergeOperator, TensorContext
from evomm.params import ParamScope, ParamSpec

if TYPE_CHECKING:
    import torch

G, M = ParamScope.GLOBAL, ParamScope.PER_MODEL

#: Entries per chunk of the elementwise pass. The chunk's working set (about a dozen float32
#: vectors of 1 MiB) stays in cache and its scratch buffers are reused: whole-tensor temporaries
#: would stream through memory instead and, above glibc's mmap threshold, fault their pages in
#: again on every call (measured on 2 cores: TIES on a 2816x1024 bf16 tensor 31 ms -> 17 ms).
CHUNK = 1 << 18

#: Search bounds and validity range of a per-model weight. mergekit accepts any float; we bound
#: it so that the evolutionary genome has meaningful limits (negative weights subtract a model;
#: the toy zoo's vision search scales a task vector up to 3x: its evolved genes reach 2.9).
WEIGHT_LOW, WEIGHT_HIGH = -1.0, 3.0


def weight_spec(default: float | None = None) -> ParamSpec:
    """The per-model ``weight`` parameter (required when ``default`` is None, as in mergekit)."""
    return ParamSpec("weight", M, WEIGHT_LOW, WEIGHT_HIGH, default, "mixing weight of this model")


def density_spec() -> ParamSpec:
    """The per-model ``density`` (fraction of task-vector entries kept; mergekit default 1)."""
    return ParamSpec("density", M, 0.0, 1.0, 1.0, "fraction of the task vector kept")


def bool_spec(name: str, default: bool, description: str) -> ParamSpec:
    """A global on/off switch (kind ``bool``, never evolved)."""
    return ParamSpec(name, G, 0.0, 1.0, float(default), description, kind="bool", evolvable=False)


def work_dtype(dtype: torch.dtype) -> torch.dtype:
    """Arithmetic dtype for inputs of ``dtype``: float64 stays, everything else is float32.

    Half-precision inputs are upcast once per tensor: CPU kernels convert bf16/fp16 to float32
    internally anyway, and accumulating several models in bf16 would round after every step.
    """
    import torch
    return torch.float64 if dtype == torch.float64 else torch.float32


def _where(op: type[MergeOperator], ctx: TensorContext) -> str:
    return f"operator {op.name!r}, tensor {ctx.name!r}"


def check_inputs(
    op: type[MergeOperator],
    tensors: Sequence[torch.Tensor],
    base: torch.Tensor | None,
    global_params: Mapping[str, float],
    model_params: Sequence[Mapping[str, float]],
    ctx: TensorContext,
) -> tuple[dict[str, float], list[dict[str, float]]]:
    """Validate one operator call and return its parameters with defaults filled in.

    Args:
        op: the operator class (for its name, declared parameters and model-count limits).
        tensors, base, global_params, model_params, ctx: the arguments of ``merge``.

    Returns:
        ``(global_params, model_params)`` as plain dicts, every declared parameter present and
        range-checked.

    Raises:
        MergeError: no tensors, too few/many models, a missing base, mismatched shapes,
            non-floating dtypes, or a ``model_params`` list of the wrong length.
        ConfigError: a parameter is unknown, missing (and required) or out of range.

    Example (inside an operator)::

        g, per_model = check_inputs(type(self), tensors, base, ...)
    """
    where = _where(op, ctx)
    if op.requires_base and base is None:
        raise MergeError(
            f"{where}: this method needs a base model (task vectors are taken against it); "
            "set `base_model:` in the recipe"
        )
    n = len(tensors)
    if n < op.min_models or (op.max_models is not None and n > op.max_models):
        limit = f"{op.min_models}..{op.max_models}" if op.max_models is not None else f">= {op.min_models}"
        raise MergeError(f"{where}: got {n} source model(s) besides the base, needs {limit}")
    if len(model_params) != n:
        raise MergeError(f"{where}: {len(model_params)} per-model parameter sets for {n} models")
    ref = tensors[0] if n else base
    named = [(f"model {i}", t) for i, t in enumerate(tensors)]
    if base is not None:
        named.append(("base", base))
    for label, t in named:
        if t.shape != ref.shape:
            raise MergeError(
                f"{where}: shape mismatch, {label} has {tuple(t.shape)} but model 0 has "
                f"{tuple(ref.shape)}; the parents are not the same architecture"
            )
        if not t.is_floating_point():
            raise MergeError(f"{where}: {label} has dtype {t.dtype}; only floating tensors merge")
    return _resolve_params(op, global_params, model_params, where)


def _resolve_params(
    op: type[MergeOperator],
    global_params: Mapping[str, float],
    model_params: Sequence[Mapping[str, float]],
    where: str,
) -> tuple[dict[str, float], list[dict[str, float]]]:
    def fill(specs: tuple[ParamSpec, ...], given: Mapping[str, float], label: str) -> dict[str, float]:
        known = {p.name for p in specs}
        unknown = sorted(set(given) - known)
        if unknown:
            raise ConfigError(
                f"{where}: unknown {label} parameter(s) {unknown}; {op.name} accepts "
                f"{sorted(known) or 'none'}"
            )
        out: dict[str, float] = {}
        for p in specs:
            value = given.get(p.name, p.default)
            if value is None:
                raise ConfigError(f"{where}: {label} parameter {p.name!r} is required ({p.description})")
            out[p.name] = p.check(value, f"{where}, {label}")
        return out

    g = fill(op.global_params(), global_params, "global")
    per = [fill(op.model_params(), mp, f"model {i}") for i, mp in enumerate(model_params)]
    return g, per
