"""NaN/Inf weights are never merged silently: a parent tensor holding them, or a merge producing
them, is a NonFiniteError naming the model or operator and the tensor (``evomm merge`` exits 2),
unless the recipe says ``allow_nonfinite: true``; in an evolution, a candidate whose merge
produces them is archived as failed and never reaches the front."""

from __future__ import annotations

import json
import re
import shutil
import textwrap
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml
from safetensors.torch import load_file, save_file

from evomm.archive import Archive
from evomm.cli import main
from evomm.objectives import FAILED_PENALTY
from evomm.report import load_front
from tests.tiny_models import make_tiny_model

UP = "model.layers.1.mlp.up_proj.weight"
NORM = "model.norm.weight"


def edited(src: Path, dst: Path, name: str, change: Any) -> Path:
    """A copy of checkpoint ``src`` whose tensor ``name`` is ``change(tensor)``."""
    shutil.copytree(src, dst)
    f = dst / "model.safetensors"
    tensors = load_file(str(f))
    tensors[name] = change(tensors[name].clone())
    save_file(tensors, str(f), metadata={"format": "pt"})
    return dst


def _nan(t: torch.Tensor) -> torch.Tensor:
    t.view(-1)[[3, 7]] = float("nan")
    return t


def _inf(t: torch.Tensor) -> torch.Tensor:
    t.view(-1)[0] = float("inf")
    return t


@pytest.fixture(scope="module")
def zoo(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("nf")
    z = {"a": make_tiny_model(d / "a", "llama", seed=0), "b": make_tiny_model(d / "b", "llama", seed=1),
         "a16": make_tiny_model(d / "a16", "llama", seed=0, dtype=torch.bfloat16)}
    z["nan"] = edited(z["b"], d / "nan", UP, _nan)
    z["inf"] = edited(z["b"], d / "inf", NORM, _inf)
    z["nan16"] = edited(make_tiny_model(d / "b16", "llama", seed=1, dtype=torch.bfloat16), d / "nan16", UP, _nan)
    z["big"] = edited(z["b"], d / "big", NORM, lambda t: t * 1e7)  # finite in float32, not in float16
    return z


def merge(tmp_path: Path, recipe: dict[str, Any], *extra: str) -> int:
    path = tmp_path / "r.yaml"
    path.write_text(yaml.safe_dump(recipe))
    return main([*extra, "merge", str(path), "--out", str(tmp_path / "out"), "--no-progress"])


def linear(a: Path, b: Path, **kw: Any) -> dict[str, Any]:
    return {"merge_method": "linear", "models": [{"model": str(a), "name": "a", "parameters": {"weight": 0.5}},
                                                  {"model": str(b), "name": "bad", "parameters": {"weight": 0.5}}], **kw}


# parents: float32 and bfloat16
PARENTS = {"f32": ("a", "nan"), "bf16": ("a16", "nan16")}


@pytest.mark.parametrize("case", sorted(PARENTS))
def test_nan_parent_is_an_error_unless_allowed(zoo: dict[str, Path], tmp_path: Path,
                                               capsys: pytest.CaptureFixture[str], case: str) -> None:
    good, bad = PARENTS[case]
    assert merge(tmp_path, linear(zoo[good], zoo[bad])) == 2
    err = capsys.readouterr().err
    assert err.startswith("evomm: error: ") and err.count("\n") == 1, err
    assert f"tensor '{UP}' of model 'bad' ({zoo[bad]}) holds" in err and "allow_nonfinite: true" in err, err
    assert not (tmp_path / "out").exists()
    assert merge(tmp_path, linear(zoo[good], zoo[bad], allow_nonfinite=True)) == 0
    out = load_file(str(tmp_path / "out" / "model.safetensors"))
    assert int(torch.isnan(out[UP].float()).sum()) == 2


def test_inf_parent_named_on_the_in_memory_path(zoo: dict[str, Path]) -> None:
    from evomm.errors import NonFiniteError
    from evomm.execute import InMemoryMerger, open_models
    from evomm.plan import build_plan
    from evomm.plugins import get_plugins
    from evomm.recipe import MergeRecipe

    plugins = get_plugins()
    recipe = MergeRecipe.from_dict(linear(zoo["a"], zoo["inf"]))
    cks = open_models(recipe, plugins)
    merger = InMemoryMerger(cks, "a", plugins)
    with pytest.raises(NonFiniteError, match=rf"tensor '{NORM}' of model 'bad' .* 0 NaN and 1 Inf") as info:
        merger.apply(build_plan(recipe, cks, plugins))
    assert not info.value.output


OP_PLUGIN = '''
"""A test operator: linear interpolation with t, except that t > 0.5 divides model.norm.weight by zero."""
import torch
from evomm import hookimpl
from evomm.operators import MergeOperator
from evomm.params import ParamScope, ParamSpec
from evomm.tasks import MetricSpec, Task, TaskResult


class Spiky(MergeOperator):
    name = "spiky"
    params = (ParamSpec("t", ParamScope.GLOBAL, 0.0, 1.0, 0.5, "position from A to B"),)

    def merge(self, tensors, base, global_params, model_params, ctx):
        t = global_params["t"]
        out = (1 - t) * tensors[0] + t * tensors[1]
        return out / 0.0 if t > 0.5 and ctx.name == "model.norm.weight" else out


class NormMean(Task):
    name = "norm_mean"
    metrics = (MetricSpec("score"),)

    def load(self):
        return [{"i": 0}]

    def score(self, handle, examples):
        return TaskResult({"score": float(handle.model.model.norm.weight.mean())}, n=len(examples))


@hookimpl
def evomm_register_merge_operators(registry):
    registry.add(Spiky)


@hookimpl
def evomm_register_tasks(registry):
    registry.add(NormMean)
'''


@pytest.fixture
def plugin_dir(tmp_path: Path) -> Path:
    d = tmp_path / "plugins"
    d.mkdir()
    (d / "spiky_plugin.py").write_text(textwrap.dedent(OP_PLUGIN))
    return d


@pytest.mark.parametrize(("recipe_of", "says"), [
    (lambda z: {"merge_method": "spiky", "parameters": {"t": 0.9},
                "models": [{"model": str(z["a"]), "name": "a"}, {"model": str(z["b"]), "name": "b"}]},
     rf"operator 'spiky' produced \d+ NaN and \d+ Inf values in tensor '{NORM}' from finite parents"),
    (lambda z: {**linear(z["a"], z["big"]), "out_dtype": "float16"},
     rf"operator 'linear' produced (\d+ NaN and \d+ Inf|NaN or Inf) values in tensor '{NORM}'"),
], ids=["divides-by-zero", "float16-overflow"])
def test_non_finite_output_is_an_error_unless_allowed(zoo: dict[str, Path], tmp_path: Path, plugin_dir: Path,
                                                      capsys: pytest.CaptureFixture[str], recipe_of: Any,
                                                      says: str) -> None:
    recipe = recipe_of(zoo)
    assert merge(tmp_path, recipe, "--plugins-dir", str(plugin_dir)) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and re.search(says, err), err
    assert not (tmp_path / "out").exists()
    assert merge(tmp_path, {**recipe, "allow_nonfinite": True}, "--plugins-dir", str(plugin_dir)) == 0
    out = load_file(str(tmp_path / "out" / "model.safetensors"))
    assert not bool(torch.isfinite(out[NORM].float()).all())


def test_evolve_archives_a_non_finite_candidate_as_failed(zoo: dict[str, Path], tmp_path: Path, plugin_dir: Path,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    recipe = {
        "seed": 3, "score_parents": False,
        "parents": [{"name": "a", "path": str(zoo["a"])}, {"name": "b", "path": str(zoo["b"])}],
        "merge": {"method": "spiky", "parameters": {"t": {"evolve": True}}},
        "objectives": [{"name": "score", "task": "norm_mean"}],
        "algorithm": {"name": "random", "pop_size": 6}, "budget": {"generations": 2},
    }
    path = tmp_path / "evolve.yaml"
    path.write_text(yaml.safe_dump(recipe))
    run = tmp_path / "run"
    assert main(["--plugins-dir", str(plugin_dir), "evolve", str(path), "--out", str(run), "--no-progress"]) == 0
    records = Archive(run / "archive.jsonl").records
    failed = [r for r in records if r.genes["t"] > 0.5]
    ok = [r for r in records if r.genes["t"] <= 0.5]
    assert failed and ok, "the seed should give both kinds of candidate"
    for r in failed:
        assert r.evaluation == "failed" and r.metrics == {} and r.objectives == {"score": -FAILED_PENALTY}
        assert f"in tensor '{NORM}'" in r.extra["failed"] and "operator 'spiky'" in r.extra["failed"]
    assert all(r.evaluation == "full" and abs(r.objectives["score"]) < 1 for r in ok)
    _, _, front, _ = load_front(run)
    assert front and not {r.id for r in front} & {r.id for r in failed}
    saved = json.loads((run / "front.json").read_text())
    assert {r["id"] for r in saved["front"]} <= {r.id for r in ok}
    assert main(["--plugins-dir", str(plugin_dir), "export", str(run), "--candidate", failed[0].id,
                 "--out", str(tmp_path / "no")]) == 2
    assert f"--candidate {failed[0].id} failed in the run" in capsys.readouterr().err
    assert not (tmp_path / "no").exists()
    child = tmp_path / "child"
    assert main(["--plugins-dir", str(plugin_dir), "export", str(run), "--pick", "best=score", "--out", str(child)]) == 0
    assert json.loads((child / "evomm_merge.json").read_text())["steps"]


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16, torch.float64])
def test_the_quick_checks_are_exact(dtype: torch.dtype) -> None:
    """finite agrees with isfinite wherever the bad value is, for huge finite values whose sum
    overflows, and for empty tensors."""
    from evomm.finite import finite

    big = torch.full((1000,), torch.finfo(dtype).max, dtype=dtype)  # finite; the sum overflows
    cases = [torch.randn(1000).to(dtype), big, -big, torch.empty(0, dtype=dtype)]
    for v in (float("nan"), float("inf"), -float("inf")):
        for at in (0, 517, 999):
            t = torch.randn(1000).to(dtype)
            t[at] = v
            cases.append(t)
    for t in cases:
        want = bool(torch.isfinite(t).all())
        assert finite(t) == want
    assert finite(torch.tensor([1, 2]))
