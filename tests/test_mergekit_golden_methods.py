"""The eight methods added for issue 20 against mergekit 0.1.5's own kernels on fixed inputs.

The golden file is made by tests/golden/make_mergekit_methods_golden.py (not run in CI). Every
evomm operator here repeats mergekit's arithmetic operation for operation, so float32 results
must be bit-identical; bf16 inputs are computed in float32 and rounded once, so they must equal
mergekit-computing-in-float32 rounded to bf16, bit for bit (mergekit itself computes in bf16).
"""

from __future__ import annotations

import json
from pathlib import Path

import evomm_ops
import pytest
import torch
from safetensors import safe_open

from evomm.layout import ModuleKind
from evomm.operators import TensorContext

GOLDEN = Path(__file__).parent / "golden" / "mergekit_methods_golden.safetensors"
OPS = {op.name: op for op in evomm_ops.OPERATORS}


def _load() -> tuple[dict[str, torch.Tensor], list[dict]]:
    with safe_open(str(GOLDEN), framework="pt") as f:
        return {k: f.get_tensor(k) for k in f.keys()}, json.loads(f.metadata()["cases"])


TENSORS, CASES = _load()


def _run(case: dict) -> torch.Tensor:
    name, n = case["name"], case["n"]
    models = [TENSORS[f"{name}.m{j}"] for j in range(n)]
    base = TENSORS.get(f"{name}.base") if case["base"] else None
    op = OPS[case["method"]]
    per_model: list[dict] = [{} for _ in range(n)]
    global_params = {}
    for key, value in case["params"].items():
        spec = op.param(key)
        assert spec is not None, f"{case['method']} does not declare {key}"
        if spec.scope.value == "per_model":
            for j in range(n):
                per_model[j][key] = value[j]
        else:
            global_params[key] = value
    ctx = TensorContext(f"{name}.weight", ModuleKind.MLP, 0, 0)
    return op().merge(models, base, global_params, per_model, ctx)


def test_every_new_method_has_a_case() -> None:
    methods = {"nuslerp", "multislerp", "karcher", "sce", "nearswap", "arcee_fusion", "ram", "ramplus_tl"}
    assert methods <= {c["method"] for c in CASES}


@pytest.mark.parametrize("case", CASES, ids=lambda c: c["name"])
def test_matches_mergekit(case: dict) -> None:
    expected = TENSORS[f"{case['name']}.out"]
    got = _run(case)
    # evomm returns the inputs' dtype (mergekit's ramplus_tl promotes bf16 to float32)
    assert got.dtype == getattr(torch, case["dtype"]) and got.shape == expected.shape
    if case["dtype"] == "float32":
        assert torch.equal(got, expected), float((got - expected).abs().max())
    else:
        assert torch.equal(got, TENSORS[f"{case['name']}.out32"].to(got.dtype))
        # mergekit computing in bf16 rounds after every step: close to, not equal to, that
        torch.testing.assert_close(got.float(), expected.float(), rtol=0.05, atol=0.05)
