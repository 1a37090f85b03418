"""Generate tests/golden/mergekit_methods_golden.safetensors: mergekit 0.1.5's own kernels for the
eight methods evomm added for issue 20 (nuslerp, multislerp, karcher, sce, nearswap,
arcee_fusion, ram, ramplus_tl), replayed by tests/test_mergekit_golden_methods.py.

Not run in CI (mergekit is not a dependency of evomm). Regenerate with::

    python3 -m venv /tmp/mkvenv && /tmp/mkvenv/bin/pip install mergekit==0.1.5
    /tmp/mkvenv/bin/python tests/golden/make_mergekit_methods_golden.py

Same file layout as make_mergekit_golden.py (whose input generator this reuses): every case stores
its inputs (``<case>.base``, ``<case>.m0``, ...), mergekit's output (``<case>.out``; for bf16
inputs also mergekit computing in float32, ``<case>.out32``) and, in the metadata, the case list
as JSON. None of these methods draws random numbers on tensors this small (arcee_fusion samples
only above 1M entries), so every case is one deterministic run through ``merge_tensors``.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from make_mergekit_golden import SHAPE, inputs
from mergekit.merge_methods import merge_tensors
from safetensors.torch import save_file

torch.set_num_threads(1)
OUT = Path(__file__).with_name("mergekit_methods_golden.safetensors")

CASES = [
    # name, method, n models, base?, dtype, parameters (per-model lists in model order), inputs
    ("nuslerp", "nuslerp", 2, False, "float32", {"weight": [0.3, 0.7]}, "near"),
    ("nuslerp_base", "nuslerp", 2, True, "float32", {"weight": [1.0, 0.5]}, "near"),
    ("nuslerp_rows", "nuslerp", 2, True, "float32", {"weight": [0.6, 0.4], "nuslerp_flatten": False}, "near"),
    ("nuslerp_cols", "nuslerp", 2, False, "float32",
     {"weight": [0.2, 0.9], "nuslerp_flatten": False, "nuslerp_row_wise": True}, "near"),
    ("nuslerp_bf16", "nuslerp", 2, True, "bfloat16", {"weight": [0.5, 0.8]}, "near"),
    ("multislerp", "multislerp", 3, False, "float32", {"weight": [0.2, 0.5, 0.3]}, "near"),
    ("multislerp_base", "multislerp", 3, True, "float32", {"weight": [1.0, 0.4, 0.7]}, "near"),
    ("multislerp_raw", "multislerp", 2, True, "float32", {"weight": [0.3, 0.4], "normalize_weights": False}, "near"),
    ("karcher", "karcher", 3, False, "float32", {}, "near"),
    ("karcher_short", "karcher", 4, False, "float32", {"max_iter": 2, "tol": 1e-4}, "near"),
    ("karcher_spread", "karcher", 3, False, "float32", {}, "spread"),
    ("karcher_spread_short", "karcher", 4, False, "float32", {"max_iter": 3}, "spread"),
    ("multislerp_spread", "multislerp", 4, False, "float32", {"weight": [0.1, 0.4, 0.3, 0.2]}, "spread"),
    ("nuslerp_spread", "nuslerp", 2, False, "float32", {"weight": [0.25, 0.75]}, "spread"),
    ("sce", "sce", 3, True, "float32", {}, "near"),
    ("sce_topk", "sce", 3, True, "float32", {"select_topk": 0.4}, "near"),
    ("sce_topk_sparse", "sce", 2, True, "float32", {"select_topk": 0.7}, "sparse"),
    ("sce_bf16", "sce", 2, True, "bfloat16", {"select_topk": 0.5}, "near"),
    ("nearswap", "nearswap", 1, True, "float32", {"t": 0.05}, "near"),
    ("nearswap_bf16", "nearswap", 1, True, "bfloat16", {"t": 0.1}, "near"),
    ("arcee_fusion", "arcee_fusion", 1, True, "float32", {}, "near"),
    ("ram", "ram", 3, True, "float32", {}, "sparse"),
    ("ram_eps", "ram", 2, True, "float32", {"epsilon": 0.005}, "near"),
    ("ramplus_tl", "ramplus_tl", 3, True, "float32", {"r": 0.5, "alpha": 0.6}, "sparse"),
    ("ramplus_tl_default", "ramplus_tl", 2, True, "float32", {}, "sparse"),
    ("ramplus_tl_bf16", "ramplus_tl", 3, True, "bfloat16", {"r": 0.8, "alpha": 0.3}, "sparse"),
]


def sparse_inputs(seed: int, n: int, dtype: torch.dtype) -> list[torch.Tensor]:
    """A base and ``n`` models whose task vectors are zero on about half the entries each, so
    that RAM's unique and shared entries both occur (dense random deltas are all shared)."""
    g = torch.Generator().manual_seed(seed)
    base = torch.randn(SHAPE, generator=g)
    models = [base + 0.1 * torch.randn(SHAPE, generator=g) * (torch.rand(SHAPE, generator=g) < 0.5)
              for _ in range(n)]
    return [t.to(dtype) for t in [base, *models]]


def spread_inputs(seed: int, n: int, dtype: torch.dtype) -> list[torch.Tensor]:
    """``n`` independent random models (far apart on the sphere: the Karcher iteration needs
    several steps, where near-identical models converge in one)."""
    g = torch.Generator().manual_seed(seed)
    return [(torch.randn(SHAPE, generator=g) * (i + 1)).to(dtype) for i in range(n)]


def make_inputs(kind: str, seed: int, n: int, dtype: torch.dtype, with_base: bool) -> list[torch.Tensor]:
    """The inputs of one case: ``near`` (fine-tunes of one base), ``sparse``, ``spread``."""
    if kind == "sparse":
        return sparse_inputs(seed, n, dtype)
    if kind == "spread":
        return spread_inputs(seed, n, dtype)
    return inputs(seed, n, dtype, with_base)


def run(method: str, tensors: list[torch.Tensor], with_base: bool, params: dict,
        dtype: torch.dtype | None = None) -> torch.Tensor:
    return merge_tensors(tensors, method, parameters=params, base_index=0 if with_base else None,
                         dtype=dtype)


def main() -> None:
    tensors: dict[str, torch.Tensor] = {}
    meta = []
    for i, (name, method, n, with_base, dtype, params, kind) in enumerate(CASES):
        ins = make_inputs(kind, 2000 + i, n, getattr(torch, dtype), with_base)
        if with_base:
            tensors[f"{name}.base"] = ins[0]
        for j, t in enumerate(ins[1:] if with_base else ins):
            tensors[f"{name}.m{j}"] = t
        tensors[f"{name}.out"] = run(method, ins, with_base, params).contiguous()
        if dtype != "float32":  # the same merge computed by mergekit in float32
            tensors[f"{name}.out32"] = run(method, ins, with_base, params, dtype=torch.float32).contiguous()
        meta.append({"name": name, "method": method, "n": n, "base": with_base, "dtype": dtype,
                     "params": params})
    tmp = OUT.with_suffix(".tmp")
    save_file(tensors, str(tmp), metadata={"cases": json.dumps(meta), "mergekit": "0.1.5"})
    tmp.replace(OUT)
    print(f"wrote {OUT} ({OUT.stat().st_size} bytes, {len(meta)} cases)")


if __name__ == "__main__":
    main()
