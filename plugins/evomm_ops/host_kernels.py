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

Every loop indexes a per-block slice (``x[start:start + count]``) from 0, never the whole array
at ``start + t``: a ``prange`` block's bounds are run-time values that LLVM cannot prove
non-negative, so whole-array indexing keeps numba's negative-index wraparound in every access
and the loops do not vectorise. Measured on the project's 2-core VM (DARE norms of two bf16
models, 2 threads): 1.6-2.0 ns an entry with whole-array indexing, 0.6-0.8 with slices.

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
#: Entries each step of a fused kernel works on at once (a block is done tile by tile), so that
#: its float32 scratch stays in the L1 cache. Measured on the project's 2-core VM (DARE-TIES of
#: two bf16 models, 2 threads): 0.88-0.94 ns an entry with whole blocks, 0.73-0.78 with tiles.
TILE = 512


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
        acc = np.empty(TILE, np.float32)
        for start in range(k * BLOCK, min(n, (k + 1) * BLOCK), TILE):
            stop = min(n, start + TILE)
            count = stop - start
            x0 = xs[0][start:stop]
            c0 = coef[0]
            for t in range(count):
                acc[t] = _load(x0, t) * c0
            for m in range(1, len(xs)):
                xm = xs[m][start:stop]
                cm = coef[m]
                for t in range(count):
                    acc[t] = _fma32(_load(xm, t), cm, acc[t])
            if normalize:
                for t in range(count):
                    acc[t] = acc[t] / total
            o = out[start:stop]
            for t in range(count):
                _store(o, t, acc[t])


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
        o = out[start:start + count]
        lv = np.uint32(level)
        for t in range(count):
            o[t] = np.uint32(u[t]) < lv


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
    operations and their order are the torch code's; each step is a loop over a tile of
    :data:`TILE` entries, which LLVM vectorises.

    (A window's two bounds multiply ``d`` one after the other, where torch multiplies ``d`` by
    their product: the same bits, as each factor is 0 or 1.)"""
    n = out.shape[0]
    m = len(xs)
    blocks = (n + BLOCK - 1) // BLOCK
    one, zero = np.float32(1.0), np.float32(0.0)
    for k in prange(blocks):
        b = np.empty(TILE, np.float32)
        d = np.empty((m, TILE), np.float32)
        words = np.empty(TILE // 4, np.uint64)
        r = np.empty(TILE, np.float32)
        sign = np.empty(TILE, np.float32)
        div = np.empty(TILE, np.float32)
        for start in range(k * BLOCK, min(n, (k + 1) * BLOCK), TILE):
            count = min(n, start + TILE) - start
            bs = base[start:start + count]
            for t in range(count):
                b[t] = _load(bs, t)
            for j in range(m):
                dj = d[j]
                x = xs[j][start:start + count]
                if use_mask[j] == 2:  # the whole task vector dropped (Keep.zero): +0.0
                    for t in range(count):
                        dj[t] = zero
                else:
                    for t in range(count):
                        dj[t] = _load(x, t) - b[t]
                if use_mask[j] == 1:
                    u = _draws(seeds[j], start, count, words)
                    level = np.uint32(levels[j])  # compared as uint32: 16 lanes, where int64 has 8
                    for t in range(count):
                        dj[t] = dj[t] * (one if np.uint32(u[t]) < level else zero)
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
            if consensus:
                for t in range(count):
                    sign[t] = d[0, t]
                for j in range(1, m):
                    for t in range(count):
                        sign[t] = sign[t] + d[j, t]
                for t in range(count):
                    sign[t] = one if sign[t] >= 0 else -one
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
            o = out[start:start + count]
            for t in range(count):
                _store(o, t, r[t] + b[t])


@njit(parallel=True, nogil=True, cache=True)
def abs_diff(x, base, out):  # type: ignore[no-untyped-def]
    """``out = |x - b|`` in float32 (the magnitudes a rank window is chosen on)."""
    n = out.shape[0]
    blocks = (n + BLOCK - 1) // BLOCK
    for k in prange(blocks):
        start = k * BLOCK
        stop = min(n, start + BLOCK)
        xk, bk, o = x[start:stop], base[start:stop], out[start:stop]
        for t in range(stop - start):
            o[t] = abs(_load(xk, t) - _load(bk, t))


#: Entries per pairwise sum of the L1 norms: each strip of ``SUM_STRIP`` float64 magnitudes
#: is summed pairwise (:func:`_strip_sums`), and the strips' sums are added in order.
SUM_STRIP = 512


@njit(inline="always")
def _pairwise(v):  # type: ignore[no-untyped-def]
    """The sum of ``v`` (a power-of-two length), pairwise: ``v[t] += v[t + h]`` for
    ``h = len / 2, len / 4, ..., 1``, then ``v[0]`` (``v`` is overwritten). A fixed order, so the
    same result on every machine and run, and each step a loop LLVM vectorises (a running sum
    in a fixed order does not vectorise)."""
    h = v.shape[0] >> 1
    while h > 0:
        for t in range(h):
            v[t] = v[t] + v[t + h]
        h >>= 1
    return v[0]


@njit(inline="always")
def _strip_sums(before, after, count):  # type: ignore[no-untyped-def]
    """One strip's ``(sum before, sum after)``: entries from ``count`` up to :data:`SUM_STRIP`
    set to 0, then each summed :func:`_pairwise`.

    Strips of 512 float64 (4 KB each) stay in the L1 cache; measured on the project's 2-core
    VM (DARE norms of two bf16 models, 2 threads), 0.85 ns an entry when every magnitude of a
    16,384-entry block was stored and then summed pairwise, 0.42-0.48 with strips."""
    for t in range(count, SUM_STRIP):
        before[t] = 0.0
        after[t] = 0.0
    return _pairwise(before), _pairwise(after)


@njit(inline="always")
def _add_in_order(partial, j, out):  # type: ignore[no-untyped-def]
    """``out[j] = (sum of partial[:, j, 0], sum of partial[:, j, 1])``, added in strip order."""
    before_sum = 0.0
    after_sum = 0.0
    for k in range(partial.shape[0]):
        before_sum += partial[k, j, 0]
        after_sum += partial[k, j, 1]
    out[j, 0] = before_sum
    out[j, 1] = after_sum


@njit(parallel=True, nogil=True, cache=True)
def l1_norms(x, base, mask):  # type: ignore[no-untyped-def]
    """DARE's rescale norms: ``(sum |x - b|, sum |x - b| [mask])``. Each float32 magnitude is
    widened to float64, each strip of :data:`SUM_STRIP` summed pairwise (:func:`_strip_sums`)
    and the strips' sums added in order: a fixed order, the same on every machine and run (the
    torch path calls this on CPU, and :func:`dare_l1_norms` sums the same way)."""
    n = x.shape[0]
    strips = (n + SUM_STRIP - 1) // SUM_STRIP
    per_block = BLOCK // SUM_STRIP
    blocks = (strips + per_block - 1) // per_block
    partial = np.zeros((strips, 1, 2))
    for k in prange(blocks):
        before, after = np.empty(SUM_STRIP), np.empty(SUM_STRIP)
        for s in range(k * per_block, min(strips, (k + 1) * per_block)):
            start = s * SUM_STRIP
            stop = min(n, start + SUM_STRIP)
            xs, bs, keep = x[start:stop], base[start:stop], mask[start:stop]
            for t in range(stop - start):
                a = np.float64(abs(_load(xs, t) - _load(bs, t)))
                before[t] = a
                after[t] = a if keep[t] else 0.0
            partial[s, 0, 0], partial[s, 0, 1] = _strip_sums(before, after, stop - start)
    out = np.empty((1, 2))
    _add_in_order(partial, 0, out)
    return out[0, 0], out[0, 1]


@njit(parallel=True, nogil=True, cache=True)
def dare_l1_norms(xs, base, seeds, levels, out):  # type: ignore[no-untyped-def]
    """:func:`l1_norms` of every model of ``xs`` at once, each under its DARE mask drawn here
    (:func:`dare_mask` with ``seeds[m]``, ``levels[m]``): ``out[m] = (before, after)``, summed
    in :func:`l1_norms`' order, so the same float64 values as ``l1_norms(x, base,
    dare_mask(...))``, in one pass that reads the base once and writes no mask."""
    n = base.shape[0]
    m = len(xs)
    strips = (n + SUM_STRIP - 1) // SUM_STRIP
    per_block = BLOCK // SUM_STRIP
    blocks = (strips + per_block - 1) // per_block
    partial = np.zeros((strips, m, 2))
    for k in prange(blocks):
        b = np.empty(SUM_STRIP, np.float32)
        words = np.empty(SUM_STRIP // 4, np.uint64)
        before, after = np.empty(SUM_STRIP), np.empty(SUM_STRIP)
        for s in range(k * per_block, min(strips, (k + 1) * per_block)):
            start = s * SUM_STRIP
            stop = min(n, start + SUM_STRIP)
            count = stop - start
            bk = base[start:stop]
            for t in range(count):
                b[t] = _load(bk, t)
            for j in range(m):
                u = _draws(seeds[j], start, count, words)
                level = np.uint32(levels[j])  # compared as uint32: 16 lanes, where int64 has 8
                x = xs[j][start:stop]
                for t in range(count):
                    a = np.float64(abs(_load(x, t) - b[t]))
                    before[t] = a
                    after[t] = a if np.uint32(u[t]) < level else 0.0
                partial[s, j, 0], partial[s, j, 1] = _strip_sums(before, after, count)
    for j in range(m):
        _add_in_order(partial, j, out)
