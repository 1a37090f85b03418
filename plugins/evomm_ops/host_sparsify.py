"""Sparsification without torch, for the operators' torch-free forms (``merge_arrays``).

What is kept of a task vector is decided here as :mod:`evomm_ops.sparsify` decides it on CPU,
to the same entries and the same factors (tests/test_host_merge.py):

* **DARE**: model ``i``'s mask keeps entry ``k`` when its 16-bit draw is below
  ``round(density * 65536)``; the draws are the 16-bit quarters of the words of a SplitMix64
  stream seeded with :func:`dare_seed` ``(ctx.seed, i)`` (:func:`evomm_ops.host_kernels.dare_mask`;
  the torch path draws the same ones, on every device). The rescale factor comes from
  :func:`evomm_ops.host_kernels.dare_l1_norms`, whose sums are those of
  :func:`evomm_ops.host_kernels.l1_norms`, which the torch path calls.
* **Rank windows** (TIES' top-k, Model Breadcrumbs): the bounds of the ascending-rank window
  ``[lo, hi)`` of ``|x - b|``, ties ranked by flat index, as
  :class:`~evomm_ops.sparsify.RankBound` values: the bound's magnitude is the exact order
  statistic and the cut the flat index of the first tied entry on the window's side, whatever
  way either side finds them (here: a strided sample brackets the rank, the entries inside the
  bracket are selected with ``np.partition``).
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

import numpy as np

#: Below this many entries the order statistic is selected on the whole tensor.
SAMPLE_MIN_NUMEL = 1 << 18
#: Size of the strided sample that brackets a rank.
SAMPLE_SIZE = 1 << 16
#: Resolution of DARE's keep probability (16-bit draws, four per 64-bit word).
DARE_LEVELS = 1 << 16
#: SplitMix64's constants (Steele, Lea and Flood, "Fast splittable pseudorandom number
#: generators", OOPSLA 2014; the output function is Stafford's "Mix13"): the increment of its
#: state and the two multipliers of its output function. DARE's draws are its words.
SPLITMIX64 = (0x9E3779B97F4A7C15, 0xBF58476D1CE4E5B9, 0x94D049BB133111EB)

_T = TypeVar("_T")
_R = TypeVar("_R")

#: Threads that run the NumPy work of several models of one tensor at once (TIES' band
#: extraction): NumPy's loops are single-threaded and release the GIL. Made on first use.
_POOL: ThreadPoolExecutor | None = None


def _forget_pool() -> None:
    """In a forked child the pool's threads do not exist: make the next call start a new pool."""
    global _POOL
    _POOL = None


if hasattr(os, "register_at_fork"):  # not on Windows
    os.register_at_fork(after_in_child=_forget_pool)


def parallel_map(fn: Callable[[_T], _R], items: Sequence[_T]) -> list[_R]:
    """``[fn(x) for x in items]``, in :data:`_POOL`'s threads when there is more than one item.

    Example:
        >>> parallel_map(abs, [-1, -2])
        [1, 2]
    """
    global _POOL
    if len(items) <= 1:
        return [fn(x) for x in items]
    if _POOL is None:
        _POOL = ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1), thread_name_prefix="evomm-sparsify")
    return list(_POOL.map(fn, items))


def dare_seed(seed: int, index: int) -> int:
    """The 64-bit seed of model ``index``'s DARE mask for a tensor whose seed is ``seed``
    (``TensorContext.seed``): independent of the other models and their densities.

    Example:
        >>> dare_seed(7, 0) == dare_seed(7, 0) != dare_seed(7, 1)
        True
    """
    return int(np.random.SeedSequence(seed % 2**64, spawn_key=(index,)).generate_state(1, np.uint64)[0])


def dare_level(density: float) -> int:
    """The keep probability ``density`` in 1/65536ths: an entry is kept when its 16-bit draw is
    below this.

    Example:
        >>> dare_level(0.5), dare_level(1e-6), dare_level(1.0)
        (32768, 0, 65536)
    """
    return round(density * DARE_LEVELS)


def dare_mask(n: int, density: float, seed: int) -> np.ndarray:
    """A flat bool keep mask of ``n`` entries drawn from the SplitMix64 stream ``seed``
    (:func:`evomm_ops.host_kernels.dare_mask`).

    Example:
        >>> m = dare_mask(1000, 0.3, dare_seed(0, 0))
        >>> 200 < int(m.sum()) < 400
        True
    """
    from evomm_ops import host_kernels  # numba: imported when a merge first needs it

    out = np.empty(n, np.bool_)
    host_kernels.dare_mask(np.uint64(seed), dare_level(density), out)
    return out


def dare_scales(xs: Sequence[np.ndarray], base: np.ndarray, seeds: Sequence[int], densities: Sequence[float]) -> np.ndarray:
    """DARE's L1 rescale factors ``sum |d| / sum |d| [mask]`` (1 when either is below 1e-7, as
    mergekit) of each model's flat raw array against ``base``, each under the mask
    :func:`dare_mask` draws from its seed and density, in one pass that writes no mask.

    Example:
        >>> x = np.ones(1000, np.float32)
        >>> float(dare_scales([x], np.zeros(1000, np.float32), [dare_seed(0, 0)], [0.5])[0]) > 1.8
        True
    """
    from evomm_ops import host_kernels

    norms = np.empty((len(xs), 2))
    host_kernels.dare_l1_norms(
        tuple(xs), base, np.array(seeds, np.uint64), np.array([dare_level(d) for d in densities], np.int64), norms
    )
    scales = np.ones(len(xs), np.float32)
    for j, (before, after) in enumerate(norms):
        if before >= 1e-7 and after >= 1e-7:
            scales[j] = np.float32(before / after)
    return scales


def bracket(s: int, q: float) -> tuple[int, int]:
    """1-based ranks in a sample of ``s`` that bracket quantile ``q`` of the population with a
    4-sigma binomial margin (plus 8 for small samples).

    Example:
        >>> bracket(1000, 0.5)
        (428, 572)
    """
    margin = 4.0 * math.sqrt(s * q * (1.0 - q)) + 8.0
    return math.floor(q * s - margin), math.ceil(q * s + margin)


def _kth(values: np.ndarray, rank: int) -> np.float32:
    """The ``rank``-th smallest entry (1-based); NaN ranks highest, as ``torch.kthvalue``.

    Up to a million entries NumPy's vectorised sort is the faster way (0.7 ms for the 64K
    sample, ~1 ms for a 96K candidate band, where ``np.partition`` took 1.7 and 7 ms: merged
    magnitudes of bfloat16 models take few distinct values, and introselect slows on ties)."""
    if values.size <= 1 << 20:
        return np.sort(values)[rank - 1]
    return np.partition(values, rank - 1)[rank - 1]


def kth_with_ties(mag: np.ndarray, rank: int) -> tuple[np.float32, int, np.ndarray]:
    """``(v, below, tied)``: the ``rank``-th smallest magnitude, how many are smaller, and the
    ascending flat indices of those equal to it (:func:`evomm_ops.sparsify.kth_smallest_ties`).

    Example:
        >>> v, below, tied = kth_with_ties(np.array([2.0, 1.0, 2.0, 3.0], np.float32), 3)
        >>> float(v), below, tied.tolist()
        (2.0, 1, [0, 2])
    """
    n = mag.size
    if n >= SAMPLE_MIN_NUMEL:
        sample = np.sort(mag[:: (n // SAMPLE_SIZE) | 1])
        lo_rank, hi_rank = bracket(sample.size, rank / n)
        lo = sample[lo_rank - 1] if lo_rank >= 1 else None
        hi = sample[hi_rank - 1] if hi_rank <= sample.size else None
        if lo is not None or hi is not None:
            below, positions = band(mag, lo, hi)
            if below < rank <= below + positions.size:
                candidates = mag[positions]
                v = _kth(candidates, rank - below)
                return v, below + int(np.count_nonzero(candidates < v)), positions[candidates == v]
    v = _kth(mag, rank)
    return v, int(np.count_nonzero(mag < v)), np.flatnonzero(mag == v)


def band(v: np.ndarray, lo: float | None, hi: float | None) -> tuple[int, np.ndarray]:
    """``(count of v < lo, ascending flat positions of lo <= v <= hi)`` of a float array, the
    bounds compared in ``v``'s dtype; a None bound is open. NaN is never below ``lo`` and is in
    the band only when ``hi`` is open.

    Example:
        >>> band(np.array([0.5, 2.0, 1.0, 3.0], np.float32), 1.0, 2.0)
        (1, array([1, 2]))
    """
    kind = v.dtype.type
    below, inside = 0, None
    if lo is not None:
        under = np.less(v, kind(lo))
        below = int(np.count_nonzero(under))
        inside = np.logical_not(under, out=under)
    if hi is not None:
        upper = np.less_equal(v, kind(hi))
        inside = upper if inside is None else np.logical_and(inside, upper, out=inside)
    assert inside is not None  # the caller passes at least one bound
    return below, np.flatnonzero(inside)


#: Entries per chunk of :func:`window_bounds`' pass: the chunk's magnitudes (1 MiB of float32)
#: stay in cache while the bands are extracted, instead of a whole-tensor magnitude array
#: written to and read back from memory.
STREAM_CHUNK = 1 << 18


def window_bounds(
    x: np.ndarray, base: np.ndarray, lo: int, hi: int
) -> tuple[tuple[float, int] | None, tuple[float, int] | None]:
    """The rank window ``[lo, hi)`` of the magnitudes ``|x - base|`` (flat raw arrays, float32
    arithmetic) as its two bounds, each ``(value, cut)`` (:class:`~evomm_ops.sparsify.RankBound`)
    or None where the window is open on that side.

    Large tensors take one chunked pass: a strided sample brackets each bound's rank, and each
    chunk's magnitudes, computed into a reused buffer, give the count below the bracket and the
    candidates inside it; a bracket that misses (or a small tensor) falls back to selecting on
    the whole tensor's magnitudes. Either way the bounds are exact.

    Example:
        >>> mags = np.array([5.0, 1.0, 3.0, 3.0], np.float32)
        >>> window_bounds(mags, np.zeros(4, np.float32), 2, 4)  # keeps 5.0 and the second 3.0
        ((3.0, 3), None)
    """
    from evomm_ops import host_kernels  # numba: imported when a merge first needs it

    n = base.size
    ends = ([(lo + 1, lo)] if lo > 0 else []) + ([(hi, hi)] if hi < n else [])
    found = _streamed_ends(x, base, ends) if n >= SAMPLE_MIN_NUMEL and ends else None
    if found is None:
        mag = np.empty(n, np.float32)
        host_kernels.abs_diff(x, base, mag)
        found = [kth_with_ties(mag, rank) for rank, _ in ends]
    bounds = []
    for (_, edge), (v, under, tied) in zip(ends, found):
        split = edge - under
        bounds.append((float(v), int(tied[split]) if split < tied.size else n))
    low = bounds[0] if lo > 0 else None
    high = bounds[-1] if hi < n else None
    return low, high


def _streamed_ends(
    x: np.ndarray, base: np.ndarray, ends: list[tuple[int, int]]
) -> list[tuple[np.float32, int, np.ndarray]] | None:
    """:func:`kth_with_ties` of ``|x - base|`` for each end's rank, in one chunked pass; None
    when a sample's bracket misses its rank (the caller then selects on the whole tensor)."""
    from evomm_ops import host_kernels

    n = base.size
    step = (n // SAMPLE_SIZE) | 1
    sample = np.empty((n + step - 1) // step, np.float32)
    host_kernels.abs_diff(np.ascontiguousarray(x[::step]), np.ascontiguousarray(base[::step]), sample)
    sample.sort()
    brackets = []
    for rank, _ in ends:
        lo_rank, hi_rank = bracket(sample.size, rank / n)
        low = sample[lo_rank - 1] if lo_rank >= 1 else None
        high = sample[hi_rank - 1] if hi_rank <= sample.size else None
        if low is None and high is None:
            return None
        brackets.append((low, high))
    below = [0] * len(ends)
    values: list[list[np.ndarray]] = [[] for _ in ends]
    positions: list[list[np.ndarray]] = [[] for _ in ends]
    buf = np.empty(min(n, STREAM_CHUNK), np.float32)
    for start in range(0, n, STREAM_CHUNK):
        stop = min(n, start + STREAM_CHUNK)
        mag = buf[: stop - start]
        host_kernels.abs_diff(x[start:stop], base[start:stop], mag)
        for j, (low, high) in enumerate(brackets):
            count, inside = band(mag, low, high)
            below[j] += count
            values[j].append(mag[inside])
            positions[j].append(inside + start)
    found = []
    for j, (rank, _) in enumerate(ends):
        candidates = np.concatenate(values[j])
        if not below[j] < rank <= below[j] + candidates.size:
            return None
        v = _kth(candidates, rank - below[j])
        under = below[j] + int(np.count_nonzero(candidates < v))
        found.append((v, under, np.concatenate(positions[j])[candidates == v]))
    return found
