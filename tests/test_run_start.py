"""Starting and reopening runs (issue 17, classes 1-3): a failed start leaves no run directory,
--out is checked first, --resume never ignores a recipe, damaged run files and bad --stage are
one clear error, and a read-only command writes nothing."""

from __future__ import annotations

import copy
import os
import sys
from pathlib import Path

import pytest
import torch
import yaml

sys.path.insert(0, str(Path(__file__).parent))
import evo_synthetic as S  # noqa: E402

from evomm.cli import main  # noqa: E402
from evomm.evolve_recipe import parse_recipe  # noqa: E402
from evomm.runner import evolve  # noqa: E402


def _good(zoo: Path) -> dict:
    return {
        "name": "t", "seed": 0,
        "parents": [{"name": "ja", "path": str(zoo / "models/ja")}, {"name": "math", "path": str(zoo / "models/math")}],
        "base_model": {"name": "base", "path": str(zoo / "models/base")},
        "merge": {"method": "task_arithmetic", "tokenizer_source": "base",
                  "parameters": {"weight": {"evolve": {"low": -0.5, "high": 1.5}}}},
        "objectives": [{"name": "ja_skill", "task": "toy_ja_skill", "metric": "loose"}],
        "tasks": {"toy_ja_skill": {"data": str(zoo), "split": "dev", "limit": 2}},
        "algorithm": {"name": "random", "pop_size": 2}, "budget": {"generations": 1},
    }


def _pickle_parent(zoo: Path, out: Path) -> Path:
    from safetensors.torch import load_file

    out.mkdir()
    weights = {}
    for f in (zoo / "models/math").iterdir():
        if f.suffix == ".safetensors":
            weights.update(load_file(f))
        elif f.is_file():
            (out / f.name).write_bytes(f.read_bytes())
    torch.save(weights, out / "pytorch_model.bin")
    return out


def _other_arch(tmp: Path) -> Path:
    from tiny_models import make_tiny_model

    return make_tiny_model(tmp / "llama", family="llama", seed=0)


#: kind -> (how the good recipe is broken, a fragment of the error)
BAD = {
    "incompatible parents": (lambda d, t: d["parents"][1].update(path=str(_other_arch(t))), "vocabulary"),
    "range outside the operator's": (
        lambda d, t: d["merge"]["parameters"].update(weight={"evolve": {"low": -50, "high": 50}}),
        "valid range"),
    "unknown parameter": (lambda d, t: d["merge"]["parameters"].update(wieght=0.5), "has no parameter 'wieght'"),
    "missing split": (lambda d, t: d["tasks"]["toy_ja_skill"].update(split="validation"), "validation"),
    "typo in tasks": (lambda d, t: d.update(tasks={"toy_ja_skil": d["tasks"]["toy_ja_skill"]}),
                      "did you mean 'toy_ja_skill'"),
    "pickle parent": (lambda d, t: d["parents"][1].update(path=str(_pickle_parent(Path(d["tasks"]["toy_ja_skill"]["data"]), t / "pkl"))),
                      "pickle"),
}


@pytest.mark.parametrize("kind", list(BAD))
def test_failed_start_leaves_no_run_dir_and_the_fixed_recipe_runs(kind, micro_zoo, tmp_path, capsys):
    breaks, fragment = BAD[kind]
    bad = _good(micro_zoo)
    breaks(bad, tmp_path)
    (tmp_path / "bad.yaml").write_text(yaml.safe_dump(bad))
    out = tmp_path / "runs" / "r1"
    assert main(["evolve", str(tmp_path / "bad.yaml"), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "evomm: error:" in err and fragment in err
    assert not (tmp_path / "runs").exists()  # nothing made, not even the parent directory
    (tmp_path / "good.yaml").write_text(yaml.safe_dump(_good(micro_zoo)))
    assert main(["evolve", str(tmp_path / "good.yaml"), "--out", str(out)]) == 0
    assert (out / "archive.jsonl").is_file()


def test_run_that_dies_before_its_first_record_removes_what_it_made(tmp_path, monkeypatch):
    def broken(self, name):
        raise RuntimeError("the task crashed")

    monkeypatch.setattr(S.SynthSpace, "materialize_reference", broken)
    out = tmp_path / "new" / "run"
    with pytest.raises(RuntimeError):
        evolve(parse_recipe(S.recipe_dict()), out, plugins=S.plugins(), progress=False, report=False)
    assert not (tmp_path / "new").exists()
    existing = tmp_path / "empty"
    existing.mkdir()
    with pytest.raises(RuntimeError):
        evolve(parse_recipe(S.recipe_dict()), existing, plugins=S.plugins(), progress=False, report=False)
    assert existing.is_dir() and not any(existing.iterdir())  # the user's directory stays, emptied


@pytest.mark.parametrize("where", ["a file", "under a file", "not empty"])
def test_out_must_be_a_new_or_empty_directory(where, tmp_path, capsys):
    recipe = tmp_path / "r.yaml"
    recipe.write_text(yaml.safe_dump(S.recipe_dict()))
    (tmp_path / "f").write_text("user data")
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "notes.txt").write_text("user data")
    out = {"a file": tmp_path / "f", "under a file": tmp_path / "f" / "run", "not empty": tmp_path / "d"}[where]
    assert main(["evolve", str(recipe), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("evomm: error: --out") and "Traceback" not in err
    assert (tmp_path / "f").read_text() == "user data" and os.listdir(tmp_path / "d") == ["notes.txt"]


@pytest.fixture
def run_dir(tmp_path) -> Path:
    d = tmp_path / "run"
    evolve(parse_recipe(S.recipe_dict(generations=2, pop=4)), d, plugins=S.plugins(), progress=False, report=False)
    return d


def _snapshot(d: Path) -> dict[str, tuple[int, int]]:
    """Every file's mtime and size (the lock file aside: taking the lock rewrites its pid)."""
    return {str(p.relative_to(d)): (p.stat().st_mtime_ns, p.stat().st_size) for p in d.rglob("*")
            if p.is_file() and p.name != ".lock"}


def test_resume_with_a_recipe_is_refused_without_recipe_update(run_dir, tmp_path, capsys):
    recipe = tmp_path / "more.yaml"
    recipe.write_text(yaml.safe_dump(S.recipe_dict(generations=3, pop=4)))
    before = _snapshot(run_dir)
    assert main(["evolve", str(recipe), "--resume", str(run_dir)]) == 2
    err = capsys.readouterr().err
    assert "--recipe-update" in err and "Traceback" not in err
    assert _snapshot(run_dir) == before


def test_recipe_update_continues_with_the_new_budget_and_says_what_changed(run_dir, tmp_path, capsys):
    recipe = tmp_path / "more.yaml"
    recipe.write_text(yaml.safe_dump(S.recipe_dict(generations=3, pop=4)))
    res = evolve(str(recipe), run_dir, resume=True, recipe_update=True, plugins=S.plugins(), progress=False,
                 report=False)
    assert "stages[syn].budget.generations: 2 -> 3" in capsys.readouterr().err
    assert res.final.generations == 3 and res.final.evaluations == 12
    assert "generations: 3" in (run_dir / "recipe.yaml").read_text()


def test_recipe_update_refuses_another_search(run_dir, tmp_path):
    other = S.recipe_dict(generations=3, pop=4, seed=1)
    other["stages"][0]["algorithm"]["pop_size"] = 5
    before = _snapshot(run_dir)
    with pytest.raises(Exception, match=r"(?s)another search.*seed: 0 -> 1.*algorithm.pop_size: 4 -> 5"):
        evolve(parse_recipe(other), run_dir, resume=True, recipe_update=True, plugins=S.plugins())
    assert _snapshot(run_dir) == before


@pytest.mark.parametrize("damage", ["recipe.yaml", "run.json"])
def test_damaged_run_files_on_resume_name_the_file_and_the_fix(damage, run_dir, capsys):
    (run_dir / damage).write_text("{ not: [valid" if damage == "recipe.yaml" else '{"objectives": [')
    assert main(["evolve", "--resume", str(run_dir)]) == 2
    err = capsys.readouterr().err
    assert f"{run_dir / damage} is damaged" in err and "Traceback" not in err
    assert ("restore it" if damage == "recipe.yaml" else "delete it and run `evomm evolve --resume") in err


@pytest.mark.parametrize("missing", ["run.json", "recipe.yaml", "records"])
def test_front_on_an_incomplete_run_dir_is_an_error(missing, run_dir, capsys):
    if missing == "records":
        (run_dir / "archive.jsonl").write_text("")
    else:
        (run_dir / missing).unlink()
    before = _snapshot(run_dir)
    assert main(["front", str(run_dir)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("evomm: error:") and "Traceback" not in err
    assert {"run.json": "run.json", "recipe.yaml": "recipe.yaml", "records": "archive.jsonl"}[missing] in err
    assert _snapshot(run_dir) == before


def test_front_with_a_misspelt_stage_writes_nothing(run_dir, capsys):
    before = _snapshot(run_dir)
    assert main(["front", str(run_dir), "--stage", "sin"]) == 2
    assert "did you mean 'syn'" in capsys.readouterr().err
    assert _snapshot(run_dir) == before


def test_a_budget_without_a_bound_is_refused_before_anything_is_written(tmp_path, capsys):
    d = copy.deepcopy(S.recipe_dict())
    d["stages"][0]["budget"] = {}
    (tmp_path / "r.yaml").write_text(yaml.safe_dump(d))
    assert main(["evolve", str(tmp_path / "r.yaml"), "--out", str(tmp_path / "run")]) == 2
    assert "the budget has no bound" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()
    del d["stages"][0]["budget"]  # no budget at all: the default
    assert parse_recipe(d).stages[0].budget.generations == 10
