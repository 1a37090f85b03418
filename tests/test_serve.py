"""The dashboard's JSON API (``evomm serve``) against the run directory's own files: every endpoint
compared with archive.jsonl / run.json / front.json as written by the run, lenient reading of
malformed and half-written archive lines, the export action, and report.html's embedded data."""

from __future__ import annotations

import json
import math
import shlex
import socket
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import evo_cli as C
import pytest
from dashboard_fixture import finished_run, made_up_run

from evomm.cli import main
from evomm.dashboard.server import App, make_server
from evomm.dashboard.state import SUMMARY_FIELDS


def strict_json(body: bytes) -> Any:
    """JSON as a browser parses it: NaN / Infinity are errors."""
    def refuse(name: str) -> None:
        raise ValueError(f"{name} is not JSON")
    return json.loads(body, parse_constant=refuse)


def get(app: App, path: str, status: int = 200) -> Any:
    path, _, query = path.partition("?")
    from urllib.parse import parse_qs

    got, kind, body = app.get(path, parse_qs(query))
    assert got == status, body
    return strict_json(body) if kind == "application/json" else body


def lines(run_dir: Path) -> list[dict[str, Any]]:
    return [json.loads(x) for x in (run_dir / "archive.jsonl").read_text().splitlines() if x.strip()]


def snapshot(run_dir: Path) -> dict[str, tuple[int, int]]:
    return {str(p.relative_to(run_dir)): (p.stat().st_size, p.stat().st_mtime_ns)
            for p in sorted(run_dir.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    return finished_run(tmp_path_factory.mktemp("serve") / "run")


def test_api_run_is_run_json_and_the_archive(run: Path) -> None:
    meta = json.loads((run / "run.json").read_text())
    got = get(App(run), "/api/run")
    assert [(o["name"], o["direction"]) for o in got["objectives"]] == \
        [(o["name"], o["direction"]) for o in meta["objectives"]]
    assert got["status"] == meta["status"] == "finished"
    assert got["records"] == len(lines(run)) and got["skipped_count"] == 0
    assert got["stages"] == meta["stages"] and got["stage"] == lines(run)[-1]["stage"]
    import yaml

    assert got["executor"]["name"] == yaml.safe_load((run / "recipe.yaml").read_text())["executor"]["name"]


def test_api_front_is_front_json(run: Path) -> None:
    saved = json.loads((run / "front.json").read_text())
    app = App(run)
    for view in ("full", "summary"):
        got = get(app, f"/api/front?view={view}")
        assert [(r["id"], r["objectives"]) for r in got["front"]] == \
            [(r["id"], r["objectives"]) for r in saved["front"]]
        assert [r["id"] for r in got["parents"]] == [r["id"] for r in saved["parents"]]
    full = get(app, "/api/front")
    assert [r["genes"] for r in full["front"]] == [r["genes"] for r in saved["front"]]
    # the knee is `evomm front --pick knee`'s pick
    from evomm.front import pick
    from evomm.report import load_front

    infos, _, front, _ = load_front(run)
    assert full["knee"] == pick(front, infos, "knee").id


@pytest.mark.parametrize("since", [0, 1, 7, 10**6])
def test_api_candidates_since_n_are_the_archive_lines_after_n(run: Path, since: int) -> None:
    want = lines(run)
    got = get(App(run), f"/api/candidates?since={since}")
    assert got["total"] == got["next"] == len(want)
    assert [{k: r[k] for k in w} for r, w in zip(got["records"], want[since:])] == want[since:]
    assert len(got["records"]) == len(want[since:])
    short = get(App(run), f"/api/candidates?since={since}&view=summary")["records"]
    assert [r["id"] for r in short] == [w["id"] for w in want[since:]]
    assert all(set(SUMMARY_FIELDS) <= set(r) and "genes" not in r for r in short)


def test_api_candidate_is_its_record_with_the_export_command(run: Path) -> None:
    app = App(run)
    for want in lines(run):
        got = get(app, "/api/candidate/" + want["id"].replace(":", "%3A"))
        assert {k: got["record"][k] for k in want} == want
        argv = shlex.split(got["export_command"])
        safe = want["id"].replace(":", "_")
        assert argv == ["evomm", "export", str(run.resolve()), "--candidate", want["id"],
                        "--out", str(run.resolve() / "exports" / safe)]
    assert get(app, "/api/candidate/c99999", 404)["error"].startswith("no candidate")
    assert "whole number" in get(app, "/api/candidates?since=x", 400)["error"]
    get(app, "/api/nothing", 404)


def test_progress_is_hypervolume_by_generation(run: Path) -> None:
    """Against a direct computation: pymoo's HV of the front of every child up to each generation."""
    import numpy as np
    from pymoo.indicators.hv import HV

    from evomm.front import pareto_front
    from evomm.objectives import minimize_matrix
    from evomm.report import load_front

    infos, children, _, parents = load_front(run)
    got = get(App(run), "/api/progress")
    gens = sorted({r.generation for r in children})
    assert got["generation"] == gens
    every = minimize_matrix([r.objectives for r in [*children, *parents]], infos)
    lo, hi = every.min(axis=0), every.max(axis=0)
    for g, hv in zip(gens, got["hypervolume"]):
        F = minimize_matrix([r.objectives for r in pareto_front([r for r in children if r.generation <= g], infos)],
                            infos)
        assert hv == pytest.approx(HV(ref_point=np.full(len(infos), 1.1))((F - lo) / (hi - lo)))
    for o in infos:
        assert got["best"][o.name][-1] == max(r.objectives[o.name] for r in children)
    assert got["throughput"]["candidates"] == [sum(r.generation == g for r in children) for g in gens]


def test_malformed_and_half_written_lines_break_nothing(tmp_path: Path) -> None:
    run = made_up_run(tmp_path / "run", 6, pop=3, layers=2)
    good = lines(run)
    odd = dict(good[-1], id="c00100", objectives={"ja": float("nan"), "math": 0.5, "ja_math": 0.1},
               evaluation="subset", items_evaluated=12, stderr={"math": 0.02}, extra={"strategy": "racing"})
    minimal = {"id": "c00101", "objectives": {"ja": 0.1, "math": 0.1, "ja_math": 0.1}, "worker": "w1"}
    with (run / "archive.jsonl").open("a") as fh:
        fh.write("this is not json\n")                      # line 9
        fh.write("[1, 2, 3]\n")                             # line 10: not an object
        fh.write(json.dumps({"id": "c00099"}) + "\n")       # line 11: no objectives
        fh.write(json.dumps(odd) + "\n")                 # NaN: Python's json writes it
        fh.write(json.dumps(minimal) + "\n")
        half = json.dumps(dict(good[-1], id="c00102"))
        fh.write(half[: len(half) // 2])                    # being written
    app = App(run)
    info = get(app, "/api/run")
    assert [s["line"] for s in info["skipped"]] == [9, 10, 11]
    assert info["pending_bytes"] == len(half) // 2
    ids = [r["id"] for r in get(app, "/api/candidates")["records"]]
    assert ids == [r["id"] for r in good] + ["c00100", "c00101"]
    got = get(app, "/api/candidate/c00100")["record"]
    assert got["objectives"]["ja"] is None and got["items_evaluated"] == 12 and got["stderr"] == {"math": 0.02}
    assert get(app, "/api/candidates?since=8&view=summary")["records"][0]["details"] == \
        {"items_evaluated": 12, "stderr": {"math": 0.02}, "strategy": "racing"}
    assert "c00100" not in [r["id"] for r in get(app, "/api/front")["front"]]  # NaN: never on the front
    assert get(app, "/api/progress")["workers"] == [{"worker": "w1", "candidates": 1, "seconds": 0.0,
                                                      "last_generation": -1}]
    minimal_got = get(app, "/api/candidate/c00101")["record"]  # served as written, defaults filled in
    assert minimal_got["genes"] == {} and minimal_got["extra"] == {} and minimal_got["worker"] == "w1"
    # the writer finishes the line: it appears, after the others
    with (run / "archive.jsonl").open("a") as fh:
        fh.write(half[len(half) // 2:] + "\n")
    assert get(app, "/api/candidates?since=8")["records"][-1]["id"] == "c00102"
    assert get(app, "/api/run")["pending_bytes"] == 0
    # a resumed run set a torn tail aside (the file shrank): read again from the start
    (run / "archive.jsonl").write_text("".join(json.dumps(r) + "\n" for r in good[:3]))
    assert [r["id"] for r in get(app, "/api/candidates")["records"]] == [r["id"] for r in good[:3]]


def test_workers_live_state_and_per_worker_seconds(tmp_path: Path) -> None:
    run = made_up_run(tmp_path / "run", 4, pop=2, layers=1)
    app = App(run)
    assert get(app, "/api/run")["workers"] is None  # no executor has written workers.json
    board = {"executor": "processes", "workers": 2, "in_flight": 3, "busy": 2, "lost_jobs": 1, "state": "running",
             "updated": 10.0, "rows": [{"worker": "h:1", "jobs": 4, "seconds": 8.0, "last_candidate": "k",
                                        "last_seen": 9.0}]}
    (run / "workers.json").write_text(json.dumps(board))
    assert get(app, "/api/run")["workers"] == board  # read on every request: live, not cached
    (run / "workers.json").write_text('{"executor": "proc')  # damaged: shown as none, no error
    assert get(app, "/api/run")["workers"] is None
    # a racing candidate scored on two workers counts for both, with its seconds on each
    recs = lines(run)
    extra = [{"workers": {"h:1": 1.5, "h:2": 0.5}}, {"workers": {"h:1": 2.0}}]
    with (run / "archive.jsonl").open("a") as fh:
        for i, ex in enumerate(extra):
            fh.write(json.dumps(dict(recs[-1], id=f"c0090{i}", generation=7, extra=ex)) + "\n")
    rows = {r["worker"]: r for r in get(app, "/api/progress")["workers"]}
    assert rows == {"h:1": {"worker": "h:1", "candidates": 2, "seconds": 3.5, "last_generation": 7},
                    "h:2": {"worker": "h:2", "candidates": 1, "seconds": 0.5, "last_generation": 7}}


def test_a_later_stage_shows_the_children_it_was_built_on(tmp_path: Path) -> None:
    run = made_up_run(tmp_path / "run", 4, pop=2, layers=1)
    meta = json.loads((run / "run.json").read_text())
    handed = {"name": "ps", "kind": "params", "candidate": "c00003", "model_dir": str(run / "stages/ps/child"),
              "recipe": {"x": 1}, "objectives": {"ja": 0.5}}
    (run / "run.json").write_text(json.dumps(dict(meta, stages=["ps", "dfs"], previous=[handed])))
    got = get(App(run), "/api/run")
    assert got["stages"] == ["ps", "dfs"]
    assert got["previous"] == [{"name": "ps", "kind": "params", "candidate": "c00003", "objectives": {"ja": 0.5}}]


def test_a_run_without_records_or_run_json_is_served(tmp_path: Path) -> None:
    run = made_up_run(tmp_path / "run", 0)
    (run / "archive.jsonl").unlink()
    (run / "run.json").unlink()
    app = App(run)
    assert get(app, "/api/run")["status"] == "starting"
    assert get(app, "/api/front")["front"] == [] and get(app, "/api/candidates")["records"] == []
    assert get(app, "/api/progress")["generation"] == []


def test_reading_writes_nothing_into_the_run(run: Path) -> None:
    before = snapshot(run)
    app = App(run)
    for path in ("/", "/static/plotly.min.js", "/static/dashboard.js", "/api/run", "/api/front", "/api/progress",
                 "/api/candidates?since=0", "/api/candidate/c00001", "/api/rescores", "/api/exports"):
        get(app, path)
    assert snapshot(run) == before


def test_http_server_answers_the_page_plotly_and_the_api(run: Path) -> None:
    from importlib import resources

    server = make_server(run, "127.0.0.1", 0)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{server.server_address[1]}/"
    try:
        page = urllib.request.urlopen(base).read().decode()
        assert '<script src="static/plotly.min.js">' in page and "http" not in page.split("<body>")[1]
        plotly = resources.files("plotly").joinpath("package_data", "plotly.min.js").read_bytes()
        assert urllib.request.urlopen(base + "static/plotly.min.js").read() == plotly
        assert strict_json(urllib.request.urlopen(base + "api/run").read())["records"] == len(lines(run))
        with pytest.raises(urllib.error.HTTPError) as exc:
            urllib.request.urlopen(base + "api/candidate/nope")
        assert exc.value.code == 404
        req = urllib.request.Request(base + "api/export", data=b'{"candidate": "c00001"}',
                                     headers={"Content-Type": "text/plain"})
        with pytest.raises(urllib.error.HTTPError) as exc:  # a cross-site form post: refused
            urllib.request.urlopen(req)
        assert exc.value.code == 415
    finally:
        server.shutdown()
        server.server_close()


def test_export_button_writes_a_new_directory_under_the_run_each_time(run: Path, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("PYTHONPATH", C.env()["PYTHONPATH"])
    monkeypatch.setenv("EVOMM_DISABLE_PLUGIN_AUTOLOAD", "1")
    app = App(run, (str(C.plugin_dir(tmp_path)),))
    before = snapshot(run)
    cid = json.loads((run / "front.json").read_text())["front"][0]["id"]
    outs = []
    for _ in range(2):
        status, _, body = app.post("/api/export", "application/json", json.dumps({"candidate": cid}).encode())
        assert status == 202
        job = json.loads(body)
        for _ in range(600):
            job = next(j for j in get(app, "/api/exports") if j["id"] == job["id"])
            if job["state"] != "running":
                break
            time.sleep(0.1)
        assert job["state"] == "done", job["log"]
        assert shlex.split(job["command"])[-2:] == ["--out", job["out"]]
        outs.append(Path(job["out"]))
    assert outs == [run.resolve() / "exports" / cid, run.resolve() / "exports" / f"{cid}-2"]
    genome = next(r for r in lines(run) if r["id"] == cid)["genome"]
    for out in outs:
        assert [float(v) for v in (out / "x.txt").read_text().split()] == [round(v, 4) for v in genome]
        assert json.loads((out / "evomm_candidate.json").read_text())["id"] == cid
    after = {k: v for k, v in snapshot(run).items() if not k.startswith("exports/")}
    assert after == before  # nothing else in the run was touched
    assert app.post("/api/export", "application/json", b'{"candidate": "c99999"}')[0] == 404
    assert app.post("/api/export", "application/json", b"{}")[0] == 400


def test_report_html_is_the_page_with_the_api_answers_embedded(run: Path) -> None:
    html = (run / "report.html").read_text()
    start = html.index('<script id="evomm-data" type="application/json">') + len(
        '<script id="evomm-data" type="application/json">')
    data = strict_json(html[start:html.index("</script>", start)].replace("<\\/", "</").encode())
    app = App(run)
    stage = lines(run)[-1]["stage"]
    front = data[f"/api/front?stage={stage}&view=summary"]
    assert front == get(app, f"/api/front?stage={stage}&view=summary")
    assert [r["id"] for r in front["front"]] == [r["id"] for r in json.loads((run / "front.json").read_text())["front"]]
    assert data["/api/candidates?since=0&view=summary"]["records"] == \
        get(app, "/api/candidates?since=0&view=summary")["records"]
    assert {k for k in data if k.startswith("/api/candidate/")} == {"/api/candidate/" + r["id"] for r in lines(run)}
    for want in lines(run):  # each record whole, less the genome (the genes are its readable form)
        got = data["/api/candidate/" + want["id"]]["record"]
        assert "genome" not in got and {k: got[k] for k in want if k != "genome"} == \
            {k: v for k, v in want.items() if k != "genome"}
    assert "<script src=" not in html and "Plotly" in html  # one file: Plotly inside, no CDN
    assert 'src="http' not in html and "<noscript>" in html  # readers without scripts get the tables


def test_serve_refuses_a_directory_that_is_no_run_and_a_port_in_use(run: Path, tmp_path: Path, capsys) -> None:
    assert main(["serve", str(tmp_path)]) == 2
    assert "is not an evomm run directory" in capsys.readouterr().err
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        assert main(["serve", str(run), "--port", str(s.getsockname()[1])]) == 2
    err = capsys.readouterr().err
    assert "the port is in use" in err and "--port" in err


def test_nan_objectives_reach_the_browser_as_null(tmp_path: Path) -> None:
    run = made_up_run(tmp_path / "run", 3, pop=3, layers=1)
    rec = dict(lines(run)[-1], id="c00009", objectives={"ja": math.inf, "math": 0.2, "ja_math": 0.1})
    with (run / "archive.jsonl").open("a") as fh:
        fh.write(json.dumps(rec) + "\n")
    assert get(App(run), "/api/candidate/c00009")["record"]["objectives"]["ja"] is None


def test_held_out_rescores_join_the_front_and_the_candidate(run: Path, tmp_path: Path) -> None:
    """A rescore-<split>.json written after the page was opened (as `evomm rescore` writes it)."""
    import shutil

    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    app = App(copy)
    assert get(app, "/api/front")["rescores"] == {} and get(app, "/api/rescores") == {}
    front = json.loads((copy / "front.json").read_text())
    rows = [{"id": r["id"], "role": role, "stage": r["stage"], "generation": r["generation"],
             "fitness": r["objectives"], "rescored": {k: v / 2 for k, v in r["objectives"].items()}}
            for role, recs in (("parent", front["parents"]), ("front", front["front"])) for r in recs]
    data = {"split": "test", "objectives": front["objectives"], "candidates": rows}
    (copy / "rescore-test.json").write_text(json.dumps(data))
    assert get(app, "/api/rescores") == {"test": data}
    assert get(app, "/api/front")["rescores"] == {"test": {r["id"]: r["rescored"] for r in rows}}
    cid = front["front"][0]["id"]
    assert get(app, f"/api/candidate/{cid}")["rescores"] == {"test": rows[len(front["parents"])]["rescored"]}
    assert get(app, "/api/run")["rescores"] == ["test"]
