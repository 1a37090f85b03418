"""Search cost: the demo problem under each cheap-fitness strategy and executor, side by side.

Runs the demo recipe (toy zoo, three objectives, NSGA-II) with the same seed and the same
candidate budget (generations x pop_size, no wall time) once per setting, in one process, and
prints per setting: item evaluations (children, and with the parents), wall time, the
hypervolume (pymoo's HV indicator) of the final front on the fitness split, and of the same
front re-scored on the held-out ``test`` split (``evomm.rescore.rescore_run``), each with the
parents as reference point (the worst parent value per objective), and whether the archive
equals another setting's (``racing x2`` must equal ``racing``).

    .venv/bin/python bench/search_cost.py --quick          # a few minutes on 2 cores
    .venv/bin/python bench/search_cost.py                  # the demo's own sizes
    .venv/bin/python bench/search_cost.py --suite synthetic --items 500 --pop 12 --generations 6
    .venv/bin/python bench/search_cost.py --suite synthetic --objectives 1 --items 5000 \
        --pop 12 --generations 16 --algorithm random --settings full,racing-3,racing

The zoo is the demo's (built once by ``evomm demo`` or ``evomm zoo build``; ``--zoo DIR``).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

SETTINGS: dict[str, dict[str, Any]] = {
    "full": {"fitness": {"strategy": "full"}},
    "subset": {"cheap_first": {"subset": 30, "margin": 0.05}},  # today's cheap-first
    "racing": {"fitness": {"strategy": "racing"}},  # the default rounds: 20, doubling, then the rest
    "racing-3": {"fitness": {"strategy": "racing", "rounds": [20, 50, "100%"]}},  # the example (the old default)
    "irt": {"fitness": {"strategy": "irt"}},
    "racing x2": {"fitness": {"strategy": "racing"}, "executor": {"name": "processes", "workers": 2}},
    "full x2": {"fitness": {"strategy": "full"}, "executor": {"name": "processes", "workers": 2}},
}


def recipe(zoo: Path, quick: bool, setting: dict[str, Any], pop: int | None, gens: int | None,
           items: int | None = None) -> dict[str, Any]:
    from evomm_zoo.demo import demo_recipe

    data = demo_recipe(zoo, seed=0)
    data.pop("cheap_first", None)
    data["budget"] = {"generations": gens or (4 if quick else 12)}
    data["algorithm"] = {"name": "nsga2", "pop_size": pop or (8 if quick else 16)}
    for opts in data["tasks"].values():
        if items:
            opts["limit"] = items
        elif quick:
            opts["limit"] = min(opts.get("limit") or 100, 100)
    return data | setting


def hypervolume(points: list[dict[str, float]], ref: dict[str, float], names: list[str]) -> float:
    """HV of maximised ``points`` above ``ref`` (pymoo minimises: both are negated)."""
    from pymoo.indicators.hv import HV

    F = -np.array([[p[n] for n in names] for p in points], dtype=float)
    r = -np.array([ref[n] for n in names], dtype=float)
    F = F[(F < r).all(axis=1)]  # points that do not beat every parent add nothing
    return float(HV(ref_point=r)(F)) if len(F) else 0.0


def demo_held_out(run_dir: Path, ids: list[str]) -> dict[str, dict[str, float]]:
    """Held-out values of the run's front and parents: ``evomm rescore --split test``."""
    from evomm.rescore import rescore_run

    json_path, _ = rescore_run(run_dir, "test")
    return {r["id"]: r["rescored"] for r in json.loads(json_path.read_text())["candidates"]}


def synthetic_held_out(n_items: int) -> Any:
    """Held-out values on the synthetic suite: the same tasks on another item set (salt test)."""

    def held(run_dir: Path, ids: list[str]) -> dict[str, dict[str, float]]:
        import evo_items as I
        import evo_synthetic as S

        from evomm.archive import Archive
        from evomm.evolve_recipe import TaskOptions, parse_recipe
        from evomm.objectives import ObjectiveSet

        recipe = parse_recipe(I.recipe_dict())
        opts = {t: TaskOptions(n=n_items, salt="test") for t in ("items_a", "items_b")}
        objs = ObjectiveSet(recipe.objectives, opts, I.plugins())
        space, archive, out = S.SynthSpace(), Archive(run_dir / "archive.jsonl"), {}
        for rec in archive:
            if rec.id in ids:
                handle = space.materialize_reference(rec.id.split(":", 1)[1]) if rec.is_parent else \
                    space.materialize(space.decode(np.array(rec.genome)))
                out[rec.id] = objs.values({k: r.metrics for k, r in objs.evaluate(handle).items()})
        return out

    return held


def measure(name: str, data: dict[str, Any], out: Path, held_out: Any, plugins: Any = None) -> dict[str, Any]:
    from evomm.archive import Archive
    from evomm.evolve_recipe import parse_recipe
    from evomm.report import load_front
    from evomm.runner import evolve

    run_dir = out / name.replace(" ", "-")
    t0 = time.perf_counter()
    evolve(parse_recipe(data, name), run_dir, progress=False, report=False, plugins=plugins)
    wall = time.perf_counter() - t0
    infos, _, front, parents = load_front(run_dir)
    names = [o.name for o in infos]
    recs = list(Archive(run_dir / "archive.jsonl"))
    ref = {n: min(p.objectives[n] for p in parents) for n in names}
    held = held_out(run_dir, [r.id for r in [*front, *parents]])
    held_ref = {n: min(held[p.id][n] for p in parents) for n in names}
    return {
        "setting": name, "wall_s": wall,
        "items_children": sum(r.items_evaluated for r in recs if not r.is_parent),
        "items_all": sum(r.items_evaluated for r in recs),
        "front": len(front), "full": sum(r.evaluation == "full" for r in recs if not r.is_parent),
        "hv_fit": hypervolume([r.objectives for r in front], ref, names),
        "hv_test": hypervolume([held[r.id] for r in front], held_ref, names),
        "essence": [(r.id, tuple(r.genome), r.plan_hash, tuple(sorted(r.objectives.items()))) for r in recs],
    }


def synthetic_recipe(setting: dict[str, Any], pop: int, gens: int, n_items: int, objectives: int = 2,
                     algorithm: str | None = None) -> dict[str, Any]:
    """The synthetic suite (tests/evo_items.py): two 0/1 tasks of ``n_items`` items, 4 genes;
    ``objectives=1``: the first task only, searched by CMA-ES (the paper's single-objective setting)."""
    import evo_items as I

    data = I.recipe_dict(generations=gens, pop=pop)
    data["tasks"] = {t: {"n": n_items, "salt": "dev"} for t in ("items_a", "items_b")}
    if objectives == 1:
        data["objectives"] = data["objectives"][:1]
        data["tasks"] = {"items_a": data["tasks"]["items_a"]}
        data["stages"][0]["algorithm"] = {"name": "cmaes", "pop_size": pop}
    if algorithm:
        data["stages"][0]["algorithm"] = {"name": algorithm, "pop_size": pop}
    data.pop("fitness")
    if "cheap_first" in setting:
        setting = {"fitness": {"strategy": "subset", "subset": max(1, n_items * 3 // 10), "margin": 0.05}}
    return data | setting


def table(rows: list[dict[str, Any]]) -> str:
    base = next((r for r in rows if r["setting"] == "full"), rows[0])  # ratios against full, else the first
    lines = [f"{'setting':<10} {'items (children)':>16} {'x fewer':>8} {'items (+parents)':>16} {'wall s':>8} "
             f"{'HV fitness':>10} {'HV test':>8} {'vs ' + base['setting'][:5]:>8} {'front':>5} {'full-scored':>11}"]
    for r in rows:
        fewer = base["items_children"] / max(r["items_children"], 1)
        rel = r["hv_test"] / base["hv_test"] - 1 if base["hv_test"] else float("nan")
        lines.append(f"{r['setting']:<10} {r['items_children']:>16} {fewer:>8.2f} {r['items_all']:>16} "
                     f"{r['wall_s']:>8.1f} {r['hv_fit']:>10.4f} {r['hv_test']:>8.4f} {rel:>+8.1%} "
                     f"{r['front']:>5} {r['full']:>11}")
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="pop 8, 4 generations, 100 items per task")
    p.add_argument("--zoo", help="the demo zoo directory (default: the cached demo zoo)")
    p.add_argument("--pop", type=int)
    p.add_argument("--generations", type=int)
    p.add_argument("--items", type=int, help="items per task (limit; the dev split has 400): a larger suite")
    p.add_argument("--settings", default=",".join(SETTINGS), help=f"comma-separated, of {list(SETTINGS)}")
    p.add_argument("--out", help="keep the runs here (a new directory; default: a temporary one)")
    p.add_argument("--objectives", type=int, choices=(1, 2), default=2,
                   help="synthetic suite: 2 (NSGA-II, two tasks in trade-off) or 1 (CMA-ES on the first task)")
    p.add_argument("--algorithm", help="synthetic suite: the search algorithm (default nsga2, cmaes for one objective)")
    p.add_argument("--suite", choices=("demo", "synthetic"), default="demo",
                   help="demo: the toy zoo; synthetic: tests/evo_items.py's tasks (--items each, default "
                   "1000): a suite large enough that the item count does not cap racing's gain")
    args = p.parse_args()

    import torch
    from evomm_zoo import default_zoo_dir

    from evomm.progress import disabled

    torch.set_num_threads(1)  # as evomm demo; the 2 workers of 'racing x2' get 1 thread each too
    zoo = Path(args.zoo) if args.zoo else default_zoo_dir("demo")
    out = Path(args.out) if args.out else Path(tempfile.mkdtemp(prefix="search_cost-"))
    rows = []
    with disabled():
        for name in args.settings.split(","):
            if args.suite == "demo":
                data = recipe(zoo, args.quick, SETTINGS[name], args.pop, args.generations, args.items)
                rows.append(measure(name, data, out, demo_held_out))
            else:
                import evo_items as I

                n = args.items or 1000
                data = synthetic_recipe(SETTINGS[name], args.pop or 16, args.generations or 8, n, args.objectives,
                                        args.algorithm)
                rows.append(measure(name, data, out, synthetic_held_out(n), plugins=I.plugins()))
            print(f"{name}: {rows[-1]['wall_s']:.1f} s, {rows[-1]['items_children']} item evaluations", flush=True)
    print()
    print(table(rows))
    by = {r["setting"]: r for r in rows}
    for one in ("full", "racing"):
        if one in by and f"{one} x2" in by:
            same = by[one]["essence"] == by[f"{one} x2"]["essence"]
            print(f"{one} x2 archive == {one} archive: {same}; "
                  f"wall speed-up x2 workers: {by[one]['wall_s'] / by[f'{one} x2']['wall_s']:.2f}x")
    print(f"runs: {out}")


if __name__ == "__main__":
    main()
