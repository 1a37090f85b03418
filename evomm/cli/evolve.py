"""``evomm evolve RECIPE --out RUN_DIR`` / ``evomm evolve --resume RUN_DIR [RECIPE --recipe-update]``
/ ``--dry-run``."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from evomm.errors import ConfigError
from evomm.plugins import get_plugins


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "evolve",
        help="evolve merges of parent models against objectives (multi-objective search)",
        description="Run an evolutionary search over merge recipes described by an evolve recipe "
        "(YAML: parents, operator template with evolved parameters, objectives, algorithm, budget). "
        "Every candidate is archived at once; Ctrl-C or a crash loses at most the candidates in "
        "flight, and --resume continues the run. See docs/evolution.md.",
    )
    p.add_argument("recipe", nargs="?",
                   help="evolve recipe (YAML); with --resume only together with --recipe-update")
    p.add_argument("--out", metavar="RUN_DIR",
                   help="new run directory (archive, checkpoints, report): must not exist or be empty")
    p.add_argument("--resume", metavar="RUN_DIR", help="continue the run in RUN_DIR with its own recipe")
    p.add_argument("--recipe-update", action="store_true",
                   help="with --resume and RECIPE: continue with RECIPE's budget (the rest of RECIPE "
                   "must be the run's search: same parents, objectives, tasks, genes, algorithm, seed)")
    p.add_argument("--dry-run", action="store_true",
                   help="print the genes (with bounds) each stage would search and the memory and time "
                   "plan (from headers: bytes per parent, memory per worker, merge time, items per "
                   "candidate), then stop")
    p.add_argument("--profile", action="store_true",
                   help="merge and score two candidates of the first stage as the run would, print where "
                   "a candidate's time goes (merge, per task: model calls, prompts and scoring), then stop")
    p.add_argument("--executor", metavar="NAME",
                   help="where candidates are scored: local, processes, ray or a plugin's executor "
                   "(default: the recipe's executor.name, else local); the archive does not depend on it")
    p.add_argument("--workers", type=int, metavar="N",
                   help="number of workers of the executor (default: the recipe's executor.workers)")
    p.add_argument("--no-progress", action="store_true",
                   help="no progress bars at all (evomm's, plugins', the Hugging Face libraries')")
    p.set_defaults(func=run)


def dry_run(recipe_path: str, plugins_dirs: list[str]) -> int:
    from evomm.evolve_recipe import load_evolve_recipe
    from evomm.runner import build_space

    recipe = load_evolve_recipe(recipe_path)
    plugins = get_plugins(plugins_dirs)
    for i, stage in enumerate(recipe.stages):
        if i > 0:
            print(f"\nstage {stage.name!r} ({stage.kind}): parents include the child picked in stage "
                  f"{recipe.stages[i - 1].name!r}; genes are derived when that stage ends")
            continue
        space = build_space(recipe, i, Path("."), plugins, [])
        try:
            print(f"stage {stage.name!r}: {space.describe()}")
            print(space.describe_genes())
        finally:
            space.close()
    from evomm.planner import evolve_plan_lines

    print("\n" + "\n".join(evolve_plan_lines(recipe)))
    return 0


def run(args: argparse.Namespace) -> int:
    if not args.no_progress:
        return _run(args)
    from evomm.progress import disabled

    with disabled():
        return _run(args)


def profile(recipe_path: str, plugins_dirs: list[str]) -> int:
    """``--profile``: :func:`evomm.profiling.profile_candidate` of the recipe, printed."""
    from evomm.evolve_recipe import load_evolve_recipe
    from evomm.profiling import format_profile, profile_candidate

    print(format_profile(profile_candidate(load_evolve_recipe(recipe_path), get_plugins(plugins_dirs))))
    return 0


def _run(args: argparse.Namespace) -> int:
    from evomm.report import front_table, load_front
    from evomm.runner import evolve

    if args.dry_run:
        if not args.recipe:
            raise ConfigError("evomm evolve --dry-run needs a RECIPE")
        return dry_run(args.recipe, args.plugins_dir)
    if args.profile:
        if not args.recipe:
            raise ConfigError("evomm evolve --profile needs a RECIPE")
        return profile(args.recipe, args.plugins_dir)
    if args.workers is not None and args.workers < 1:
        raise ConfigError(f"--workers {args.workers}: give a number of workers >= 1")
    if args.resume:
        if args.out:
            raise ConfigError("give either --out RUN_DIR (a new run) or --resume RUN_DIR, not both")
        run_dir, recipe = Path(args.resume), args.recipe
    else:
        if not args.recipe or not args.out:
            raise ConfigError("evomm evolve needs RECIPE and --out RUN_DIR (or --resume RUN_DIR)")
        run_dir, recipe = Path(args.out), args.recipe
    # plugins load inside evolve(), after the run's lock is taken: a second process on a run
    # is refused at once
    result = evolve(recipe, run_dir, resume=bool(args.resume), recipe_update=args.recipe_update,
                    plugins_dirs=args.plugins_dir, progress=not args.no_progress,
                    executor=args.executor, workers=args.workers)
    if not result.kept:
        print(f"the run stopped ({result.note or result.reason}) before its first candidate was archived; "
              f"{run_dir} was removed again (nothing to resume): run the same command to start again",
              file=sys.stderr)
        return 130 if result.reason == "interrupted" else 0
    infos, _, front, parents = load_front(run_dir)
    print(front_table(infos, front, parents))
    if result.note:
        print(f"\n{result.note}")
    state = {"budget": "finished", "interrupted": "stopped (Ctrl-C); continue with --resume"}.get(result.reason, result.reason)
    print(f"\nrun {state}: {run_dir} (report: {run_dir / 'report.html'})")
    return 130 if result.reason == "interrupted" else 0
