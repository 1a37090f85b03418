"""configs/evollm-jp.yaml (issue 21.4) is a valid evolve recipe with the paper's settings."""

from __future__ import annotations

import math
from pathlib import Path

import yaml

from evomm.evolve_recipe import EvolveRecipe

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


def test_evollm_jp_recipe_has_the_papers_search() -> None:
    recipe = EvolveRecipe.model_validate(yaml.safe_load((CONFIGS / "evollm-jp.yaml").read_text()))
    stage = recipe.stages[0]
    assert stage.merge is not None and stage.merge.method == "dare_ties"
    assert {p.name for p in recipe.parents} == {"ja", "wizardmath", "abel"} and recipe.base_model is not None
    genes = [name for name, entry in stage.merge.parameters.items() if entry.granularity == "per_model"]
    assert sorted(genes) == ["density", "weight"]
    assert all(entry.init == 0.5 for entry in stage.merge.parameters.values())  # x0 = 0.5
    d = len(genes) * len(recipe.parents)
    assert stage.algorithm.name == "cmaes" and stage.algorithm.pop_size == 4 + math.floor(3 * math.log(d))
    assert abs(stage.algorithm.settings["sigma"] - 1 / 6) < 1e-3
    task = recipe.tasks["ja_math"]
    assert task.model_extra is not None and task.model_extra["require_japanese"] is True
    assert "mgsm" not in (task.data or "")  # the fitness split is not MGSM's test set
