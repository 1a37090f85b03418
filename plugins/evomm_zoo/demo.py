"""``evomm demo``: build (or reuse) the toy zoo, evolve ja x math merges, show the front, export.

The demo is an ordinary evolve run (its recipe is ``configs/demo.yaml`` with the zoo's paths
filled in and written to ``RUN_DIR/recipe.yaml``): per-layer task arithmetic of the Japanese
and the math toy models around the base (8 genes), three objectives (Japanese skill, math
skill, the combined Japanese-math task, all scored strictly), NSGA-II with cheap-first
evaluation. It finishes in under 10 minutes on 2 CPU cores including the zoo build.

``--vision`` adds the vision stage (EvoVLM-JP in miniature): the zoo is built with its vision
half, whose build runs the vision search (:mod:`evomm_zoo.vision_search`, into
``<zoo>/runs/vision``); the demo prints its held-out table, exports the evolved VLM to
``--out``/``vision-child`` and draws ``--out``/``vision-grid.png``.

``--out`` must be new, empty or a previous demo's output (recognised by its
:data:`~evomm.outputs.MARKER`): a previous demo's run is resumed (a finished one is only shown
again) and its knee child exported anew. Any other non-empty directory is refused; nothing there
is deleted.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

import yaml

from evomm.plugins import get_plugins

#: The demo recipe ships inside the plugin (``configs/demo.yaml`` links to it).
RECIPE = Path(__file__).resolve().with_name("demo.yaml")


def demo_recipe(zoo: Path, seed: int = 0, fast: bool = False) -> dict[str, Any]:
    """The demo's evolve recipe (``plugins/evomm_zoo/demo.yaml``) for the zoo at ``zoo``."""
    from evomm_zoo import rebase_zoo_paths

    data = rebase_zoo_paths(yaml.safe_load(RECIPE.read_text()), zoo)
    data["seed"] = seed
    if fast:
        data["algorithm"] = {"name": "nsga2", "pop_size": 8}
        data["budget"] = {"generations": 3}
        for opts in data["tasks"].values():
            opts["limit"] = min(opts.get("limit") or 60, 60)
    return data


def _is_old_demo_output(out: Path) -> bool:
    """Whether ``out`` is a demo output written before evomm marked its outputs."""
    names = {p.name for p in out.iterdir()}
    return names <= {"run", "knee-child"} and (out / "run" / "run.json").is_file()


def claim_demo_dir(out: Path, reads: list[Path]) -> None:
    """Check that the demo may write ``out`` and mark it as the demo's (see the module docstring).

    Raises:
        OutputError: ``out`` is a file, under a file, read-only, holds ``reads``, or is a
            non-empty directory that is not a previous demo's output.
    """
    from evomm.errors import OutputError
    from evomm.outputs import check_output_target, read_marker, write_marker

    if out.is_dir() and any(out.iterdir()):
        marker = read_marker(out)
        if marker is not None and marker.get("command") == "demo":
            return
        if marker is not None:
            raise OutputError(f"--out {out} holds an output of `evomm {marker.get('command')}`, not of the demo; "
                              "choose a new directory for --out")
        if _is_old_demo_output(out):
            write_marker(out, "demo")
            return
    check_output_target(out, reads=reads)
    out.mkdir(parents=True, exist_ok=True)
    write_marker(out, "demo")


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "demo",
        help="the whole product in one command: toy zoo, evolution, front, report, export",
        description="Build (or reuse) the toy zoo, evolve merges of its Japanese and math models "
        "against Japanese skill, math skill and the combined Japanese-math task, print the Pareto "
        "front with the parents beside it, write the report and export the knee child. Under 10 "
        "minutes on 2 CPU cores, zoo build included.",
    )
    p.add_argument("--out", default="evomm-demo", metavar="DIR",
                   help="output directory (default: ./evomm-demo): new, empty, or a previous demo's output, "
                   "whose run is resumed")
    p.add_argument("--seed", type=int, default=0, help="seed of the zoo and of the search")
    p.add_argument("--fast", action="store_true", help="a smaller search (about a minute after the zoo)")
    p.add_argument("--zoo", metavar="DIR", help="use this zoo directory instead of building the cached one")
    p.add_argument("--vision", action="store_true",
                   help="add the vision stage (EvoVLM-JP in miniature): the zoo's VLM x Japanese-LM merge evolved by "
                   "CMA-ES, its held-out table, the evolved VLM exported and an image grid (about 9-11 more minutes "
                   "on 2 cores the first time, then reused from the zoo)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import torch

    from evomm.evolve_recipe import parse_recipe
    from evomm.export import export_run_candidate
    from evomm.report import front_table, load_front
    from evomm.runner import evolve
    from evomm_zoo import build_zoo

    torch.set_num_threads(1)
    t0 = time.perf_counter()
    out = Path(args.out)
    claim_demo_dir(out, reads=[Path(args.zoo)] if args.zoo else [])
    parts = ("text", "vision") if args.vision else ("text",)
    print(f"[1/4] toy zoo ({' + '.join(parts)}; built once, then reused) ...", flush=True)
    zoo = Path(args.zoo) if args.zoo else build_zoo("demo", seed=args.seed, parts=parts)
    t_zoo = time.perf_counter() - t0
    run_dir = out / "run"
    plugins = get_plugins(args.plugins_dir)
    recipe = parse_recipe(demo_recipe(zoo, args.seed, args.fast), "demo recipe")
    resume = (run_dir / "recipe.yaml").is_file()
    print(f"[2/4] evolving ({'resuming ' if resume else ''}{run_dir}) ...", flush=True)
    result = evolve(None if resume else recipe, run_dir, resume=resume, plugins=plugins)
    infos, _, front, parents = load_front(run_dir)
    print("[3/4] Pareto front (parents first):")
    child_dir = out / "knee-child"
    rec = None
    if front:
        child_dir, rec = export_run_candidate(run_dir, child_dir, pick_how="knee", plugins=plugins, overwrite=True)
    print(front_table(infos, front, parents, {rec.id: "knee (exported)"} if rec else {}))
    _say_composition(infos, front, parents)
    vision = _vision_stage(zoo, out, plugins) if args.vision else None
    total = time.perf_counter() - t0
    print(f"\n[4/4] done in {total / 60:.1f} min (zoo {t_zoo:.0f} s, evolution {result.reason})")
    print(f"  zoo:          {zoo}")
    print(f"  run:          {run_dir}  (archive.jsonl, front.csv, front.png, progress.png)")
    print(f"  report:       {run_dir / 'report.html'}")
    if rec is not None:
        print(f"  knee child:   {child_dir}  ({rec.id}; README.md model card, merge.yaml)")
    if vision:
        print(f"  vision run:   {vision['run']}  (report.html)")
        print(f"  vision child: {vision['child']}  (a LLaVA checkpoint; README.md model card)")
        print(f"  image grid:   {vision['grid']}")
    return 0


def _vision_stage(zoo: Path, out: Path, plugins: Any) -> dict[str, Path] | None:
    """Show the zoo's vision search (run by the zoo build): the held-out table, the evolved VLM
    exported to ``out/vision-child`` and the image grid ``out/vision-grid.png``."""
    from evomm.export import export_run_candidate
    from evomm_zoo import read_zoo_json
    from evomm_zoo.vision_grid import write_grid
    from evomm_zoo.vision_search import format_table

    table = (read_zoo_json(zoo) or {}).get("vision_table")
    if not table:
        print("\n[vision] this zoo has no vision table: build it with `evomm zoo build` (text + vision)")
        return None
    run_dir = zoo / table["run"]
    print(f"\n[vision] EvoVLM-JP in miniature: the VLM x ja_vision merge, CMA-ES over {table['evaluations']} candidates "
          f"on the dev split ({run_dir}); held-out {table['split']} split:")
    for line in format_table(table):
        print(line)
    child, _ = export_run_candidate(run_dir, out / "vision-child", candidate=table["evolved_id"], plugins=plugins,
                                    overwrite=True)  # fmt: skip
    grid = write_grid(table, zoo / "data" / "ja_vqa", out / "vision-grid.png")
    return {"run": run_dir, "child": child, "grid": grid}


def _say_composition(infos: Any, front: Any, parents: Any) -> None:
    names = [o.name for o in infos]
    if "ja_math" not in names or not front or not parents:
        return
    best_parent = max(parents, key=lambda r: r.objectives["ja_math"])
    best_child = max(front, key=lambda r: r.objectives["ja_math"])
    pv, cv = best_parent.objectives["ja_math"], best_child.objectives["ja_math"]
    if cv > pv:
        ratio = f" ({cv / pv:.1f}x)" if pv > 0 else ""
        print(f"\ncombined task ja_math: child {best_child.id} scores {cv:.3f} vs the best parent "
              f"({best_parent.id.split(':')[-1]}) {pv:.3f}{ratio} on the dev split")
    else:
        print(f"\ncombined task ja_math: no child beats the best parent ({pv:.3f}) in this run")
