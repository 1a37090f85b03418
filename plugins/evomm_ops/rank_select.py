"""Exact rank bounds of magnitudes, ties ranked by flat index, at a cost that does not depend on
how the magnitudes are distributed.

Magnitude top-k (TIES) and Model Breadcrumbs keep the entries of a task vector whose ascending
rank lies in a window ``[lo, hi)``, entries ranked by (magnitude, flat index). Each finite end of
the window is a :class:`RankBound`: the order statistic at that rank, and among the entries tied
with it the flat index where the window starts or stops. This module finds the bounds without
sorting:

1. a fixed strided sample of :data:`SAMPLE_SIZE` magnitudes (no randomness) brackets the rank
   between two sample values ``lo <= hi`` (a 4-sigma binomial margin, :func:`bracket`);
2. one pass over the magnitudes, in chunks of :data:`CHUNK` entries, *counts* the entries below
   ``lo``, equal to ``lo`` and equal to ``hi`` (per chunk), and *collects* only the entries
   strictly between ``lo`` and ``hi``, with their flat positions (:func:`tally`);
3. the counts say whether the bound is ``lo``, ``hi`` or one of the collected candidates (then
   ``torch.kthvalue`` on those); a bound tied with other entries finds its cut from the
   per-chunk counts of its value, reading one chunk again (:func:`resolve`).

Tied magnitudes are counted, never collected, so the candidates are about the bracket's share of
the entries (~1.6% at the median) whatever the distribution: a task vector that is all zeros (a
frozen embedding), mostly zeros, or whose bf16 magnitudes take a few thousand distinct values
costs what a continuous one costs. (The band this replaced held every entry tied with either end
of the bracket: an all-zero 4M-entry task vector took 35-46 ns an entry against 2-3 for a
continuous one, 2-core VM.) A bracket that misses the rank (an unrepresentative sample; not
seen on real tensors) falls back to ``torch.kthvalue`` on all the magnitudes: slower, never
different.

Counting and collecting run in NumPy on CPU float32/float64 (its SIMD comparisons into bool
arrays are ~3x faster than torch's scalar float -> bool loops, and ``flatnonzero`` beats
``Tensor.nonzero``), in torch elsewhere. NaN ranks highest, as in ``torch.kthvalue``: it is never
below, equal to or strictly below a bound, and is collected only when the bracket is open above.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, TypeVar

import numpy as np

#: Entries per chunk of a pass (1 MiB of float32: the chunk stays in cache while it is counted).
CHUNK = 1 << 18
#: Below this many entries the order statistic is selected on the whole tensor.
SAMPLE_MIN_NUMEL = 1 << 18
#: Size of the strided sample that brackets a rank.
SAMPLE_SIZE = 1 << 16

_T = TypeVar("_T")
_R = TypeVar("_R")

#: Threads that run the NumPy work of several models of one tensor at once (TIES' tallies,
#: DARE's masks): NumPy's loops are single-threaded and release the GIL. Made on first use.
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


if TYPE_CHECKING:  # annotations only: loading the plugin imports no torch
    from typing import TypeAlias

    import torch

    #: Magnitudes of one chunk: a NumPy array on CPU float32/float64, a torch tensor elsewhere.
    Chunk: TypeAlias = np.ndarray | torch.Tensor


@dataclass(frozen=True)
class RankBound:
    """One end of a rank window, as a magnitude threshold: the entries of magnitude ``value``
    are tied, and ranked by flat index, so the ones at flat index ``>= cut`` are on the high
    side of the bound and the others on the low side (``cut`` is 0 or ``numel`` when no tied
    entry is split off)."""

    value: float
    cut: int


@dataclass
class Tally:
    """What one pass learnt about the magnitudes around one rank's bracket ``[lo, hi]`` (None:
    open): the count below ``lo``, the per-chunk counts of ``lo`` and of ``hi``, and the
    entries strictly between, with their flat positions."""

    lo: float | None
    hi: float | None
    below: int = 0
    eq_lo: list[int] = field(default_factory=list)
    eq_hi: list[int] = field(default_factory=list)
    values: list[Chunk] = field(default_factory=list)
    positions: list[Chunk] = field(default_factory=list)

    def add(self, m: Chunk, start: int) -> None:
        """Count and collect the chunk ``m`` of magnitudes, flat positions ``start..``."""
        below, eq_lo, eq_hi, inside = tally(m, self.lo, self.hi)
        self.below += below
        self.eq_lo.append(eq_lo)
        self.eq_hi.append(eq_hi)
        self.values.append(m[inside])
        self.positions.append(inside + start)


def tally(m: Chunk, lo: float | None, hi: float | None) -> tuple[int, int, int, Chunk]:
    """``(#(m < lo), #(m == lo), #(m == hi), positions strictly between)`` of one chunk; a None
    bound is open (counts 0; everything on that side is between). ``#(m == hi)`` is 0 when
    ``hi == lo`` (those entries are counted once, as ``lo``'s). Positions are ascending int64.

    Example:
        >>> tally(np.array([0.5, 2.0, 1.0, 3.0, 1.0, 1.5], np.float32), 1.0, 2.0)
        (1, 2, 1, array([5]))
    """
    if isinstance(m, np.ndarray):
        return _numpy_tally(m, lo, hi)
    import torch
    below = int((m < lo).count_nonzero()) if lo is not None else 0
    eq_lo = int((m == lo).count_nonzero()) if lo is not None else 0
    same = lo is not None and hi is not None and lo == hi
    eq_hi = int((m == hi).count_nonzero()) if hi is not None and not same else 0
    if same:
        return below, eq_lo, eq_hi, torch.empty(0, dtype=torch.int64, device=m.device)
    if lo is None:
        inside_t = m < hi
    elif hi is None:
        inside_t = (m <= lo).logical_not_()
    else:
        inside_t = (m > lo).logical_and_(m < hi)
    return below, eq_lo, eq_hi, inside_t.nonzero().squeeze(1)


def bracket(s: int, q: float) -> tuple[int, int]:
    """1-based ranks in a sample of ``s`` that bracket quantile ``q`` of the population with a
    4-sigma binomial margin (plus 8 for small samples).

    Example:
        >>> bracket(1000, 0.5)
        (428, 572)
    """
    margin = 4.0 * math.sqrt(s * q * (1.0 - q)) + 8.0
    return math.floor(q * s - margin), math.ceil(q * s + margin)


def _numpy_tally(m: np.ndarray, lo: float | None, hi: float | None) -> tuple[int, int, int, np.ndarray]:
    """``(#(m < lo), #(m == lo), #(m == hi), positions strictly between)`` of a float array,
    the bounds compared in ``m``'s dtype; a None bound is open (counts 0; everything on that
    side is between). ``#(m == hi)`` is 0 when ``hi == lo`` (those entries are counted once, as
    ``lo``'s). Positions are ascending int64. NaN is never below or equal to a bound, and is
    between only when ``hi`` is open."""
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


def sample_bracket(sample: torch.Tensor, rank: int, n: int) -> tuple[float | None, float | None] | None:
    """The sample values that bracket population rank ``rank`` of ``n`` (None where the bracket
    is open), or None when both sides are open.

    Example:
        >>> import torch
        >>> sample_bracket(torch.arange(1000.0), 500_000, 1_000_000)
        (427.0, 571.0)
    """
    low, high = _sample_bounds(sample, *bracket(sample.numel(), rank / n))
    if low is None and high is None:
        return None
    return (None if low is None else low.item(), None if high is None else high.item())


def _sample_bounds(sample: torch.Tensor, lo_rank: int, hi_rank: int) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """The sample's ``lo_rank``-th and ``hi_rank``-th smallest entries (None where the rank is
    outside ``[1, numel]``).

    Two ``kthvalue`` calls on the whole sample cost ~1.2 ms at 64K entries (torch's selection is
    scalar code). A sub-sample of 1/16 brackets both ranks first, so the two selections run on the
    ~5% of the sample between them; a missed bracket falls back to the whole sample (exact either way).
    """
    import torch
    s = sample.numel()
    lo_ok, hi_ok = lo_rank >= 1, hi_rank <= s
    coarse = sample[::16]
    c_lo, _ = bracket(coarse.numel(), (lo_rank if lo_ok else 1) / s)
    _, c_hi = bracket(coarse.numel(), (hi_rank if hi_ok else s) / s)
    if coarse.numel() >= 1024 and c_lo >= 1 and c_hi <= coarse.numel():
        low = torch.kthvalue(coarse, c_lo).values
        high = torch.kthvalue(coarse, c_hi).values
        under = sample < low
        below = int(under.count_nonzero())
        sub = sample[(sample <= high).logical_and_(under.logical_not_())]
        if below < (lo_rank if lo_ok else 1) and (hi_rank if hi_ok else s) <= below + sub.numel():
            return (
                torch.kthvalue(sub, lo_rank - below).values if lo_ok else None,
                torch.kthvalue(sub, hi_rank - below).values if hi_ok else None,
            )
    return (
        torch.kthvalue(sample, lo_rank).values if lo_ok else None,
        torch.kthvalue(sample, hi_rank).values if hi_ok else None,
    )


def resolve(
    t: Tally, rank: int, edge: int, n: int, reread: Callable[[int], tuple[Chunk, int]]
) -> tuple[float, int, RankBound] | None:
    """The ``rank``-th smallest magnitude (1-based) from a finished :class:`Tally`, how many lie
    strictly below it, and the bound it makes for a window edge ``edge`` (the first ``edge -
    below`` of its tied entries, in flat order, lie below the edge); None when the bracket
    missed the rank.

    ``reread(c)`` gives chunk ``c``'s magnitudes again and its first flat position: called at
    most once, when the bound ties with the bracket's ``lo`` or ``hi``.
    """
    import torch
    if rank <= t.below:
        return None
    under = t.below
    e_lo = sum(t.eq_lo)
    if rank <= under + e_lo:
        assert t.lo is not None  # eq_lo counts only with a low end
        return t.lo, under, RankBound(t.lo, _tied_cut(t.lo, edge - under, t.eq_lo, n, reread))
    under += e_lo
    values = _cat(t.values)
    if rank <= under + values.numel():
        v = torch.kthvalue(values, rank - under).values
        under += int((values < v).count_nonzero())
        tied = _cat(t.positions)[values == v]
        split = edge - under
        return float(v), under, RankBound(float(v), int(tied[split]) if split < tied.numel() else n)
    under += values.numel()
    if rank <= under + sum(t.eq_hi):
        assert t.hi is not None
        return t.hi, under, RankBound(t.hi, _tied_cut(t.hi, edge - under, t.eq_hi, n, reread))
    return None


def _cat(parts: list[Chunk]) -> torch.Tensor:
    import torch
    if parts and isinstance(parts[0], np.ndarray):
        return torch.from_numpy(np.concatenate(parts))
    return torch.cat(parts)


def _tied_cut(value: float, split: int, counts: list[int], n: int, reread: Callable[[int], tuple[Chunk, int]]) -> int:
    """The flat index of the ``split``-th (0-based) entry equal to ``value``, from the per-chunk
    counts of that value; ``n`` when there are no more than ``split`` of them."""
    seen = 0
    for c, k in enumerate(counts):
        if seen + k > split:
            m, start = reread(c)
            if isinstance(m, np.ndarray):
                return start + int(np.flatnonzero(np.equal(m, m.dtype.type(value)))[split - seen])
            return start + int((m == value).nonzero()[split - seen, 0])
        seen += k
    return n


def _as_chunk(values: torch.Tensor) -> Chunk:
    """A flat tensor as what :func:`tally` counts: NumPy for CPU float32/float64, else itself."""
    import torch
    if values.device.type == "cpu" and values.dtype in (torch.float32, torch.float64):
        return values.numpy()
    return values


def select(values: torch.Tensor, rank: int, edge: int | None = None) -> tuple[torch.Tensor, int, RankBound | None]:
    """``(v, below, bound)``: the ``rank``-th smallest entry (1-based) of a flat tensor, as a
    0-dim tensor equal to ``torch.kthvalue(values, rank).values``; how many entries are smaller;
    and, when ``edge`` is given, the :class:`RankBound` of a window edge there.

    Example:
        >>> import torch
        >>> v, below, bound = select(torch.tensor([2.0, 1.0, 2.0, 3.0]), 3, edge=2)
        >>> float(v), below, bound
        (2.0, 1, RankBound(value=2.0, cut=2))
    """
    import torch
    n = values.numel()
    on_cpu = values.device.type == "cpu"
    if n >= SAMPLE_MIN_NUMEL:
        sample = values[:: (n // SAMPLE_SIZE) | 1].contiguous()
        brk = sample_bracket(sample, rank, n)
        if brk is not None:
            t = Tally(*brk)
            size = CHUNK if on_cpu else n  # one chunk off the CPU: no per-chunk syncs

            def chunk(c: int) -> tuple[Chunk, int]:
                return _as_chunk(values[c * size : (c + 1) * size]), c * size

            for c in range((n + size - 1) // size):
                t.add(*chunk(c))
            found = resolve(t, rank, n if edge is None else edge, n, chunk)
            if found is not None:
                v, below, bound = found
                return torch.tensor(v, dtype=values.dtype, device=values.device), below, bound if edge is not None else None
    # small tensors, or a bracket that missed: select on the whole tensor
    v = torch.kthvalue(values, rank).values
    below = int((values < v).count_nonzero())
    bound = None
    if edge is not None:
        tied = (values == v).nonzero().squeeze(1)
        split = edge - below
        bound = RankBound(float(v), int(tied[split]) if split < tied.numel() else n)
    return v, below, bound


def streamed_bounds(
    models: Sequence[torch.Tensor], base: torch.Tensor, ends: Sequence[Sequence[tuple[int, int]]], wd: torch.dtype
) -> list[list[RankBound] | None]:
    """For each model, the :class:`RankBound` of each ``(rank, edge)`` in its ``ends``, of the
    magnitudes ``|t - base|`` (computed in ``wd`` as the operators compute them), found in one
    chunked pass over the inputs for all models, without a whole-tensor magnitude buffer.

    Per chunk the base is converted once and each model's magnitudes computed into a reused
    buffer; the tallies of the models (and of both ends of a two-sided window) run in parallel
    threads, NumPy releasing the GIL.

    Args:
        models: the models' tensors (each the base's shape), on CPU.
        base: the base's tensor.
        ends: per model, ``(rank, edge)`` pairs (empty: nothing to find for that model).
        wd: the work dtype, float32 or float64.

    Returns:
        Per model, its bounds in ``ends``' order, or None where a bracket missed its rank (the
        caller then selects on the whole tensor, which gives the same bounds).

    Example:
        >>> import torch
        >>> t = torch.arange(1 << 18, dtype=torch.float32) % 4  # 0, 1, 2, 3, 0, 1, ...: 65536 of each
        >>> streamed_bounds([t], torch.zeros(1 << 18), [[(100_000, 100_000)]], torch.float32)
        [[RankBound(value=1.0, cut=137857)]]
    """
    import torch
    n = base.numel()
    flat_b = base.reshape(-1)
    step = (n // SAMPLE_SIZE) | 1
    base_sample = flat_b[::step].to(wd)
    flats: dict[int, torch.Tensor] = {}
    tallies: dict[tuple[int, int], Tally] = {}
    out: list[list[RankBound] | None] = [None] * len(models)
    for i, (t, model_ends) in enumerate(zip(models, ends)):
        if not model_ends:
            out[i] = []
            continue
        flat_t = t.reshape(-1)
        # out of place: `.to(wd)` of a tensor already in wd is the caller's tensor itself
        sample = torch.sub(flat_t[::step].to(wd), base_sample).abs_()
        brackets = [sample_bracket(sample, rank, n) for rank, _ in model_ends]
        if all(b is not None for b in brackets):
            flats[i] = flat_t
            tallies.update({(i, j): Tally(*b) for j, b in enumerate(brackets) if b is not None})
    if not tallies:
        return out
    size = min(n, CHUNK)
    b = torch.empty(size, dtype=wd)
    scratch = {i: torch.empty(size, dtype=wd) for i in flats}

    def magnitudes(i: int, start: int, stop: int, bc: torch.Tensor, buf: torch.Tensor) -> np.ndarray:
        # the ops of task_arithmetic._magnitudes, so the magnitudes are the same bits
        return buf[: stop - start].copy_(flats[i][start:stop]).sub_(bc).abs_().numpy()

    jobs = list(tallies)
    for start in range(0, n, size):
        stop = min(n, start + size)
        bc = b[: stop - start].copy_(flat_b[start:stop])
        mags = {i: magnitudes(i, start, stop, bc, scratch[i]) for i in flats}
        parallel_map(lambda job, mags=mags, start=start: tallies[job].add(mags[job[0]], start), jobs)
    for i in flats:

        def reread(c: int, i: int = i) -> tuple[Chunk, int]:
            start, stop = c * size, min(n, (c + 1) * size)
            bc = torch.empty(stop - start, dtype=wd).copy_(flat_b[start:stop])
            return magnitudes(i, start, stop, bc, torch.empty(stop - start, dtype=wd)), start

        found = [resolve(tallies[i, j], rank, edge, n, reread) for j, (rank, edge) in enumerate(ends[i])]
        out[i] = None if any(f is None for f in found) else [f[2] for f in found if f is not None]
    return out
