"""How long the dashboard takes to load on a 5,000-candidate run, in headless Chromium.

Makes a run directory of N made-up candidates (tests/dashboard_fixture.py: 3 objectives, 2
parents, weights and densities over 12 layers per parent), serves it with ``evomm serve`` and
loads the page R times in fresh browser contexts, then opens the run's report.html (written here by
``evomm front``). Side by side in each round, the same browser loads a page holding only Plotly's
bundle: what any Plotly page pays before drawing anything. Per load it prints the wall time until
the page has drawn everything (front, progress, the knee's candidate panel: ``body[data-loaded]``),
the renderer main thread's CPU time (Chrome's ``ThreadTime``, which other processes on a busy
machine inflate much less than the wall time) and the page's own marks (data fetched, front,
progress, candidate drawn). Each load starts in a new browser context (cold caches: plotly.min.js
fetched and compiled again); "again" is the third load in one context (HTTP and code caches
warm, as for a returning user).

Usage::

    .venv/bin/python bench/dashboard_load.py [--n 5000] [--rounds 3]
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def load(browser, url: str, again: int = 0) -> str:
    """Load ``url`` in a new context (cold caches); ``again``: then reload it that many times and
    measure the last (the browser's HTTP cache and V8's code cache warm, as for a returning user)."""
    ctx = browser.new_context(viewport={"width": 1500, "height": 1250})
    page = ctx.new_page()
    for _ in range(again):
        page.goto(url)
        page.wait_for_selector("body[data-loaded='1']", timeout=120000, state="attached")
    cdp = ctx.new_cdp_session(page)
    cdp.send("Performance.enable", {"timeDomain": "threadTicks"})
    page.goto(url)
    page.wait_for_selector("body[data-loaded='1']", timeout=120000, state="attached")
    wall = page.evaluate("performance.now()")
    marks = page.evaluate("performance.getEntriesByType('mark').map(m => m.name.slice(6) + ' ' + "
                          "Math.round(m.startTime)).join(', ')")
    cpu = {m["name"]: m["value"] for m in cdp.send("Performance.getMetrics")["metrics"]}["ThreadTime"]
    ctx.close()
    return f"wall {wall:6.0f} ms, main-thread CPU {cpu * 1000:5.0f} ms" + (f"  [{marks}]" if marks else "")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=5000)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    from playwright.sync_api import sync_playwright

    sys.path.insert(0, str(HERE.parent / "tests"))
    from dashboard_fixture import made_up_run

    tmp = Path(tempfile.mkdtemp(prefix="evomm-dash-"))
    run = made_up_run(tmp / "run", args.n)
    env = dict(os.environ, EVOMM_DISABLE_PLUGIN_AUTOLOAD="1")
    evomm = [sys.executable, "-c", "from evomm.cli import entry; entry()"]
    subprocess.run([*evomm, "front", str(run)], env=env, check=True, capture_output=True)
    server = subprocess.Popen([*evomm, "serve", str(run), "--port", "0"], env=env, stdout=subprocess.PIPE, text=True)
    url = server.stdout.readline().split(" at ", 1)[1].split()[0]
    (tmp / "plotly_only.html").write_text(f'<!doctype html><html><body><script src="{url}static/plotly.min.js">'
                                          '</script><script>document.body.dataset.loaded="1"</script></body></html>')
    print(f"{args.n} candidates; report.html {(run / 'report.html').stat().st_size / 1e6:.1f} MB; "
          f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=shutil.which("chromium"), args=ARGS)
            load(browser, url)  # warm the server's caches (front, progress) as a running dashboard has them
            for r in range(args.rounds):
                print(f"round {r + 1}: plotly only  {load(browser, (tmp / 'plotly_only.html').as_uri())}")
                print(f"         evomm serve  {load(browser, url)}")
                print(f"    evomm serve again {load(browser, url, again=2)}")
                print(f"         report.html  {load(browser, (run / 'report.html').as_uri())}")
                time.sleep(0.5)
            browser.close()
    finally:
        server.terminate()
        server.wait(10)
        shutil.rmtree(tmp)


if __name__ == "__main__":
    main()
