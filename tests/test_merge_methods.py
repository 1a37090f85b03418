"""mergekit's twenty merge methods in evomm (issue 20): every one is registered, the methods with an
optional base interpolate around it, each new method merges whole checkpoints through the
streaming executor, and an evolve template over a new method derives its genes from the declared
parameters. (Arithmetic against mergekit's own kernels: tests/test_mergekit_golden_methods.py.)
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import evomm_ops
import pytest
import torch
import yaml

from evomm.cli import main
from evomm.errors import MergeError
from evomm.layout import ModuleKind
from evomm.operators import TensorContext
from evomm.pipeline import single_threaded_torch
from tests.tiny_models import make_tiny_model, perturb_model, read_all

#: mergekit 0.1.5's method registry (mergekit/merge_methods/registry.py), written out here.
MERGEKIT_METHODS = (
    "multislerp", "nearswap", "ram", "ramplus_tl", "sce", "linear", "slerp", "nuslerp", "passthrough",
    "model_stock", "arcee_fusion", "karcher", "task_arithmetic", "ties", "dare_ties", "dare_linear",
    "breadcrumbs", "breadcrumbs_ties", "della", "della_linear",
)
OPS = {op.name: op for op in evomm_ops.OPERATORS}


def test_plugins_lists_every_mergekit_method(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["plugins"]) == 0
    out = capsys.readouterr().out
    listed = {line.split()[0] for line in out.split("merge operators:")[1].split("\n\n")[0].splitlines()
              if line.startswith("  ") and not line.startswith("      ")}
    assert set(MERGEKIT_METHODS) <= listed, sorted(set(MERGEKIT_METHODS) - listed)


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("models")
    base = make_tiny_model(d / "base", "llama", seed=30)
    return {"base": base, "a": perturb_model(base, d / "a", seed=31, scale=0.02),
            "b": perturb_model(base, d / "b", seed=32, scale=0.02)}


def _merge(tmp: Path, method: str, models: dict[str, Path], parameters: dict[str, Any],
           per_model: dict[str, Any] | None = None, base: bool = True, listed_base: bool = False) -> dict[str, torch.Tensor]:
    entries = [{"model": str(models[k]), **({"parameters": per_model} if per_model else {})} for k in ("a", "b")]
    if listed_base:  # mergekit style: the base listed among the models too
        entries.insert(0, {"model": str(models["base"])})
    recipe = {"merge_method": method, "models": entries, "dtype": "float32", **({"parameters": parameters} if parameters else {})}
    if base:
        recipe["base_model"] = str(models["base"])
    path = tmp / f"{method}.yaml"
    path.write_text(yaml.safe_dump(recipe))
    out = tmp / f"out-{method}"
    assert main(["merge", str(path), "--out", str(out), "--no-progress"]) == 0
    return read_all(out)


CASES = [
    # method, global parameters, per-model parameters
    ("nuslerp", {}, {"weight": 0.5}),
    ("multislerp", {}, {"weight": 0.5}),
    ("karcher", {}, {}),
    ("sce", {"select_topk": 0.5}, {}),
    ("ram", {"epsilon": 0.001}, {}),
    ("ramplus_tl", {"epsilon": 0.001, "r": 0.5}, {}),
]


@pytest.mark.parametrize(("method", "parameters", "per_model"), CASES, ids=[c[0] for c in CASES])
def test_new_methods_merge_checkpoints(models: dict[str, Path], tmp_path: Path, method: str,
                                       parameters: dict[str, Any], per_model: dict[str, Any]) -> None:
    """Each tensor of `evomm merge` is the operator's own result on the parents' tensors, the base
    given as mergekit gives it: separately (task-vector and optional-base methods, even when
    `models:` lists it too) or as the first input (karcher: mergekit ignores its base policy)."""
    got = _merge(tmp_path, method, models, parameters, per_model, listed_base=True)
    base, a, b = (read_all(models[k]) for k in ("base", "a", "b"))
    op = OPS[method]
    separate = method != "karcher"  # mergekit's base policies: karcher's is IGNORED, the others' not
    for name in base:
        ctx = TensorContext(name, ModuleKind.OTHER, None, 0)
        with single_threaded_torch():  # as the executor's merge threads compute (one thread each)
            if separate:
                want = op().merge([a[name], b[name]], base[name], parameters, [per_model, per_model], ctx)
            else:
                want = op().merge([base[name], a[name], b[name]], None, parameters, [per_model] * 3, ctx)
        assert torch.equal(got[name], want), name


@pytest.mark.parametrize(("method", "parameters"), [("nearswap", {"t": 0.01}), ("arcee_fusion", {})])
def test_base_and_one_model_methods_merge_checkpoints(models: dict[str, Path], tmp_path: Path, method: str,
                                                      parameters: dict[str, Any]) -> None:
    recipe = {"merge_method": method, "base_model": str(models["base"]), "dtype": "float32",
              "models": [{"model": str(models["base"])}, {"model": str(models["a"])}]}
    if parameters:
        recipe["parameters"] = parameters
    path = tmp_path / "r.yaml"
    path.write_text(yaml.safe_dump(recipe))
    assert main(["merge", str(path), "--out", str(tmp_path / "out"), "--no-progress"]) == 0
    got, base, a = read_all(tmp_path / "out"), read_all(models["base"]), read_all(models["a"])
    changed = 0
    for name in base:
        want = OPS[method]().merge([a[name]], base[name], parameters, [{}], TensorContext(name, ModuleKind.OTHER, None, 0))
        assert torch.equal(got[name], want), name
        changed += not torch.equal(got[name], base[name])
    assert changed  # not simply the base model


def test_optional_base_is_the_origin(models: dict[str, Path], tmp_path: Path) -> None:
    """NuSLERP with a base interpolates the task vectors: with equal weights and task vectors of
    equal norm, the midpoint direction of (a - base, b - base), rescaled, added to the base."""
    with_base = _merge(tmp_path, "nuslerp", models, {}, {"weight": 1.0})
    (tmp_path / "nobase").mkdir()
    without = _merge(tmp_path / "nobase", "nuslerp", models, {}, {"weight": 1.0}, base=False)
    base, a, b = (read_all(models[k]) for k in ("base", "a", "b"))
    name = "model.layers.0.mlp.up_proj.weight"
    da, db = a[name] - base[name], b[name] - base[name]
    theta = torch.acos(torch.dot(da.flatten(), db.flatten()) / (da.norm() * db.norm()))
    want = base[name] + (da + db) * torch.sin(theta / 2) / torch.sin(theta)
    torch.testing.assert_close(with_base[name], want, rtol=1e-5, atol=1e-6)
    assert not torch.allclose(without[name], want, rtol=1e-5, atol=1e-6)


def _evolve_recipe(zoo: Path, method: str, parameters: dict[str, Any]) -> dict[str, Any]:
    return {
        "name": method, "seed": 0,
        "parents": [{"name": "ja", "path": str(zoo / "models/ja")}, {"name": "math", "path": str(zoo / "models/math")}],
        "base_model": {"name": "base", "path": str(zoo / "models/base")},
        "merge": {"method": method, "tokenizer_source": "base", "parameters": parameters},
        "objectives": [{"name": "ja_skill", "task": "toy_ja_skill", "metric": "loose"}],
        "tasks": {"toy_ja_skill": {"data": str(zoo), "split": "dev", "limit": 4}},
        "algorithm": {"name": "nsga2", "pop_size": 4}, "budget": {"generations": 1},
    }


@pytest.mark.parametrize(("method", "parameters", "genes", "gene", "bound"), [
    ("sce", {"select_topk": {"evolve": True, "granularity": "per_layer"}}, lambda n: n + 1, "select_topk.layers.0", "1"),
    ("nuslerp", {"weight": {"evolve": {"low": 0.1, "high": 0.9}, "granularity": "per_layer"}},
     lambda n: 2 * (n + 1), "weight[ja].layers.0", "0.9"),
])
def test_dry_run_prints_genes_of_new_methods(micro_zoo: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                             method: str, parameters: dict[str, Any], genes: Any, gene: str,
                                             bound: str) -> None:
    path = tmp_path / "r.yaml"
    path.write_text(yaml.safe_dump(_evolve_recipe(micro_zoo, method, parameters)))
    assert main(["evolve", str(path), "--dry-run"]) == 0
    out = capsys.readouterr().out
    n_layers = json.loads((micro_zoo / "models/base/config.json").read_text())["num_hidden_layers"]
    assert f"{genes(n_layers)} genes" in out and gene in out and bound in out, out


def test_mergekit_parameter_names_and_defaults() -> None:
    """The new operators declare mergekit 0.1.5's parameters with its defaults (read from each
    method's signature in mergekit/merge_methods/*.py), plus karcher's evomm weight."""
    def defaults(name: str) -> dict[str, tuple[str, float | None]]:
        return {p.name: (p.scope.value, p.default) for p in OPS[name].params}

    g, m = "global", "per_model"
    assert defaults("nuslerp") == {"weight": (m, None), "nuslerp_row_wise": (g, 0.0), "nuslerp_flatten": (g, 1.0)}
    assert defaults("multislerp") == {"weight": (m, None), "normalize_weights": (g, 1.0), "eps": (g, 1e-8)}
    assert defaults("karcher") == {"weight": (m, 1.0), "max_iter": (g, 10), "tol": (g, 1e-5)}
    assert defaults("sce") == {"select_topk": (g, 1.0), "int8_mask": (g, 0.0)}
    assert defaults("nearswap") == {"t": (g, None)}
    assert defaults("arcee_fusion") == {}
    assert defaults("ram") == {"epsilon": (g, 1e-5)}
    assert defaults("ramplus_tl") == {"r": (g, 0.1), "alpha": (g, 0.2), "epsilon": (g, 1e-5)}
    # every one but arcee_fusion (which has no parameters) has something evolution can search
    for name in ("nuslerp", "multislerp", "karcher", "sce", "nearswap", "ram", "ramplus_tl"):
        assert any(p.evolvable and p.kind == "float" for p in OPS[name].params), name


def test_karcher_weights_move_the_mean_along_the_geodesic() -> None:
    """evomm's karcher weights (mergekit fixes them equal): for two directions the weighted
    Karcher mean lies at fraction w_1 / (w_0 + w_1) of the arc between them, and its norm is the
    weighted mean norm."""
    a, b = torch.tensor([[3.0, 0.0], [0.0, 0.0]]), torch.tensor([[0.0, 0.0], [0.0, 1.0]])
    ctx = TensorContext("w", ModuleKind.OTHER, None, 0)
    got = OPS["karcher"]().merge([a, b], None, {"max_iter": 100, "tol": 1e-7},
                                 [{"weight": 0.5}, {"weight": 1.5}], ctx)
    angle = torch.pi / 2 * 0.75  # from a's direction towards b's
    want = (0.25 * 3.0 + 0.75 * 1.0) * torch.tensor([[float(torch.cos(torch.tensor(angle))), 0.0],
                                                      [0.0, float(torch.sin(torch.tensor(angle)))]])
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    with pytest.raises(MergeError, match="sum to 0"):
        OPS["karcher"]().merge([a, b], None, {}, [{"weight": 0.0}, {"weight": 0.0}], ctx)


def test_large_tensors_select_as_a_sort_would() -> None:
    """Above mergekit's 1M-entry sample (arcee_fusion) and the rank selection's sampling size,
    the quartiles and SCE's top-k equal what sorting all entries gives (mergekit's formulas on
    the whole tensor: `sorted[int(q * (n - 1))]`, `torch.topk`)."""
    from evomm_ops.arcee_fusion import fusion_threshold
    from evomm_ops.sce import variance_mask

    g = torch.Generator().manual_seed(5)
    scores = torch.rand(1_500_001, generator=g) ** 3
    ordered = scores.sort().values
    q1, med, q3 = (ordered[int(q * (scores.numel() - 1))] for q in (0.25, 0.5, 0.75))
    assert float(fusion_threshold(scores)) == float(med + 1.5 * (q3 - q1))
    tvs = torch.randn(3, 1200, 1000, generator=g)
    var = torch.var(tvs, dim=0, unbiased=False).reshape(-1)
    k = int(torch.count_nonzero(var) * 0.3)
    want = torch.zeros_like(var)
    want[torch.topk(var, k).indices] = 1
    assert torch.equal(variance_mask(tvs, 0.3).reshape(-1), want)
