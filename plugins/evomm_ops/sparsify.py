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

Randomness (DARE, DELLA) comes only from ``TensorContext.seed`` (:mod:`evomm_ops.random_drop`,
whose functions are re-exported here with :class:`~evomm_ops.keep.Keep`), so a merge is
reproducible bit for bit on the same device type.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from evomm_ops import rank_select
from evomm_ops.keep import KEEP_ALL as KEEP_ALL
from evomm_ops.keep import Keep as Keep
from evomm_ops.keep import as_float as as_float
from evomm_ops.keep import masked
from evomm_ops.keep import window_mask_ as window_mask_
from evomm_ops.random_drop import dare_mask as dare_mask
from evomm_ops.random_drop import della_keep as della_keep
from evomm_ops.random_drop import della_magprune_ as della_magprune_
from evomm_ops.random_drop import random_ as random_
from evomm_ops.random_drop import random_keep as random_keep
from evomm_ops.random_drop import random_keep_streamed as random_keep_streamed
from evomm_ops.random_drop import random_keeps_streamed as random_keeps_streamed
from evomm_ops.random_drop import splitmix_mask as splitmix_mask
from evomm_ops.rank_select import RankBound as RankBound  # re-exported: Keep's bounds

if TYPE_CHECKING:
    import torch

#: Below this many elements ``torch.kthvalue`` on the whole tensor is as fast as sampling.
_SAMPLE_MIN_NUMEL = rank_select.SAMPLE_MIN_NUMEL


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
    return masked(rank_window_keep_(mag, lo, hi), original, rescale)


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
