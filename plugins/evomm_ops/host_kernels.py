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

The parallel loops run on numba's threading layer (GNU OpenMP where available, as on the
project's machines), which is thread-safe but not fork-safe: a process that forks after merging
here should merge in its children only if they were started with ``spawn`` (evomm's own worker
processes are).
"""

from __future__ import annotations

import numpy as np
from llvmlite import ir
from numba import njit, prange
from numba.core import types
from numba.core.extending import intrinsic, overload

from evomm_ops.host_sparsify import SPLITMIX64

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


SPLITMIX_GAMMA, _MIX1, _MIX2 = (np.uint64(c) for c in SPLITMIX64)


@njit(inline="always")
def splitmix64(seed, counter):  # type: ignore[no-untyped-def]
    """Output ``counter`` (0-based) of the SplitMix64 generator whose state starts at ``seed``:
    the state after ``counter + 1`` steps, mixed. A counter-based generator, so any word of a
    stream is computed on its own, in any order and in parallel; uint64 arithmetic wraps."""
    z = seed + (counter + np.uint64(1)) * SPLITMIX_GAMMA
    z = (z ^ (z >> np.uint64(30))) * _MIX1
    z = (z ^ (z >> np.uint64(27))) * _MIX2
    return z ^ (z >> np.uint64(31))


@njit(inline="always")
def _draws(seed, start, count, words):  # type: ignore[no-untyped-def]
    """DARE's 16-bit draws of entries ``start .. start + count`` (``start`` a multiple of 4) as a
    uint16 view of ``words``: entry ``i`` is bits ``16 * (i % 4)`` up of word ``i // 4`` of the
    SplitMix64 stream ``seed`` (a little-endian view of the words)."""
    first = np.uint64(start >> 2)
    for w in range((count + 3) >> 2):
        words[w] = splitmix64(seed, first + np.uint64(w))
    return words.view(np.uint16)


@njit(parallel=True, nogil=True, cache=True)
def dare_mask(seed, level, out):  # type: ignore[no-untyped-def]
    """DARE's keep mask: ``out[i] = draw_i < level`` (bool), with :func:`_draws`' draws of the
    stream ``seed``; ``level`` is the keep probability in 1/65536ths."""
    n = out.shape[0]
    blocks = (n + BLOCK - 1) // BLOCK
    for k in prange(blocks):
        start = k * BLOCK
        count = min(n, start + BLOCK) - start
        u = _draws(np.uint64(seed), start, count, np.empty(BLOCK // 4, np.uint64))
        for t in range(count):
            out[start + t] = u[t] < level


#: Columns of the ``windows`` argument of :func:`task_vectors`, per model: a low bound
#: (present, value, cut) and a high bound (present, value, cut), as
#: :class:`evomm_ops.sparsify.RankBound` holds them.
WINDOW_COLUMNS = 6


@njit(inline="always")
def _window_pass(d, start, count, value, cut, low):  # type: ignore[no-untyped-def]
    """Multiply ``d[:count]`` (entries ``start..``) by the 0/1 of one rank-window bound, as
    ``Keep._window_mask`` computes it: below flat index ``cut`` a low bound keeps ``|d| > v``
    and a high bound ``|d| <= v``; from ``cut`` on, ``|d| >= v`` and ``|d| < v``. Two plain
    loops (split at ``cut``) that LLVM vectorises."""
    split = min(max(cut - start, 0), count)
    v = np.float32(value)
    one, zero = np.float32(1.0), np.float32(0.0)
    if low:
        for t in range(split):
            d[t] = d[t] * (one if abs(d[t]) > v else zero)
        for t in range(split, count):
            d[t] = d[t] * (one if abs(d[t]) >= v else zero)
    else:
        for t in range(split):
            d[t] = d[t] * (one if abs(d[t]) <= v else zero)
        for t in range(split, count):
            d[t] = d[t] * (one if abs(d[t]) < v else zero)


@njit(parallel=True, nogil=True, cache=True)
def task_vectors(xs, base, seeds, levels, use_mask, windows, coef, consensus, normalize, divisor, lam, use_lam, out):  # type: ignore[no-untyped-def]
    """``GeneralizedTaskArithmetic.merge`` once every model's sparsification is decided: per
    entry and model ``d = x - b`` (``+0.0`` where ``use_mask[m] == 2``), times the model's DARE
    mask where ``use_mask[m] == 1`` (drawn here, as :func:`dare_mask` with ``seeds[m]`` and
    ``levels[m]``: no mask array is written or read), times its rank window's 0/1
    (``windows[m]``: present, value, cut of a low and of a high bound), times its rescale factor
    and weight (``coef[m]``); then TIES sign election and disjoint sums (``consensus``) or the
    plain sum, ``/ divisor`` when normalising, ``* lam`` when ``use_lam``, ``+ b``. The float32
    operations and their order are the torch code's; each step is a loop over a block of
    entries, which LLVM vectorises.

    (A window's two bounds multiply ``d`` one after the other, where torch multiplies ``d`` by
    their product: the same bits, as each factor is 0 or 1.)"""
    n = out.shape[0]
    m = len(xs)
    blocks = (n + BLOCK - 1) // BLOCK
    one, zero = np.float32(1.0), np.float32(0.0)
    for k in prange(blocks):
        start = k * BLOCK
        count = min(n, start + BLOCK) - start
        b = np.empty(BLOCK, np.float32)
        for t in range(count):
            b[t] = _load(base, start + t)
        d = np.empty((m, BLOCK), np.float32)
        words = np.empty(BLOCK // 4, np.uint64)
        for j in range(m):
            dj = d[j]
            x = xs[j]
            if use_mask[j] == 2:  # the whole task vector dropped (Keep.zero): +0.0
                for t in range(count):
                    dj[t] = zero
            else:
                for t in range(count):
                    dj[t] = _load(x, start + t) - b[t]
            if use_mask[j] == 1:
                u = _draws(seeds[j], start, count, words)
                level = levels[j]
                for t in range(count):
                    dj[t] = dj[t] * (one if u[t] < level else zero)
            if windows[j, 0] != 0.0:
                _window_pass(dj, start, count, windows[j, 1], np.int64(windows[j, 2]), True)
            if windows[j, 3] != 0.0:
                _window_pass(dj, start, count, windows[j, 4], np.int64(windows[j, 5]), False)
            s, w = coef[j, 0], coef[j, 1]
            if s != one:  # torch skips a missing factor; x * 1 would only requiet a NaN
                for t in range(count):
                    dj[t] = dj[t] * s
            for t in range(count):
                dj[t] = dj[t] * w
        r = np.empty(BLOCK, np.float32)
        if consensus:
            sign = np.empty(BLOCK, np.float32)
            for t in range(count):
                sign[t] = d[0, t]
            for j in range(1, m):
                for t in range(count):
                    sign[t] = sign[t] + d[j, t]
            for t in range(count):
                sign[t] = one if sign[t] >= 0 else -one
            div = np.empty(BLOCK, np.float32)
            for j in range(m):
                w = coef[j, 1]
                for t in range(count):
                    agree = one if d[j, t] * sign[t] > 0 else zero
                    if j == 0:
                        r[t] = d[j, t] * agree
                        div[t] = agree * w
                    else:
                        r[t] = r[t] + d[j, t] * agree
                        div[t] = div[t] + agree * w
            for t in range(count):
                if div[t] == 0:
                    div[t] = div[t] + one
            if normalize:
                for t in range(count):
                    r[t] = r[t] / div[t]
        else:
            for t in range(count):
                r[t] = d[0, t]
            for j in range(1, m):
                for t in range(count):
                    r[t] = r[t] + d[j, t]
            if normalize:
                for t in range(count):
                    r[t] = r[t] / divisor
        if use_lam:
            for t in range(count):
                r[t] = r[t] * lam
        for t in range(count):
            _store(out, start + t, r[t] + b[t])


@njit(parallel=True, nogil=True, cache=True)
def abs_diff(x, base, out):  # type: ignore[no-untyped-def]
    """``out = |x - b|`` in float32 (the magnitudes a rank window is chosen on)."""
    n = out.shape[0]
    blocks = (n + BLOCK - 1) // BLOCK
    for k in prange(blocks):
        for i in range(k * BLOCK, min(n, (k + 1) * BLOCK)):
            out[i] = abs(_load(x, i) - _load(base, i))


#: Accumulators of :func:`l1_norms` per block: a fixed number, so the order of additions (and
#: so the result) does not depend on the CPU's vector width, while LLVM still vectorises.
LANES = 8


@njit(parallel=True, nogil=True, cache=True)
def l1_norms(x, base, mask):  # type: ignore[no-untyped-def]
    """DARE's rescale norms: ``(sum |x - b|, sum |x - b| [mask])``. Each float32 magnitude is
    added in float64 into one of :data:`LANES` accumulators (entry ``i`` into lane ``i % 8``)
    per block; a block's lanes are then added in lane order and the blocks' sums in block order:
    a fixed order, the same on every machine and run (the torch path calls this too on CPU)."""
    n = x.shape[0]
    blocks = (n + BLOCK - 1) // BLOCK
    partial = np.zeros((blocks, 2))
    for k in prange(blocks):
        start = k * BLOCK
        count = min(n, start + BLOCK) - start
        before = np.zeros(LANES)
        after = np.zeros(LANES)
        for t0 in range(0, count - count % LANES, LANES):
            for lane in range(LANES):
                i = start + t0 + lane
                a = np.float64(abs(_load(x, i) - _load(base, i)))
                before[lane] += a
                after[lane] += a if mask[i] else 0.0
        for t in range(count - count % LANES, count):
            i = start + t
            a = np.float64(abs(_load(x, i) - _load(base, i)))
            before[t % LANES] += a
            after[t % LANES] += a if mask[i] else 0.0
        total_before = 0.0
        total_after = 0.0
        for lane in range(LANES):
            total_before += before[lane]
            total_after += after[lane]
        partial[k, 0] = total_before
        partial[k, 1] = total_after
    before_sum = 0.0
    after_sum = 0.0
    for k in range(blocks):
        before_sum += partial[k, 0]
        after_sum += partial[k, 1]
    return before_sum, after_sum


@njit(parallel=True, nogil=True, cache=True)
def dare_l1_norms(xs, base, seeds, levels, out):  # type: ignore[no-untyped-def]
    """:func:`l1_norms` of every model of ``xs`` at once, each under its DARE mask drawn here
    (:func:`dare_mask` with ``seeds[m]``, ``levels[m]``): ``out[m] = (before, after)``, summed
    in :func:`l1_norms`' order, so the same float64 values as ``l1_norms(x, base,
    dare_mask(...))``, in one pass that reads the base once and writes no mask."""
    n = base.shape[0]
    m = len(xs)
    blocks = (n + BLOCK - 1) // BLOCK
    partial = np.zeros((blocks, m, 2))
    for k in prange(blocks):
        start = k * BLOCK
        count = min(n, start + BLOCK) - start
        b = np.empty(BLOCK, np.float32)
        for t in range(count):
            b[t] = _load(base, start + t)
        words = np.empty(BLOCK // 4, np.uint64)
        for j in range(m):
            x = xs[j]
            u = _draws(seeds[j], start, count, words)
            level = levels[j]
            before = np.zeros(LANES)
            after = np.zeros(LANES)
            for t0 in range(0, count - count % LANES, LANES):
                for lane in range(LANES):
                    t = t0 + lane
                    a = np.float64(abs(_load(x, start + t) - b[t]))
                    before[lane] += a
                    after[lane] += a if u[t] < level else 0.0
            for t in range(count - count % LANES, count):
                a = np.float64(abs(_load(x, start + t) - b[t]))
                before[t % LANES] += a
                after[t % LANES] += a if u[t] < level else 0.0
            total_before = 0.0
            total_after = 0.0
            for lane in range(LANES):
                total_before += before[lane]
                total_after += after[lane]
            partial[k, j, 0] = total_before
            partial[k, j, 1] = total_after
    for j in range(m):
        before_sum = 0.0
        after_sum = 0.0
        for k in range(blocks):
            before_sum += partial[k, j, 0]
            after_sum += partial[k, j, 1]
        out[j, 0] = before_sum
        out[j, 1] = after_sum
