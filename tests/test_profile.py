"""Where a candidate's time goes (issue 19.5): model time vs the task's own work, and
`evomm evolve --profile`. Time comes from a fake clock that the fake model advances, so nothing
depends on the machine's speed."""

from __future__ import annotations

import types

import pytest
import yaml

import evomm.evaluation as evaluation
from evomm.evaluation import evaluate_tasks
from evomm.tasks import MetricSpec, Task, TaskResult


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def perf_counter(self) -> float:
        return self.now


class SlowModel:
    """Generation costs 3 s per prompt, a log-likelihood 0.5 s (on the fake clock)."""

    capabilities = frozenset({"generate", "loglikelihood"})

    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self.name = "slow"

    def generate(self, prompts, **kw):
        self.clock.now += 3.0 * len(prompts)
        return [p.upper() for p in prompts]

    def loglikelihood(self, requests, **kw):
        self.clock.now += 0.5 * len(requests)
        return [-1.0] * len(requests)


class Echo(Task):
    name = "echo"
    metrics = (MetricSpec("acc"),)

    def __init__(self, clock: Clock) -> None:
        super().__init__()
        self.clock = clock

    def load(self):
        import datasets

        return datasets.Dataset.from_list([{"p": w} for w in ("a", "b", "c", "d")])

    def score(self, handle, examples):
        assert handle.name == "slow"  # other attributes are the handle's own
        outs = handle.generate([e["p"] for e in examples])
        handle.loglikelihood([(e["p"], "x") for e in examples])
        self.clock.now += 7.0  # the task's own work: scoring
        return TaskResult.from_items({"acc": [float(o == e["p"].upper()) for o, e in zip(outs, examples)]})


def test_a_result_splits_model_time_by_method_from_the_tasks_own_work(monkeypatch):
    clock = Clock()
    monkeypatch.setattr(evaluation, "time", types.SimpleNamespace(perf_counter=clock.perf_counter))
    res = evaluate_tasks(SlowModel(clock), {"echo": Echo(clock)}, subset=3)["echo"]
    assert res.metrics == {"acc": 1.0}
    assert res.model_seconds == {"generate": 9.0, "loglikelihood": 1.5}
    assert res.seconds == 9.0 + 1.5 + 7.0


def test_evolve_profile_prints_merge_and_each_tasks_model_and_own_time(micro_zoo, tmp_path, capsys):
    from evomm.cli import main
    from evomm.evolve_recipe import parse_recipe
    from evomm.plugins import get_plugins
    from evomm.profiling import format_profile, profile_candidate

    tasks = ("toy_ja_skill", "toy_math")
    recipe = {
        "name": "micro", "seed": 0,
        "parents": [{"name": "ja", "path": str(micro_zoo / "models/ja")},
                    {"name": "math", "path": str(micro_zoo / "models/math")}],
        "base_model": {"name": "base", "path": str(micro_zoo / "models/base")},
        "merge": {"method": "task_arithmetic", "tokenizer_source": "base",
                  "parameters": {"weight": {"evolve": {"low": -0.5, "high": 1.5}}}},
        "objectives": [{"name": "ja", "task": "toy_ja_skill"}, {"name": "math", "task": "toy_math"}],
        "tasks": {t: {"data": str(micro_zoo), "split": "dev", "limit": 6 + 2 * i} for i, t in enumerate(tasks)},
    }
    prof = profile_candidate(parse_recipe(recipe), get_plugins())
    assert {k: t.items for k, t in prof.tasks.items()} == {"toy_ja_skill": 6, "toy_math": 8}
    for t in prof.tasks.values():
        assert set(t.model) == {"generate"} and 0 < t.model["generate"] <= t.seconds
    assert prof.total == pytest.approx(prof.merge + sum(t.seconds for t in prof.tasks.values()))

    path = tmp_path / "r.yaml"
    path.write_text(yaml.safe_dump(recipe))
    assert main(["evolve", str(path), "--profile"]) == 0
    out = capsys.readouterr().out
    assert "merge (in place, model resident)" in out
    for line in ("toy_ja_skill: generate", "toy_math: generate", "toy_math: prompts and scoring"):
        assert line in out
    assert not list(tmp_path.glob("*/archive.jsonl"))  # nothing run, nothing written
    assert format_profile(prof).splitlines()[0].startswith("where a candidate's time goes")


class CountingRows(list):
    """A data set that counts the rows converted (what ``datasets.Dataset.__getitem__`` does)."""

    converted = 0

    def __getitem__(self, i):
        CountingRows.converted += 1
        return dict(super().__getitem__(i))


class Words(Echo):
    name = "words"

    def load(self):
        return CountingRows({"p": w} for w in "abcdefgh")


def test_a_task_counts_its_examples_without_converting_them():
    clock = Clock()
    task = Words(clock)
    task.limit, task.seed = 6, 3
    CountingRows.converted = 0
    assert task.size() == 6 and CountingRows.converted == 0
    first = task.evaluate(SlowModel(clock))
    again = task.evaluate(SlowModel(clock), [4, 1])
    assert first.item_ids == list(range(6)) and again.item_ids == [4, 1]
    assert CountingRows.converted == 6 + 2  # the old code converted all 6 again to count them (20 here)
    assert [e["p"] for e in task.examples([1, 0])] == [e["p"] for e in task.examples()][1::-1]
