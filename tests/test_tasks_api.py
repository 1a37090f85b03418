"""Task API: data loading (local formats, offline hub ids), limit/seed/subset, suites."""

from __future__ import annotations

import json
import time

import pytest

from evomm.data import describe_source, load_examples
from evomm.errors import ConfigError, OfflineError, TaskError
from evomm.evaluation import (
    Suite,
    SuiteMember,
    check_capabilities,
    evaluate_suite,
    evaluate_tasks,
    parse_suite,
    parse_suites,
)
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
        vals = [e["answer_number"] for e in examples]
        return TaskResult({"mean": sum(vals) / len(vals), "n": float(len(vals))}, len(vals))


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


def test_parse_suite_forms() -> None:
    s = parse_suite("japanese_skill = mean(ja_mc, ja_vqa)")
    assert s == Suite("japanese_skill", (SuiteMember("ja_mc"), SuiteMember("ja_vqa")), "mean")
    s = parse_suite("min(2*ja_math, ja_mc.accuracy_norm*0.5)", name="x")
    assert s.members == (SuiteMember("ja_math", 2.0), SuiteMember("ja_mc", 0.5, "accuracy_norm"))
    assert s.reduce == "min"
    suites = parse_suites({"a": "sum(t1, t2)", "b": {"tasks": {"t1.mean": 3, "t2": 1}, "reduce": "min"},
                           "c": {"t1.mean": 3, "t2": 1}})
    assert suites["b"].members == suites["c"].members == (SuiteMember("t1", 3.0, "mean"), SuiteMember("t2", 1.0))
    assert (suites["a"].reduce, suites["b"].reduce, suites["c"].reduce) == ("sum", "min", "mean")
    with pytest.raises(ConfigError, match="not a number"):
        parse_suites({"d": {"t1": "heavy"}})
    for bad in ["mean(ja_mc", "x = median(a)", "x = mean(a b)", "mean(a)", "x = mean(2*a*3)", "x = mean()"]:
        with pytest.raises(ConfigError):
            parse_suite(bad)
    with pytest.raises(ConfigError, match="defined twice"):
        parse_suites(["a = mean(x)", "a = sum(y)"])


def test_suite_value_is_the_weighted_reduction(files) -> None:
    path = str(files / "d.jsonl")
    tasks = {"lo": Numbers(path, limit=4), "hi": Numbers(path, seed=1, limit=2)}
    results = evaluate_tasks(FakeHandle(), tasks)
    lo, hi = results["lo"].metrics["mean"], results["hi"].metrics["mean"]
    assert lo == 1.5  # 0..3
    cache: dict = {}
    got = evaluate_suite(FakeHandle(), parse_suite("s = mean(lo*3, hi)"), tasks, cache=cache)
    assert got.value == pytest.approx((3 * lo + hi) / 4)
    assert set(cache) == {"lo", "hi"}
    assert evaluate_suite(FakeHandle(), parse_suite("s = sum(lo, hi.n)"), tasks, cache=cache).value == lo + 2
    assert evaluate_suite(FakeHandle(), parse_suite("s = min(lo, 0.1*hi)"), tasks).value == min(lo, 0.1 * hi)
    with pytest.raises(TaskError, match=r"tasks \['nope'\]"):
        evaluate_suite(FakeHandle(), parse_suite("s = mean(nope)"), tasks)
    with pytest.raises(TaskError, match="metric 'f1'"):
        evaluate_suite(FakeHandle(), parse_suite("s = mean(lo.f1)"), tasks, cache=cache)


def test_capability_check() -> None:
    class NoGen:
        capabilities = frozenset({"classify"})

    with pytest.raises(TaskError, match=r"needs \['generate'\].*offers \['classify'\]"):
        check_capabilities(Numbers("x.jsonl"), NoGen())
