"""Task API: data loading (local formats, offline hub ids), limit/seed/subset, per-item results,
capability checks and suite objectives on the one evaluation path."""

from __future__ import annotations

import json
import time

import pytest

from evomm.data import describe_source, load_examples
from evomm.errors import OfflineError, TaskError
from evomm.evaluation import check_capabilities, evaluate_tasks, metrics_of
from evomm.tasks import MetricSpec, Task, TaskResult

ROWS = [{"question": f"q{i}", "answer_number": i} for i in range(10)]


@pytest.fixture()
def files(tmp_path):
    import datasets

    ds = datasets.Dataset.from_list(ROWS)
    (tmp_path / "d.jsonl").write_text("".join(json.dumps(r) + "\n" for r in ROWS))
    (tmp_path / "d.json").write_text(json.dumps(ROWS))
    ds.to_parquet(str(tmp_path / "d.parquet"))
    ds.to_csv(str(tmp_path / "d.csv"), index=False)
    split_dir = tmp_path / "splits"
    split_dir.mkdir()
    ds.select(range(3)).to_json(str(split_dir / "train.jsonl"))
    ds.to_json(str(split_dir / "test.jsonl"))
    return tmp_path


@pytest.mark.parametrize("name", ["d.jsonl", "d.json", "d.parquet", "d.csv"])
def test_local_files_load_with_their_columns(files, name) -> None:
    ds = load_examples(str(files / name), split="test")
    assert ds.column_names == ["question", "answer_number"]
    assert ds["answer_number"] == list(range(10))


def test_directory_with_splits(files) -> None:
    assert len(load_examples(str(files / "splits"), split="test")) == 10
    assert len(load_examples(str(files / "splits"), split="train")) == 3
    with pytest.raises(TaskError, match=r"splits \['test', 'train'\], not 'validation'"):
        load_examples(str(files / "splits"), split="validation")


def test_missing_file_and_unknown_format(tmp_path) -> None:
    with pytest.raises(TaskError, match="does not exist"):
        load_examples(str(tmp_path / "nope.jsonl"))
    (tmp_path / "x.txt").write_text("hi")
    with pytest.raises(TaskError, match="unknown format '.txt'"):
        load_examples(str(tmp_path / "x.txt"))


def test_hub_id_offline_fails_at_once_with_a_fix(monkeypatch) -> None:
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    start = time.perf_counter()
    with pytest.raises(OfflineError, match=r"juletxara/mgsm.*'ja'.*data: path/to/file\.jsonl"):
        load_examples("juletxara/mgsm", config="ja")
    assert time.perf_counter() - start < 5  # no network attempt, no retry loop
    assert describe_source("juletxara/mgsm", "ja") == "hub juletxara/mgsm (ja)"
    assert describe_source("./x.jsonl").startswith("local")


class Numbers(Task):
    name = "numbers"
    metrics = (MetricSpec("mean"),)
    requires = frozenset({"generate"})

    def score(self, handle, examples):
        SCORED.append(self.name)
        return TaskResult.from_items({"mean": [e["answer_number"] for e in examples]}, n=float(len(examples)))


SCORED: list[str] = []  # tasks whose score ran


class FakeHandle:
    capabilities = frozenset({"generate"})


def test_limit_seed_subset(files) -> None:
    path = str(files / "d.jsonl")
    full = [e["answer_number"] for e in Numbers(path).examples()]
    assert full == list(range(10))
    a = [e["answer_number"] for e in Numbers(path, seed=3, limit=4).examples()]
    b = [e["answer_number"] for e in Numbers(path, seed=3, limit=4).examples()]
    c = [e["answer_number"] for e in Numbers(path, seed=4, limit=4).examples()]
    assert a == b and len(a) == 4 and a != c and set(a) <= set(range(10))
    task = Numbers(path, seed=3, limit=4)
    assert [e["answer_number"] for e in task.examples([2, 0])] == [a[2], a[0]]
    assert task.evaluate(FakeHandle(), subset=[0, 1]).metrics["mean"] == (a[0] + a[1]) / 2
    with pytest.raises(TaskError, match=r"subset indices \[4\]"):
        task.examples([4])
    with pytest.raises(TaskError, match="limit=0"):
        Numbers(path, limit=0)


def test_default_data_and_config_go_to_the_loader(monkeypatch) -> None:
    class Mgsm(Numbers):
        default_data = "juletxara/mgsm"
        default_config = "ja"

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert Mgsm().describe_data() == "hub juletxara/mgsm (ja) [test]"
    assert Mgsm("other.jsonl").config is None
    with pytest.raises(OfflineError, match="config 'ja'"):
        Mgsm().evaluate(FakeHandle())


def test_per_item_results_add_up_and_name_their_items(files) -> None:
    task = Numbers(str(files / "d.jsonl"), seed=3, limit=6)
    order = [e["answer_number"] for e in task.examples()]
    full = task.evaluate(FakeHandle())
    assert full.item_ids == list(range(6)) and full.items["mean"] == order
    assert full.metrics["mean"] == pytest.approx(sum(order) / 6)
    sub = task.evaluate(FakeHandle(), subset=[4, 1])
    assert sub.item_values("mean") == {4: order[4], 1: order[1]}
    assert sub.metrics["mean"] == pytest.approx((order[4] + order[1]) / 2)
    with pytest.raises(TaskError, match="'n' has no per-item values"):
        sub.item_values("n")  # an aggregate only: the task says so by leaving it out of items

    class Short(Numbers):
        def score(self, handle, examples):
            return TaskResult.from_items({"mean": [1.0]})

    with pytest.raises(TaskError, match=r"task 'numbers': per-item values \{'mean': 1\} for 6 examples"):
        Short(str(files / "d.jsonl"), limit=6).evaluate(FakeHandle())
    with pytest.raises(TaskError, match="same positive count"):
        TaskResult.from_items({"a": [1.0], "b": [1.0, 0.0]})


def test_evaluate_tasks_checks_every_task_before_scoring_any(files) -> None:
    class Clip(Numbers):
        name = "clip_like"
        requires = frozenset({"classify"})

    path = str(files / "d.jsonl")
    SCORED.clear()
    with pytest.raises(TaskError, match=r"task 'clip_like' needs \['classify'\] but the model handle \(FakeHandle\) offers \['generate'\]"):
        evaluate_tasks(FakeHandle(), {"a": Numbers(path), "b": Clip(path)})
    assert SCORED == []  # the first task was not scored either
    results = evaluate_tasks(FakeHandle(), {"lo": Numbers(path, limit=4), "all": Numbers(path)}, subset=3)
    assert metrics_of(results) == {"lo": {"mean": 1.0, "n": 3.0}, "all": {"mean": 1.0, "n": 3.0}}
    assert all(r.seconds > 0 and r.item_ids == [0, 1, 2] for r in results.values())


def test_suite_objective_is_the_weighted_mean_of_its_terms(files) -> None:
    from types import SimpleNamespace

    from evomm.evolve_recipe import parse_recipe
    from evomm.objectives import ObjectiveSet
    from evomm.registry import Registry

    class Count(Numbers):
        name = "count"
        metrics = (MetricSpec("mean"), MetricSpec("n"))

    registry: Registry = Registry("task")
    registry.add(Numbers)
    registry.add(Count)
    path = str(files / "d.jsonl")
    recipe = parse_recipe({
        "parents": [{"name": "p", "path": "none"}],
        "tasks": {"numbers": {"data": path, "limit": 4}, "count": {"data": path, "seed": 1, "limit": 2}},
        "objectives": [{"name": "s", "suite": {"numbers": 3, "count.n": 1}}, {"name": "c", "task": "count"}],
        "stages": [{"name": "q", "kind": "synthetic", "algorithm": {"name": "random", "pop_size": 2},
                    "budget": {"generations": 1}}],
    })
    objs = ObjectiveSet(recipe.objectives, recipe.tasks, SimpleNamespace(tasks=registry))
    metrics = metrics_of(objs.evaluate(FakeHandle()))
    assert metrics["numbers"]["mean"] == 1.5  # 0..3
    assert objs.values(metrics) == {"s": pytest.approx((3 * 1.5 + 2.0) / 4), "c": metrics["count"]["mean"]}
    with pytest.raises(TaskError, match="objective 's': metric 'n' missing"):
        objs.values({"numbers": {"mean": 1.0}, "count": {"mean": 1.0}})
    with pytest.raises(TaskError, match=r"needs \['generate'\]"):
        objs.evaluate(object())


def test_capability_check() -> None:
    class NoGen:
        capabilities = frozenset({"classify"})

    with pytest.raises(TaskError, match=r"task 'numbers' needs \['generate'\].*\(NoGen\) offers \['classify'\]"):
        check_capabilities({"n": Numbers("x.jsonl")}, NoGen())


def test_evolve_checks_task_requirements_before_scoring(tmp_path) -> None:
    import types

    import evo_synthetic

    from evomm import hookimpl
    from evomm.evolve_recipe import parse_recipe
    from evomm.plugins import load_plugins
    from evomm.runner import evolve

    class NeedsImages(evo_synthetic.SynA):
        name = "syn_vqa"
        requires = frozenset({"generate", "image"})

        def score(self, handle, examples):
            SCORED.append(self.name)
            return super().score(handle, examples)

    @hookimpl
    def evomm_register_tasks(registry) -> None:
        registry.add(NeedsImages)

    extra = types.ModuleType("needs_images")
    extra.evomm_register_tasks = evomm_register_tasks  # type: ignore[attr-defined]
    plugins = load_plugins(extra=[evo_synthetic.PLUGIN, extra], autoload=False)
    d = evo_synthetic.recipe_dict(generations=1, pop=2)
    d["objectives"].append({"name": "v", "task": "syn_vqa"})
    SCORED.clear()
    with pytest.raises(TaskError, match=r"task 'syn_vqa' needs \['generate', 'image'\] but the model handle \(SynthHandle\) offers \[\]"):
        evolve(parse_recipe(d), tmp_path / "run", plugins=plugins, progress=False, report=False)
    assert SCORED == []
