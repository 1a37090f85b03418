"""A small evolution on the micro zoo, end to end: archive, front, plots, report and export agree;
the exported model re-scored gives the archived scores; merge.yaml reproduces it bit for bit."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

from evomm.archive import Archive
from evomm.evolve_recipe import parse_recipe
from evomm.export import export_run_candidate
from evomm.front import pick
from evomm.plugins import get_plugins
from evomm.report import load_front
from evomm.runner import evolve

TASKS = ("toy_ja_skill", "toy_math", "toy_ja_math")


def _recipe(zoo, algorithm="nsga2"):
    return {
        "name": "micro", "seed": 0,
        "parents": [{"name": "ja", "path": str(zoo / "models/ja")}, {"name": "math", "path": str(zoo / "models/math")}],
        "base_model": {"name": "base", "path": str(zoo / "models/base")},
        "merge": {"method": "task_arithmetic", "tokenizer_source": "base",
                  "parameters": {"weight": {"evolve": {"low": -0.5, "high": 1.5}, "granularity": "per_layer"}}},
        "objectives": [{"name": "ja_skill", "task": "toy_ja_skill", "metric": "loose"},
                       {"name": "ja_math", "task": "toy_ja_math", "metric": "loose"}],
        "tasks": {t: {"data": str(zoo), "split": "dev", "limit": 12} for t in TASKS},
        "algorithm": {"name": algorithm, "pop_size": 4}, "budget": {"generations": 2},
    }


@pytest.fixture(scope="module")
def run(micro_zoo, tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("evo") / "run"
    res = evolve(parse_recipe(_recipe(micro_zoo)), run_dir, plugins=get_plugins(), progress=False)
    return run_dir, res


def test_run_artifacts_agree(run):
    run_dir, res = run
    for name in ("archive.jsonl", "front.csv", "front.json", "front.png", "progress.png", "report.html",
                 "recipe.yaml", "run.json"):
        assert (run_dir / name).is_file(), name
    infos, children, front, parents = load_front(run_dir)
    assert [p.id for p in parents] == ["parent:ja", "parent:math", "parent:base"]
    assert len(children) == len(Archive(run_dir / "archive.jsonl").stage_records("ps"))
    saved = json.loads((run_dir / "front.json").read_text())
    assert [r["id"] for r in saved["front"]] == [r.id for r in front] == [r.id for r in res.final.front]
    html = (run_dir / "report.html").read_text()
    assert "data:image/png;base64," in html and front[0].id in html
    assert len({r.plan_hash for r in children}) == len(children)  # never evaluated twice


def test_export_rescored_and_bit_for_bit(run, tmp_path):
    from evomm.evaluation import metrics_of
    from evomm.execute import merge_to_dir, open_models
    from evomm.objectives import ObjectiveSet
    from evomm.plan import build_plan
    from evomm.recipe import load_recipe

    run_dir, _ = run
    plugins = get_plugins()
    infos, _, front, _ = load_front(run_dir)
    knee = pick(front, infos, "knee")
    out, rec = export_run_candidate(run_dir, tmp_path / "child", pick_how="knee", plugins=plugins)
    assert rec.id == knee.id
    for name in ("README.md", "merge.yaml", "mergekit.yaml", "config.json", "model.safetensors"):
        assert (out / name).is_file(), name
    card = (out / "README.md").read_text()
    assert rec.id in card and "ja" in card and "task_arithmetic" in card

    # re-score the exported checkpoint from disk, as a user would: same objective values
    r = parse_recipe(json.loads(json.dumps(_recipe_from_run(run_dir))))
    objs = ObjectiveSet(r.objectives, r.tasks, plugins)
    from evomm.adapters import ModelRef
    ck = plugins.adapters.get("hf-causal-lm")().open(ModelRef("child", str(out)))
    handle = ck.handle(ck.load_model(dtype=torch.float32).eval())
    assert objs.values(metrics_of(objs.evaluate(handle))) == pytest.approx(rec.objectives, abs=1e-9)

    # merge.yaml through `evomm merge`'s path reproduces the weights bit for bit
    mr = load_recipe(out / "merge.yaml", plugins)
    cks = open_models(mr, plugins)
    again = merge_to_dir(build_plan(mr, cks, plugins), cks, tmp_path / "again", plugins, progress=False)
    a, b = load_file(out / "model.safetensors"), load_file(again / "model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def _recipe_from_run(run_dir):
    import yaml

    return yaml.safe_load((run_dir / "recipe.yaml").read_text())


def test_front_cli_picks_and_writes(run, capsys):
    from evomm.cli import main

    run_dir, _ = run
    assert main(["front", str(run_dir), "--pick", "knee", "--pick", "weights=0.5,0.5"]) == 0
    out = capsys.readouterr().out
    assert "parent:ja" in out and "knee" in out
    assert (run_dir / "front.csv").read_text().count(",parent,") == 3


def test_dry_run_prints_genes(micro_zoo, tmp_path, capsys):
    import yaml

    from evomm.cli import main

    path = tmp_path / "r.yaml"
    path.write_text(yaml.safe_dump(_recipe(micro_zoo)))
    assert main(["evolve", str(path), "--dry-run"]) == 0
    out = capsys.readouterr().out
    # 2 parents x (blocks + 1) genes, bounds printed
    n_layers = json.loads((micro_zoo / "models/base/config.json").read_text())["num_hidden_layers"]
    assert f"{2 * (n_layers + 1)} genes" in out and "weight[ja].layers.0" in out and "-0.5" in out
