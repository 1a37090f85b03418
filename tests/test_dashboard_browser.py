"""The dashboard in a real browser: headless Chromium (Debian's ``chromium``) driven by Playwright
through ``executable_path`` (Playwright's own browser download needs the network).

``evomm serve`` runs in a subprocess on a finished synthetic run: the front's points equal
front.json, a click shows the candidate's genes, records appended to a live run's archive appear
within seconds, and report.html shows the same front without a server. Skipped, saying why, where
Chromium or Playwright is missing (``scripts/test.sh`` installs both).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import evo_cli as C
import pytest
from dashboard_fixture import finished_run

CHROMIUM = os.environ.get("EVOMM_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
if CHROMIUM is None:
    pytest.skip("no Chromium: install Debian's `chromium` (scripts/test.sh does as root) or set EVOMM_CHROMIUM",
                allow_module_level=True)
sync_api = pytest.importorskip("playwright.sync_api", reason="Playwright is not installed: pip install playwright")

#: The flags the project's machines need: no GPU, no sandbox as root, no calls home.
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"]
#: How long the page may take to show appended records (it polls every 2 s).
LIVE_WITHIN_S = 10.0


def lines(run_dir: Path) -> list[dict[str, Any]]:
    return [json.loads(x) for x in (run_dir / "archive.jsonl").read_text().splitlines() if x.strip()]


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    return finished_run(tmp_path_factory.mktemp("browser") / "run", generations=3, pop=8)


def serve(run_dir: Path) -> tuple[subprocess.Popen, str]:
    """``evomm serve RUN --port 0`` in a subprocess; returns it and the page's address."""
    proc = subprocess.Popen(C.command(C.plugin_dir(run_dir.parent), "serve", str(run_dir), "--port", "0"),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=C.env())
    line = proc.stdout.readline()
    if "http://" not in line:
        proc.kill()
        raise AssertionError(f"evomm serve did not start: {line}{proc.stderr.read()}")
    return proc, line.split(" at ", 1)[1].split()[0]


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        yield b
        b.close()


def open_page(browser: Any, url: str) -> Any:
    page = browser.new_page(viewport={"width": 1500, "height": 1250})
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(url)
    page.wait_for_selector("body[data-loaded='1']", timeout=60000, state="attached")
    assert not errors, errors
    return page


def trace(page: Any, name: str) -> dict[str, Any]:
    """A trace of the front plot, as Plotly holds it (ids and coordinates)."""
    return page.evaluate("""(name) => { const t = document.getElementById('front-plot').data.find(t => t.name === name);
        return t ? {ids: Array.from(t.customdata), x: Array.from(t.x), y: Array.from(t.y)} : null; }""", name)


def test_the_front_is_front_json_and_a_click_shows_the_genes(run: Path, browser: Any, tmp_path: Path) -> None:
    proc, url = serve(run)
    try:
        page = open_page(browser, url)
        saved = json.loads((run / "front.json").read_text())
        got = trace(page, "Pareto front")
        assert got["ids"] == [r["id"] for r in saved["front"]]
        assert list(zip(got["x"], got["y"])) == [(r["objectives"]["a"], r["objectives"]["b"]) for r in saved["front"]]
        assert trace(page, "parents")["ids"] == [r["id"] for r in saved["parents"]]
        # click (a real mouse click on the point's pixel) the front point farthest from the knee
        knee = page.evaluate("window.evommDashboard.front.knee")
        target = next(r for r in reversed(saved["front"]) if r["id"] != knee)
        xy = page.evaluate("""(p) => { const gd = document.getElementById('front-plot'), L = gd._fullLayout;
            const box = gd.getBoundingClientRect();
            return [box.left + L.xaxis._offset + L.xaxis.l2p(p[0]), box.top + L.yaxis._offset + L.yaxis.l2p(p[1])]; }""",
                           [target["objectives"]["a"], target["objectives"]["b"]])
        page.mouse.click(*xy)
        page.wait_for_function("(id) => document.getElementById('cand-title').textContent.endsWith(id)",
                               arg=target["id"], timeout=10000)
        heat = page.evaluate("""() => { const d = document.querySelector('.genes-heatmap').data[0];
            return {x: Array.from(d.x), z: d.z.map(r => Array.from(r))}; }""")
        genes = target["genes"]
        assert dict(zip(heat["x"], heat["z"][0])) == genes
        assert target["id"] in page.text_content("#export-cmd")
        page.click("#export-btn")  # the button runs the command shown: a new directory under the run
        page.wait_for_function("() => /done|failed/.test(document.getElementById('export-status').textContent)",
                               timeout=120000)
        assert ": done" in page.text_content("#export-status"), page.text_content("#export-status")
        out = run.resolve() / "exports" / target["id"]
        assert (out / "evomm_candidate.json").is_file() and str(out) in page.text_content("#export-cmd")
        page.screenshot(path=str(tmp_path / "dashboard.png"), full_page=True)
        if os.environ.get("EVOMM_SCREENSHOT"):  # keep one to look at
            shutil.copy(tmp_path / "dashboard.png", os.environ["EVOMM_SCREENSHOT"])
    finally:
        proc.terminate()
        proc.wait(10)


def test_records_appended_to_a_live_run_appear_within_seconds(run: Path, browser: Any, tmp_path: Path) -> None:
    live = tmp_path / "live"
    shutil.copytree(run, live, ignore=shutil.ignore_patterns("front.*", "report.html", "*.png"))
    every = (run / "archive.jsonl").read_text().splitlines(keepends=True)
    first = 2 + 8  # the parents and generation 0
    (live / "archive.jsonl").write_text("".join(every[:first]))
    meta = json.loads((live / "run.json").read_text())
    (live / "run.json").write_text(json.dumps(dict(meta, status="running")))
    proc, url = serve(live)
    try:
        page = open_page(browser, url)
        assert page.evaluate("window.evommDashboard.records.length") == first
        assert page.text_content("#status") == "running"
        with (live / "archive.jsonl").open("a") as fh:  # the run goes on: a bad line, the rest, half a line
            fh.write("this line is not a record\n")
            fh.write("".join(every[first:]))
            fh.write('{"id": "c09999", "objec')
            fh.flush()
        t0 = time.monotonic()
        page.wait_for_function("(n) => window.evommDashboard.records.length === n", arg=len(every),
                               timeout=LIVE_WITHIN_S * 1000)
        seen_after = time.monotonic() - t0
        saved = json.loads((run / "front.json").read_text())
        page.wait_for_function("(n) => document.getElementById('front-plot').data.find(t => t.name === 'Pareto front')"
                               ".customdata.length === n", arg=len(saved["front"]), timeout=5000)
        assert trace(page, "Pareto front")["ids"] == [r["id"] for r in saved["front"]]
        (live / "workers.json").write_text(json.dumps({
            "executor": "processes", "workers": 2, "in_flight": 3, "busy": 2, "lost_jobs": 1, "state": "running",
            "updated": 50.0, "rows": [{"worker": "vm:4242", "jobs": 5, "seconds": 9.0, "last_candidate": "k",
                                       "last_seen": 47.5}]}))
        page.wait_for_function("document.getElementById('workers').textContent.includes('2 of 2 busy')",
                               timeout=LIVE_WITHIN_S * 1000)
        text = page.text_content("#workers")
        assert "3 job(s) in flight" in text and "1 job(s) run again" in text and "vm:4242" in text, text
        assert "2.5 s before the last update" in text, text
        warn = page.text_content("#warn")
        assert "being written" in warn and f"skipped (not records): line {first + 1}" in warn, warn
        print(f"appended records shown after {seen_after:.1f} s")
    finally:
        proc.terminate()
        proc.wait(10)


def test_report_html_shows_the_same_front_without_a_server(run: Path, browser: Any) -> None:
    page = open_page(browser, (run / "report.html").as_uri())
    saved = json.loads((run / "front.json").read_text())
    assert trace(page, "Pareto front")["ids"] == [r["id"] for r in saved["front"]]
    knee = page.evaluate("window.evommDashboard.front.knee")
    page.wait_for_function("(id) => document.getElementById('cand-title').textContent.endsWith(id)", arg=knee)
    assert page.query_selector("#export-btn") is None  # a report cannot export: the command is shown


if __name__ == "__main__":  # pragma: no cover - run by hand: python tests/test_dashboard_browser.py
    sys.exit(pytest.main([__file__, "-q", "-s"]))
