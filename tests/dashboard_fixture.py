"""Run directories for the dashboard tests: a finished synthetic run, and a made-up archive of
any size with per-layer genes (what a params-space run over a 2-parent model looks like)."""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import evo_synthetic as S
import yaml

PARENTS = ("ja", "math")


def finished_run(run_dir: Path, generations: int = 3, pop: int = 6) -> Path:
    """A real synthetic ``evomm evolve`` run (archive, run.json, front.json, report.html)."""
    from evomm.evolve_recipe import parse_recipe
    from evomm.runner import evolve

    evolve(parse_recipe(S.recipe_dict(generations=generations, pop=pop)), run_dir, plugins=S.plugins(),
           progress=False)
    return run_dir


def record(i: int, generation: int, rng: random.Random, layers: int, objectives: tuple[str, ...]) -> dict[str, Any]:
    """One made-up candidate: weights and densities per layer and parent, objectives in [0, 1]."""
    genes = {f"{p}[{m}].layers.{k}": round(rng.uniform(lo, hi), 4)
             for p, lo, hi in (("weight", -0.5, 1.5), ("density", 0.1, 1.0)) for m in PARENTS for k in range(layers)}
    # a point of the trade-off (a direction on the simplex) at a quality that grows with the generation
    w = [rng.random() for _ in objectives]
    quality = 1.0 - abs(rng.gauss(0.0, 0.25)) * 2.0 / (2.0 + generation)
    objs = {name: round(max(0.0, quality * (w[j] / sum(w)) ** 0.5 - abs(rng.gauss(0.0, 0.1))), 4)
            for j, name in enumerate(objectives)}
    return {"id": f"c{i:05d}", "generation": generation, "genome": [], "plan_hash": f"h{i}", "stage": "ps",
            "metrics": {"toy": {"acc": objs[objectives[0]]}}, "objectives": objs, "genes": genes,
            "timings": {"merge": 0.5 + rng.random(), "evaluate": 2 + rng.random()}, "extra": {}, "evaluation": "full"}


def parent(name: str, objectives: tuple[str, ...], best: int) -> dict[str, Any]:
    objs = {o: (0.9 if j == best else 0.1) for j, o in enumerate(objectives)}
    return {"id": f"parent:{name}", "generation": -1, "genome": [], "plan_hash": f"parent:{name}", "stage": "ps",
            "metrics": {}, "objectives": objs, "timings": {"evaluate": 1.0}, "extra": {}, "evaluation": "full"}


def made_up_run(run_dir: Path, n: int, *, pop: int = 50, layers: int = 12,
                objectives: tuple[str, ...] = ("ja", "math", "ja_math"), status: str = "finished") -> Path:
    """A run directory with ``n`` made-up candidates (``pop`` per generation) and two parents."""
    run_dir.mkdir(parents=True, exist_ok=True)
    recipe = S.recipe_dict()
    recipe["name"] = run_dir.name
    recipe["objectives"] = [{"name": o, "task": "syn_a"} for o in objectives]
    (run_dir / "recipe.yaml").write_text(yaml.safe_dump(recipe))
    (run_dir / "run.json").write_text(json.dumps({
        "name": run_dir.name, "seed": 0, "status": status, "stages": ["ps"],
        "objectives": [{"name": o, "direction": "maximize", "constraint": None} for o in objectives]}))
    rng = random.Random(0)
    lines = [parent(m, objectives, j) for j, m in enumerate(PARENTS)]
    lines += [record(i, i // pop, rng, layers, objectives) for i in range(n)]
    (run_dir / "archive.jsonl").write_text("".join(json.dumps(r) + "\n" for r in lines))
    return run_dir


if __name__ == "__main__":  # python tests/dashboard_fixture.py DIR N: a big run to look at
    import sys

    made_up_run(Path(sys.argv[1]), int(sys.argv[2]))
