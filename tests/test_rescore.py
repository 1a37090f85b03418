"""`evomm rescore` (issue 19.6): a run's front and parents scored on a held-out split.

The reference is independent of the re-scoring code: the candidate is exported with
`evomm export`, loaded from disk and scored through the one evaluation API on tasks built by
hand for the held-out split; the parents are loaded from the zoo the same way. The micro zoo's
models score 0 on most strict/loose items, so the second objective is a mean log-likelihood of
the reference answers (a one-file task plugin): continuous, different on every split and model.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from evomm.adapters import ModelRef
from evomm.cli import main
from evomm.errors import ConfigError, RunLockedError, SearchError, TaskError
from evomm.evaluation import evaluate_tasks, metrics_of
from evomm.evolve_recipe import parse_recipe
from evomm.objectives import ObjectiveSet
from evomm.plugins import get_plugins
from evomm.rescore import rescore_run
from evomm.run_lock import RunLock
from evomm.runner import evolve

TASKS = ("toy_ja_skill", "toy_ll")
LIMIT = 12
LL_TASK = """
from evomm import hookimpl
from evomm.tasks import MetricSpec, TaskResult
from evomm_tasks_toy.text import ToyTextTask


class ToyLL(ToyTextTask):
    name = "toy_ll"
    zoo_task = "ja_math"
    requires = frozenset({"loglikelihood"})
    metrics = (MetricSpec("ll", True, "mean log-likelihood of the reference answer"),)

    def score(self, handle, examples):
        return TaskResult.from_items({"ll": handle.loglikelihood([(e["prompt"], e["answer"]) for e in examples])})


@hookimpl
def evomm_register_tasks(registry):
    registry.add(ToyLL)
"""


@pytest.fixture(scope="module")
def plugins_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("plugins")
    (d / "rescore_ll_task.py").write_text(LL_TASK)
    return d


@pytest.fixture(scope="module")
def plugins(plugins_dir):
    return get_plugins([plugins_dir])


def _recipe(zoo: Path) -> dict:
    return {
        "name": "micro", "seed": 1,
        "parents": [{"name": "ja", "path": str(zoo / "models/ja")}, {"name": "math", "path": str(zoo / "models/math")}],
        "base_model": {"name": "base", "path": str(zoo / "models/base")},
        "merge": {"method": "task_arithmetic", "tokenizer_source": "base",
                  "parameters": {"weight": {"evolve": {"low": -0.5, "high": 1.5}, "granularity": "per_layer"}}},
        "objectives": [{"name": "ja_skill", "task": "toy_ja_skill", "metric": "loose"},
                       {"name": "ll", "task": "toy_ll"}],
        "tasks": {t: {"data": str(zoo), "split": "dev", "limit": LIMIT} for t in TASKS},
        "algorithm": {"name": "nsga2", "pop_size": 4}, "budget": {"generations": 2},
    }


@pytest.fixture(scope="module")
def run(micro_zoo, tmp_path_factory, plugins):
    run_dir = tmp_path_factory.mktemp("rescore") / "run"
    evolve(parse_recipe(_recipe(micro_zoo)), run_dir, plugins=plugins, progress=False)
    return run_dir


def _snapshot(run_dir: Path) -> dict[str, bytes]:
    return {str(p.relative_to(run_dir)): p.read_bytes() for p in run_dir.rglob("*") if p.is_file()}


def _held_out(zoo: Path, plugins) -> ObjectiveSet:
    """The objectives on the test split, built from scratch (not from the run)."""
    r = parse_recipe({**_recipe(zoo), "tasks": {t: {"data": str(zoo), "split": "test", "limit": LIMIT}
                                                for t in TASKS}})
    return ObjectiveSet(r.objectives, r.tasks, plugins)


def _score_dir(model_dir: Path, objs: ObjectiveSet, plugins) -> dict[str, float]:
    ck = plugins.adapters.get("hf-causal-lm")().open(ModelRef("m", str(model_dir)))
    handle = ck.handle(ck.load_model(dtype=torch.float32).eval())
    return objs.values(metrics_of(evaluate_tasks(handle, {t: objs.tasks[t] for t in objs.tasks})))


def test_rescore_equals_a_direct_evaluation_of_the_exported_child(run, micro_zoo, tmp_path, plugins, plugins_dir):
    before = _snapshot(run)
    assert main(["--plugins-dir", str(plugins_dir), "rescore", str(run), "--split", "test", "--no-progress"]) == 0
    after = _snapshot(run)
    # only the two re-score files are new; nothing else was rewritten
    assert set(after) - set(before) == {"rescore-test.json", "rescore-test.csv"}
    assert all(after[k] == v for k, v in before.items() if k != ".lock")
    data = json.loads((run / "rescore-test.json").read_text())
    assert data["split"] == "test" and {t["fitness_split"] for t in data["tasks"].values()} == {"dev"}
    rows = {r["id"]: r for r in data["candidates"]}
    assert [r["role"] for r in data["candidates"]][:3] == ["parent"] * 3
    child = next(r for r in data["candidates"] if r["role"] == "front")
    assert child["rescored"]["ll"] != child["fitness"]["ll"]  # another split indeed

    objs = _held_out(micro_zoo, plugins)
    out = tmp_path / "child"
    assert main(["export", str(run), "--candidate", child["id"], "--out", str(out)]) == 0
    assert _score_dir(out, objs, plugins) == pytest.approx(child["rescored"], abs=1e-9)
    for name in ("ja", "math", "base"):
        assert _score_dir(micro_zoo / "models" / name, objs, plugins) == \
            pytest.approx(rows[f"parent:{name}"]["rescored"], abs=1e-9)

    # the model card and the report show the held-out values beside the fitness ones
    card = (out / "README.md").read_text()
    assert "## Held-out scores" in card, card
    assert f"| {child['id']} (this model) | {child['fitness']['ja_skill']:.4f} | {child['rescored']['ja_skill']:.4f} |" \
        in card
    assert main(["front", str(run)]) == 0
    html = (run / "report.html").read_text()
    assert "Held-out re-scoring: split test" in html
    assert f"<td>{child['fitness']['ll']:.4f}</td><td>{child['rescored']['ll']:.4f}</td>" in html
    csv_lines = (run / "rescore-test.csv").read_text().splitlines()
    assert csv_lines[0] == "id,role,stage,ja_skill:fitness,ja_skill:test,ll:fitness,ll:test"
    assert len(csv_lines) == 1 + len(rows)


def test_a_split_the_task_lacks_is_refused_naming_task_split_and_splits(run, capsys, plugins_dir):
    assert main(["--plugins-dir", str(plugins_dir), "rescore", str(run), "--split", "heldout"]) == 2
    err = capsys.readouterr().err
    assert "task 'toy_ja_skill' has no split 'heldout'" in err and "its splits: dev, test, train" in err
    assert not list(run.glob("rescore-heldout*"))


def test_one_file_data_is_refused_when_the_split_would_be_the_fitness_examples(micro_zoo, plugins):
    from evomm.rescore import held_out_objectives

    one = str(micro_zoo / "data/ja_skill/dev.jsonl")
    r = parse_recipe({**_recipe(micro_zoo), "tasks": {"toy_ja_skill": {"data": one, "split": "dev", "limit": LIMIT}}})
    with pytest.raises(TaskError, match="gives the same examples as the fitness split 'dev'"):
        held_out_objectives(r, "test", ["toy_ja_skill"], plugins)


def test_rescore_refuses_while_a_run_is_writing_and_checks_tasks(run, plugins):
    with RunLock(run), pytest.raises(RunLockedError, match="in use by another evomm process"):
        rescore_run(run, "test", plugins=plugins)
    with pytest.raises(ConfigError, match="did you mean 'toy_ja_skill'"):
        rescore_run(run, "test", tasks=["toy_ja_skil"], plugins=plugins)
    with pytest.raises(SearchError, match="c99999"):
        rescore_run(run, "test", candidates="c99999", plugins=plugins)


def test_rescore_of_one_task_rescores_only_its_objective(run, micro_zoo, plugins):
    json_path, _ = rescore_run(run, "train", tasks=["toy_ll"], candidates="parent:ja", plugins=plugins)
    data = json.loads(json_path.read_text())
    assert [o["name"] for o in data["objectives"]] == ["ll"] and list(data["tasks"]) == ["toy_ll"]
    r = parse_recipe({**_recipe(micro_zoo), "tasks": {"toy_ll": {"data": str(micro_zoo), "split": "train",
                                                                 "limit": LIMIT}}})
    task = ObjectiveSet(r.objectives, r.tasks, plugins).tasks["toy_ll"]
    ck = plugins.adapters.get("hf-causal-lm")().open(ModelRef("m", str(micro_zoo / "models/ja")))
    handle = ck.handle(ck.load_model(dtype=torch.float32).eval())
    want = metrics_of(evaluate_tasks(handle, {"toy_ll": task}))["toy_ll"]["ll"]
    assert [r["id"] for r in data["candidates"]] == ["parent:ja", "parent:math", "parent:base"]
    assert data["candidates"][0]["rescored"] == {"ll": pytest.approx(want, abs=1e-9)}
    assert data["candidates"][0]["rescored"]["ll"] != data["candidates"][0]["fitness"]["ll"]


def test_default_splits_are_what_datasets_would_load(tmp_path):
    from evomm.tasks import MetricSpec, Task

    class Plain(Task):
        name = "plain"
        metrics = (MetricSpec("acc"),)

        def score(self, handle, examples):
            raise NotImplementedError

    split = tmp_path / "split"
    split.mkdir()
    for name in ("train", "dev", "test"):
        (split / f"{name}.jsonl").write_text('{"x": 1}\n')
    one = tmp_path / "one"
    one.mkdir()
    (one / "rows.jsonl").write_text('{"x": 1}\n')
    assert sorted(Plain(str(split)).splits()) == ["test", "train", "validation"]  # dev.jsonl is validation
    assert Plain(str(one)).splits() is None  # one unnamed split: any name loads it
    assert Plain(str(one / "rows.jsonl")).splits() is None
    assert Plain(None).splits() is None
    assert Plain(str(split), split="validation").examples() == [{"x": 1}]  # the name load accepts
