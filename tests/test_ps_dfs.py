"""PS then DFS on the micro toy zoo: one recipe, two stages, the final card lists both."""

from __future__ import annotations

import pytest
import torch
import yaml
from transformers import AutoModelForCausalLM

from evomm.evolve_recipe import parse_recipe


def _recipe(zoo) -> dict:
    models = zoo / "models"
    task = {"data": str(zoo), "split": "dev", "limit": 6}
    return {
        "name": "ps-dfs-test",
        "seed": 0,
        "parents": [{"name": "ja", "path": str(models / "ja")}, {"name": "math", "path": str(models / "math")}],
        "base_model": {"name": "base", "path": str(models / "base")},
        "objectives": [{"name": "ja_math", "task": "toy_ja_math", "metric": "strict"},
                       {"name": "ja", "task": "toy_ja_skill", "metric": "strict"}],
        "tasks": {"toy_ja_math": task, "toy_ja_skill": task},
        "score_parents": False,
        "stages": [
            {"name": "ps", "kind": "params", "parents": ["ja", "math"],
             "merge": {"method": "task_arithmetic", "tokenizer_source": "base",
                       "parameters": {"weight": {"evolve": {"low": 0.0, "high": 1.0}}}},
             "algorithm": {"name": "random", "pop_size": 2}, "budget": {"generations": 1}},
            {"name": "dfs", "kind": "dfs", "parents": ["@previous", "math"],
             "options": {"repeats": 2, "max_path_length": 5, "scaling": "destination"},
             "algorithm": {"name": "random", "pop_size": 3}, "budget": {"generations": 1}},
        ],
    }


@pytest.mark.slow
def test_ps_then_dfs_runs_and_card_lists_both_stages(micro_zoo, tmp_path) -> None:
    import evomm_dfs  # noqa: F401  (the dfs stage kind and the Auto classes)

    from evomm.export import export_run_candidate
    from evomm.runner import evolve

    result = evolve(parse_recipe(_recipe(micro_zoo)), tmp_path / "run", progress=False, report=False)
    assert [s.reason for s in result.stages] == ["budget", "budget"]
    child_a = tmp_path / "run" / "stages" / "ps" / "child"
    assert (child_a / "config.json").is_file()  # the PS child, handed over as A

    out, rec = export_run_candidate(tmp_path / "run", tmp_path / "final", pick_how="knee")
    assert rec.stage == "dfs"
    card = (out / "README.md").read_text()
    assert "stage `ps`" in card and "stage `dfs`" in card
    assert "## How to load" in card and "Data-flow-space path" in card
    recipe = yaml.safe_load((out / "merge.yaml").read_text())
    assert recipe["merge_method"] == "dfs"
    assert recipe["models"][0]["model"] == str(child_a)  # A is the PS child
    model = AutoModelForCausalLM.from_pretrained(out).eval()
    ids = torch.tensor([[1, 5, 7, 9]])
    with torch.no_grad():
        assert torch.isfinite(model(ids).logits).all()
    # `evomm merge merge.yaml` rebuilds the same child
    from evomm.cli import main

    assert main(["merge", str(out / "merge.yaml"), "--out", str(tmp_path / "again")]) == 0
    again = AutoModelForCausalLM.from_pretrained(tmp_path / "again").eval()
    with torch.no_grad():
        assert torch.equal(again(ids).logits, model(ids).logits)
