"""Executors (issue 19.4): ``processes`` and ``ray`` give the local executor's archive for the same
seed, a killed worker's job runs again without a duplicate, and a driver killed with -9 then
resumed with workers ends with the uninterrupted archive."""

from __future__ import annotations

import shutil
import signal
import sys
from pathlib import Path

import pytest
import yaml

sys.path.insert(0, str(Path(__file__).parent))
import evo_cli as C  # noqa: E402
import evo_items as I  # noqa: E402

from evomm.evolve_recipe import parse_recipe  # noqa: E402
from evomm.runner import evolve  # noqa: E402

HERE = Path(__file__).parent
GENS, POP = 3, 6


def _recipe(**executor) -> object:
    return parse_recipe(I.recipe_dict(generations=GENS, pop=POP) | {"executor": executor or {"name": "local"}})


def _run(run_dir: Path, **executor) -> list[tuple]:
    evolve(_recipe(**executor), run_dir, plugins=I.plugins(), progress=False, report=False)
    return C.essence(run_dir)


def _items(run_dir: Path) -> list[str]:
    return sorted((run_dir / "items.jsonl").read_text().splitlines())


@pytest.fixture(scope="module")
def local(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("local") / "run"
    _run(d)
    return d


def test_processes_executor_gives_the_local_archive(tmp_path, local):
    got = _run(tmp_path / "run", name="processes", workers=2)
    assert got == C.essence(local)  # ids, stages, genomes, digests, objectives, in order
    assert {r["evaluation"] for r in C.records(local)} == {"full", "subset"}  # racing decided something
    assert _items(tmp_path / "run") == _items(local)


def test_a_killed_worker_is_replaced_and_its_job_runs_again(tmp_path, local, monkeypatch, caplog):
    marker = tmp_path / "killed"
    monkeypatch.setenv("EVO_KILL_WORKER", str(marker))
    monkeypatch.setenv("EVO_ITEM_LOG", str(tmp_path / "items.log"))
    got = _run(tmp_path / "run", name="processes", workers=2)
    assert marker.exists()  # a worker did die mid-candidate
    assert got == C.essence(local)
    ids = [r[0] for r in got]
    assert len(ids) == len(set(ids))
    assert "a worker process died" in caplog.text


def test_ray_executor_gives_the_local_archive(tmp_path, local):
    pytest.importorskip("ray", reason="Ray is not installed (pip install 'evomm[ray]')")
    got = _run(tmp_path / "run", name="ray", workers=2, num_cpus_per_worker=1)
    assert got == C.essence(local)


def _plugin_dir(tmp: Path) -> Path:
    d = C.plugin_dir(tmp)
    (d / "evo_items_plugin.py").write_text(
        "from evo_items import evomm_register_tasks  # noqa: F401 - the hook implementation\n")
    return d


def test_driver_killed_and_resumed_with_workers_ends_as_an_uninterrupted_run(tmp_path, local):
    plugins = _plugin_dir(tmp_path)
    recipe = tmp_path / "r.yaml"
    recipe.write_text(yaml.safe_dump(I.recipe_dict(generations=GENS, pop=POP)))
    run_dir = tmp_path / "run"
    workers = ["--executor", "processes", "--workers", "2", "--no-progress"]
    res = C.run(plugins, "evolve", str(recipe), "--out", str(run_dir), *workers, EVO_KILL_AT=str(2 + POP + 2))
    assert res.returncode == -signal.SIGKILL, res.stderr
    assert 2 + POP + 2 <= len(C.records(run_dir)) < 2 + GENS * POP
    res = C.run(plugins, "evolve", "--resume", str(run_dir), *workers)
    assert res.returncode == 0, res.stderr
    assert C.essence(run_dir) == C.essence(local)
    shutil.rmtree(plugins)
