"""The CPU engine: a streaming merge without torch.

:func:`evomm.execute.merge_to_dir` runs a plan here when its operator has a torch-free form
(:meth:`~evomm.operators.MergeOperator.merge_arrays`), every checkpoint reads raw arrays
(:attr:`~evomm.adapters.Checkpoint.reads_arrays`), the writer writes them and the dtypes are ones
it converts (:func:`unsupported` says why not, otherwise). The tensors then go from memory-mapped
safetensors files through NumPy and the operator's numba kernel to the output shards, and
``evomm merge`` never loads torch, whose import is most of a small merge's time (1.4-2.2 s of a
2-core machine's ~2.5-4 s linear merge of three 350M-parameter models).

The output is the same bytes as the torch path's, which is what the operators'
``merge_arrays`` promise and tests/test_host_merge.py checks: inputs are converted to the compute
dtype as ``Tensor.to`` does, the operator's result is converted to the output dtype the same
way, and a tensor whose ``merge_arrays`` declines (returns None) is merged by ``merge`` after all.
``EVOMM_CPU_ENGINE=0`` turns the engine off (the torch path for everything).

Example:
    >>> reason = unsupported(plan, checkpoints, op, writer)          # doctest: +SKIP
    >>> if reason is None:                                            # doctest: +SKIP
    ...     for name, raw, dtype in merged_arrays(plan, checkpoints, op):
    ...         writer.write_array(name, raw, shape, dtype)
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping

import numpy as np
from tqdm.auto import tqdm

from evomm.adapters import Checkpoint
from evomm.errors import operator_failures
from evomm.finite import RAW_COUNTS, output_error, parent_error, raw_finite
from evomm.operators import MergeOperator, TensorContext
from evomm.plan import MergePlan, TensorStep, step_aliases, tensor_seed
from evomm.safetensors_io import RAW_NUMPY

#: Environment switch: ``0`` sends every merge through torch.
ENV_ENGINE = "EVOMM_CPU_ENGINE"
#: Dtypes the engine converts between (stored, compute and output).
DTYPES = ("bfloat16", "float16", "float32")


def _widen(raw: np.ndarray, dtype: str) -> np.ndarray:
    """Raw entries of ``dtype`` as float32 (exact)."""
    if dtype == "bfloat16":
        return (raw.astype(np.uint32) << np.uint32(16)).view(np.float32)
    return raw.astype(np.float32, copy=False)


def _narrow(f: np.ndarray, dtype: str) -> np.ndarray:
    """float32 values as raw entries of ``dtype``, rounded to nearest even as torch does
    (bfloat16: torch's ``round_to_nearest_even``, NaN -> ``0x7FC0``)."""
    if dtype == "float32":
        return f
    if dtype == "float16":
        with np.errstate(over="ignore"):  # beyond float16's range is inf, as in torch
            return f.astype(np.float16)
    u = f.view(np.uint32)
    out = ((u + np.uint32(0x7FFF) + ((u >> np.uint32(16)) & np.uint32(1))) >> np.uint32(16)).astype(np.uint16)
    out[np.isnan(f)] = np.uint16(0x7FC0)
    return out


def convert(raw: np.ndarray, src: str, dst: str) -> np.ndarray:
    """``Tensor.to(dst)`` of a tensor of dtype ``src`` held as raw entries (:data:`RAW_NUMPY`).

    Example:
        >>> convert(np.array([1.0, 2.5], np.float32), "float32", "bfloat16")
        array([16256, 16416], dtype=uint16)
    """
    if src == dst:
        return raw
    return _narrow(_widen(raw, src), dst)


def unsupported(plan: MergePlan, checkpoints: Mapping[str, Checkpoint], op: MergeOperator, writer: object) -> str | None:
    """Why the engine cannot run ``plan`` (None when it can).

    Example:
        >>> unsupported(plan, cks, op, writer)     # doctest: +SKIP
        'operator della has no torch-free form (merge_arrays)'
    """
    if os.environ.get(ENV_ENGINE, "1").strip().lower() in ("0", "false", "no", "off"):
        return f"{ENV_ENGINE}=0"
    if not op.merges_arrays():
        return f"operator {plan.operator} has no torch-free form (merge_arrays)"
    if not (callable(getattr(writer, "write_array", None)) and callable(getattr(writer, "expect", None))):
        return f"the donor's writer ({type(writer).__name__}) has no write_array and expect"
    if plan.dtype not in DTYPES or (plan.out_dtype or "float32") not in DTYPES:
        return f"dtype {plan.dtype} -> {plan.out_dtype} is not among {DTYPES}"
    for alias, ck in checkpoints.items():
        if not ck.reads_arrays:
            return f"model {alias!r} cannot be read without torch (read_array)"
    donor = checkpoints[plan.donor]
    for step in plan.steps:
        if step.pad:
            return f"tensor {step.name!r} pads a vocabulary"
        out = plan.out_dtype or donor.layout[step.name].dtype
        if out not in DTYPES:
            return f"tensor {step.name!r} is written as {out}"
        for alias in step_aliases(plan, step):
            dtype = checkpoints[alias].layout[step.name].dtype
            if dtype not in DTYPES:
                return f"tensor {step.name!r} of {alias!r} is stored as {dtype}"
    return None


def merged_arrays(
    plan: MergePlan, checkpoints: Mapping[str, Checkpoint], op: MergeOperator, progress: bool = False
) -> Iterator[tuple[str, np.ndarray, str]]:
    """Yield ``(canonical name, raw merged entries, output dtype)`` for each step of ``plan``,
    as :func:`evomm.execute.merged_tensors` yields tensors (the same values).

    Call only when :func:`unsupported` returned None.

    Raises:
        NonFiniteError: a parent tensor or a merged one holds NaN/Inf and the plan does not
            allow them (:mod:`evomm.finite`; one pass over each array already in memory).
    """
    donor = checkpoints[plan.donor]
    compute = plan.dtype
    check = not plan.allow_nonfinite
    steps = tqdm(plan.steps, desc=f"merging ({plan.operator})", unit="tensor", disable=not progress)
    for step in steps:
        out_dtype = plan.out_dtype or donor.layout[step.name].dtype
        inputs = {alias: _read(checkpoints[alias], alias, step.name, compute, check) for alias in step_aliases(plan, step)}
        if step.action == "copy":
            merged = inputs[step.source or plan.donor]
        else:
            merged = _merge_step(op, plan, step, inputs, compute)
        del inputs
        out = convert(merged, compute, out_dtype)
        if check and not raw_finite(out, out_dtype):
            raise output_error(RAW_COUNTS, plan.operator, step.name)
        yield step.name, out, out_dtype


def _read(ck: Checkpoint, alias: str, name: str, compute: str, check: bool) -> np.ndarray:
    """``ck``'s tensor ``name`` in its shape, converted to the compute dtype (raw); with
    ``check``, refused when it holds NaN or Inf."""
    info = ck.layout[name]
    raw = ck.read_array(name)
    if check and not raw_finite(raw, info.dtype):
        raise parent_error(RAW_COUNTS, alias, ck.ref.path, name)
    return convert(raw, info.dtype, compute).reshape(tuple(info.shape))


def _merge_step(op: MergeOperator, plan: MergePlan, step: TensorStep, inputs: dict[str, np.ndarray], compute: str) -> np.ndarray:
    arrays = [inputs[ref.name] for ref in plan.models]
    base = inputs[plan.base.name] if plan.base is not None else None
    ctx = TensorContext(step.name, step.kind, step.layer, tensor_seed(plan.seed, step.name))
    params = dict(step.global_params), [dict(p) for p in step.model_params]
    with operator_failures(plan.operator, step.name):
        merged = op.merge_arrays(arrays, base, *params, ctx, compute)
        if merged is None:  # declined for this tensor: the operator's torch form, the same bits
            merged = _merge_with_torch(op, arrays, base, params, ctx, compute)
    return merged


def _merge_with_torch(
    op: MergeOperator, arrays: list[np.ndarray], base: np.ndarray | None,
    params: tuple[dict[str, float], list[dict[str, float]]], ctx: TensorContext, compute: str,
) -> np.ndarray:
    """``op.merge`` on torch tensors over the arrays (shaped as the tensor: some operators work
    per row), its result back as raw entries of the compute dtype."""
    import torch

    def tensor(raw: np.ndarray) -> torch.Tensor:
        t = torch.from_numpy(np.ascontiguousarray(raw))
        return t.view(torch.bfloat16) if compute == "bfloat16" else t

    merged = op.merge([tensor(a) for a in arrays], None if base is None else tensor(base), *params, ctx)
    flat = merged.detach().to("cpu", getattr(torch, compute)).contiguous().reshape(-1)
    if compute == "bfloat16":
        flat = flat.view(torch.int16)
    return flat.numpy().view(RAW_NUMPY[compute])
