"""What sparsification keeps of one task vector: :class:`Keep`, decided on the whole tensor and
applied chunk by chunk (a 0/1 mask, an optional L1 rescale factor, or a rank window's bounds).

The sparsification methods (:mod:`evomm_ops.sparsify`: magnitude windows; :mod:`evomm_ops.random_drop`:
DARE and DELLA) return a :class:`Keep`; the task-vector operators apply it to each chunk of a
delta in place (:meth:`Keep.apply_`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from evomm_ops.rank_select import RankBound

if TYPE_CHECKING:
    import torch

#: Below this L1 norm (before or after dropping) nothing is rescaled (mergekit's RescaleNorm).
RESCALE_EPS = 1e-7


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


def scale_factor(before: torch.Tensor, after: torch.Tensor) -> torch.Tensor | None:
    """mergekit's RescaleNorm.l1 factor, or None when either norm is below 1e-7."""
    return before / after if before >= RESCALE_EPS and after >= RESCALE_EPS else None


def masked(mask: torch.Tensor, mag: torch.Tensor | None, rescale: bool) -> Keep:
    """``Keep`` of a 0/1 float ``mask``; with ``rescale``, ``mag`` (the magnitudes, consumed)
    gives the L1 norms before and after masking."""
    if not rescale:
        return Keep(mask=mask)
    assert mag is not None  # callers pass magnitudes whenever rescale is on
    before = mag.sum()
    after = mag.view_as(mask).mul_(mask).sum()
    return Keep(mask=mask, scale=scale_factor(before, after))

