"""Generalized task arithmetic: task arithmetic, TIES, DARE (TIES / linear), Model Breadcrumbs
(plain / TIES) and DELLA (TIES / linear), as one algorithm with two switches, like mergekit 0.1.5's
``GeneralizedTaskArithmeticMerge``:

1. task vectors ``d_i = model_i - base``, sparsified per model (``density``; method-specific);
2. weighted: ``d_i *= weight_i``;
3. with sign consensus (TIES-style methods): the elected sign is the sign of ``sum_i d_i``
   (zero counts as positive), and only entries whose weighted delta has that sign (and is not
   zero) contribute: ``mixed = sum_i d_i [agree_i]``, ``divisor = sum_i weight_i [agree_i]``
   (divisor 0 -> 1). Without consensus: ``mixed = sum_i d_i``, ``divisor = sum_i weight_i``
   (``|divisor| < 1e-8`` -> 1);
4. ``normalize``: ``mixed /= divisor`` (TIES' disjoint mean when weights are 1);
5. ``lambda``: ``mixed *= lambda``; result ``base + mixed``.

mergekit conventions followed exactly (and checked against its output by
tests/test_mergekit_golden.py): parameter names and defaults, ``normalize`` defaulting to True
only for ``ties`` and ``della``, ``rescale`` defaulting to True for the DARE and DELLA methods and
meaning L1-norm matching (see :mod:`evomm_ops.sparsify`), sign election on the *weighted* deltas,
normalisation by the weights of the agreeing models only, ``lambda`` applied after normalisation,
and the order of floating-point operations (float32 results are bit-identical for
``task_arithmetic``). Differences: bf16/fp16 inputs are computed in float32 and rounded once
(mergekit computes in bf16); ``int8_mask`` is accepted and has no effect (our masks are bool).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, ClassVar

from evomm.operators import MergeOperator, TensorContext
from evomm.params import ParamSpec
from evomm_ops import sparsify
from evomm_ops._common import CHUNK, G, M, bool_spec, check_inputs, density_spec, weight_spec, work_dtype

if TYPE_CHECKING:
    import torch

_LAMBDA = ParamSpec("lambda", G, 0.0, 3.0, 1.0, "scale of the merged task vector")
_GAMMA = ParamSpec("gamma", M, 0.0, 0.5, 0.01, "fraction of largest-magnitude entries dropped")
_EPSILON = ParamSpec("epsilon", M, 0.0, 0.5, 0.15, "spread of DELLA's keep probabilities")


def _params(normalize: bool, rescale: bool, sparsifies: bool, extra: tuple[ParamSpec, ...] = ()) -> tuple[ParamSpec, ...]:
    density = density_spec()
    if not sparsifies:  # accepted for mergekit recipes, but has no effect: never evolved
        density = ParamSpec("density", M, 0.0, 1.0, 1.0, "ignored by this method", evolvable=False)
    return (
        bool_spec("int8_mask", False, "accepted for mergekit compatibility; no effect"),
        bool_spec("normalize", normalize, "divide by the sum of (agreeing) weights"),
        bool_spec("rescale", rescale, "after dropping, restore each task vector's L1 norm"),
        _LAMBDA,
        weight_spec(),
        density,
        *extra,
    )


class GeneralizedTaskArithmetic(MergeOperator):
    """Base class of the task-vector methods; subclasses only set the class attributes."""

    requires_base = True
    min_models = 1
    #: sign election (TIES) on or off.
    consensus: ClassVar[bool] = False
    #: ``None``, ``"magnitude"``, ``"random"``, ``"magnitude_outliers"``, ``"della_magprune"``.
    sparsification: ClassVar[str | None] = None

    def merge(
        self,
        tensors: Sequence[torch.Tensor],
        base: torch.Tensor | None,
        global_params: Mapping[str, float],
        model_params: Sequence[Mapping[str, float]],
        ctx: TensorContext,
    ) -> torch.Tensor:
        """Merge one tensor (see the module docstring for the algorithm).

        Two passes: first each model's sparsification is decided on its whole task vector
        (:meth:`_keep`), then the arithmetic runs over flat chunks of :data:`CHUNK` entries in
        reused scratch buffers, writing straight into the output. Per entry, the floating-point
        operations and their order are those of the whole-tensor formulation, so chunking never
        changes a bit of the result.

        Example:
            >>> import torch
            >>> from evomm.layout import ModuleKind
            >>> ctx = TensorContext("w", ModuleKind.OTHER, None, 0)
            >>> TaskArithmetic().merge([torch.ones(2)], torch.zeros(2), {}, [{"weight": 0.5}], ctx)
            tensor([0.5000, 0.5000])
        """
        import torch
        g, per = check_inputs(type(self), tensors, base, global_params, model_params, ctx)
        assert base is not None  # check_inputs raised otherwise (requires_base)
        wd = work_dtype(base.dtype)
        flat_base = base.reshape(-1)
        flats = [t.reshape(-1) for t in tensors]
        n = flat_base.numel()
        generator = None
        if self.sparsification in ("random", "della_magprune"):
            generator = torch.Generator(device=base.device).manual_seed(ctx.seed)
        rescale = bool(g["rescale"])
        if self.sparsification == "random":  # DARE: every model's mask and norms at once
            assert generator is not None
            streamed: list[sparsify.Keep | None] = list(sparsify.random_keeps_streamed(
                tensors, base, [p["density"] for p in per], generator, rescale, wd, seed=ctx.seed
            ))
        else:
            streamed = self._streamed_windows(tensors, base, per, rescale, wd)
        keeps = [
            keep if keep is not None else self._keep(t, base, p, rescale, generator, wd)
            for t, p, keep in zip(tensors, per, streamed)
        ]
        weights = [p["weight"] for p in per]
        out = torch.empty(n, dtype=base.dtype, device=base.device)
        size = max(1, min(n, CHUNK))
        scratch = _Scratch(size, len(tensors), wd, base.device, self.consensus)
        # without consensus the divisor is one number, as mergekit's (|sum| < 1e-8 -> 1)
        divisor = torch.tensor(weights, dtype=wd, device=base.device).sum()
        if divisor.abs() < 1e-8:
            divisor = torch.ones_like(divisor)
        for start in range(0, n, size):
            stop = min(n, start + size)
            m = stop - start
            b = scratch.base[:m].copy_(flat_base[start:stop])
            deltas = []
            for i, (t, keep, w) in enumerate(zip(flats, keeps, weights)):
                d = scratch.deltas[i][:m].copy_(t[start:stop]).sub_(b)
                keep.apply_(d, start)
                deltas.append(d.mul_(w))
            if self.consensus:
                mixed, div = _consensus_sum(deltas, weights, scratch.sign[:m], scratch.agree[:m], scratch.div[:m])
            else:
                mixed, div = deltas[0], divisor
                for d in deltas[1:]:
                    mixed.add_(d)
            if g["normalize"]:
                mixed.div_(div)
            if g["lambda"] != 1:
                mixed.mul_(g["lambda"])
            out[start:stop].copy_(mixed.add_(b))
        return out.view(base.shape)

    def _streamed_windows(
        self, tensors: Sequence[torch.Tensor], base: torch.Tensor, per: Sequence[Mapping[str, float]],
        rescale: bool, wd: torch.dtype,
    ) -> list[sparsify.Keep | None]:
        """The magnitude windows (TIES, breadcrumbs) of every model found in one streamed pass
        (:func:`evomm_ops.sparsify.window_keeps_streamed`) where that applies (no rescale, a
        density strictly between 0 and 1, CPU); None for the others, which :meth:`_keep` decides
        on the whole tensor (the same result)."""
        method = self.sparsification
        if rescale or method not in ("magnitude", "magnitude_outliers"):
            return [None] * len(tensors)
        n = base.numel()
        windows = [
            (0, n) if not 0 < p["density"] < 1  # a full window: not streamed
            else sparsify.topk_window(n, p["density"]) if method == "magnitude"
            else sparsify.outliers_window(n, p["density"], p["gamma"])
            for p in per
        ]
        return sparsify.window_keeps_streamed(tensors, base, windows, wd)

    def _keep(
        self, t: torch.Tensor, base: torch.Tensor, p: Mapping[str, float], rescale: bool,
        gen: torch.Generator | None, wd: torch.dtype,
    ) -> sparsify.Keep:
        """Decide what to keep of one model's task vector ``t - base`` on the whole tensor: the
        magnitude methods where the streamed windows do not apply, and DELLA (DARE's keeps all
        come from :func:`evomm_ops.sparsify.random_keeps_streamed`)."""
        method = self.sparsification
        density = p["density"]
        if method is None or density >= 1:
            return sparsify.KEEP_ALL
        mag = _magnitudes(t, base, wd)
        if method == "magnitude":
            return sparsify.magnitude_keep(mag, density, rescale)
        if method == "magnitude_outliers":
            return sparsify.magnitude_outliers_keep(mag, density, p["gamma"], rescale)
        assert gen is not None and method == "della_magprune"
        return sparsify.della_keep(mag.view(t.shape), density, p["epsilon"], gen, rescale)


class _Scratch:
    """Reused chunk buffers of one merge call."""

    def __init__(self, size: int, models: int, dtype: torch.dtype, device: torch.device, consensus: bool) -> None:
        import torch
        def new() -> torch.Tensor:
            return torch.empty(size, dtype=dtype, device=device)

        self.base = new()
        self.deltas = [new() for _ in range(models)]
        self.sign = self.agree = self.div = torch.empty(0, dtype=dtype, device=device)
        if consensus:
            self.sign, self.agree, self.div = new(), new(), new()


def _magnitudes(t: torch.Tensor, base: torch.Tensor, wd: torch.dtype) -> torch.Tensor:
    """``|t - base|`` in ``wd``, flat, computed chunk by chunk into one new buffer."""
    import torch
    flat_t, flat_b = t.reshape(-1), base.reshape(-1)
    n = flat_b.numel()
    mag = torch.empty(n, dtype=wd, device=base.device)
    size = max(1, min(n, CHUNK))
    d = torch.empty(size, dtype=wd, device=base.device)
    b = torch.empty(size, dtype=wd, device=base.device)
    for start in range(0, n, size):
        stop = min(n, start + size)
        m = stop - start
        torch.abs(d[:m].copy_(flat_t[start:stop]).sub_(b[:m].copy_(flat_b[start:stop])), out=mag[start:stop])
    return mag


def _consensus_sum(
    deltas: list[torch.Tensor], weights: Sequence[float], sign: torch.Tensor, agree: torch.Tensor,
    divisor: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor]:
    """TIES sign election and disjoint sums over one chunk; ``deltas`` are overwritten, ``sign``,
    ``agree`` and ``divisor`` are scratch of the same length. Returns ``(mixed, divisor)`` with
    ``mixed`` one of ``deltas`` and the divisor's zeros (no model agrees) set to 1.

    Every step is a same-dtype, in-place float pass (signs and agreement are 0/1 or +-1 floats,
    never bool tensors): on CPU a bool intermediate costs a comparison into a new tensor plus a
    conversion back, several times the memory traffic of the arithmetic itself.
    """
    import torch
    elected = sign.copy_(deltas[0])
    for d in deltas[1:]:
        elected.add_(d)
    # elected sign as +-1 (zero sum, also -0.0, counts as positive, as mergekit's `>= 0`)
    elected.ge_(0).mul_(2).sub_(1)
    mixed = deltas[0]
    for i, d in enumerate(deltas):
        torch.mul(d, sign, out=agree).gt_(0)  # 1.0 where same sign as elected and non-zero
        d.mul_(agree)
        if i == 0:
            torch.mul(agree, float(weights[0]), out=divisor)
        else:
            mixed.add_(d)
            divisor.add_(agree, alpha=float(weights[i]))  # + w_i * {0, 1}: exact
    divisor.add_(torch.eq(divisor, 0, out=agree))  # 0 -> 1 (mixed is 0 there anyway)
    return mixed, divisor


def _spec(name: str, description: str, paper: str, consensus: bool, sparsification: str | None,
          normalize: bool, rescale: bool, extra: tuple[ParamSpec, ...] = ()) -> type[GeneralizedTaskArithmetic]:
    attrs = {
        "name": name,
        "mergekit_name": name,  # every task-vector method here is mergekit's, same parameters
        "description": description,
        "paper": paper,
        "consensus": consensus,
        "sparsification": sparsification,
        "params": _params(normalize, rescale, sparsification is not None, extra),
        "__doc__": f"{description} ({paper}); mergekit defaults normalize={normalize}, rescale={rescale}.",
        "__module__": __name__,
    }
    cls_name = "".join(part.capitalize() for part in name.split("_"))
    return type(cls_name, (GeneralizedTaskArithmetic,), attrs)  # type: ignore[return-value]


_TA, _TIES = "https://arxiv.org/abs/2212.04089", "https://arxiv.org/abs/2306.01708"
_DARE, _BC, _DELLA = "https://arxiv.org/abs/2311.03099", "https://arxiv.org/abs/2312.06795", "https://arxiv.org/abs/2406.11617"

TaskArithmetic = _spec("task_arithmetic", "sum of weighted task vectors", _TA, False, None, False, False)
Ties = _spec("ties", "TIES: trim to top-k magnitudes, elect sign, disjoint mean", _TIES, True, "magnitude", True, False)
DareTies = _spec("dare_ties", "DARE random drop + TIES sign election", _DARE, True, "random", False, True)
DareLinear = _spec("dare_linear", "DARE random drop, weighted sum", _DARE, False, "random", False, True)
Breadcrumbs = _spec("breadcrumbs", "Model Breadcrumbs: drop outliers and small entries", _BC, False,
                    "magnitude_outliers", False, False, (_GAMMA,))
BreadcrumbsTies = _spec("breadcrumbs_ties", "Model Breadcrumbs + TIES sign election", _BC, True,
                        "magnitude_outliers", False, False, (_GAMMA,))
Della = _spec("della", "DELLA: magnitude-ranked random drop + TIES sign election", _DELLA, True,
              "della_magprune", True, True, (_EPSILON,))
DellaLinear = _spec("della_linear", "DELLA magnitude-ranked random drop, weighted sum", _DELLA, False,
                    "della_magprune", False, True, (_EPSILON,))

OPERATORS: tuple[type[MergeOperator], ...] = (
    TaskArithmetic, Ties, DareTies, DareLinear, Breadcrumbs, BreadcrumbsTies, Della, DellaLinear,
)
