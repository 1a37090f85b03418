"""Budgets (issue 17, class 5c/5d): the wall time is checked before each candidate against the
recent per-candidate time (a fake clock: no sleeping), a stop inside a generation resumes where
it left off, and a wall-time-only budget shows progress in seconds."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
import evo_cli as C  # noqa: E402
import evo_synthetic as S  # noqa: E402

from evomm.archive import Archive  # noqa: E402
from evomm.evolve_recipe import Budget, parse_recipe  # noqa: E402
from evomm.objectives import ObjectiveSet  # noqa: E402
from evomm.records import RunInfo  # noqa: E402
from evomm.search import EvolutionLoop  # noqa: E402

POP = 8
CANDIDATE_S = 10.0  # what one candidate takes on the fake clock


class FakeClock:
    """Time moves only when a candidate is evaluated (``CANDIDATE_S`` each)."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch) -> FakeClock:
    c = FakeClock()
    real = S.SynthSpace.materialize

    def slow(self, cand):
        c.now += CANDIDATE_S
        return real(self, cand)

    monkeypatch.setattr(S.SynthSpace, "materialize", slow)
    return c


def _stage(run_dir: Path, budget: Budget, clock: FakeClock, progress: bool = False):
    recipe = parse_recipe(S.recipe_dict(generations=5, pop=POP))
    plugins = S.plugins()
    objs = ObjectiveSet(recipe.objectives, recipe.tasks, plugins)
    run_dir.mkdir(exist_ok=True)
    run = RunInfo(run_dir=run_dir, objectives=objs.names, directions=objs.directions, seed=0)
    loop = EvolutionLoop(S.SynthSpace(), objs, recipe.stages[0].algorithm, budget, run,
                         Archive(run_dir / "archive.jsonl", repair=True), stage="syn", progress=progress,
                         clock=clock)
    return loop.run_stage()


def test_wall_time_stops_before_a_candidate_that_would_not_fit(tmp_path, clock):
    res = _stage(tmp_path / "run", Budget(wall_time=95), clock)
    # 9 candidates (90 s); a 10th would end at 100 s > 95 s. Checked only between generations,
    # the run went on to the end of generation 2 (160 s).
    assert res.evaluations == 9
    assert clock.now - 1000.0 <= 95
    assert res.reason == "budget"
    assert res.note.startswith("stopped: the next candidate would exceed the wall-time budget")


def test_resume_after_a_wall_time_stop(tmp_path, clock):
    whole = _stage(tmp_path / "whole", Budget(wall_time=190), clock)
    assert whole.evaluations == 19

    run_dir = tmp_path / "run"
    assert _stage(run_dir, Budget(wall_time=95), clock).evaluations == 9
    again = _stage(run_dir, Budget(wall_time=95), clock)  # the same budget: nothing is left
    assert again.evaluations == 9 and "exceed the wall-time budget" in again.note
    more = _stage(run_dir, Budget(wall_time=190), clock)  # a larger one: on where it stopped
    assert more.evaluations == 19
    assert C.essence(run_dir) == C.essence(tmp_path / "whole")


def test_wall_time_only_budget_shows_progress_in_seconds(tmp_path, clock, capsys):
    _stage(tmp_path / "run", Budget(wall_time=95), clock, progress=True)
    err = capsys.readouterr().err
    assert "evolve[syn]" in err and "90/95" in err and "done=9" in err
