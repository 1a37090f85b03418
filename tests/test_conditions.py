"""Objective constraints and ``--pick`` strings: one parser (:mod:`evomm.conditions`), and every
malformed value is a ConfigError naming the option, the value and a valid example (exit 2)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import yaml

sys.path.insert(0, str(Path(__file__).parent))
import evo_synthetic as S  # noqa: E402

from evomm.cli import main  # noqa: E402
from evomm.conditions import Condition, parse_condition, parse_named_condition  # noqa: E402
from evomm.errors import ConfigError  # noqa: E402
from evomm.evolve_recipe import parse_recipe  # noqa: E402
from evomm.front import ObjectiveInfo, feasible  # noqa: E402
from evomm.records import CandidateRecord  # noqa: E402
from evomm.runner import evolve  # noqa: E402

BAD_CONSTRAINTS = {
    ">= 0.1 0.2": "is not a condition; write one operator (>=, <=, >, <) and one number, e.g. '>= 0.5'",
    ">= 0.1.2": "does not end in one finite number (got '0.1.2'); write e.g. '>= 0.5'",
    ">= nan": "does not end in one finite number (got 'nan')",
    "=> 0.5": "is not a condition",
    "0.5": "is not a condition",
}


@pytest.mark.parametrize("text", sorted(BAD_CONSTRAINTS))
def test_bad_constraint_is_one_clear_error(tmp_path: Path, capsys: pytest.CaptureFixture[str], text: str) -> None:
    recipe = {"parents": [{"name": "a", "path": "x"}], "merge": {"method": "linear"},
              "objectives": [{"name": "o", "task": "t", "constraint": text}]}
    path = tmp_path / "r.yaml"
    path.write_text(yaml.safe_dump(recipe))
    assert main(["evolve", str(path), "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and f"objectives[0].constraint: Value error, the constraint {text!r}" in err, err
    assert BAD_CONSTRAINTS[text] in err, err
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize(("text", "want"), [(">=0.5", Condition(">=", 0.5)), ("> -1e-3", Condition(">", -0.001)),
                                            (" <= 2 ", Condition("<=", 2.0)), ("<1E2", Condition("<", 100.0))])
def test_one_parser_for_recipes_runs_and_picks(text: str, want: Condition) -> None:
    assert parse_condition(text, "the constraint") == want
    assert parse_named_condition("ja_math" + text, "--pick") == ("ja_math", want)
    objective = parse_recipe({"parents": [{"name": "a", "path": "x"}], "merge": {"method": "linear"},
                              "objectives": [{"name": "o", "task": "t", "constraint": text}]}).objectives[0]
    assert objective.constraint_parts() == want
    # the front reads constraints back from run.json with the same parser
    rec = CandidateRecord("c1", 0, [], "h", {}, {"o": want.bound})
    assert feasible(rec, [ObjectiveInfo("o", "maximize", text)]) == want.holds(want.bound)
    with pytest.raises(ConfigError, match=r"run.json: objective 'o' has the constraint '>= 1 2' is not a condition"):
        feasible(rec, [ObjectiveInfo("o", "maximize", ">= 1 2")])


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    run = tmp_path_factory.mktemp("picks") / "run"
    evolve(parse_recipe(S.recipe_dict("random", generations=2, pop=6)), run, plugins=S.plugins(),
           progress=False, report=False)
    return run


BAD_PICKS = {
    "a>=0.1.2": "--pick 'a>=0.1.2' does not end in one finite number (got '0.1.2'); write e.g. 'a>=0.5'",
    "a>=0.1 0.2": "--pick 'a>=0.1 0.2' is not a condition; write an objective name, one operator",
    "a>=inf": "does not end in one finite number (got 'inf')",
    "weights=nan,1": "give 2 finite, non-negative weights, not all zero, one per objective (a, b), e.g. weights=0.5,0.5",
    "weights=inf,1": "give 2 finite, non-negative weights",
    "weights=-1,2": "give 2 finite, non-negative weights",
    "weights=0,0": "not all zero",
    "weights=1": "give 2 finite",
    "weights=1,1,1": "give 2 finite",
    "weights=a,b": "weights must be numbers separated by commas, e.g. weights=0.5,0.5",
    "kne": "is not understood; use knee, weights=a,b, best=NAME or NAME>=VALUE (e.g. a>=0.5)",
}


@pytest.mark.parametrize("how", sorted(BAD_PICKS))
def test_bad_pick_is_one_clear_error(run_dir: Path, capsys: pytest.CaptureFixture[str], how: str) -> None:
    assert main(["front", str(run_dir), "--pick", how]) == 2
    err = capsys.readouterr().err
    assert err.startswith("evomm: error: ") and err.count("\n") == 1 and BAD_PICKS[how] in err, err


def test_good_picks_still_work(run_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    for how in ("knee", "weights=1,0", "best=b", "a>=0.5", "b < 2"):
        assert main(["front", str(run_dir), "--pick", how]) == 0, capsys.readouterr().err
