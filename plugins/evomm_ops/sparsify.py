"""Sparsification of task vectors: magnitude top-k (TIES), random drop (DARE), outlier-aware
magnitude window (Model Breadcrumbs) and magnitude-ranked random drop (DELLA's MagPrune).

Each method comes in two forms. ``*_keep(mag, ...)`` looks at the whole task vector's magnitudes
once and returns a :class:`Keep` (a 0/1 float mask and an optional rescale factor), which the
operators then apply chunk by chunk (:mod:`evomm_ops.task_arithmetic`); ``*_(delta, ...)`` applies
the same decision in place to a whole scratch delta the caller owns. The magnitude windows and
DARE also have streamed forms that read ``t`` and ``base`` instead of whole-tensor magnitudes,
for all models of a tensor in one pass: :func:`window_keeps_streamed` gives a :class:`Keep`
holding the window's bounds (same result; the operators use it on CPU when nothing is
rescaled), :func:`random_keeps_streamed` a bool mask and the rescale factor (the operators always
use it for DARE). All follow mergekit 0.1.5's ``sparsify.py`` conventions exactly:

* ``density >= 1`` returns the tensor untouched (no rescaling either);
* magnitude top-k keeps ``k = max(1, int(density * numel))`` entries (``density <= 0`` gives zeros);
* breadcrumbs keeps the ascending-magnitude ranks ``[n_bot, n_bot + int(density * numel))`` with
  ``n_bot = max(0, numel - int(density * numel) - int(gamma * numel))``;
* ``rescale`` matches the **L1 norm** of the masked delta to the original (mergekit's
  ``RescaleNorm.l1``; skipped when either norm is below 1e-7). For DARE this equals the paper's
  ``1/density`` in expectation; for DELLA it replaces the paper's per-entry ``1/p_i``.

Speed: mergekit ranks magnitudes with a full ``argsort`` per tensor. We only need the value at
one rank, which a selection finds in O(n) (:mod:`evomm_ops.rank_select`: a fixed strided sample
brackets the rank, one pass counts the entries tied with the bracket's ends and collects the few
strictly inside it, ``torch.kthvalue`` picks among those), at a cost that does not depend on how
the magnitudes are distributed (all-zero and tie-heavy bf16 task vectors included). torch has no
partial-sort primitive that does this, hence the hand-written code.

Ties: magnitudes are ranked by (magnitude, flat index), so when several entries share the
threshold magnitude, exactly the requested count is kept and, among equal magnitudes, the entry
with the larger flat index ranks higher (is kept first by top-k). mergekit's unstable argsort
breaks such ties arbitrarily; without ties the kept sets are identical.

Randomness (DARE, DELLA) comes only from ``TensorContext.seed``: DARE's masks from SplitMix64
streams seeded per model with :func:`evomm_ops.host_sparsify.dare_seed` (the same masks on every
device, and the CPU engine's; see :func:`dare_mask`), everything else from a ``torch.Generator``
seeded with it, so a merge is reproducible bit for bit on the same device type.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from evomm_ops import host_sparsify, rank_select
from evomm_ops.rank_select import RankBound as RankBound  # re-exported: Keep's bounds

if TYPE_CHECKING:
    import torch

#: Below this many elements ``torch.kthvalue`` on the whole tensor is as fast as sampling.
_SAMPLE_MIN_NUMEL = host_sparsify.SAMPLE_MIN_NUMEL
# DARE's keep probability is resolved to 1/65536 (host_sparsify.DARE_LEVELS): masks are drawn
# from 16-bit random integers (four per 64-bit SplitMix64 word; see dare_mask), so
# ``density`` is realised as ``round(density * 65536) / 65536`` (an error below 8e-6,
# invisible after L1 rescaling).
_RESCALE_EPS = 1e-7


def kth_smallest(values: torch.Tensor, rank: int) -> torch.Tensor:
    """The ``rank``-th smallest entry (1-based) of a flat tensor, without sorting it
    (:func:`evomm_ops.rank_select.select`).

    Args:
        values: 1-D tensor (magnitudes).
        rank: 1 <= rank <= numel.

    Returns:
        A 0-dim tensor equal to ``torch.kthvalue(values, rank).values``.

    Example:
        >>> import torch
        >>> float(kth_smallest(torch.tensor([3.0, 1.0, 2.0]), 2))
        2.0
    """
    return rank_select.select(values, rank)[0]


def kth_smallest_ties(values: torch.Tensor, rank: int) -> tuple[torch.Tensor, int, torch.Tensor]:
    """The ``rank``-th smallest entry, how many entries lie strictly below it, and where its ties are.

    Listing every tied position takes a pass over ``values`` and as much memory as there are
    ties; the operators never need that list (their window bounds come from
    :func:`evomm_ops.rank_select.select`, which finds one tied entry from counts).

    Args:
        values: 1-D tensor (magnitudes).
        rank: 1 <= rank <= numel.

    Returns:
        ``(v, below, tied)``: ``v`` as :func:`kth_smallest`; ``below == int((values < v).sum())``;
        ``tied`` the ascending flat indices (int64) of the entries equal to ``v``.

    Example:
        >>> import torch
        >>> v, below, tied = kth_smallest_ties(torch.tensor([2.0, 1.0, 2.0, 3.0]), 3)
        >>> float(v), below, tied.tolist()
        (2.0, 1, [0, 2])
    """
    v, below, _ = rank_select.select(values, rank)
    return v, below, (values == v).nonzero().squeeze(1)


def rank_window_mask(mag: torch.Tensor, lo: int, hi: int) -> torch.Tensor:
    """Boolean mask of the entries whose ascending rank is in ``[lo, hi)``.

    Ranks order entries by (magnitude, flat index), so exactly ``hi - lo`` entries are set.

    Args:
        mag: 1-D tensor of magnitudes.
        lo, hi: rank window, 0-based, clipped to ``[0, numel]``.

    Returns:
        A bool tensor shaped like ``mag``.

    Example:
        >>> import torch
        >>> rank_window_mask(torch.tensor([5.0, 1.0, 3.0, 3.0]), 2, 4).tolist()
        [True, False, False, True]
    """
    return rank_window_keep_(mag.clone(), lo, hi).bool()


def rank_window_keep_(mag: torch.Tensor, lo: int, hi: int) -> torch.Tensor:
    """Overwrite ``mag`` with ``1.0`` where the ascending rank is in ``[lo, hi)`` and ``0.0``
    elsewhere, and return it: :func:`rank_window_mask` as a float mask, made in place.

    The mask stays in ``mag``'s floating dtype because multiplying by it is one same-dtype pass,
    where a bool mask costs a comparison into a new bool tensor plus a conversion (about 4x
    the memory traffic on CPU). Ties are ranked as in :func:`rank_window_mask`.

    Args:
        mag: 1-D floating tensor of magnitudes; overwritten.
        lo, hi: rank window, 0-based, clipped to ``[0, numel]``.

    Returns:
        ``mag``, now holding 0/1.

    Example:
        >>> import torch
        >>> rank_window_keep_(torch.tensor([5.0, 1.0, 3.0, 3.0]), 2, 4).tolist()
        [1.0, 0.0, 0.0, 1.0]
    """
    n = mag.numel()
    lo, hi = max(lo, 0), min(hi, n)
    if hi <= lo:
        return mag.zero_()
    if lo == 0 and hi == n:
        return mag.fill_(1)
    low = rank_select.select(mag, lo + 1, edge=lo)[2] if lo > 0 else None
    high = rank_select.select(mag, hi, edge=hi)[2] if hi < n else None
    return window_mask_(mag, low, high)


def window_mask_(mag: torch.Tensor, low: RankBound | None, high: RankBound | None, start: int = 0) -> torch.Tensor:
    """Overwrite the flat magnitudes ``mag`` (positions ``start..`` of a task vector) with 1.0
    where they lie inside the rank window whose ends are ``low`` and ``high`` (None: open; at
    least one given) and 0.0 elsewhere, and return them: ``|d| > low.value``, or ``== low.value``
    at flat index ``>= low.cut``; and ``|d| < high.value``, or ``== high.value`` at flat index
    ``< high.cut``.

    Example:
        >>> import torch
        >>> window_mask_(torch.tensor([2.0, 3.0, 2.0, 1.0]), RankBound(2.0, 2), None).tolist()
        [0.0, 1.0, 1.0, 0.0]
    """
    import torch
    m = mag.numel()
    upper = None
    if high is not None:
        split = min(max(high.cut - start, 0), m)
        upper = torch.empty_like(mag)
        torch.le(mag[:split], high.value, out=upper[:split])
        torch.lt(mag[split:], high.value, out=upper[split:])
    if low is None:
        assert upper is not None  # callers pass at least one bound
        return mag.copy_(upper)
    split = min(max(low.cut - start, 0), m)
    mag[:split].gt_(low.value)
    mag[split:].ge_(low.value)
    return mag if upper is None else mag.mul_(upper)


def as_float(mask: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """A bool mask as 0/1 in ``dtype``. Going through a uint8 view is ~10x faster on CPU than
    ``mask.to(float)``, whose bool cast is not vectorised in torch's CPU kernels."""
    import torch
    return mask.view(torch.uint8).to(dtype)


@dataclass(frozen=True)
class Keep:
    """What sparsification does to one model's task vector, decided on the whole tensor and then
    applied to it chunk by chunk (:meth:`apply_`): ``delta *= mask``, then ``delta *= scale``.

    The mask is either stored (``mask``) or, for a rank window found without materialising the
    magnitudes (:func:`window_keep_streamed`), recomputed per chunk from ``|delta|`` and the
    window's bounds (``low``/``high``): the same 0/1 values, so the same bits.

    Attributes:
        mask: flat 0/1 float mask over the tensor, or a flat bool mask (a quarter of the memory;
            converted chunk by chunk), or None (keep everything).
        scale: 0-dim rescale factor (``before / after`` L1 norms), or None.
        zero: the whole task vector is dropped (``delta.zero_()``; mask and scale unused).
        low: keep only entries ranked at or above this bound (``|d| > value``, or ``== value``
            at flat index ``>= cut``), or None.
        high: keep only entries ranked below this bound (``|d| < value``, or ``== value`` at
            flat index ``< cut``), or None.
    """

    mask: torch.Tensor | None = None
    scale: torch.Tensor | None = None
    zero: bool = False
    low: RankBound | None = None
    high: RankBound | None = None

    def apply_(self, delta: torch.Tensor, start: int = 0) -> torch.Tensor:
        """Apply to ``delta``, the flat slice ``[start, start + numel)`` of the task vector.

        Example:
            >>> import torch
            >>> Keep(mask=torch.tensor([1.0, 0.0, 1.0])).apply_(torch.tensor([2.0, 3.0, 4.0])).tolist()
            [2.0, 0.0, 4.0]
            >>> Keep(low=RankBound(2.0, 2)).apply_(torch.tensor([2.0, -3.0, 2.0, 1.0])).tolist()
            [0.0, -3.0, 2.0, 0.0]
        """
        import torch
        if self.zero:
            return delta.zero_()
        if self.mask is not None:
            part = self.mask[start : start + delta.numel()]
            if part.dtype == torch.bool:
                part = as_float(part, delta.dtype)
            delta.mul_(part.view_as(delta))
        elif self.low is not None or self.high is not None:
            delta.mul_(self._window_mask(delta, start))
        if self.scale is not None:
            delta.mul_(self.scale)
        return delta

    def _window_mask(self, delta: torch.Tensor, start: int) -> torch.Tensor:
        """The 0/1 mask of the rank window on this slice, in ``delta``'s dtype and shape."""
        return window_mask_(delta.abs().view(-1), self.low, self.high, start).view_as(delta)


#: Sparsification that keeps everything.
KEEP_ALL = Keep()


def _scale(before: torch.Tensor, after: torch.Tensor) -> torch.Tensor | None:
    """mergekit's RescaleNorm.l1 factor, or None when either norm is below 1e-7."""
    return before / after if before >= _RESCALE_EPS and after >= _RESCALE_EPS else None


def _masked(mask: torch.Tensor, mag: torch.Tensor | None, rescale: bool) -> Keep:
    """``Keep`` of a 0/1 float ``mask``; with ``rescale``, ``mag`` (the magnitudes, consumed)
    gives the L1 norms before and after masking."""
    if not rescale:
        return Keep(mask=mask)
    assert mag is not None  # callers pass magnitudes whenever rescale is on
    before = mag.sum()
    after = mag.view_as(mask).mul_(mask).sum()
    return Keep(mask=mask, scale=_scale(before, after))


def magnitude_keep(mag: torch.Tensor, density: float, rescale: bool = False) -> Keep:
    """TIES trimming: keep the ``max(1, int(density*n))`` largest magnitudes.

    Args:
        mag: flat magnitudes ``|delta|``; overwritten (it becomes the mask).
        density: fraction kept; ``>= 1`` keeps all, ``<= 0`` drops all.
        rescale: match the L1 norm after dropping.

    Example:
        >>> import torch
        >>> magnitude_keep(torch.tensor([0.1, 3.0, 2.0, 0.5]), 0.5).mask.tolist()
        [0.0, 1.0, 1.0, 0.0]
    """
    if density >= 1:
        return KEEP_ALL
    n = mag.numel()
    if density <= 0 or n == 0:
        return Keep(zero=True)
    return _window(mag, *topk_window(n, density), rescale)


def topk_window(n: int, density: float) -> tuple[int, int]:
    """The ascending-rank window ``[lo, hi)`` that magnitude top-k keeps, for ``0 < density < 1``
    and ``n > 0`` (``k = max(1, int(density * n))``).

    Example:
        >>> topk_window(10, 0.3)
        (7, 10)
    """
    return n - max(1, int(density * n)), n


def outliers_window(n: int, density: float, gamma: float) -> tuple[int, int]:
    """The ascending-rank window ``[lo, hi)`` that Model Breadcrumbs keeps (``density < 1``).

    Example:
        >>> outliers_window(10, 0.5, 0.2)
        (3, 8)
    """
    target = int(density * n)
    n_bot = max(0, n - target - int(gamma * n))
    return n_bot, n_bot + target


def _window(mag: torch.Tensor, lo: int, hi: int, rescale: bool) -> Keep:
    if not rescale:
        return Keep(mask=rank_window_keep_(mag, lo, hi))
    original = mag.clone()
    return _masked(rank_window_keep_(mag, lo, hi), original, rescale)


#: Entries per chunk of the streamed passes (1 MiB of float32: stays in L2).
_STREAM_CHUNK = rank_select.CHUNK


def window_keep_streamed(
    t: torch.Tensor, base: torch.Tensor, lo: int, hi: int, wd: torch.dtype
) -> Keep | None:
    """:func:`rank_window_keep_` on the magnitudes ``|t - base|`` (computed in ``wd``), found in
    one chunked pass over the inputs without holding the whole tensor's magnitudes.

    The window's bounds come from :func:`evomm_ops.rank_select.streamed_bounds` (a strided
    sample brackets each bound's rank; one pass in chunks of :data:`_STREAM_CHUNK` counts the
    entries tied with the bracket's ends and collects the few strictly inside it). The returned
    :class:`Keep` holds the two bounds and recomputes the mask from ``|delta|`` chunk by chunk
    in :meth:`Keep.apply_`: the same 0/1 values as the stored mask of the whole-tensor path, so
    the same bits, with neither the magnitudes' nor the mask's whole-tensor buffer written and
    read back (for a 2816x1024 task vector the threshold work went from ~17 to ~9 ms; a
    32000x1024 embedding no longer maps and faults in 131 MB of fresh memory per model).
    :func:`window_keeps_streamed` does this for several models of one base in one pass.

    Args:
        t, base: the model's and the base's tensors (same shape and device).
        lo, hi: the rank window ``[lo, hi)``, 0-based, as :func:`rank_window_keep_`.
        wd: the work dtype of the magnitudes.

    Returns:
        The Keep, or None where this path does not apply (not a CPU float32/float64 work dtype,
        fewer than ``_SAMPLE_MIN_NUMEL`` entries, an empty or full window, a bracket that
        misses its rank): the caller then takes the whole-tensor path, which gives the same result.

    Example:
        >>> import torch
        >>> base = torch.zeros(1 << 18)
        >>> t = torch.linspace(-1.0, 1.0, 1 << 18)
        >>> keep = window_keep_streamed(t, base, 1 << 17, 1 << 18, torch.float32)
        >>> int(keep.apply_(t.clone()).count_nonzero())
        131072
    """
    return window_keeps_streamed([t], base, [(lo, hi)], wd)[0]


def window_keeps_streamed(
    models: Sequence[torch.Tensor], base: torch.Tensor, windows: Sequence[tuple[int, int]], wd: torch.dtype
) -> list[Keep | None]:
    """:func:`window_keep_streamed` for several models of one base, in one pass over the inputs.

    Per chunk the base is converted once, and the tallies of the models (and of both bounds of a
    two-sided window) run in parallel threads, NumPy releasing the GIL. Each model's result is
    exactly what :func:`window_keep_streamed` gives for it alone.

    Args:
        models: the models' tensors (each the base's shape and device).
        base: the base's tensor.
        windows: each model's rank window ``[lo, hi)``.
        wd: the work dtype of the magnitudes.

    Returns:
        One Keep, or None where the streamed path does not apply to that model, per model.

    Example:
        >>> import torch
        >>> base = torch.zeros(1 << 18)
        >>> ts = [torch.linspace(-1.0, 1.0, 1 << 18), torch.linspace(0.0, 1.0, 1 << 18)]
        >>> keeps = window_keeps_streamed(ts, base, [(1 << 17, 1 << 18), (0, 1 << 18)], torch.float32)
        >>> int(keeps[0].apply_(ts[0].clone()).count_nonzero()), keeps[1]
        (131072, None)
    """
    import torch
    n = base.numel()
    if base.device.type != "cpu" or wd not in (torch.float32, torch.float64) or n < _SAMPLE_MIN_NUMEL:
        return [None] * len(models)
    clipped = [(max(lo, 0), min(hi, n)) for lo, hi in windows]
    # the low bound's value is the (lo+1)-th smallest magnitude, the high bound's the hi-th;
    # an empty or full window is not streamed (no ends)
    ends = [
        [] if hi <= lo or (lo == 0 and hi == n) else ([(lo + 1, lo)] if lo > 0 else []) + ([(hi, hi)] if hi < n else [])
        for lo, hi in clipped
    ]
    found = rank_select.streamed_bounds(models, base, ends, wd)
    out: list[Keep | None] = []
    for (lo, hi), model_ends, bounds in zip(clipped, ends, found):
        if not model_ends or bounds is None:  # not streamed, or a bracket missed (never wrong, only slower)
            out.append(None)
        else:
            out.append(Keep(low=bounds[0] if lo > 0 else None, high=bounds[-1] if hi < n else None))
    return out


def magnitude_outliers_keep(mag: torch.Tensor, density: float, gamma: float, rescale: bool = False) -> Keep:
    """Model Breadcrumbs: drop the ``gamma`` fraction of largest magnitudes and the smallest ones,
    keeping ``int(density*n)`` entries (mergekit's ``magnitude_outliers``).

    Args:
        mag: flat magnitudes; overwritten (it becomes the mask).

    Example:
        >>> import torch
        >>> magnitude_outliers_keep(torch.tensor([1.0, 4.0, 2.0, 3.0]), 0.5, 0.25).mask.tolist()
        [0.0, 0.0, 1.0, 1.0]
    """
    if density >= 1:
        return KEEP_ALL
    return _window(mag, *outliers_window(mag.numel(), density, gamma), rescale)


def dare_mask(shape: torch.Size, density: float, generator: torch.Generator, device: torch.device) -> torch.Tensor:
    """Bernoulli(density) keep mask drawn from 16-bit random integers.

    The integers are the 16-bit quarters of the words of a SplitMix64 stream (a counter-based
    generator: any word is computed on its own) seeded with one 64-bit draw of ``generator``, so
    successive masks from one per-tensor generator differ and the same seed gives the same mask
    on every device: on CPU from the numba kernel :func:`evomm_ops.host_kernels.dare_mask`,
    elsewhere from :func:`splitmix_mask` in torch. An entry is kept when its draw is below
    ``round(density * 65536)``.

    Args:
        shape: mask shape.
        density: keep probability.
        generator: the per-tensor generator (``TensorContext.seed``).
        device: where to draw.

    Returns:
        A bool tensor; each entry True with probability ``round(density*65536)/65536``.

    Example:
        >>> import torch
        >>> m = dare_mask(torch.Size([1000]), 0.3, torch.Generator().manual_seed(0), torch.device("cpu"))
        >>> 200 < int(m.sum()) < 400
        True
    """
    import torch
    return _seeded_dare_mask(math.prod(shape), density, _draw_seed(generator), torch.device(device)).view(shape)


def _draw_seed(generator: torch.Generator) -> int:
    """One 64-bit draw of ``generator`` (as an unsigned integer): the seed of one DARE mask."""
    import torch
    return int(torch.empty((), dtype=torch.int64).random_(generator=generator)) % 2**64


def _seeded_dare_mask(n: int, density: float, seed: int, device: torch.device) -> torch.Tensor:
    """:func:`dare_mask`'s flat mask of ``n`` entries from the SplitMix64 stream ``seed``."""
    import torch
    if device.type == "cpu":
        return torch.from_numpy(host_sparsify.dare_mask(n, density, seed))
    return splitmix_mask(n, host_sparsify.dare_level(density), seed, device)


def _signed64(v: int) -> int:
    """An unsigned 64-bit integer as the int64 with the same bits."""
    return v - 2**64 if v >= 2**63 else v


def _shr(z: torch.Tensor, bits: int) -> torch.Tensor:
    """Logical right shift of int64 ``z`` (torch's ``>>`` is arithmetic)."""
    return (z >> bits) & ((1 << (64 - bits)) - 1)


def splitmix_mask(n: int, level: int, seed: int, device: torch.device | str = "cpu") -> torch.Tensor:
    """DARE's flat keep mask in torch, on any device: entry ``i`` is kept when bits
    ``16 * (i % 4)`` up of word ``i // 4`` of the SplitMix64 stream ``seed``, as an unsigned
    16-bit integer, are below ``level`` (what :func:`evomm_ops.host_kernels.dare_mask` computes
    on CPU). int64 arithmetic wraps as the generator's uint64 arithmetic does.

    Example:
        >>> splitmix_mask(6, 32768, 1234567).tolist()
        [False, False, False, True, True, True]
    """
    import torch
    if level >= host_sparsify.DARE_LEVELS:
        return torch.ones(n, dtype=torch.bool, device=device)
    gamma, mix1, mix2 = (_signed64(c) for c in host_sparsify.SPLITMIX64)
    z = torch.arange(1, (n + 3) // 4 + 1, dtype=torch.int64, device=device).mul_(gamma).add_(_signed64(seed % 2**64))
    z.bitwise_xor_(_shr(z, 30)).mul_(mix1)
    z.bitwise_xor_(_shr(z, 27)).mul_(mix2)
    z.bitwise_xor_(_shr(z, 31))
    # the little-endian 16-bit quarters as int16; flipping the sign bit maps unsigned u to
    # u - 32768, so u < level compares in int16 without a wider copy
    return (z.view(torch.int16)[:n] ^ -32768) < level - 32768


def random_keep(
    numel: int, density: float, generator: torch.Generator, mag: torch.Tensor | None = None,
    rescale: bool = True, dtype: torch.dtype | None = None, device: torch.device | str = "cpu",
) -> Keep:
    """DARE: drop each entry with probability ``1 - density``; optionally restore the L1 norm.

    Args:
        numel: entries in the task vector.
        generator: the per-tensor generator; the mask is one draw of ``numel`` entries.
        mag: flat magnitudes (needed, and consumed, when ``rescale``).
        dtype, device: of the mask (default float32, CPU).

    Example:
        >>> import torch
        >>> keep = random_keep(8, 0.5, torch.Generator().manual_seed(1), torch.ones(8))
        >>> float(keep.apply_(torch.ones(8)).sum())  # L1 norm kept
        8.0
    """
    import torch
    if density >= 1:
        return KEEP_ALL
    mask = as_float(dare_mask(torch.Size([numel]), density, generator, torch.device(device)), dtype or torch.float32)
    return _masked(mask, mag, rescale)


def random_keep_streamed(
    t: torch.Tensor, base: torch.Tensor, density: float, generator: torch.Generator, rescale: bool,
    wd: torch.dtype,
) -> Keep:
    """:func:`random_keep` of the task vector ``t - base``, without whole-tensor magnitudes.

    The mask is the same draw as :func:`random_keep`'s, kept as a bool tensor (1 byte an entry
    instead of a float mask's 4). With ``rescale``, the two L1 norms (before and after dropping)
    are summed in one chunked pass over the inputs (chunks of :data:`_STREAM_CHUNK`, each chunk's
    sums added in float64), so no ``numel``-sized magnitude buffer is written and read back
    (131 MB per model for a 32000x1024 embedding). The norms are the same quantities as
    :func:`random_keep`'s; they are summed in another order, so the scale can differ from it in
    the last bits of float32. :func:`random_keeps_streamed` does this for several models.

    Args:
        t, base: the model's and the base's tensors (same shape and device).
        density: keep probability (``>= 1`` keeps everything, no rescaling).
        generator: the per-tensor generator; the mask is one draw of ``numel`` entries.
        rescale: restore the L1 norm after dropping.
        wd: the work dtype of the magnitudes.

    Example:
        >>> import torch
        >>> t, base = torch.ones(8), torch.zeros(8)
        >>> keep = random_keep_streamed(t, base, 0.5, torch.Generator().manual_seed(1), True, torch.float32)
        >>> float(keep.apply_(t.clone()).sum())  # L1 norm kept
        8.0
    """
    return random_keeps_streamed([t], base, [density], generator, rescale, wd)[0]


def random_keeps_streamed(
    models: Sequence[torch.Tensor], base: torch.Tensor, densities: Sequence[float],
    generator: torch.Generator, rescale: bool, wd: torch.dtype, seed: int | None = None,
) -> list[Keep]:
    """:func:`random_keep_streamed` for several models of one base: the same Keeps as calling it
    for each model in turn with one generator (models of density ``>= 1`` draw nothing).

    Each model's mask is drawn (:func:`dare_mask`) from the seed
    :func:`evomm_ops.host_sparsify.dare_seed` gives model ``i`` of ``seed`` when ``seed`` is
    given (the operators pass ``TensorContext.seed``: their torch-free forms then draw the same
    masks), else from draws of ``generator`` in model order.
    The rescale's L1 norms of bfloat16/float32 tensors on CPU come from
    :func:`evomm_ops.host_kernels.l1_norms` (shared with the torch-free forms); others are summed
    here in one pass that converts each base chunk once.

    Example:
        >>> import torch
        >>> ts, base = [torch.ones(8), 2 * torch.ones(8)], torch.zeros(8)
        >>> keeps = random_keeps_streamed(ts, base, [0.5, 1.0], torch.Generator().manual_seed(1), True, torch.float32)
        >>> float(keeps[0].apply_(ts[0].clone()).sum()), keeps[1] is KEEP_ALL
        (8.0, True)
    """
    import torch
    n = base.numel()
    out: list[Keep] = [KEEP_ALL] * len(models)
    todo = [i for i, density in enumerate(densities) if density < 1]
    if seed is not None:
        seeds = {i: host_sparsify.dare_seed(seed, i) for i in todo}
    else:
        seeds = {i: _draw_seed(generator) for i in todo}  # in model order, as dare_mask draws them
    masks = {i: _seeded_dare_mask(n, densities[i], seeds[i], base.device) for i in todo}
    if not rescale or not todo:
        return [Keep(mask=masks[i]) if i in masks else KEEP_ALL for i in range(len(models))]
    if base.device.type == "cpu" and base.dtype in (torch.bfloat16, torch.float32):
        norms = {i: _host_l1_norms(models[i], base, masks[i]) for i in todo}
    else:
        norms = _l1_norms(models, base, masks, todo, wd)
    for i in todo:
        before, after = norms[i]
        scale = None
        if before >= _RESCALE_EPS and after >= _RESCALE_EPS:
            scale = torch.tensor(before / after, dtype=wd, device=base.device)
        out[i] = Keep(mask=masks[i], scale=scale)
    return out


def _raw(t: torch.Tensor) -> np.ndarray:
    """A flat NumPy view of a contiguous CPU bfloat16/float32 tensor's raw entries."""
    import torch
    flat = t.detach().contiguous().reshape(-1)
    return flat.view(torch.int16).numpy().view(np.uint16) if flat.dtype == torch.bfloat16 else flat.numpy()


def _host_l1_norms(t: torch.Tensor, base: torch.Tensor, mask: torch.Tensor) -> tuple[float, float]:
    from evomm_ops import host_kernels

    before, after = host_kernels.l1_norms(_raw(t), _raw(base), mask.numpy())
    return float(before), float(after)


def _l1_norms(
    models: Sequence[torch.Tensor], base: torch.Tensor, masks: dict[int, torch.Tensor], todo: list[int],
    wd: torch.dtype,
) -> dict[int, tuple[float, float]]:
    """The L1 norms before and after masking of each model in ``todo``, in chunks with torch
    (other devices and dtypes than :func:`_host_l1_norms`)."""
    import torch
    n = base.numel()
    flats = {i: models[i].reshape(-1) for i in todo}
    flat_b = base.reshape(-1)
    size = max(1, min(n, _STREAM_CHUNK))
    d = torch.empty(size, dtype=wd, device=base.device)
    b = torch.empty(size, dtype=wd, device=base.device)
    kept = torch.empty(size, dtype=wd, device=base.device)
    before = dict.fromkeys(todo, 0.0)
    after = dict.fromkeys(todo, 0.0)
    for start in range(0, n, size):
        stop = min(n, start + size)
        m = stop - start
        bc = b[:m].copy_(flat_b[start:stop])
        for i in todo:
            mag = d[:m].copy_(flats[i][start:stop]).sub_(bc).abs_()
            before[i] += float(mag.sum(dtype=torch.float64))
            after[i] += float(torch.dot(mag, kept[:m].copy_(masks[i][start:stop].view(torch.uint8))))
    return {i: (before[i], after[i]) for i in todo}


def della_keep(
    mag: torch.Tensor, density: float, epsilon: float, generator: torch.Generator, rescale: bool = True
) -> Keep:
    """DELLA MagPrune: keep probabilities rise linearly with magnitude rank, within each row.

    Along dim 1 (1-D tensors are one row), the entry of ascending rank ``r`` among ``c`` is kept
    with probability ``density - epsilon + 2 * epsilon * r / (c - 1)`` (mergekit's convention;
    a single-column row uses ``density``). Probabilities are clamped into [0, 1] where mergekit
    raises instead, so every genome is a valid recipe.

    Args:
        mag: magnitudes **in the tensor's shape** (rows matter); consumed when ``rescale``.

    Example:
        >>> import torch
        >>> keep = della_keep(torch.arange(1.0, 9.0), 0.5, 0.1, torch.Generator().manual_seed(0))
        >>> keep.mask.shape
        torch.Size([8])
    """
    import torch
    if density >= 1:
        return KEEP_ALL
    if density <= 0 or mag.numel() == 0:
        return Keep(zero=True)
    rows = mag.unsqueeze(0) if mag.dim() < 2 else mag
    cols = rows.shape[1]
    order = torch.sort(rows, dim=1, stable=True).indices
    pos_shape = [1] * rows.dim()
    pos_shape[1] = cols
    if cols > 1:
        ramp = torch.arange(cols, device=mag.device, dtype=torch.float32) / (cols - 1)
    else:
        ramp = torch.full((1,), 0.5, device=mag.device)
    probs = ((density - epsilon) + ramp * (2 * epsilon)).clamp_(0, 1).view(pos_shape)
    draws = torch.rand(rows.shape, generator=generator, device=mag.device, dtype=torch.float32)
    keep_sorted = draws < probs
    mask = torch.empty_like(keep_sorted).scatter_(1, order, keep_sorted)
    return _masked(as_float(mask, mag.dtype).view(-1), mag, rescale)


# In-place forms on a whole delta tensor (the operators use the ``*_keep`` forms chunk by chunk).


def magnitude_(delta: torch.Tensor, density: float, rescale: bool = False) -> torch.Tensor:
    """:func:`magnitude_keep` applied to ``delta`` in place.

    Example:
        >>> import torch
        >>> magnitude_(torch.tensor([0.1, -3.0, 2.0, -0.5]), 0.5).tolist()
        [0.0, -3.0, 2.0, -0.0]
    """
    return magnitude_keep(delta.abs().view(-1), density, rescale).apply_(delta)


def magnitude_outliers_(
    delta: torch.Tensor, density: float, gamma: float, rescale: bool = False
) -> torch.Tensor:
    """:func:`magnitude_outliers_keep` applied to ``delta`` in place.

    Example:
        >>> import torch
        >>> magnitude_outliers_(torch.tensor([1.0, 4.0, 2.0, 3.0]), 0.5, 0.25).tolist()
        [0.0, 0.0, 2.0, 3.0]
    """
    return magnitude_outliers_keep(delta.abs().view(-1), density, gamma, rescale).apply_(delta)


def random_(
    delta: torch.Tensor, density: float, generator: torch.Generator, rescale: bool = True
) -> torch.Tensor:
    """:func:`random_keep` applied to ``delta`` in place.

    Example:
        >>> import torch
        >>> d = random_(torch.ones(8), 0.5, torch.Generator().manual_seed(1))
        >>> float(d.sum())  # L1 norm kept
        8.0
    """
    mag = delta.abs().view(-1) if rescale else None
    keep = random_keep(delta.numel(), density, generator, mag, rescale, delta.dtype, delta.device)
    return keep.apply_(delta)


def della_magprune_(
    delta: torch.Tensor,
    density: float,
    epsilon: float,
    generator: torch.Generator,
    rescale: bool = True,
) -> torch.Tensor:
    """:func:`della_keep` applied to ``delta`` in place.

    Example:
        >>> import torch
        >>> d = della_magprune_(torch.arange(1.0, 9.0), 0.5, 0.1, torch.Generator().manual_seed(0))
        >>> d.shape
        torch.Size([8])
    """
    return della_keep(delta.abs(), density, epsilon, generator, rescale).apply_(delta)
