"""``slices:`` recipes: evomm vs mergekit 0.1.5 on the same recipes and tiny checkpoints.

mergekit's outputs live in tests/golden/mergekit_slices/mergekit/, written by
tests/golden/mergekit_slices/make_golden.py (run by hand with mergekit installed; not in CI)
from the committed inputs of tests/golden/mergekit/inputs.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from evomm.errors import ConfigError
from evomm.execute import merge_to_dir, open_models
from evomm.plan import build_plan
from evomm.plugins import get_plugins
from evomm.recipe import MergeRecipe
from tests.golden.mergekit_slices.make_golden import HERE, RECIPES, absolute
from tests.tiny_models import read_all

#: recipe -> (rtol, atol) against mergekit; (0, 0) means bit for bit.
TOLERANCE = {
    "linear": (0, 0),
    "passthrough": (0, 0),
    "task_arithmetic": (0, 0),
    "slerp": (1e-6, 1e-7),  # mergekit reduces norms in chunks: float32 rounding (as tests/test_mergekit_e2e.py)
}


def _merge(recipe: dict, out: Path) -> Path:
    plugins = get_plugins()
    rec = MergeRecipe.from_dict(absolute(recipe))
    cks = open_models(rec, plugins, check=False)
    try:
        return merge_to_dir(build_plan(rec, cks, plugins), cks, out, plugins, progress=False)
    finally:
        for ck in cks.values():
            ck.close()


@pytest.mark.parametrize("name", sorted(RECIPES))
def test_same_result_as_mergekit(name: str, tmp_path: Path) -> None:
    golden = HERE / "mergekit" / f"{name}.safetensors"
    out = _merge(RECIPES[name], tmp_path / "out")
    ours, theirs = read_all(out), load_file(str(golden))
    assert sorted(ours) == sorted(theirs)
    rtol, atol = TOLERANCE[name]
    for k in theirs:
        if rtol == atol == 0:
            assert torch.equal(ours[k], theirs[k]), k
        else:
            torch.testing.assert_close(ours[k], theirs[k], rtol=rtol, atol=atol, msg=k)
    config = json.loads((out / "config.json").read_text())
    mk_config = json.loads((HERE / "mergekit" / f"{name}.config.json").read_text())
    assert config["num_hidden_layers"] == mk_config["num_hidden_layers"]


def _recipe(**change: object) -> MergeRecipe:
    return MergeRecipe.from_dict(absolute({**RECIPES["slerp"], **change}))


def _plan(recipe: MergeRecipe) -> object:
    plugins = get_plugins()
    cks = open_models(recipe, plugins, check=False)
    try:
        return build_plan(recipe, cks, plugins)
    finally:
        for ck in cks.values():
            ck.close()


def test_layer_range_out_of_bounds_names_the_key() -> None:
    bad = absolute(RECIPES["slerp"])
    bad["slices"][1]["sources"][1]["layer_range"] = [2, 4]
    bad["slices"][1]["sources"][0]["layer_range"] = [1, 3]
    with pytest.raises(ConfigError, match=r"slices\[1\]\.sources\[1\]\.layer_range: \[2, 4\] is out of bounds.*'b'.*3 layers"):
        _plan(MergeRecipe.from_dict(bad))


def test_mismatched_lengths_name_the_key() -> None:
    bad = absolute(RECIPES["slerp"])
    bad["slices"][0]["sources"][1]["layer_range"] = [0, 3]
    with pytest.raises(ConfigError, match=r"slices\[0\]\.sources\[1\]\.layer_range: \[0, 3\] has 3 layers but "
                                          r"slices\[0\]\.sources\[0\] has 2"):
        _plan(MergeRecipe.from_dict(bad))


def test_bad_slices_are_config_errors() -> None:
    with pytest.raises(ConfigError, match=r"slices\[0\]\.sources\[0\]\.layer_range"):
        _recipe(slices=[{"sources": [{"model": "a", "layer_range": [2, 1]}]}])
    with pytest.raises(ConfigError, match="either `models:` or `slices:`"):
        _recipe(models=[{"model": "x"}])
    two = [{"sources": [{"model": "a", "layer_range": [0, 2]}, {"model": "b", "layer_range": [0, 2]}]}]
    with pytest.raises(ConfigError, match=r"slices\[0\]\.sources: 'passthrough' takes 1\.\.1 .*gives 2"):
        _plan(MergeRecipe.from_dict(absolute({**RECIPES["passthrough"], "slices": two})))
    with pytest.raises(ConfigError, match=r"slices\[0\]\.parameters\.tt: 'slerp' has no parameter"):
        _plan(_recipe(slices=[{**RECIPES["slerp"]["slices"][0], "parameters": {"tt": 0.5}}]))


def test_frankenmerge_plan_is_hashable_and_describes_the_stack() -> None:
    plan = _plan(MergeRecipe.from_dict(absolute(RECIPES["passthrough"])))
    assert hash(plan) == hash(plan) and plan.stack is not None  # type: ignore[attr-defined]
    (lane,) = plan.stack.lanes  # type: ignore[attr-defined]
    assert [(a, layer) for a, layer in lane.layers] == [("a", 0), ("a", 1), ("b", 1), ("b", 2), ("base", 2)]
    assert (lane.first, lane.last) == ("a", "base")
    assert plan.to_dict()["stack"]["lanes"][0]["layers"][2] == ["b", 1]  # type: ignore[attr-defined]


def test_cli_frankenmerge_of_models_of_different_depths(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`evomm merge` stacks a 3-layer and a 2-layer model (open_models' equal-depth check does not
    apply to slices): every output layer is its source layer bit for bit, renumbered, and the
    result loads with transformers at the stacked depth."""
    import yaml
    from transformers import AutoModelForCausalLM

    from evomm.cli import main
    from tests.tiny_models import make_tiny_model

    a = {"model": str(HERE.parent / "mergekit" / "inputs" / "a"), "layer_range": [1, 3]}
    small = make_tiny_model(tmp_path / "small", seed=5, num_layers=2, hidden_size=16, intermediate_size=32,
                            num_heads=4, num_kv_heads=2)
    cfg = {"merge_method": "passthrough", "dtype": "float32",
           "slices": [{"sources": [{"model": str(small), "layer_range": [0, 2]}]}, {"sources": [a]}]}
    path = tmp_path / "franken.yaml"
    path.write_text(yaml.safe_dump(cfg))
    assert main(["merge", str(path), "--out", str(tmp_path / "out"), "--no-progress"]) == 0
    out, src_a, src_s = read_all(tmp_path / "out"), read_all(a["model"]), read_all(small)
    for k, (src, layer) in enumerate([(src_s, 0), (src_s, 1), (src_a, 1), (src_a, 2)]):
        theirs = {n.replace(f"layers.{layer}.", f"layers.{k}.", 1): t for n, t in src.items() if f"layers.{layer}." in n}
        assert theirs and all(torch.equal(out[n], t) for n, t in theirs.items())
    assert torch.equal(out["model.embed_tokens.weight"], src_s["model.embed_tokens.weight"])  # first slice
    assert torch.equal(out["lm_head.weight"], src_a["lm_head.weight"])  # last slice
    assert len(AutoModelForCausalLM.from_pretrained(tmp_path / "out").model.layers) == 4
    cfg["slices"][1]["sources"][0]["layer_range"] = [2, 4]
    path.write_text(yaml.safe_dump(cfg))
    assert main(["merge", str(path), "--out", str(tmp_path / "out2"), "--no-progress"]) == 2
    assert "slices[1].sources[0].layer_range: [2, 4] is out of bounds" in capsys.readouterr().err
