"""``evomm rescore RUN_DIR --split SPLIT [--tasks T,...] [--candidates front|all|ID,...]``."""

from __future__ import annotations

import argparse


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "rescore",
        help="score a run's front and parents on a held-out split (over-fitting to the fitness split)",
        description="Score the Pareto front (or other candidates) of a run and its parents on another "
        "split of each task (every other task option as in the run's recipe), and write "
        "rescore-SPLIT.json and rescore-SPLIT.csv into the run directory. Takes the run's lock: a run "
        "being written is refused. `evomm front RUN_DIR` then shows them in report.html; `evomm "
        "export` puts them in the model card.",
    )
    p.add_argument("run_dir", help="run directory of `evomm evolve`")
    p.add_argument("--split", required=True, help="the split to score, e.g. test")
    p.add_argument("--tasks", metavar="T,...", help="only these tasks (default: every task the objectives use)")
    p.add_argument("--candidates", default="front", metavar="WHICH",
                   help="front (default: the last stage's Pareto front), all (every child scored in full) "
                   "or candidate ids c00012,c00040; the parents are always scored")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from contextlib import nullcontext
    from pathlib import Path

    from evomm.plugins import get_plugins
    from evomm.progress import disabled
    from evomm.rescore import rescore_run
    from evomm.rundir import read_rescores

    tasks = [t.strip() for t in args.tasks.split(",") if t.strip()] if args.tasks else None
    with disabled() if args.no_progress else nullcontext():
        json_path, csv_path = rescore_run(args.run_dir, args.split, tasks=tasks, candidates=args.candidates,
                                          plugins=get_plugins(args.plugins_dir))
    data = read_rescores(Path(args.run_dir))[args.split]
    names = [o["name"] for o in data["objectives"]]
    print(f"{'model':<16}" + "".join(f"{n[:12] + ':fit':>17}{n[:12] + ':' + args.split[:5]:>17}" for n in names))
    for row in data["candidates"]:
        print(f"{row['id']:<16}" + "".join(f"{row['fitness'][n]:>17.4f}{row['rescored'][n]:>17.4f}" for n in names))
    print(f"\nwrote {json_path.name} and {csv_path.name} in {args.run_dir}; "
          f"`evomm front {args.run_dir}` shows them in report.html")
    return 0
