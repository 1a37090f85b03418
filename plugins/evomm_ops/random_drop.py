"""Random sparsification of task vectors: DARE's random drop and DELLA's magnitude-ranked drop.

DARE's masks are a deterministic function of ``TensorContext.seed``: model ``i``'s mask is drawn
from the SplitMix64 stream seeded with :func:`dare_seed` ``(ctx.seed, i)``, entry ``k`` kept when
bits ``16 * (k % 4)`` up of word ``k // 4``, as an unsigned 16-bit integer, are below
``round(density * 65536)`` (:func:`dare_level`). SplitMix64 is counter-based (any word is computed
on its own), so the masks are the same on every device and in any chunking: on CPU they are drawn
in NumPy (:func:`splitmix_mask_array`: uint64 arithmetic, vectorised; torch has no uint64 shifts
and its int64 multiply is not vectorised on CPU, ~5x slower), elsewhere in torch
(:func:`splitmix_mask`, int64 arithmetic wrapping as uint64 does). The keep probability is
thus resolved to 1/65536 (an error below 8e-6, invisible after L1 rescaling).

``rescale`` matches the L1 norm of the masked delta to the original (mergekit's
``RescaleNorm.l1``, see :mod:`evomm_ops.sparsify`). DELLA draws from a ``torch.Generator``
seeded with ``TensorContext.seed``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

from evomm_ops.keep import KEEP_ALL, RESCALE_EPS, Keep, as_float, masked
from evomm_ops.rank_select import CHUNK, parallel_map

if TYPE_CHECKING:
    import torch

#: Resolution of DARE's keep probability (16-bit draws, four per 64-bit word).
DARE_LEVELS = 1 << 16
#: SplitMix64's constants (Steele, Lea and Flood, "Fast splittable pseudorandom number
#: generators", OOPSLA 2014; the output function is Stafford's "Mix13"): the increment of its
#: state and the two multipliers of its output function. DARE's draws are its words.
SPLITMIX64 = (0x9E3779B97F4A7C15, 0xBF58476D1CE4E5B9, 0x94D049BB133111EB)
#: Words per block of :func:`splitmix_mask_array` (128 KiB of uint64: stays in L2).
_WORDS = 1 << 14


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


def splitmix_mask_array(n: int, level: int, seed: int) -> np.ndarray:
    """DARE's flat bool keep mask of ``n`` entries from the SplitMix64 stream ``seed``, in NumPy
    (the CPU form of :func:`splitmix_mask`, the same bits), block by block in reused buffers.
    NumPy releases the GIL, so several models' masks can be drawn in parallel threads.

    Example:
        >>> splitmix_mask_array(6, 32768, 1234567).tolist()
        [False, False, False, True, True, True]
    """
    out = np.empty(n, np.bool_)
    if level >= DARE_LEVELS:
        out.fill(True)
        return out
    gamma, mix1, mix2 = (np.uint64(c) for c in SPLITMIX64)
    words = (n + 3) // 4
    size = min(words, _WORDS)
    step = np.arange(1, size + 1, dtype=np.uint64) * gamma  # uint64 arithmetic wraps, as SplitMix64's
    z, tmp = np.empty(size, np.uint64), np.empty(size, np.uint64)
    level16 = np.uint16(level)
    for first in range(0, words, size):
        k = min(size, words - first)
        zz, tt = z[:k], tmp[:k]
        np.add(step[:k], np.uint64((seed + first * SPLITMIX64[0]) % 2**64), out=zz)
        for shift, mix in ((30, mix1), (27, mix2), (31, None)):
            np.bitwise_xor(zz, np.right_shift(zz, np.uint64(shift), out=tt), out=zz)
            if mix is not None:
                np.multiply(zz, mix, out=zz)
        lo, hi = 4 * first, min(n, 4 * (first + k))
        np.less(zz.view(np.uint16)[: hi - lo], level16, out=out[lo:hi])  # little-endian quarters
    return out


def dare_mask(shape: torch.Size, density: float, generator: torch.Generator, device: torch.device) -> torch.Tensor:
    """Bernoulli(density) keep mask drawn from 16-bit random integers.

    The integers are the 16-bit quarters of the words of a SplitMix64 stream (a counter-based
    generator: any word is computed on its own) seeded with one 64-bit draw of ``generator``, so
    successive masks from one per-tensor generator differ and the same seed gives the same mask
    on every device: on CPU from :func:`splitmix_mask_array` (NumPy), elsewhere from
    :func:`splitmix_mask` (torch). An entry is kept when its draw is below
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
        return torch.from_numpy(splitmix_mask_array(n, dare_level(density), seed))
    return splitmix_mask(n, dare_level(density), seed, device)


def _signed64(v: int) -> int:
    """An unsigned 64-bit integer as the int64 with the same bits."""
    return v - 2**64 if v >= 2**63 else v


def _shr(z: torch.Tensor, bits: int) -> torch.Tensor:
    """Logical right shift of int64 ``z`` (torch's ``>>`` is arithmetic)."""
    return (z >> bits) & ((1 << (64 - bits)) - 1)


def splitmix_mask(n: int, level: int, seed: int, device: torch.device | str = "cpu") -> torch.Tensor:
    """DARE's flat keep mask in torch, on any device: entry ``i`` is kept when bits
    ``16 * (i % 4)`` up of word ``i // 4`` of the SplitMix64 stream ``seed``, as an unsigned
    16-bit integer, are below ``level`` (what :func:`splitmix_mask_array` computes on CPU).
    int64 arithmetic wraps as the generator's uint64 arithmetic does.

    Example:
        >>> splitmix_mask(6, 32768, 1234567).tolist()
        [False, False, False, True, True, True]
    """
    import torch
    if level >= DARE_LEVELS:
        return torch.ones(n, dtype=torch.bool, device=device)
    gamma, mix1, mix2 = (_signed64(c) for c in SPLITMIX64)
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
    return masked(mask, mag, rescale)


def random_keep_streamed(
    t: torch.Tensor, base: torch.Tensor, density: float, generator: torch.Generator, rescale: bool,
    wd: torch.dtype,
) -> Keep:
    """:func:`random_keep` of the task vector ``t - base``, without whole-tensor magnitudes.

    The mask is the same draw as :func:`random_keep`'s, kept as a bool tensor (1 byte an entry
    instead of a float mask's 4). With ``rescale``, the two L1 norms (before and after dropping)
    are summed in one chunked pass over the inputs (chunks of :data:`~evomm_ops.rank_select.CHUNK`, each chunk's
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
    :func:`dare_seed` gives model ``i`` of ``seed`` when ``seed`` is given (the operators pass
    ``TensorContext.seed``), else from draws of ``generator`` in model order; on CPU the models'
    masks are drawn in parallel threads. The rescale's L1 norms are summed in one chunked pass
    that converts each base chunk once (:func:`_l1_norms`).

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
        seeds = {i: dare_seed(seed, i) for i in todo}
    else:
        seeds = {i: _draw_seed(generator) for i in todo}  # in model order, as dare_mask draws them
    drawn = parallel_map(lambda i: _seeded_dare_mask(n, densities[i], seeds[i], base.device), todo)
    masks = dict(zip(todo, drawn))
    if not rescale or not todo:
        return [Keep(mask=masks[i]) if i in masks else KEEP_ALL for i in range(len(models))]
    norms = _l1_norms(models, base, masks, todo, wd)
    for i in todo:
        before, after = norms[i]
        scale = None
        if before >= RESCALE_EPS and after >= RESCALE_EPS:
            scale = torch.tensor(before / after, dtype=wd, device=base.device)
        out[i] = Keep(mask=masks[i], scale=scale)
    return out




def _l1_norms(
    models: Sequence[torch.Tensor], base: torch.Tensor, masks: dict[int, torch.Tensor], todo: list[int],
    wd: torch.dtype,
) -> dict[int, tuple[float, float]]:
    """The L1 norms before and after masking of each model in ``todo``, summed chunk by chunk
    (the bool masks' chunks as 0/1 in ``wd``)."""
    import torch
    n = base.numel()
    flats = {i: models[i].reshape(-1) for i in todo}
    flat_b = base.reshape(-1)
    size = max(1, min(n, CHUNK))
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
            # same-dtype passes only (torch's mixed-dtype and float64-accumulating kernels are
            # several times slower on CPU); each chunk's sum is torch's cascaded float sum, the
            # chunks' sums are added in float64
            mag = d[:m].copy_(flats[i][start:stop]).sub_(bc).abs_()
            before[i] += float(mag.sum())
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
    return masked(as_float(mask, mag.dtype).view(-1), mag, rescale)



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
