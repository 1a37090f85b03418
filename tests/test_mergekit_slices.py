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
