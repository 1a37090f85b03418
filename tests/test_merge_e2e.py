"""End-to-end merges of tiny local Llama / Mistral / Qwen2 checkpoints: CLI, streaming executor,
in-place merger, and the errors users can cause (each must leave no output behind)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml
from safetensors.torch import load_file, save_file

from evomm import hookimpl
from evomm.cli import main
from evomm.errors import CheckpointError, ConfigError, EvommError, IncompatibleModelsError
from evomm.execute import InMemoryMerger, merge_to_dir, open_models
from evomm.operators import MergeOperator
from evomm.plan import build_plan
from evomm.plugins import get_plugins, load_plugins
from evomm.recipe import MergeRecipe, load_recipe
from tests.tiny_models import make_tiny_model, perturb_model, read_all

LAYERS = 4


@pytest.fixture(scope="module")
def zoo(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("zoo")
    z: dict[str, Path] = {}
    for fam, kw in (("llama", {}), ("mistral", {}), ("qwen2", {"tie_word_embeddings": True})):
        z[f"{fam}_a"] = make_tiny_model(d / f"{fam}_a", fam, seed=10, **kw)
        z[f"{fam}_b"] = make_tiny_model(d / f"{fam}_b", fam, seed=11, **kw)
    z["llama_b_sharded"] = make_tiny_model(d / "llama_b_sharded", "llama", seed=11, max_shard_size="20KB")
    z["base"] = make_tiny_model(d / "base", "llama", seed=20)
    z["ja"] = perturb_model(z["base"], d / "ja", seed=21, scale=0.01)
    z["math"] = perturb_model(z["base"], d / "math", seed=22, scale=0.01)
    z["vocab"] = make_tiny_model(d / "vocab", "llama", seed=12, vocab_size=400)
    z["wide"] = make_tiny_model(d / "wide", "llama", seed=13, intermediate_size=96)
    z["pickle"] = make_tiny_model(d / "pickle", "llama", seed=14, pickle=True)
    z["holey"] = make_tiny_model(d / "holey", "llama", seed=15)
    f = z["holey"] / "model.safetensors"
    tensors = load_file(str(f))
    del tensors["model.layers.2.mlp.gate_proj.weight"]
    save_file(tensors, str(f), metadata={"format": "pt"})
    return z


def write_recipe(path: Path, data: dict[str, Any]) -> Path:
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def linear(a: Path, b: Path, wa: Any, wb: Any, **kw: Any) -> dict[str, Any]:
    return {"merge_method": "linear", "models": [
        {"model": str(a), "parameters": {"weight": wa}}, {"model": str(b), "parameters": {"weight": wb}}], **kw}


def merge(recipe: dict[str, Any], tmp: Path, plugins: Any = None, **kw: Any) -> Path:
    plugins = plugins or get_plugins()
    r = MergeRecipe.from_dict(recipe)
    cks = open_models(r, plugins)
    return merge_to_dir(build_plan(r, cks, plugins), cks, tmp / "out", plugins, progress=False, **kw)


def no_leftovers(parent: Path) -> bool:
    return not (parent / "out").exists() and not [p for p in parent.iterdir() if ".partial-" in p.name]


@pytest.mark.parametrize("family", ["llama", "mistral", "qwen2"])
def test_linear_1_0_returns_parent_a_bit_for_bit(zoo: dict[str, Path], tmp_path: Path, family: str) -> None:
    a, b = zoo[f"{family}_a"], zoo[f"{family}_b"]
    recipe = write_recipe(tmp_path / "r.yaml", linear(a, b, 1.0, 0.0))
    assert main(["merge", str(recipe), "--out", str(tmp_path / "out"), "--no-progress"]) == 0
    got, want = read_all(tmp_path / "out"), read_all(a)
    assert set(got) == set(want)
    for name in want:
        assert torch.equal(got[name], want[name]), name
    assert (tmp_path / "out" / "config.json").read_bytes() == (a / "config.json").read_bytes()
    if family == "qwen2":
        assert "lm_head.weight" not in got  # tied embeddings stay tied


def test_merged_directory_loads_and_generates(zoo: dict[str, Path], tmp_path: Path) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    out = merge(linear(zoo["mistral_a"], zoo["mistral_b"], 0.5, 0.5), tmp_path)
    model = AutoModelForCausalLM.from_pretrained(out)
    tok = AutoTokenizer.from_pretrained(out)
    ids = tok("One plus two", return_tensors="pt")
    gen = model.generate(**ids, max_new_tokens=4, do_sample=False)
    assert gen.shape[1] == ids["input_ids"].shape[1] + 4
    a, b = read_all(zoo["mistral_a"]), read_all(zoo["mistral_b"])
    name = "model.layers.1.self_attn.v_proj.weight"
    torch.testing.assert_close(model.state_dict()[name], 0.5 * a[name] + 0.5 * b[name], rtol=0, atol=1e-7)


def test_per_layer_gradients_and_filters_reach_the_right_layers(zoo: dict[str, Path], tmp_path: Path) -> None:
    a, b = read_all(zoo["llama_a"]), read_all(zoo["llama_b"])
    out = read_all(merge(linear(zoo["llama_a"], zoo["llama_b"], [0.0, 1.0], [1.0, 0.0]), tmp_path))
    for layer in range(LAYERS):
        t = layer / (LAYERS - 1)
        name = f"model.layers.{layer}.mlp.up_proj.weight"
        torch.testing.assert_close(out[name], t * a[name] + (1 - t) * b[name], rtol=0, atol=1e-6)
    first, last = "model.layers.0.self_attn.q_proj.weight", f"model.layers.{LAYERS - 1}.self_attn.q_proj.weight"
    assert torch.equal(out[first], b[first]) and torch.equal(out[last], a[last])
    assert torch.equal(out["lm_head.weight"], b["lm_head.weight"])  # t = 0 outside the stack

    # task arithmetic with a module-kind filter: only MLP tensors take the task vector
    base, ja = read_all(zoo["base"]), read_all(zoo["ja"])
    recipe = {"merge_method": "task_arithmetic", "base_model": str(zoo["base"]), "models": [
        {"model": str(zoo["ja"]), "parameters": {"weight": [{"filter": "mlp", "value": [0.0, 2.0]}, {"value": 0.0}]}}]}
    shutil.rmtree(tmp_path / "out")
    out = read_all(merge(recipe, tmp_path))
    for layer in (0, LAYERS - 1):
        w = 2.0 * layer / (LAYERS - 1)
        mlp, attn = f"model.layers.{layer}.mlp.down_proj.weight", f"model.layers.{layer}.self_attn.o_proj.weight"
        torch.testing.assert_close(out[mlp], base[mlp] + w * (ja[mlp] - base[mlp]), rtol=0, atol=1e-6)
        assert torch.equal(out[attn], base[attn])


def test_sharded_input_and_output(zoo: dict[str, Path], tmp_path: Path) -> None:
    out = merge(linear(zoo["llama_a"], zoo["llama_b_sharded"], 0.25, 0.75), tmp_path, max_shard_bytes=40_000)
    assert (out / "model.safetensors.index.json").is_file() and len(list(out.glob("model-*.safetensors"))) > 2
    a, b, got = read_all(zoo["llama_a"]), read_all(zoo["llama_b_sharded"]), read_all(out)
    assert set(got) == set(a)
    for name in got:
        torch.testing.assert_close(got[name], 0.25 * a[name] + 0.75 * b[name], rtol=0, atol=1e-7)


def test_out_dtype_and_compute_dtype(zoo: dict[str, Path], tmp_path: Path) -> None:
    out = read_all(merge(linear(zoo["llama_a"], zoo["llama_b"], 1.0, 0.0, out_dtype="bfloat16"), tmp_path))
    a = read_all(zoo["llama_a"])
    assert all(t.dtype == torch.bfloat16 for t in out.values())
    assert torch.equal(out["model.norm.weight"], a["model.norm.weight"].to(torch.bfloat16))


@pytest.mark.parametrize("out_dtype", [None, "bfloat16", "float16"])
def test_config_records_the_stored_dtype(zoo: dict[str, Path], tmp_path: Path, out_dtype: str | None) -> None:
    extra = {"out_dtype": out_dtype} if out_dtype else {}
    out = merge(linear(zoo["llama_a"], zoo["llama_b"], 0.5, 0.5, **extra), tmp_path)
    donor_config = (zoo["llama_a"] / "config.json").read_text()
    if out_dtype is None:  # nothing changed: the donor's config, byte for byte
        assert (out / "config.json").read_text() == donor_config
        return
    config = json.loads((out / "config.json").read_text())
    key = "dtype" if "dtype" in json.loads(donor_config) else "torch_dtype"
    assert config[key] == out_dtype
    # everything else is the donor's
    assert {k: v for k, v in config.items() if k != key} == {
        k: v for k, v in json.loads(donor_config).items() if k != key}
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(out, dtype="auto")
    assert {p.dtype for p in model.parameters()} == {getattr(torch, out_dtype)}


class Failing(MergeOperator):
    """Fails on the last layer: a merge that dies late must leave nothing behind."""

    name = "fail_late"

    def merge(self, tensors, base, global_params, model_params, ctx):  # type: ignore[no-untyped-def]
        if ctx.layer == LAYERS - 1:
            raise RuntimeError("boom")
        return tensors[0]


class FailingOps:
    @hookimpl
    def evomm_register_merge_operators(self, registry):  # type: ignore[no-untyped-def]
        registry.add(Failing)


def test_failure_mid_merge_leaves_no_output(zoo: dict[str, Path], tmp_path: Path) -> None:
    plugins = load_plugins(extra=[FailingOps()], autoload=False)
    plugins.adapters.add(get_plugins().adapters.get("hf-causal-lm"))
    recipe = {"merge_method": "fail_late", "models": [{"model": str(zoo["llama_a"])}]}
    with pytest.raises(EvommError, match=r"'fail_late' failed on tensor 'model.layers.3.*boom"):
        merge(recipe, tmp_path, plugins)
    assert no_leftovers(tmp_path)


BAD = {
    "unknown operator": (lambda z: {**linear(z["llama_a"], z["llama_b"], 1, 0), "merge_method": "lineer"},
                         ConfigError, r"unknown merge operator 'lineer'; did you mean 'linear'"),
    "missing tensor": (lambda z: linear(z["llama_a"], z["holey"], 1, 0),
                       CheckpointError, r"'model.layers.2.mlp.gate_proj.weight' is missing from model 'holey'"),
    "shape mismatch": (lambda z: linear(z["llama_a"], z["wide"], 1, 0),
                       IncompatibleModelsError, r"'model.layers.0.mlp.down_proj.weight' has shape \(32, 64\) in 'llama_a'.* \(32, 96\) in 'wide'"),
    "vocabulary mismatch": (lambda z: linear(z["llama_a"], z["vocab"], 1, 0),
                            IncompatibleModelsError, r"vocabulary size 384 .*'llama_a'.* vocabulary size 400 .*'vocab'"),
    "pickle file": (lambda z: linear(z["llama_a"], z["pickle"], 1, 0),
                    CheckpointError, r"'pickle'.*pickle weights.*allow_pickle"),
    "out of range": (lambda z: linear(z["llama_a"], z["llama_b"], 1, 7),
                     ConfigError, r"models\[1\]\.parameters\.weight: weight=7.0 is outside"),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_inputs_raise_and_leave_nothing(zoo: dict[str, Path], tmp_path: Path, case: str) -> None:
    make, exc, pattern = BAD[case]
    recipe = write_recipe(tmp_path / "r.yaml", make(zoo))
    plugins = get_plugins()
    with pytest.raises(exc, match=pattern):
        r = load_recipe(recipe, plugins)
        cks = open_models(r, plugins)
        merge_to_dir(build_plan(r, cks, plugins), cks, tmp_path / "out", plugins, progress=False)
    assert no_leftovers(tmp_path)


def test_cli_reports_errors_without_traceback(zoo: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("merge_method: linear\nmodels:\n  - model: a\n   parameters: {weight: 1}\n")
    assert main(["merge", str(bad), "--out", str(tmp_path / "out")]) == 2
    assert "bad.yaml:4:" in capsys.readouterr().err
    assert no_leftovers(tmp_path)
    recipe = write_recipe(tmp_path / "r.yaml", linear(zoo["llama_a"], zoo["pickle"], 0.5, 0.5))
    assert main(["merge", str(recipe), "--out", str(tmp_path / "out"), "--allow-pickle", "--no-progress"]) == 0
    (tmp_path / "out2").mkdir()
    (tmp_path / "out2" / "keep.txt").write_text("x")
    for extra in ([], ["--overwrite"]):  # a directory evomm did not write is never replaced
        assert main(["merge", str(recipe), "--out", str(tmp_path / "out2"), "--allow-pickle", *extra]) == 2
        assert "not written by evomm" in capsys.readouterr().err and (tmp_path / "out2" / "keep.txt").exists()
    assert main(["merge", str(recipe), "--out", str(tmp_path / "out"), "--allow-pickle"]) == 2
    assert "--overwrite" in capsys.readouterr().err
    assert main(["merge", str(recipe), "--out", str(tmp_path / "out"), "--allow-pickle", "--overwrite",
                 "--no-progress"]) == 0
    assert (tmp_path / "out" / "model.safetensors").exists() and (tmp_path / "out" / ".evomm-output").exists()


def test_plan_cli_prints_parameters_by_layer(zoo: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    recipe = write_recipe(tmp_path / "r.yaml", {
        "merge_method": "ties", "base_model": str(zoo["base"]), "parameters": {"weight": 0.5},
        "models": [{"model": str(zoo["ja"]), "parameters": {"density": [0.2, 0.8]}}, {"model": str(zoo["math"])}]})
    assert main(["plan", str(recipe)]) == 0
    text = capsys.readouterr().out
    assert "operator : ties" in text and "base     : base" in text
    assert "layer 0 (9 tensors)" in text and "ja: density=0.2 weight=0.5" in text
    assert f"layer {LAYERS - 1}" in text and "ja: density=0.8 weight=0.5" in text


def test_in_memory_apply_equals_merge_to_dir(zoo: dict[str, Path], tmp_path: Path) -> None:
    plugins = get_plugins()

    def recipe(w: float) -> MergeRecipe:
        return MergeRecipe.from_dict({
            "merge_method": "dare_ties", "base_model": str(zoo["base"]), "seed": 3,
            "models": [{"model": str(zoo["ja"]), "parameters": {"weight": w, "density": 0.5}},
                       {"model": str(zoo["math"]), "parameters": {"weight": [0.2, 1.0], "density": 0.7}}]})

    cks = open_models(recipe(0.6), plugins)
    merger = InMemoryMerger(cks, donor="base", plugins=plugins)
    model = merger.model
    for w in (0.6, 1.3, 0.6):
        plan = build_plan(recipe(w), cks, plugins)
        assert merger.apply(plan) is model
        shutil.rmtree(tmp_path / "out", ignore_errors=True)
        on_disk = read_all(merge_to_dir(plan, cks, tmp_path / "out", plugins, progress=False))
        state = model.state_dict()
        for name, t in on_disk.items():
            assert torch.equal(state[name], t), (w, name)
    base = read_all(zoo["base"])
    assert not torch.equal(state["model.layers.1.mlp.up_proj.weight"], base["model.layers.1.mlp.up_proj.weight"])
