"""Crash safety of a run (issue 17, class 5): torn archive lines are kept aside, one process per
run (flock), Ctrl-C stops at the next candidate and resumes, and a run killed at five moments
ends exactly as an uninterrupted one, no candidate evaluated twice."""

from __future__ import annotations

import logging
import os
import signal
import socket
import sys
import time
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).parent))
import evo_cli as C  # noqa: E402
import evo_synthetic as S  # noqa: E402

from evomm.archive import Archive  # noqa: E402
from evomm.errors import RunLockedError  # noqa: E402
from evomm.evolve_recipe import parse_recipe  # noqa: E402
from evomm.run_lock import RunLock  # noqa: E402
from evomm.runner import evolve  # noqa: E402

GENS, POP = 5, 6


class _Crash(BaseException):
    """Stands for a crash of the process (not an error evomm handles)."""


def _evolve(run_dir: Path, **kw) -> object:
    recipe = parse_recipe(S.recipe_dict(generations=GENS, pop=POP)) if not kw.get("resume") else None
    return evolve(recipe, run_dir, plugins=S.plugins(), progress=False, report=False, **kw)


def _crash_after(n: int):
    def hook(rec) -> None:
        if len(S.EVALUATED) >= n:
            raise _Crash
    return hook


@pytest.fixture(scope="module")
def whole(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("whole") / "run"
    _evolve(d)
    return d


def test_torn_last_line_is_set_aside_and_resume_matches(tmp_path, whole, caplog):
    run_dir = tmp_path / "run"
    S.EVALUATED.clear()
    with pytest.raises(_Crash):
        _evolve(run_dir, on_evaluated=_crash_after(9))
    archive = run_dir / "archive.jsonl"
    lines = archive.read_bytes().splitlines(keepends=True)
    torn = lines[-1][: len(lines[-1]) // 2]  # the last record, half written (no newline)
    archive.write_bytes(b"".join(lines[:-1]) + torn)

    with caplog.at_level(logging.WARNING, logger="evomm.archive"):
        _evolve(run_dir, resume=True)
    assert C.essence(run_dir) == C.essence(whole)
    assert (run_dir / "archive.jsonl.torn").read_bytes() == torn + b"\n"
    assert "archive.jsonl.torn" in caplog.text and f"{len(torn)} bytes" in caplog.text


def test_missing_final_newline_next_append_starts_a_new_line(tmp_path, whole):
    run_dir = tmp_path / "run"
    S.EVALUATED.clear()
    with pytest.raises(_Crash):
        _evolve(run_dir, on_evaluated=_crash_after(7))
    archive = run_dir / "archive.jsonl"
    archive.write_bytes(archive.read_bytes().rstrip(b"\n"))  # a complete record, its "\n" lost
    _evolve(run_dir, resume=True)
    assert C.essence(run_dir) == C.essence(whole)
    assert not (run_dir / "archive.jsonl.torn").exists()


def test_reader_skips_a_torn_line_and_writes_nothing(tmp_path):
    path = tmp_path / "archive.jsonl"
    good = b'{"id": "c00001", "generation": 0, "genome": [], "plan_hash": "h", "metrics": {}, "objectives": {}}\n'
    path.write_bytes(good + b'{"id": "c0000')
    a = Archive(path)
    assert [r.id for r in a] == ["c00001"]
    assert path.read_bytes() == good + b'{"id": "c0000'
    assert not (tmp_path / "archive.jsonl.torn").exists()


def test_lock_names_the_holder(tmp_path):
    with RunLock(tmp_path):
        with pytest.raises(RunLockedError, match=rf"pid {os.getpid()} on host {socket.gethostname()}"):
            RunLock(tmp_path).acquire()
    RunLock(tmp_path).acquire()  # released with its holder


def test_second_process_on_a_run_exits_2_at_once(tmp_path):
    plugins = C.plugin_dir(tmp_path)
    recipe = C.write_recipe(tmp_path / "r.yaml", generations=3, pop=6)
    run_dir = tmp_path / "run"
    t0 = time.monotonic()
    baseline = C.run(plugins, "evolve", "--resume", str(tmp_path / "no-run"))
    startup = time.monotonic() - t0  # how long a refused command takes on this machine
    assert baseline.returncode == 2

    first = C.popen(plugins, "evolve", str(recipe), "--out", str(run_dir), "--no-progress",
                    EVO_SLEEP="0.15", EVO_COUNT=str(tmp_path / "count.txt"))
    try:
        deadline = time.monotonic() + 60
        while C.count_lines(run_dir / "archive.jsonl") < 4:
            assert first.poll() is None and time.monotonic() < deadline, first.communicate()
            time.sleep(0.05)
        t0 = time.monotonic()
        second = C.run(plugins, "evolve", "--resume", str(run_dir), "--no-progress")
        took = time.monotonic() - t0
        assert first.poll() is None, "the first run ended before the second was refused"
    finally:
        out, err = first.communicate(timeout=120)
    assert second.returncode == 2, second.stderr
    assert f"pid {first.pid}" in second.stderr and "evomm: error:" in second.stderr
    assert "Traceback" not in second.stderr
    assert took < startup + 1.0
    assert first.returncode == 0, err
    recs = C.records(run_dir)
    assert len(recs) == 2 + 3 * 6
    assert len({r["id"] for r in recs}) == len(recs) and len({r["plan_hash"] for r in recs}) == len(recs)
    counted = (tmp_path / "count.txt").read_text().split()
    assert len(counted) == 2 * len(recs)  # (id, hash) per evaluation: each once


def test_keyboard_interrupt_during_evaluation_keeps_the_archive_consistent(tmp_path, whole, monkeypatch):
    run_dir = tmp_path / "run"
    calls = {"n": 0}
    real = S.SynthSpace.materialize

    def interrupted(self, cand):
        calls["n"] += 1
        if calls["n"] == 10:
            raise KeyboardInterrupt  # Ctrl-C twice: at once, in the middle of an evaluation
        return real(self, cand)

    monkeypatch.setattr(S.SynthSpace, "materialize", interrupted)
    res = _evolve(run_dir)
    assert res.reason == "interrupted"
    assert len(C.records(run_dir)) == 2 + 9  # the candidate in flight was not archived
    monkeypatch.setattr(S.SynthSpace, "materialize", real)
    assert _evolve(run_dir, resume=True).reason == "budget"
    assert C.essence(run_dir) == C.essence(whole)


def test_sigint_stops_after_the_candidate_in_flight_and_resumes(tmp_path, whole):
    plugins = C.plugin_dir(tmp_path)
    recipe = C.write_recipe(tmp_path / "r.yaml", generations=GENS, pop=POP)
    run_dir = tmp_path / "run"
    proc = C.popen(plugins, "evolve", str(recipe), "--out", str(run_dir), "--no-progress", EVO_SLEEP="0.3")
    deadline = time.monotonic() + 60
    while C.count_lines(run_dir / "archive.jsonl") < 5:
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
        time.sleep(0.02)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "stopping after the candidate in flight" in err and "Traceback" not in err
    assert "continue with --resume" in out
    n = len(C.records(run_dir))
    assert 5 <= n <= 6  # the candidate in flight finished, no further one started
    resumed = C.run(plugins, "evolve", "--resume", str(run_dir), "--no-progress")
    assert resumed.returncode == 0, resumed.stderr
    assert C.essence(run_dir) == C.essence(whole)


def test_kill_soak_five_kills_end_as_an_uninterrupted_run(tmp_path, whole):
    """SIGKILL at five seeded moments (after the k-th archived record, in the middle of a
    checkpoint write, in the middle of an archive record), resume each time."""
    plugins = C.plugin_dir(tmp_path)
    recipe = C.write_recipe(tmp_path / "r.yaml", generations=GENS, pop=POP)
    run_dir, count = tmp_path / "run", tmp_path / "count.txt"
    rng = np.random.default_rng(17)
    archived = lambda: len(Archive(run_dir / "archive.jsonl"))  # noqa: E731 - a reader skips a torn line
    kills = [
        lambda: {"EVO_KILL_AT": str(int(rng.integers(3, POP + 3)))},
        lambda: {"EVO_KILL_IN_SAVE": "1"},  # the checkpoint of the generation in flight
        lambda: {"EVO_KILL_AT": str(archived() + int(rng.integers(1, POP)))},
        lambda: {"EVO_KILL_IN_APPEND": str(int(rng.integers(1, POP)))},  # a torn record
        lambda: {"EVO_KILL_AT": str(archived() + int(rng.integers(1, POP)))},
    ]
    args = ["evolve", str(recipe), "--out", str(run_dir), "--no-progress"]
    at = []
    for kill in kills:
        cue = kill()
        res = C.run(plugins, *args, EVO_COUNT=str(count), **cue)
        assert res.returncode == -signal.SIGKILL, (cue, res.stderr)
        at.append(archived())
        args = ["evolve", "--resume", str(run_dir), "--no-progress"]
    assert any((n - 2) % POP for n in at), at  # at least one kill in the middle of a generation
    assert (run_dir / "archive.jsonl.torn").exists()  # the torn record was set aside
    res = C.run(plugins, *args, EVO_COUNT=str(count))
    assert res.returncode == 0, res.stderr
    assert C.essence(run_dir) == C.essence(whole)
    assert C.front(run_dir) == C.front(whole)
    hashes = [line.split()[1] for line in count.read_text().splitlines()]
    assert sorted(hashes) == sorted(r["plan_hash"] for r in C.records(run_dir))  # each once
