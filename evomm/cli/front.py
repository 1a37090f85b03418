"""``evomm front RUN_DIR [--pick ...]``: the Pareto front as a table, picks, artefacts."""

from __future__ import annotations

import argparse
from pathlib import Path


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "front",
        help="show a run's Pareto front (parents beside it) and pick models",
        description="Print the Pareto front of a run with the parents' scores beside it, write "
        "front.csv, front.json, front.png, progress.png and report.html, and optionally pick models: "
        "--pick knee | weights=a,b | best=NAME | 'NAME>=VALUE' (repeatable).",
    )
    p.add_argument("run_dir", help="run directory of `evomm evolve`")
    p.add_argument("--pick", action="append", default=[], metavar="HOW",
                   help="knee, weights=a,b,..., best=NAME, or a condition like 'ja_skill>=0.6'")
    p.add_argument("--stage", help="stage to show (default: the last one)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from evomm.front import pick
    from evomm.report import front_table, load_front, write_artifacts

    run_dir = Path(args.run_dir)
    infos, _, front, parents = load_front(run_dir, args.stage)
    picked = {}
    for how in args.pick:
        rec = pick(front, infos, how)
        picked[rec.id] = (picked.get(rec.id, "") + " " + how).strip()
    print(front_table(infos, front, parents, picked))
    paths = write_artifacts(run_dir, args.stage)
    print(f"\nwrote {', '.join(p.name for p in paths.values())} in {run_dir}")
    return 0
