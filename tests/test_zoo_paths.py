"""configs/*.yaml name the toy zoo as ``zoo/...``; the demo and benches point that elsewhere."""

from __future__ import annotations

from pathlib import Path

import yaml
from evomm_zoo import rebase_zoo_paths
from evomm_zoo.demo import demo_recipe

ROOT = Path(__file__).resolve().parents[1]


def test_rebase_moves_only_zoo_paths() -> None:
    data = {"a": ["zoo/models/ja", {"data": "zoo"}], "b": "zoology/x", "c": "my/zoo/x", "d": 3}
    out = rebase_zoo_paths(data, "/z")
    assert out == {"a": ["/z/models/ja", {"data": "/z"}], "b": "zoology/x", "c": "my/zoo/x", "d": 3}
    assert data["a"][0] == "zoo/models/ja"  # the input is left alone


def test_demo_recipe_names_only_the_given_zoo(tmp_path) -> None:
    recipe = demo_recipe(tmp_path / "z", seed=3)
    assert recipe["seed"] == 3
    paths = [p["path"] for p in recipe["parents"]] + [recipe["base_model"]["path"]]
    assert paths == [str(tmp_path / "z" / "models" / m) for m in ("ja", "math", "base")]
    assert {o["data"] for o in recipe["tasks"].values()} == {str(tmp_path / "z")}


def test_every_toy_config_uses_the_relative_zoo_dir() -> None:
    for cfg in ("demo.yaml", "toy-dfs.yaml", "toy-ps-dfs.yaml", "toy-vlm.yaml"):
        text = (ROOT / "configs" / cfg).read_text()
        assert ".cache/evomm" not in text and "ZOO" not in text, cfg
        assert "zoo/models/" in yaml.safe_dump(yaml.safe_load(text)), cfg
