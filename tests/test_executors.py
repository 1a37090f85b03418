"""Executors (issue 19.4): ``processes`` and ``ray`` give the local executor's archive for the same
seed, a killed worker's job runs again without a duplicate, and a driver killed with -9 then
resumed with workers ends with the uninterrupted archive."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import sys
from pathlib import Path

import pytest
import yaml

sys.path.insert(0, str(Path(__file__).parent))
import evo_cli as C  # noqa: E402
import evo_items as I  # noqa: E402

from evomm.evolve_recipe import parse_recipe  # noqa: E402
from evomm.runner import evolve  # noqa: E402
from evomm.worker_board import WorkerBoard, read_workers  # noqa: E402

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
    # who scored what (the dashboard's Workers table): the two worker processes, never the driver
    names = {w for r in C.records(tmp_path / "run") for w in r["extra"].get("workers", {})}
    assert len(names) == 2 and f"{socket.gethostname()}:{os.getpid()}" not in names
    board = read_workers(tmp_path / "run")
    assert board is not None and board["executor"] == "processes" and board["workers"] == 2
    assert board["in_flight"] == 0 and board["state"] == "idle" and board["lost_jobs"] == 0
    assert {r["worker"] for r in board["rows"]} <= names
    assert {w for r in C.records(local) for w in r["extra"].get("workers", {})} == {
        f"{socket.gethostname()}:{os.getpid()}"}  # local: this process


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
    board = read_workers(tmp_path / "run")
    assert board is not None and board["lost_jobs"] >= 1


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


def test_worker_board_counts_jobs_out_and_back_and_replaces_its_file(tmp_path):
    now = [100.0]
    path = tmp_path / "workers.json"
    board = WorkerBoard(path, "processes", 2, clock=lambda: now[0], every=1.0)
    board.submitted(3)
    assert read_workers(tmp_path) | {"rows": None} == {
        "executor": "processes", "workers": 2, "in_flight": 3, "busy": 2, "lost_jobs": 0, "state": "running",
        "updated": 100.0, "rows": None}
    board.finished("h:1", "k1", 2.5)
    assert read_workers(tmp_path)["in_flight"] == 3  # written at most once a second
    now[0] = 101.5
    board.finished("h:2", "k2", 1.0, lost_jobs=1)
    got = read_workers(tmp_path)
    assert (got["in_flight"], got["busy"], got["lost_jobs"]) == (1, 1, 1)
    assert got["rows"] == [{"worker": "h:1", "jobs": 1, "seconds": 2.5, "last_candidate": "k1", "last_seen": 100.0},
                           {"worker": "h:2", "jobs": 1, "seconds": 1.0, "last_candidate": "k2", "last_seen": 101.5}]
    board.round_done()
    assert read_workers(tmp_path)["state"] == "idle"
    assert not (tmp_path / "workers.json.tmp").exists()
    path.write_text("[1, 2")  # half-written or damaged: no board, no error
    assert read_workers(tmp_path) is None
