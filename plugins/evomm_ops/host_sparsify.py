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
  way either side finds them (here as in :mod:`evomm_ops.rank_select`: a strided sample
  brackets the rank; one pass counts the entries below the bracket and tied with its ends, and
  collects only those strictly inside it, so the cost does not depend on ties).
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
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


def tally(m: np.ndarray, lo: float | None, hi: float | None) -> tuple[int, int, int, np.ndarray]:
    """``(#(m < lo), #(m == lo), #(m == hi), positions strictly between)`` of a float array,
    the bounds compared in ``m``'s dtype; a None bound is open (counts 0; everything on that
    side is between). ``#(m == hi)`` is 0 when ``hi == lo`` (those entries are counted once, as
    ``lo``'s). Positions are ascending int64. NaN is never below or equal to a bound, and is
    between only when ``hi`` is open.

    Example:
        >>> tally(np.array([0.5, 2.0, 1.0, 3.0, 1.0, 1.5], np.float32), 1.0, 2.0)
        (1, 2, 1, array([5]))
    """
    kind = m.dtype.type
    below = int(np.count_nonzero(np.less(m, kind(lo)))) if lo is not None else 0
    eq_lo = int(np.count_nonzero(np.equal(m, kind(lo)))) if lo is not None else 0
    same = lo is not None and hi is not None and lo == hi
    eq_hi = int(np.count_nonzero(np.equal(m, kind(hi)))) if hi is not None and not same else 0
    if same:
        return below, eq_lo, eq_hi, np.empty(0, np.int64)
    if lo is None:
        inside = np.less(m, kind(hi))
    elif hi is None:  # above lo, or NaN (ranked highest)
        inside = np.logical_not(np.less_equal(m, kind(lo)))
    else:
        inside = np.greater(m, kind(lo))
        inside &= np.less(m, kind(hi))
    return below, eq_lo, eq_hi, np.flatnonzero(inside)


#: Entries per chunk of a selection pass: the chunk's magnitudes (1 MiB of float32) stay in
#: cache while they are counted, instead of a whole-tensor magnitude array written to and read
#: back from memory.
STREAM_CHUNK = 1 << 18

#: A bound ``(value, cut)``: :class:`evomm_ops.rank_select.RankBound`'s fields.
Bound = tuple[float, int]


@dataclass
class _Tally:
    """What a pass learnt about the magnitudes around one rank's bracket ``[lo, hi]`` (None:
    open): the count below ``lo``, the per-chunk counts of ``lo`` and of ``hi``, and the
    entries strictly between with their flat positions (:class:`evomm_ops.rank_select.Tally`,
    without torch)."""

    lo: np.float32 | None
    hi: np.float32 | None
    below: int = 0
    eq_lo: list[int] = field(default_factory=list)
    eq_hi: list[int] = field(default_factory=list)
    values: list[np.ndarray] = field(default_factory=list)
    positions: list[np.ndarray] = field(default_factory=list)

    def add(self, m: np.ndarray, start: int) -> None:
        """Count and collect the chunk ``m`` of magnitudes, flat positions ``start..``."""
        below, eq_lo, eq_hi, inside = tally(m, self.lo, self.hi)
        self.below += below
        self.eq_lo.append(eq_lo)
        self.eq_hi.append(eq_hi)
        self.values.append(m[inside])
        self.positions.append(inside + start)

    def bound(self, rank: int, edge: int, n: int, reread: Callable[[int], np.ndarray]) -> Bound | None:
        """The bound of window edge ``edge`` whose value is the ``rank``-th smallest magnitude
        (:func:`evomm_ops.rank_select.resolve`); None when the bracket missed the rank.
        ``reread(c)`` gives chunk ``c``'s magnitudes again (called at most once, when the
        bound ties with the bracket's ``lo`` or ``hi``)."""
        if rank <= self.below:
            return None
        under = self.below
        if rank <= under + sum(self.eq_lo):
            assert self.lo is not None  # eq_lo counts only with a low end
            return float(self.lo), _tied_cut(self.lo, edge - under, self.eq_lo, n, reread)
        under += sum(self.eq_lo)
        values = np.concatenate(self.values)
        if rank <= under + values.size:
            v = _kth(values, rank - under)
            under += int(np.count_nonzero(values < v))
            tied = np.concatenate(self.positions)[values == v]
            split = edge - under
            return float(v), int(tied[split]) if split < tied.size else n
        under += values.size
        if rank <= under + sum(self.eq_hi):
            assert self.hi is not None
            return float(self.hi), _tied_cut(self.hi, edge - under, self.eq_hi, n, reread)
        return None


def _tied_cut(value: np.float32, split: int, counts: list[int], n: int, reread: Callable[[int], np.ndarray]) -> int:
    """The flat index of the ``split``-th (0-based) entry equal to ``value``, from the per-chunk
    counts of that value; ``n`` when there are no more than ``split`` of them."""
    seen = 0
    for c, k in enumerate(counts):
        if seen + k > split:
            m = reread(c)
            return c * STREAM_CHUNK + int(np.flatnonzero(np.equal(m, m.dtype.type(value)))[split - seen])
        seen += k
    return n


def _sampled_bounds(
    sample: np.ndarray, n: int, ends: Sequence[tuple[int, int]], chunk: Callable[[int], np.ndarray]
) -> list[Bound] | None:
    """The bound of each ``(rank, edge)`` of ``ends`` over ``n`` magnitudes whose strided
    ``sample`` brackets the ranks, in one pass over the chunks (``chunk(c)``: the magnitudes at
    flat positions ``c * STREAM_CHUNK..``); None when a bracket misses its rank.

    Entries tied with a bracket's ends are counted, never collected, so the pass costs the same
    whatever the magnitudes' distribution (an all-zero or mostly-zero task vector included)."""
    sample.sort()
    tallies = []
    for rank, _ in ends:
        lo_rank, hi_rank = bracket(sample.size, rank / n)
        low = sample[lo_rank - 1] if lo_rank >= 1 else None
        high = sample[hi_rank - 1] if hi_rank <= sample.size else None
        if low is None and high is None:
            return None
        tallies.append(_Tally(low, high))
    for c in range((n + STREAM_CHUNK - 1) // STREAM_CHUNK):
        mag = chunk(c)
        for t in tallies:
            t.add(mag, c * STREAM_CHUNK)
    bounds = [t.bound(rank, edge, n, chunk) for t, (rank, edge) in zip(tallies, ends)]
    return None if any(b is None for b in bounds) else bounds  # type: ignore[return-value]


def _exact_bound(mag: np.ndarray, rank: int, edge: int) -> Bound:
    """The bound of window edge ``edge`` whose value is the ``rank``-th smallest of ``mag``,
    selected on the whole array."""
    v = _kth(mag, rank)
    under = int(np.count_nonzero(mag < v))
    tied = np.flatnonzero(mag == v)
    split = edge - under
    return float(v), int(tied[split]) if split < tied.size else mag.size


def window_bounds(x: np.ndarray, base: np.ndarray, lo: int, hi: int) -> tuple[Bound | None, Bound | None]:
    """The rank window ``[lo, hi)`` of the magnitudes ``|x - base|`` (flat raw arrays, float32
    arithmetic) as its two bounds, each ``(value, cut)`` (:class:`~evomm_ops.rank_select.RankBound`)
    or None where the window is open on that side.

    Large tensors take one chunked pass: a strided sample brackets each bound's rank, and each
    chunk's magnitudes, computed into a reused buffer, are counted below and at the bracket's
    ends, and the entries strictly inside it collected (:func:`_sampled_bounds`); a bracket that
    misses (or a small tensor) falls back to selecting on the whole tensor's magnitudes. Either
    way the bounds are exact.

    Example:
        >>> mags = np.array([5.0, 1.0, 3.0, 3.0], np.float32)
        >>> window_bounds(mags, np.zeros(4, np.float32), 2, 4)  # keeps 5.0 and the second 3.0
        ((3.0, 3), None)
    """
    from evomm_ops import host_kernels  # numba: imported when a merge first needs it

    n = base.size
    # the low bound's value is the (lo+1)-th smallest magnitude, the high bound's the hi-th
    ends = ([(lo + 1, lo)] if lo > 0 else []) + ([(hi, hi)] if hi < n else [])
    found = None
    if n >= SAMPLE_MIN_NUMEL and ends:
        step = (n // SAMPLE_SIZE) | 1
        sample = np.empty((n + step - 1) // step, np.float32)
        host_kernels.abs_diff(np.ascontiguousarray(x[::step]), np.ascontiguousarray(base[::step]), sample)
        buf = np.empty(min(n, STREAM_CHUNK), np.float32)

        def chunk(c: int) -> np.ndarray:
            start, stop = c * STREAM_CHUNK, min(n, (c + 1) * STREAM_CHUNK)
            mag = buf[: stop - start]
            host_kernels.abs_diff(x[start:stop], base[start:stop], mag)
            return mag

        found = _sampled_bounds(sample, n, ends, chunk)
    if found is None:
        mag = np.empty(n, np.float32)
        host_kernels.abs_diff(x, base, mag)
        found = [_exact_bound(mag, rank, edge) for rank, edge in ends]
    low = found[0] if lo > 0 else None
    high = found[-1] if hi < n else None
    return low, high
