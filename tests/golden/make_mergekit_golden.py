"""Generate tests/golden/mergekit_golden.safetensors with mergekit 0.1.5's own merge kernels.

Not run in CI (mergekit is not a dependency of evomm). Regenerate with::

    python3 -m venv /tmp/mkvenv && /tmp/mkvenv/bin/pip install mergekit==0.1.5
    /tmp/mkvenv/bin/python tests/golden/make_mergekit_golden.py

Every case stores its inputs (``<case>.base``, ``<case>.m0``, ...) and mergekit's output
(``<case>.out``; for bf16 inputs also mergekit computing in float32, ``<case>.out32``); for the random methods also the mean and variance of the output over many
seeds (``<case>.mean``, ``<case>.var``). The case list (method, parameters) is in the file's
metadata as JSON, so tests/test_mergekit_golden.py replays exactly what was run here.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from mergekit.merge_methods import merge_tensors
from safetensors.torch import save_file

torch.set_num_threads(1)
OUT = Path(__file__).with_name("mergekit_golden.safetensors")
SHAPE = (12, 20)
STAT_SEEDS = 400


def inputs(seed: int, n: int, dtype: torch.dtype, with_base: bool) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    base = torch.randn(SHAPE, generator=g)
    models = [base + 0.1 * torch.randn(SHAPE, generator=g) * (i + 1) for i in range(n)]
    return [t.to(dtype) for t in ([base, *models] if with_base else models)]


CASES = [
    # name, method, n models, base?, dtype, parameters (per-model lists are in model order)
    ("linear_norm", "linear", 3, False, "float32", {"weight": [0.2, 0.5, 0.3]}),
    ("linear_raw", "linear", 3, False, "float32", {"weight": [1.0, -0.5, 0.7], "normalize": False}),
    ("linear_bf16", "linear", 2, False, "bfloat16", {"weight": [0.3, 0.9]}),
    ("ta", "task_arithmetic", 3, True, "float32", {"weight": [0.7, 0.4, -0.3]}),
    ("ta_norm_lambda", "task_arithmetic", 3, True, "float32",
     {"weight": [0.7, 0.4, 0.3], "normalize": True, "lambda": 0.8}),
    ("ties", "ties", 3, True, "float32", {"weight": [1.0, 0.6, 0.9], "density": [0.5, 0.3, 0.8]}),
    ("ties_raw", "ties", 2, True, "float32",
     {"weight": [0.5, -0.4], "density": [0.7, 0.4], "normalize": False, "lambda": 1.3}),
    ("ties_rescale", "ties", 3, True, "float32",
     {"weight": [1.0, 1.0, 1.0], "density": [0.2, 0.5, 0.9], "rescale": True}),
    ("ties_bf16", "ties", 3, True, "bfloat16", {"weight": [1.0, 0.6, 0.9], "density": [0.5, 0.3, 0.8]}),
    ("breadcrumbs", "breadcrumbs", 2, True, "float32",
     {"weight": [0.8, 0.5], "density": [0.6, 0.5], "gamma": [0.05, 0.1]}),
    ("breadcrumbs_ties", "breadcrumbs_ties", 3, True, "float32",
     {"weight": [1.0, 0.7, 0.5], "density": [0.6, 0.8, 0.4], "gamma": [0.02, 0.1, 0.3]}),
    ("dare_ties_d1", "dare_ties", 3, True, "float32", {"weight": [0.6, 0.5, 0.4]}),
    ("dare_linear_d1", "dare_linear", 2, True, "float32", {"weight": [0.6, 0.5]}),
    ("della_d1", "della", 2, True, "float32", {"weight": [0.6, 0.5], "density": [1.0, 1.0]}),
    ("slerp", "slerp", 1, True, "float32", {"t": 0.3}),
    ("slerp_bf16", "slerp", 1, True, "bfloat16", {"t": 0.7}),
    ("model_stock", "model_stock", 3, True, "float32", {}),
    ("model_stock_rows", "model_stock", 2, True, "float32", {"filter_wise": True}),
    ("passthrough", "passthrough", 1, False, "float32", {"scale": [0.5]}),
]
# random methods: compared by the mean and variance over STAT_SEEDS seeds
STAT_CASES = [
    ("dare_linear_stat", "dare_linear", 2, True, "float32", {"weight": [1.0, 0.5], "density": [0.3, 0.6]}),
    ("dare_ties_stat", "dare_ties", 3, True, "float32",
     {"weight": [1.0, 0.5, 0.8], "density": [0.3, 0.6, 0.5]}),
    ("della_stat", "della", 2, True, "float32",
     {"weight": [1.0, 0.5], "density": [0.4, 0.6], "epsilon": [0.2, 0.1]}),
    ("della_linear_stat", "della_linear", 2, True, "float32",
     {"weight": [1.0, 0.5], "density": [0.4, 0.6], "epsilon": [0.2, 0.1]}),
]


def run(method: str, tensors: list[torch.Tensor], with_base: bool, params: dict,
        dtype: torch.dtype | None = None) -> torch.Tensor:
    return merge_tensors(tensors, method, parameters=params, base_index=0 if with_base else None,
                         dtype=dtype)


def main() -> None:
    tensors: dict[str, torch.Tensor] = {}
    meta = []
    for i, (name, method, n, with_base, dtype, params) in enumerate(CASES + STAT_CASES):
        ins = inputs(1000 + i, n, getattr(torch, dtype), with_base)
        if with_base:
            tensors[f"{name}.base"] = ins[0]
        for j, t in enumerate(ins[1:] if with_base else ins):
            tensors[f"{name}.m{j}"] = t
        if (name, method, n, with_base, dtype, params) in STAT_CASES:
            outs = []
            for s in range(STAT_SEEDS):
                torch.manual_seed(s)
                outs.append(run(method, ins, with_base, params).double())
            stack = torch.stack(outs)
            tensors[f"{name}.mean"] = stack.mean(0).float()
            tensors[f"{name}.var"] = stack.var(0).float()
        else:
            torch.manual_seed(0)
            tensors[f"{name}.out"] = run(method, ins, with_base, params).contiguous()
            if dtype != "float32":  # the same merge computed by mergekit in float32
                torch.manual_seed(0)
                out32 = run(method, ins, with_base, params, dtype=torch.float32)
                tensors[f"{name}.out32"] = out32.contiguous()
        meta.append({"name": name, "method": method, "n": n, "base": with_base, "dtype": dtype,
                     "params": params, "stat": (name, method, n, with_base, dtype, params) in STAT_CASES})
    tmp = OUT.with_suffix(".tmp")
    save_file(tensors, str(tmp), metadata={"cases": json.dumps(meta), "mergekit": "0.1.5",
                                             "stat_seeds": str(STAT_SEEDS)})
    tmp.replace(OUT)
    print(f"wrote {OUT} ({OUT.stat().st_size} bytes, {len(meta)} cases)")


if __name__ == "__main__":
    main()
