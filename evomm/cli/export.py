"""``evomm export RUN_DIR --candidate ID | --pick HOW --out DIR [--overwrite]``."""

from __future__ import annotations

import argparse


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "export",
        help="write a candidate of a run as a Hugging Face checkpoint with a model card",
        description="Export one candidate of a run: the checkpoint (through the parents' adapter), "
        "README.md (model card: parents, recipe, genome, scores, lineage), merge.yaml (which "
        "`evomm merge` reproduces bit for bit) and mergekit.yaml when mergekit has the operator.",
    )
    p.add_argument("run_dir", help="run directory of `evomm evolve`")
    g = p.add_mutually_exclusive_group(required=True)
    g.add_argument("--candidate", metavar="ID", help="candidate id, e.g. c00042")
    g.add_argument("--pick", metavar="HOW", help="knee, weights=a,b, best=NAME or 'NAME>=VALUE'")
    p.add_argument("--out", required=True, metavar="DIR",
                   help="output directory: new or empty (it appears only when the export is complete)")
    p.add_argument("--overwrite", action="store_true",
                   help="replace --out if it holds an earlier evomm output (never a directory evomm did not "
                   "write, nor one holding the run or a parent model)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from evomm.export import export_run_candidate
    from evomm.plugins import get_plugins

    out, rec = export_run_candidate(args.run_dir, args.out, candidate=args.candidate, pick_how=args.pick,
                                    plugins=get_plugins(args.plugins_dir), overwrite=args.overwrite)
    scores = ", ".join(f"{k}={v:.4f}" for k, v in rec.objectives.items())
    print(f"exported {rec.id} ({scores}) to {out}")
    return 0
