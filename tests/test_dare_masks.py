"""DARE's masks are their definition, the same from every implementation, and random enough.

The definition (docs/operators.md, DARE): entry ``i`` of a mask seeded with ``seed`` is kept
when bits ``16 * (i % 4)`` up of output ``i // 4`` of the SplitMix64 generator started at
``seed``, read as an unsigned 16-bit integer, are below ``round(density * 65536)``.

* the generator here is a plain sequential SplitMix64 in Python, checked against the published
  first outputs of seed 1234567; the numba kernel (CPU), the torch formulation (every other
  device) and the operators' ``dare_mask`` all equal it;
* the fused norms kernel of the CPU engine (mask drawn inline) sums exactly what the torch
  path's ``l1_norms`` sums over an explicit mask, and both are their definition: per strip of
  ``SUM_STRIP`` entries the float64 magnitudes summed pairwise, the strips' sums added in order
  (recomputed here with NumPy);
* keep rates, neighbouring entries, the four quarters of a word and two models' masks behave as
  independent Bernoulli draws (5-sigma bounds).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from evomm_ops import host_kernels, host_sparsify, sparsify

U64 = 2**64 - 1


def splitmix64_stream(seed: int, count: int) -> list[int]:
    """The first ``count`` outputs of SplitMix64 started at ``seed`` (sequential, in Python)."""
    gamma, mix1, mix2 = 0x9E3779B97F4A7C15, 0xBF58476D1CE4E5B9, 0x94D049BB133111EB
    out, state = [], seed
    for _ in range(count):
        state = (state + gamma) & U64
        z = state
        z = ((z ^ (z >> 30)) * mix1) & U64
        z = ((z ^ (z >> 27)) * mix2) & U64
        out.append(z ^ (z >> 31))
    return out


def reference_mask(n: int, density: float, seed: int) -> np.ndarray:
    words = splitmix64_stream(seed, (n + 3) // 4)
    draws = [(words[i // 4] >> (16 * (i % 4))) & 0xFFFF for i in range(n)]
    return np.array(draws) < round(density * 65536)


PUBLISHED = [  # the first outputs of SplitMix64 seeded with 1234567, as its reference C code prints them
    6457827717110365317, 3203168211198807973, 9817491932198370423, 4593380528125082431, 16408922859458223821,
]


def _words_of_the_mask(n_words: int, seed: int) -> list[int]:
    """The generator words behind evomm's ``splitmix_mask``, read back from its masks alone: each
    16-bit quarter is the smallest level at which its entry is kept, less one (binary search)."""
    n = 4 * n_words
    lo, hi = torch.zeros(n, dtype=torch.int64), torch.full((n,), 65536, dtype=torch.int64)
    while bool((lo < hi).any()):  # invariant: quarter < hi, quarter >= lo
        mid = (lo + hi) // 2
        kept = torch.stack([sparsify.splitmix_mask(n, int(m) + 1, seed)[i] for i, m in enumerate(mid)])
        hi = torch.where(kept, mid, hi)
        lo = torch.where(kept, lo, mid + 1)
    quarters = lo.tolist()
    return [sum(quarters[4 * w + k] << (16 * k) for k in range(4)) for w in range(n_words)]


def test_evomms_generator_gives_splitmix64s_published_outputs() -> None:
    assert _words_of_the_mask(5, 1234567) == PUBLISHED
    assert splitmix64_stream(1234567, 5) == PUBLISHED  # the reference the other tests use


@pytest.mark.parametrize("density", [0.0, 1e-6, 0.1, 0.5, 0.999999, 1.0])
@pytest.mark.parametrize("seed", [0, 1234567, U64])
def test_every_implementation_draws_the_definition(density: float, seed: int) -> None:
    n = 9_001  # not a multiple of 4
    want = reference_mask(n, density, seed)
    assert np.array_equal(host_sparsify.dare_mask(n, density, seed), want)  # numba (CPU)
    got_torch = sparsify.splitmix_mask(n, host_sparsify.dare_level(density), seed)  # other devices
    assert got_torch.dtype == torch.bool and np.array_equal(got_torch.numpy(), want)


@pytest.mark.parametrize("n", [1, 4, 5, host_kernels.BLOCK, 3 * host_kernels.BLOCK + 7])
def test_kernel_and_torch_agree_across_blocks(n: int) -> None:
    seed = host_sparsify.dare_seed(77, 3)
    for density in (0.3, 0.7):
        a = host_sparsify.dare_mask(n, density, seed)
        b = sparsify.splitmix_mask(n, host_sparsify.dare_level(density), seed).numpy()
        assert np.array_equal(a, b)
    # the start of a longer stream is the shorter stream: entries do not depend on n
    longer = host_sparsify.dare_mask(n + 5, 0.3, seed)
    assert np.array_equal(longer[:n], host_sparsify.dare_mask(n, 0.3, seed))


def test_operators_mask_is_seeded_by_the_generator_and_successive_masks_differ() -> None:
    shape = torch.Size([300, 77])
    gen = torch.Generator().manual_seed(9)
    first = sparsify.dare_mask(shape, 0.4, gen, torch.device("cpu"))
    second = sparsify.dare_mask(shape, 0.4, gen, torch.device("cpu"))
    ref = torch.Generator().manual_seed(9)
    seeds = [int(torch.empty((), dtype=torch.int64).random_(generator=ref)) % 2**64 for _ in range(2)]
    assert first.shape == shape and first.dtype == torch.bool
    assert np.array_equal(first.reshape(-1).numpy(), reference_mask(shape.numel(), 0.4, seeds[0]))
    assert np.array_equal(second.reshape(-1).numpy(), reference_mask(shape.numel(), 0.4, seeds[1]))
    assert not torch.equal(first, second)


def _raw(values: np.ndarray, dtype: str) -> np.ndarray:
    if dtype == "float32":
        return values.astype(np.float32)
    return torch.from_numpy(values.astype(np.float32)).to(torch.bfloat16).view(torch.int16).numpy().view(np.uint16)


def _f32(raw: np.ndarray) -> np.ndarray:
    return (raw.astype(np.uint32) << 16).view(np.float32) if raw.dtype == np.uint16 else raw


@pytest.mark.parametrize("dtype", ["bfloat16", "float32"])
@pytest.mark.parametrize("models", [1, 2, 3])
def test_fused_norms_equal_l1_norms_over_an_explicit_mask(dtype: str, models: int) -> None:
    rng = np.random.default_rng(models)
    n = 2 * host_kernels.BLOCK + 13
    base = _raw(rng.standard_normal(n), dtype)
    xs = [_raw(rng.standard_normal(n) * (j + 1), dtype) for j in range(models)]
    seeds = [host_sparsify.dare_seed(5, j) for j in range(models)]
    densities = [0.2, 0.5, 0.9][:models]
    fused = np.empty((models, 2))
    host_kernels.dare_l1_norms(
        tuple(xs), base, np.array(seeds, np.uint64), np.array([host_sparsify.dare_level(d) for d in densities]), fused
    )
    for j in range(models):
        mask = host_sparsify.dare_mask(n, densities[j], seeds[j])
        assert tuple(fused[j]) == host_kernels.l1_norms(xs[j], base, mask)  # the same float64 bits
        # and what the norms are: the float32 magnitudes summed (in float64, to rounding)
        mag = np.abs(_f32(xs[j]) - _f32(base)).astype(np.float64)
        assert math.isclose(fused[j, 0], float(mag.sum()), rel_tol=1e-12)
        assert math.isclose(fused[j, 1], float(mag[mask].sum()), rel_tol=1e-12)
    scales = host_sparsify.dare_scales(xs, base, seeds, densities)
    assert np.array_equal(scales, (fused[:, 0] / fused[:, 1]).astype(np.float32))


def pairwise_norm(mag: np.ndarray) -> float:
    """The definition of the kernels' sums, in NumPy: each strip of ``SUM_STRIP`` float64 values
    zero-padded and halved (``v[:h] + v[h:]``) down to one value, the strips added in order."""
    total = 0.0
    for start in range(0, mag.size, host_kernels.SUM_STRIP):
        v = np.zeros(host_kernels.SUM_STRIP)
        chunk = mag[start : start + host_kernels.SUM_STRIP]
        v[: chunk.size] = chunk
        while v.size > 1:
            v = v[: v.size // 2] + v[v.size // 2 :]
        total += float(v[0])
    return total


@pytest.mark.parametrize("n", [1, 1000, host_kernels.SUM_STRIP, 3 * host_kernels.BLOCK + 5])
def test_l1_norms_are_stripwise_pairwise_sums(n: int) -> None:
    rng = np.random.default_rng(n)
    x = (rng.standard_normal(n) * 1e3 ** rng.integers(-3, 3, n)).astype(np.float32)  # a wide range
    base = rng.standard_normal(n).astype(np.float32)
    mask = rng.random(n) < 0.4
    mag = np.abs(x - base).astype(np.float64)
    before, after = host_kernels.l1_norms(x, base, mask)
    assert before == pairwise_norm(mag)
    assert after == pairwise_norm(np.where(mask, mag, 0.0))


def _within(count: int, n: int, p: float) -> bool:
    return abs(count - n * p) <= 5 * math.sqrt(n * p * (1 - p))


@pytest.mark.parametrize("density", [0.01, 0.3, 0.5, 0.9])
def test_masks_behave_as_independent_draws(density: float) -> None:
    n = 1 << 20
    seed = host_sparsify.dare_seed(2024, 0)
    m = host_sparsify.dare_mask(n, density, seed)
    p = host_sparsify.dare_level(density) / 65536
    assert _within(int(m.sum()), n, p)
    assert _within(int(np.count_nonzero(m[:-1] & m[1:])), n - 1, p * p)  # neighbours
    quarters = m.reshape(-1, 4)
    for lane in range(4):  # each quarter of a word alone, and with the next quarter
        assert _within(int(quarters[:, lane].sum()), n // 4, p)
        assert _within(int(np.count_nonzero(quarters[:, lane] & quarters[:, (lane + 1) % 4])), n // 4, p * p)
    other = host_sparsify.dare_mask(n, density, host_sparsify.dare_seed(2024, 1))  # another model
    assert _within(int(np.count_nonzero(m & other)), n, p * p)
    shifted = host_sparsify.dare_mask(n, density, seed + 1)  # a neighbouring seed
    assert _within(int(np.count_nonzero(m & shifted)), n, p * p)
