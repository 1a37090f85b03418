"""Torch-free CPU kernels of the built-in operators (:meth:`MergeOperator.merge_arrays`).

They compute exactly what the operators' torch code computes on CPU, operation for operation in
the same order and precision, so the two give the same bits (tests/test_host_merge.py compares
them on random tensors): float32 arithmetic on inputs widened from bfloat16 or float32, rounded
once to the compute dtype at the end, and, where torch fuses a multiply-add (``addcmul_``, which
mergekit's linear uses too), a fused multiply-add here.

Arrays are raw: a bfloat16 tensor is a ``uint16`` array of its bit patterns (NumPy has no
bfloat16), a float32 tensor a ``float32`` array. Each kernel is compiled by numba for the
input types it first meets and cached on disk (``cache=True``), so a later process loads it in
milliseconds; the loops run in parallel over blocks of entries (``prange``).

Written by hand (numba, not NumPy) because NumPy has no fused multiply-add and no bfloat16, and
its unfused passes would write a float32 temporary per operation.
"""

from __future__ import annotations

import numpy as np
from llvmlite import ir
from numba import njit, prange
from numba.core import types
from numba.core.extending import intrinsic, overload

#: Entries per parallel block.
BLOCK = 1 << 14


@intrinsic
def _fma32(typingctx, a, b, c):  # type: ignore[no-untyped-def]
    """``a * b + c`` with one rounding (LLVM's ``fma``), as torch's vectorised ``addcmul``."""
    sig = types.float32(types.float32, types.float32, types.float32)

    def codegen(context, builder, signature, args):  # type: ignore[no-untyped-def]
        return builder.fma(*args)

    return sig, codegen


@intrinsic
def _bits_to_f32(typingctx, u):  # type: ignore[no-untyped-def]
    sig = types.float32(types.uint32)

    def codegen(context, builder, signature, args):  # type: ignore[no-untyped-def]
        return builder.bitcast(args[0], ir.FloatType())

    return sig, codegen


@intrinsic
def _f32_to_bits(typingctx, f):  # type: ignore[no-untyped-def]
    sig = types.uint32(types.float32)

    def codegen(context, builder, signature, args):  # type: ignore[no-untyped-def]
        return builder.bitcast(args[0], ir.IntType(32))

    return sig, codegen


def _load(x, i):  # type: ignore[no-untyped-def]
    """Entry ``i`` of raw array ``x`` as float32 (exact)."""


@overload(_load, inline="always")
def _load_impl(x, i):  # type: ignore[no-untyped-def]
    if x.dtype == types.uint16:
        return lambda x, i: _bits_to_f32(np.uint32(x[i]) << np.uint32(16))
    if x.dtype == types.float32:
        return lambda x, i: x[i]
    return None


def _store(out, i, v):  # type: ignore[no-untyped-def]
    """Round float32 ``v`` to ``out``'s dtype (bfloat16: to nearest even, NaN -> 0x7FC0, as
    torch's ``round_to_nearest_even``) and store it at ``i``."""


@overload(_store, inline="always")
def _store_impl(out, i, v):  # type: ignore[no-untyped-def]
    if out.dtype == types.uint16:
        def impl(out, i, v):  # type: ignore[no-untyped-def]
            if v != v:
                out[i] = np.uint16(0x7FC0)
            else:
                u = _f32_to_bits(v)
                out[i] = np.uint16((u + np.uint32(0x7FFF) + ((u >> np.uint32(16)) & np.uint32(1))) >> np.uint32(16))
        return impl
    if out.dtype == types.float32:
        def impl32(out, i, v):  # type: ignore[no-untyped-def]
            out[i] = v
        return impl32
    return None


@njit(parallel=True, nogil=True, cache=True)
def linear(xs, coef, total, normalize, out):  # type: ignore[no-untyped-def]
    """``Linear.merge``: ``acc = x0 * c0``, then ``acc = fma(x_i, c_i, acc)`` per model, then
    ``acc / total`` when normalising; ``xs`` a tuple of equal-length flat raw arrays."""
    n = out.shape[0]
    blocks = (n + BLOCK - 1) // BLOCK
    for k in prange(blocks):
        stop = min(n, (k + 1) * BLOCK)
        for i in range(k * BLOCK, stop):
            acc = _load(xs[0], i) * coef[0]
            for m in range(1, len(xs)):
                acc = _fma32(_load(xs[m], i), coef[m], acc)
            if normalize:
                acc = acc / total
            _store(out, i, acc)


@njit(parallel=True, nogil=True, cache=True)
def task_arithmetic(xs, base, weights, divisor, normalize, lam, scale, out):  # type: ignore[no-untyped-def]
    """``TaskArithmetic.merge`` (no sparsification, no consensus): per entry
    ``mixed = sum_i (x_i - b) * w_i`` (added in model order), ``/ divisor`` when normalising,
    ``* lam`` when ``scale``, ``+ b``."""
    n = out.shape[0]
    blocks = (n + BLOCK - 1) // BLOCK
    for k in prange(blocks):
        stop = min(n, (k + 1) * BLOCK)
        for i in range(k * BLOCK, stop):
            b = _load(base, i)
            mixed = (_load(xs[0], i) - b) * weights[0]
            for m in range(1, len(xs)):
                mixed = mixed + (_load(xs[m], i) - b) * weights[m]
            if normalize:
                mixed = mixed / divisor
            if scale:
                mixed = mixed * lam
            _store(out, i, mixed + b)
