"""DARE's masks are their definition, the same from every implementation, and random enough.

The definition (docs/operators.md, DARE): entry ``i`` of a mask seeded with ``seed`` is kept
when bits ``16 * (i % 4)`` up of output ``i // 4`` of the SplitMix64 generator started at
``seed``, read as an unsigned 16-bit integer, are below ``round(density * 65536)``.

* the generator here is a plain sequential SplitMix64 in Python, checked against the published
  first outputs of seed 1234567; the NumPy form (CPU), the torch form (every other device) and
  the operators' ``dare_mask`` all equal it;
* the rescale factor is the ratio of the L1 norms before and after the mask;
* keep rates, neighbouring entries, the four quarters of a word and two models' masks behave as
  independent Bernoulli draws (5-sigma bounds).
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from evomm_ops import random_drop, sparsify
from evomm_ops.rank_select import CHUNK

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
    assert np.array_equal(random_drop.splitmix_mask_array(n, random_drop.dare_level(density), seed), want)  # NumPy (CPU)
    got_torch = sparsify.splitmix_mask(n, random_drop.dare_level(density), seed)  # other devices
    assert got_torch.dtype == torch.bool and np.array_equal(got_torch.numpy(), want)


@pytest.mark.parametrize("n", [1, 4, 5, (1 << 16), 3 * (1 << 16) + 7])
def test_numpy_and_torch_agree_across_blocks(n: int) -> None:
    seed = random_drop.dare_seed(77, 3)
    for density in (0.3, 0.7):
        a = random_drop.splitmix_mask_array(n, random_drop.dare_level(density), seed)
        b = sparsify.splitmix_mask(n, random_drop.dare_level(density), seed).numpy()
        assert np.array_equal(a, b)
    # the start of a longer stream is the shorter stream: entries do not depend on n
    longer = random_drop.splitmix_mask_array(n + 5, random_drop.dare_level(0.3), seed)
    assert np.array_equal(longer[:n], random_drop.splitmix_mask_array(n, random_drop.dare_level(0.3), seed))


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


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
def test_rescale_norms_are_the_l1_norms_before_and_after_the_mask(dtype: torch.dtype) -> None:
    """DARE's rescale factor is sum |d| / sum |d| [mask] of each model (mergekit's L1 rescale),
    with the mask the operators draw; chunked sums equal float64 NumPy sums to rounding."""
    rng = np.random.default_rng(3)
    n = 3 * CHUNK + 13  # several chunks and a tail
    base = torch.from_numpy(rng.standard_normal(n).astype(np.float32)).to(dtype)
    models = [torch.from_numpy((rng.standard_normal(n) * (j + 1)).astype(np.float32)).to(dtype) for j in range(2)]
    densities = [0.2, 0.7]
    keeps = random_drop.random_keeps_streamed(models, base, densities, torch.Generator(), True, torch.float32, seed=5)
    for j, keep in enumerate(keeps):
        mask = reference_mask(n, densities[j], random_drop.dare_seed(5, j))
        assert np.array_equal(keep.mask.numpy(), mask)
        mag = np.abs(models[j].float().numpy() - base.float().numpy()).astype(np.float64)
        assert math.isclose(float(keep.scale), mag.sum() / mag[mask].sum(), rel_tol=1e-6)


def _within(count: int, n: int, p: float) -> bool:
    return abs(count - n * p) <= 5 * math.sqrt(n * p * (1 - p))


@pytest.mark.parametrize("density", [0.01, 0.3, 0.5, 0.9])
def test_masks_behave_as_independent_draws(density: float) -> None:
    n = 1 << 20
    seed = random_drop.dare_seed(2024, 0)
    m = random_drop.splitmix_mask_array(n, random_drop.dare_level(density), seed)
    p = random_drop.dare_level(density) / 65536
    assert _within(int(m.sum()), n, p)
    assert _within(int(np.count_nonzero(m[:-1] & m[1:])), n - 1, p * p)  # neighbours
    quarters = m.reshape(-1, 4)
    for lane in range(4):  # each quarter of a word alone, and with the next quarter
        assert _within(int(quarters[:, lane].sum()), n // 4, p)
        assert _within(int(np.count_nonzero(quarters[:, lane] & quarters[:, (lane + 1) % 4])), n // 4, p * p)
    other = random_drop.splitmix_mask_array(n, random_drop.dare_level(density), random_drop.dare_seed(2024, 1))  # another model
    assert _within(int(np.count_nonzero(m & other)), n, p * p)
    shifted = random_drop.splitmix_mask_array(n, random_drop.dare_level(density), seed + 1)  # a neighbouring seed
    assert _within(int(np.count_nonzero(m & shifted)), n, p * p)


def test_a_dare_ties_merge_loads_no_numba(tmp_path: Path) -> None:
    """The one merge engine is torch (and NumPy for the masks): a DARE-TIES merge in a fresh
    process imports no numba."""
    import subprocess
    import sys

    import yaml

    from tests.tiny_models import make_tiny_model, perturb_model

    base = make_tiny_model(tmp_path / "base", "llama", seed=40)
    models = [perturb_model(base, tmp_path / name, seed=41 + j) for j, name in enumerate("ab")]
    recipe = tmp_path / "dare.yaml"
    recipe.write_text(yaml.safe_dump({
        "merge_method": "dare_ties", "base_model": str(base), "dtype": "bfloat16",
        "models": [{"model": str(m), "parameters": {"weight": 0.5, "density": 0.5}} for m in models],
    }))
    code = ("import sys; from evomm.cli import main; "
            f"rc = main(['merge', {str(recipe)!r}, '--out', {str(tmp_path / 'out')!r}, '--no-progress']); "
            "print('RC', rc, 'NUMBA', 'numba' in sys.modules)")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.split()[-4:] == ["RC", "0", "NUMBA", "False"]
