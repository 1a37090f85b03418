"""Item-level results and racing (issue 19.1, 19.2) on tasks with known per-item outcomes."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).parent))
import evo_items as I  # noqa: E402
import evo_synthetic as S  # noqa: E402

from evomm.archive import Archive  # noqa: E402
from evomm.errors import ConfigError  # noqa: E402
from evomm.evolve_recipe import parse_recipe  # noqa: E402
from evomm.front import ObjectiveInfo, pareto_front  # noqa: E402
from evomm.objectives import ObjectiveSet  # noqa: E402
from evomm.runner import evolve  # noqa: E402

INFOS = [ObjectiveInfo("a", "maximize"), ObjectiveInfo("b", "maximize")]


def _run(run_dir: Path, **kw) -> list:
    evolve(parse_recipe(I.recipe_dict(**kw)), run_dir, plugins=I.plugins(), progress=False, report=False)
    return Archive(run_dir / "archive.jsonl").stage_records("syn")


def _items(run_dir: Path) -> list[dict]:
    rows = [json.loads(line) for line in (run_dir / "items.jsonl").read_text().splitlines()]
    return [r for r in rows if "decision" not in r]


def test_item_results_add_up_to_the_objective_values(tmp_path):
    children = _run(tmp_path / "run", strategy="racing", generations=3)
    per: dict[tuple[str, str], dict[int, float]] = {}
    for row in _items(tmp_path / "run"):
        per.setdefault((row["key"], row["task"]), {}).update(zip(row["ids"], row["items"]["acc"]))
    objs = ObjectiveSet(parse_recipe(I.recipe_dict()).objectives, {}, I.plugins())
    space = S.SynthSpace()
    assert {r.evaluation for r in children} == {"full", "subset"}  # racing stopped some
    for rec in children:
        for obj, task in (("a", "items_a"), ("b", "items_b")):
            items = per[(rec.plan_hash, task)]
            assert rec.objectives[obj] == pytest.approx(sum(items.values()) / len(items), abs=1e-12)
        assert rec.items_evaluated == len(per[(rec.plan_hash, "items_a")]) + len(per[(rec.plan_hash, "items_b")])
        if rec.evaluation == "full":
            assert rec.items_evaluated == 2 * I.N_ITEMS and rec.stderr == {}
            # an independent reference: the tasks' own evaluation of the whole set
            results = objs.evaluate(space.materialize(space.decode(np.array(rec.genome))))
            assert rec.objectives == {"a": results["items_a"].metrics["acc"], "b": results["items_b"].metrics["acc"]}
            assert rec.objectives == pytest.approx(I.true_values(rec.genome))
        else:
            assert rec.items_evaluated < 2 * I.N_ITEMS and set(rec.stderr) == {"a", "b"}
            # the default rounds double from 20 items: a stopped candidate scored 20 or 40 of 80
            assert {len(per[(rec.plan_hash, t)]) for t in ("items_a", "items_b")} in ({20}, {40})


@pytest.mark.parametrize(("seed", "confidence", "rounds"), [
    (0, 1.0, [40, 60, 72, "100%"]), (1, 1.0, [40, 60, 72, "100%"]),  # the range bound: a guarantee
    (2, 0.95, [10, 30, "100%"]), (3, 0.95, [10, 30, "100%"]),
])
def test_racing_never_stops_a_candidate_that_full_evaluation_puts_on_the_front(tmp_path, seed, confidence, rounds):
    children = _run(tmp_path / "run", strategy="racing", seed=seed, generations=4, confidence=confidence,
                    rounds=rounds)
    true = [type(r)(**{**r.__dict__, "objectives": I.true_values(r.genome), "evaluation": "full"})
            for r in children]
    front = pareto_front(true, INFOS)
    by_id = {r.id: r for r in children}
    assert front and all(by_id[r.id].evaluation == "full" for r in front)
    stopped = [r for r in children if r.evaluation == "subset"]
    assert stopped, "racing stopped no candidate: the test shows nothing"


def test_no_item_is_scored_twice_and_racing_costs_less(tmp_path, monkeypatch):
    monkeypatch.setenv("EVO_ITEM_LOG", str(tmp_path / "items.log"))
    _run(tmp_path / "racing", strategy="racing", generations=3)
    lines = (tmp_path / "items.log").read_text().splitlines()
    assert len(lines) == len(set(lines))  # (task, candidate, item) once each
    racing = sum(r.items_evaluated for r in Archive(tmp_path / "racing" / "archive.jsonl"))
    assert racing == len(lines)  # parents included
    monkeypatch.delenv("EVO_ITEM_LOG")
    _run(tmp_path / "full", strategy="full", generations=3)
    assert racing < sum(r.items_evaluated for r in Archive(tmp_path / "full" / "archive.jsonl"))


def test_a_metric_that_is_not_a_mean_is_scored_whole_once(tmp_path, monkeypatch):
    """items_b.corpus (acc squared) has no per-item values: racing scores items_b whole, once per
    candidate, and the objective is the task's own aggregate, never a mean of items."""
    monkeypatch.setenv("EVO_ITEM_LOG", str(tmp_path / "items.log"))
    d = I.recipe_dict(strategy="racing", generations=3)
    d["objectives"][1]["metric"] = "corpus"
    evolve(parse_recipe(d), tmp_path / "run", plugins=I.plugins(), progress=False, report=False)
    lines = (tmp_path / "items.log").read_text().splitlines()
    assert len(lines) == len(set(lines))
    children = Archive(tmp_path / "run" / "archive.jsonl").stage_records("syn")
    for rec in children:
        true_b = I.true_values(rec.genome)["b"]
        assert rec.objectives["b"] == pytest.approx(true_b**2)  # exact even when racing stopped it on a
        assert rec.metrics["items_b"]["corpus"] == pytest.approx(true_b**2)
    assert "subset" in {r.evaluation for r in children}  # exact b values let racing stop some
    per_b = {}
    for row in _items(tmp_path / "run"):
        if row["task"] == "items_b":
            per_b.setdefault(row["key"], []).append(row["whole"])
    assert all(w == [True] for w in per_b.values())  # one whole evaluation each


def test_subset_strategy_reuses_its_items(tmp_path, monkeypatch):
    monkeypatch.setenv("EVO_ITEM_LOG", str(tmp_path / "items.log"))
    children = _run(tmp_path / "run", strategy="subset", subset=15, margin=0.0, generations=3)
    lines = (tmp_path / "items.log").read_text().splitlines()
    assert len(lines) == len(set(lines))
    assert {r.evaluation for r in children} == {"full", "subset"}
    assert all(r.items_evaluated == 2 * (I.N_ITEMS if r.evaluation == "full" else 15) for r in children)


def test_cheap_first_and_fitness_together_are_refused():
    d = I.recipe_dict() | {"cheap_first": {"subset": 3}}
    with pytest.raises(ConfigError, match="give `fitness:` or the older `cheap_first:`, not both"):
        parse_recipe(d)
    assert parse_recipe(S.recipe_dict(cheap=True)).fitness_spec().strategy == "subset"


def test_a_resumed_racing_run_replays_its_rounds(tmp_path):
    whole = _run(tmp_path / "whole", strategy="racing", generations=3)

    class Crash(BaseException):
        pass

    def crash(rec):
        if rec.generation == 1 and rec.evaluation == "subset":
            raise Crash

    run_dir = tmp_path / "run"
    with pytest.raises(Crash):
        evolve(parse_recipe(I.recipe_dict(generations=3)), run_dir, plugins=I.plugins(), progress=False,
               report=False, on_evaluated=crash)
    evolve(None, run_dir, resume=True, plugins=I.plugins(), progress=False, report=False)
    again = Archive(run_dir / "archive.jsonl").stage_records("syn")
    key = lambda r: (r.id, r.plan_hash, r.evaluation, r.objectives, r.items_evaluated)  # noqa: E731
    assert [key(r) for r in again] == [key(r) for r in whole]
